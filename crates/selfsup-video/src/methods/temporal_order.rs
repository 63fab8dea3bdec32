//! Temporal order verification, "Shuffle and Learn" (Misra et al. 2016):
//! is a triple of frames of one clip in temporal order?
//!
//! Per clip of the batch (draws from ChaCha8 seeded by `(seed, step)`):
//! frames `a < b < c` of the clip window, at least `min_gap` apart at the
//! ends (2 by default); with probability 1/2 the triple is in order,
//! `(a, b, c)` or reversed `(c, b, a)` (the paper counts both directions as
//! ordered), label 1; otherwise the middle frame is replaced by a frame `d`
//! at least `margin` frames outside `[a, c]` (`d <= a - margin` or
//! `d >= c + margin`; 1 by default), `(a, d, c)` or `(c, d, a)`, label 0
//! (the paper's negatives). Larger gaps and margins mean larger
//! displacements between the frames the head compares.
//!
//! [`TemporalOrder::held_out_accuracy`] scores the head on clips it did not
//! train on, with triples from a fixed seed: what the per-epoch evaluator
//! logs as `val_order_accuracy` (chance 0.5).
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
    /// Least distance between a triple's end frames (2: the paper's
    /// smallest; larger: larger displacements).
    pub min_gap: i64,
    /// Least distance of a negative's middle frame from the interval of its
    /// end frames (1: any frame outside).
    pub margin: i64,
    /// Triples drawn per clip and step (1: the paper's one; more: more
    /// labelled triples from each decoded clip, each encoded on its own).
    pub triples_per_clip: usize,
}

impl Default for TemporalOrderConfig {
    fn default() -> Self {
        Self {
            hidden: 128,
            still: Still::Clip,
            head: HeadInput::Mean,
            min_gap: 2,
            margin: 1,
            triples_per_clip: 1,
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
        if !(1..=64).contains(&self.triples_per_clip) {
            return Err(format!(
                "[method] triples_per_clip = {}: give 1 to 64",
                self.triples_per_clip
            ));
        }
        if !(2..=model.frames).contains(&self.min_gap) {
            return Err(format!(
                "[method] min_gap = {}: give 2 to [model] frames = {}",
                self.min_gap, model.frames
            ));
        }
        if self.margin < 1 || self.min_gap + self.margin > model.frames - 1 {
            return Err(format!(
                "[method] margin = {}: give at least 1, with min_gap + margin <= [model] frames \
                 - 1 = {} (a window must hold the triple and a frame that far outside it)",
                self.margin,
                model.frames - 1
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

/// A triple from a window of `t` frames, ends at least `min_gap` apart, a
/// negative's middle frame at least `margin` outside (see the module
/// documentation); `t >= 4`, `2 <= min_gap`, `1 <= margin`,
/// `min_gap + margin <= t - 1` (what [`TemporalOrderConfig::validate`]
/// checks).
pub fn draw_triple<R: Rng>(t: i64, min_gap: i64, margin: i64, rng: &mut R) -> Triple {
    let (a, c) = loop {
        let a = rng.gen_range(0..t - min_gap);
        let c = rng.gen_range(a + min_gap..t);
        if a >= margin || c + margin < t {
            break (a, c);
        }
    };
    let ordered = rng.gen_bool(0.5);
    let mid = if ordered {
        rng.gen_range(a + 1..c)
    } else {
        // A frame at least `margin` outside [a, c]: before = a - margin + 1
        // frames 0..=a-margin, after = t - c - margin frames c+margin..t.
        let before = (a - margin + 1).max(0);
        let after = (t - c - margin).max(0);
        let k = rng.gen_range(0..before + after);
        if k < before {
            k
        } else {
            c + margin + (k - before)
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
    min_gap: i64,
    margin: i64,
    triples_per_clip: usize,
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
            min_gap: cfg.min_gap,
            margin: cfg.margin,
            triples_per_clip: cfg.triples_per_clip,
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
            .map(|_| draw_triple(self.frames, self.min_gap, self.margin, &mut rng))
            .collect()
    }

    /// The triples [`Self::held_out_accuracy`] scores `batch` clips of
    /// chunk `chunk` with (a generator of their own, not the training
    /// steps').
    pub fn held_out_triples(&self, batch: usize, chunk: u64) -> Vec<Triple> {
        let mut rng = ChaCha8Rng::seed_from_u64(
            self.seed ^ 0x4E1D_0417 ^ chunk.wrapping_mul(0xD1B5_4A32_D192_ED03),
        );
        (0..batch)
            .map(|_| draw_triple(self.frames, self.min_gap, self.margin, &mut rng))
            .collect()
    }

    /// Order accuracy of the head on `clips` `[B, 1, T, S, S]` (clips it
    /// did not train on), the triples drawn from a generator keyed by the
    /// seed and `chunk` alone, so every epoch is scored on the same triples;
    /// chance is 0.5. NaN for an empty batch.
    pub fn held_out_accuracy(&self, clips: &Tensor, chunk: u64) -> f64 {
        let b = clips.size().first().copied().unwrap_or(0).max(0) as usize;
        if b == 0 {
            return f64::NAN;
        }
        let triples = self.held_out_triples(b, chunk);
        let labels: Vec<i64> = triples.iter().map(|t| i64::from(t.ordered)).collect();
        let labels = Tensor::from_slice(&labels).to_device(clips.device());
        tch::no_grad(|| {
            self.logits(clips, &triples)
                .argmax(1, false)
                .eq_tensor(&labels)
                .to_kind(Kind::Float)
                .mean(Kind::Float)
                .double_value(&[])
        })
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
        // `triples_per_clip` copies of the batch, one triple for each.
        let k = self.triples_per_clip.max(1);
        let clips = if k > 1 {
            clips.repeat([k as i64, 1, 1, 1, 1])
        } else {
            clips.shallow_clone()
        };
        let triples = self.triples(ctx.step, clips.size()[0] as usize);
        let labels: Vec<i64> = triples.iter().map(|t| i64::from(t.ordered)).collect();
        let labels = Tensor::from_slice(&labels).to_device(clips.device());
        let logits = self.logits(&clips, &triples).to_kind(Kind::Float);
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
            let tr = draw_triple(6, 2, 1, &mut rng);
            let [x, m, y] = tr.frames;
            let (lo, hi) = (x.min(y), x.max(y));
            assert!(hi - lo >= 2 && (0..6).contains(&m) && lo >= 0 && hi < 6);
            assert_eq!(tr.ordered, lo < m && m < hi, "{tr:?}");
            positives += usize::from(tr.ordered);
        }
        assert!((200..300).contains(&positives), "{positives}");
    }

    #[test]
    fn gaps_and_margins_bound_the_ends_and_the_negatives() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let (mut least_gap, mut least_out) = (i64::MAX, i64::MAX);
        let mut seen_after = false;
        for _ in 0..2000 {
            let tr = draw_triple(16, 6, 3, &mut rng);
            let [x, m, y] = tr.frames;
            let (lo, hi) = (x.min(y), x.max(y));
            assert!(lo >= 0 && hi < 16 && (0..16).contains(&m), "{tr:?}");
            least_gap = least_gap.min(hi - lo);
            if tr.ordered {
                assert!(lo < m && m < hi, "{tr:?}");
            } else {
                let out = if m < lo { lo - m } else { m - hi };
                assert!(m < lo || m > hi, "{tr:?}");
                least_out = least_out.min(out);
                seen_after |= m > hi;
            }
        }
        // The bounds are reached, never crossed; negatives fall on both sides.
        assert_eq!((least_gap, least_out), (6, 3));
        assert!(seen_after);
        // The tightest window that still fits: t - 1 = min_gap + margin.
        for _ in 0..200 {
            let tr = draw_triple(8, 5, 2, &mut rng);
            let [x, m, y] = tr.frames;
            let (lo, hi) = (x.min(y), x.max(y));
            if !tr.ordered {
                assert!(m <= lo - 2 || m >= hi + 2, "{tr:?}");
            }
        }
        let vit = VitConfig {
            frames: 8,
            ..VitConfig::default()
        };
        let cfg = |min_gap, margin| TemporalOrderConfig {
            min_gap,
            margin,
            ..TemporalOrderConfig::default()
        };
        assert!(cfg(5, 2).validate(&vit).is_ok());
        assert!(cfg(5, 3)
            .validate(&vit)
            .unwrap_err()
            .contains("[method] margin = 3"));
        assert!(cfg(1, 1)
            .validate(&vit)
            .unwrap_err()
            .contains("[method] min_gap = 1"));
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
            ..TemporalOrderConfig::default()
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
        // The held-out accuracy: the argmax of these logits on the held-out
        // triples against their labels, the same on every call.
        let held = step.held_out_triples(2, 7);
        assert_eq!(held, step.held_out_triples(2, 7));
        let hits = step
            .logits(&clips, &held)
            .argmax(1, false)
            .iter::<i64>()
            .unwrap()
            .zip(&held)
            .filter(|(p, t)| (*p == 1) == t.ordered)
            .count();
        let acc = step.held_out_accuracy(&clips, 7);
        assert!((acc - hits as f64 / 2.0).abs() < 1e-12, "{acc} {hits}");
        assert!(step.held_out_accuracy(&clips.narrow(0, 0, 0), 7).is_nan());
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
