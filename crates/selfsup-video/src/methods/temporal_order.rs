//! Temporal order verification, "Shuffle and Learn" (Misra et al. 2016):
//! is a triple of frames of one clip in temporal order?
//!
//! Per clip of the batch (draws from ChaCha8 seeded by `(seed, step)`):
//! frames `a < b < c` of the clip window, at least two apart at the ends;
//! with probability 1/2 the triple is in order, `(a, b, c)` or reversed
//! `(c, b, a)` (the paper counts both directions as ordered), label 1;
//! otherwise the middle frame is replaced by a frame `d` outside `[a, c]`,
//! `(a, d, c)` or `(c, d, a)`, label 0 (the paper's negatives).
//!
//! Each frame is encoded alone by the tubelet ViT under `encoder.`, as a
//! still clip (the frame repeated over the model's `frames`), mean final
//! token (`still = "clip"`), or, 1/T' of the cost, only the first time
//! step's tokens of that still clip (`still = "step"`: the same tubelets
//! and positions, every frame at time step 0, so the position embedding
//! tells the head nothing about when a frame was taken). A frame's feature
//! is the mean of those final tokens (`head = "mean"`, `D` features) or the
//! first time step's final tokens flattened (`head = "cells"`, `rows x cols
//! x D`: where a garment is stays explicit, as the paper's fc6 reads the
//! conv maps whole). The three features are concatenated and a two-layer
//! head (`head.fc1`, ReLU, `head.fc2`) classifies ordered / not ordered with
//! cross-entropy. The paper's network is a siamese CaffeNet on single
//! frames; here the video encoder plays that part, so evaluation and
//! export read the same ViT on whole clips.
use crate::model::{self, TubeletVit, VitConfig};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use selfsup_core::method::{Batch, LossOut, Method, StepCtx};
use selfsup_core::target::TargetKind;
use selfsup_core::{Error, Result};
use serde::{Deserialize, Serialize};
use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

/// How a frame of the triple is shown to the encoder (`[method] still`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Still {
    /// The frame repeated over the model's `frames`, every token.
    #[default]
    Clip,
    /// The tokens of that still clip's first time step only (`rows x cols`
    /// tokens rather than `T' x rows x cols`).
    Step,
}

/// What the head reads of each frame's final tokens (`[method] head`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HeadInput {
    /// Their mean: `D` features per frame.
    #[default]
    Mean,
    /// The first time step's tokens, flattened: `rows x cols x D` per frame.
    Cells,
}

/// Temporal-order settings (the `[method]` table with `name = "temporal_order"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TemporalOrderConfig {
    /// Hidden width of the classification head.
    pub hidden: i64,
    /// How each frame is encoded (see [`Still`]).
    pub still: Still,
    /// What the head reads of a frame (see [`HeadInput`]).
    pub head: HeadInput,
}

impl Default for TemporalOrderConfig {
    fn default() -> Self {
        Self {
            hidden: 128,
            still: Still::Clip,
            head: HeadInput::Mean,
        }
    }
}

impl TemporalOrderConfig {
    /// The ranges, as a message naming the key.
    pub fn validate(&self, model: &VitConfig) -> std::result::Result<(), String> {
        if !(1..=65_536).contains(&self.hidden) {
            return Err(format!(
                "[method] hidden = {}: give 1 to 65536",
                self.hidden
            ));
        }
        if model.frames < 4 {
            return Err(format!(
                "[model] frames = {}: temporal order needs windows of at least 4 frames (an \
                 ordered triple and a frame outside it)",
                model.frames
            ));
        }
        Ok(())
    }
}

/// One clip's triple: three frame indices and whether they are in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Triple {
    pub frames: [i64; 3],
    pub ordered: bool,
}

/// A triple from a window of `t >= 4` frames (see the module documentation).
pub fn draw_triple<R: Rng>(t: i64, rng: &mut R) -> Triple {
    let (a, c) = loop {
        let a = rng.gen_range(0..t - 2);
        let c = rng.gen_range(a + 2..t);
        if a > 0 || c < t - 1 {
            break (a, c);
        }
    };
    let ordered = rng.gen_bool(0.5);
    let mid = if ordered {
        rng.gen_range(a + 1..c)
    } else {
        // A frame outside [a, c]: a of the frames before a, or t - 1 - c after.
        let k = rng.gen_range(0..a + (t - 1 - c));
        if k < a {
            k
        } else {
            c + 1 + (k - a)
        }
    };
    let frames = if rng.gen_bool(0.5) {
        [a, mid, c]
    } else {
        [c, mid, a]
    };
    Triple { frames, ordered }
}

/// The temporal-order method (see the module documentation).
pub struct TemporalOrder {
    vs: nn::VarStore,
    encoder: TubeletVit,
    fc1: nn::Linear,
    fc2: nn::Linear,
    frames: i64,
    still: Still,
    head: HeadInput,
    seed: u64,
}

impl TemporalOrder {
    /// The exported encoder.
    pub const ENCODER_PREFIX: &'static str = "encoder";

    /// Builds the encoder and the head on `device` from libtorch's
    /// generator as it stands; `seed` keys the triples.
    pub fn new(
        device: Device,
        vit: &VitConfig,
        cfg: &TemporalOrderConfig,
        seed: u64,
    ) -> Result<Self> {
        vit.validate().map_err(Error::Config)?;
        cfg.validate(vit).map_err(Error::Config)?;
        let vs = nn::VarStore::new(device);
        let root = vs.root();
        let encoder = TubeletVit::new(&(&root / Self::ENCODER_PREFIX), vit);
        let head = &root / "head";
        let (_, rows, cols) = vit.grid();
        let per_frame = match cfg.head {
            HeadInput::Mean => vit.embed_dim,
            HeadInput::Cells => rows * cols * vit.embed_dim,
        };
        Ok(Self {
            fc1: model::linear(&head / "fc1", 3 * per_frame, cfg.hidden),
            fc2: model::linear(&head / "fc2", cfg.hidden, 2),
            encoder,
            vs,
            frames: vit.frames,
            still: cfg.still,
            head: cfg.head,
            seed,
        })
    }

    /// The encoder.
    pub fn encoder_vit(&self) -> &TubeletVit {
        &self.encoder
    }

    /// The triples of step `step` for `batch` clips.
    pub fn triples(&self, step: u64, batch: usize) -> Vec<Triple> {
        let mut rng = ChaCha8Rng::seed_from_u64(
            self.seed ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x0D4E,
        );
        (0..batch)
            .map(|_| draw_triple(self.frames, &mut rng))
            .collect()
    }

    /// Logits `[B, 2]` of `clips` `[B, 1, T, S, S]` under `triples`.
    pub fn logits(&self, clips: &Tensor, triples: &[Triple]) -> Tensor {
        let (b, c, t, h, w) = clips.size5().unwrap_or((0, 0, 0, 0, 0));
        let device = clips.device();
        // Frame j of the triple of clip i -> row j * B + i.
        let picks: Vec<i64> = (0..3)
            .flat_map(|j| {
                triples
                    .iter()
                    .enumerate()
                    .map(move |(i, tr)| i as i64 * t + tr.frames[j])
            })
            .collect();
        let flat = clips.transpose(1, 2).reshape([b * t, c, 1, h, w]);
        let stills = flat
            .index_select(0, &Tensor::from_slice(&picks).to_device(device))
            .expand([3 * b, c, t, h, w], false);
        let (_, rows, cols) = self.encoder.config().grid();
        let tokens = match self.still {
            Still::Clip => self.encoder.tokens(&stills, None),
            Still::Step => {
                let keep = Tensor::arange(rows * cols, (Kind::Int64, device))
                    .unsqueeze(0)
                    .expand([3 * b, rows * cols], false);
                self.encoder.tokens(&stills, Some(&keep))
            }
        };
        let feats = match self.head {
            HeadInput::Mean => tokens.mean_dim(1, false, Kind::Float),
            HeadInput::Cells => tokens.narrow(1, 0, rows * cols).flatten(1, 2),
        }
        .view([3, b, -1]);
        let x = Tensor::cat(&[feats.get(0), feats.get(1), feats.get(2)], 1);
        self.fc2.forward(&self.fc1.forward(&x).relu())
    }
}

impl Method for TemporalOrder {
    fn name(&self) -> &'static str {
        "temporal_order"
    }
    fn target(&self) -> TargetKind {
        TargetKind::Pretext
    }
    fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }
    fn step(&mut self, batch: &Batch, ctx: &StepCtx) -> Result<LossOut> {
        let Some(clips) = batch.views.first() else {
            return Err(Error::Config(
                "temporal order needs one view per batch".into(),
            ));
        };
        let triples = self.triples(ctx.step, clips.size()[0] as usize);
        let labels: Vec<i64> = triples.iter().map(|t| i64::from(t.ordered)).collect();
        let labels = Tensor::from_slice(&labels).to_device(clips.device());
        let logits = self.logits(clips, &triples).to_kind(Kind::Float);
        let loss = logits.cross_entropy_for_logits(&labels);
        let acc = tch::no_grad(|| {
            logits
                .argmax(1, false)
                .eq_tensor(&labels)
                .to_kind(Kind::Float)
                .mean(Kind::Float)
                .double_value(&[])
        });
        Ok(LossOut {
            loss,
            terms: vec![("order_accuracy", acc)],
        })
    }
    fn embed(&self, xs: &Tensor) -> Tensor {
        tch::no_grad(|| self.encoder.pooled(xs))
    }
    fn project(&self, xs: &Tensor) -> Tensor {
        self.embed(xs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn triples_are_ordered_or_have_their_middle_frame_outside() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let mut positives = 0;
        for _ in 0..500 {
            let tr = draw_triple(6, &mut rng);
            let [x, m, y] = tr.frames;
            let (lo, hi) = (x.min(y), x.max(y));
            assert!(hi - lo >= 2 && (0..6).contains(&m) && lo >= 0 && hi < 6);
            assert_eq!(tr.ordered, lo < m && m < hi, "{tr:?}");
            positives += usize::from(tr.ordered);
        }
        assert!((200..300).contains(&positives), "{positives}");
    }

    #[test]
    fn the_head_sees_the_chosen_frames_as_still_clips() {
        let _g = crate::TORCH_RNG.lock();
        tch::manual_seed(1);
        let vit = VitConfig {
            image_size: 8,
            frames: 4,
            patch_size: 4,
            tubelet: 2,
            embed_dim: 16,
            depth: 1,
            heads: 2,
            ..VitConfig::default()
        };
        let cfg = TemporalOrderConfig {
            hidden: 8,
            still: Still::Clip,
            head: HeadInput::Mean,
        };
        let m = TemporalOrder::new(Device::Cpu, &vit, &cfg, 0).unwrap();
        let clips = Tensor::randn([2, 1, 4, 8, 8], (Kind::Float, Device::Cpu));
        let tr = [
            Triple {
                frames: [0, 1, 3],
                ordered: true,
            },
            Triple {
                frames: [3, 0, 1],
                ordered: false,
            },
        ];
        let logits = m.logits(&clips, &tr);
        // The same logits from the frames built by hand.
        let still = |i: i64, f: i64| {
            clips
                .get(i)
                .narrow(1, f, 1)
                .expand([1, 4, 8, 8], false)
                .unsqueeze(0)
        };
        let feats: Vec<Tensor> = (0..2)
            .map(|i| {
                let parts: Vec<Tensor> = tr[i as usize]
                    .frames
                    .iter()
                    .map(|&f| m.encoder.pooled(&still(i, f)))
                    .collect();
                Tensor::cat(&parts, 1)
            })
            .collect();
        let want = m
            .fc2
            .forward(&m.fc1.forward(&Tensor::cat(&feats, 0)).relu());
        assert!(logits.allclose(&want, 1e-5, 1e-5, false));
        // `still = "step"`: the same weights, only the first time step's
        // tokens (4 of the 8), whichever frame it is.
        tch::manual_seed(1);
        let step = TemporalOrder::new(
            Device::Cpu,
            &vit,
            &TemporalOrderConfig {
                still: Still::Step,
                ..cfg
            },
            0,
        )
        .unwrap();
        let first: Tensor = Tensor::from_slice(&[0i64, 1, 2, 3]).unsqueeze(0);
        let feats: Vec<Tensor> = (0..2)
            .map(|i| {
                let parts: Vec<Tensor> = tr[i as usize]
                    .frames
                    .iter()
                    .map(|&f| {
                        step.encoder.tokens(&still(i, f), Some(&first)).mean_dim(
                            1,
                            false,
                            Kind::Float,
                        )
                    })
                    .collect();
                Tensor::cat(&parts, 1)
            })
            .collect();
        let want_step = step
            .fc2
            .forward(&step.fc1.forward(&Tensor::cat(&feats, 0)).relu());
        let got_step = step.logits(&clips, &tr);
        assert!(got_step.allclose(&want_step, 1e-5, 1e-5, false));
        assert!(!got_step.allclose(&logits, 1e-3, 1e-3, false));
        // `head = "cells"`: the first time step's 4 tokens of each frame,
        // flattened, 3 x 4 x 16 inputs to fc1.
        for mode in [Still::Clip, Still::Step] {
            let cells = TemporalOrder::new(
                Device::Cpu,
                &vit,
                &TemporalOrderConfig {
                    still: mode,
                    head: HeadInput::Cells,
                    ..cfg.clone()
                },
                0,
            )
            .unwrap();
            assert_eq!(cells.fc1.ws.size(), vec![8, 3 * 4 * 16]);
            let keep = (mode == Still::Step).then(|| first.shallow_clone());
            let feats: Vec<Tensor> = (0..2)
                .map(|i| {
                    let parts: Vec<Tensor> = tr[i as usize]
                        .frames
                        .iter()
                        .map(|&f| {
                            cells
                                .encoder
                                .tokens(&still(i, f), keep.as_ref())
                                .narrow(1, 0, 4)
                                .flatten(1, 2)
                        })
                        .collect();
                    Tensor::cat(&parts, 1)
                })
                .collect();
            let want = cells
                .fc2
                .forward(&cells.fc1.forward(&Tensor::cat(&feats, 0)).relu());
            let got = cells.logits(&clips, &tr);
            assert!(got.allclose(&want, 1e-5, 1e-5, false), "{mode:?}");
        }
        assert!(TemporalOrderConfig::default()
            .validate(&VitConfig { frames: 2, ..vit })
            .unwrap_err()
            .contains("[model] frames = 2"));
    }
}
