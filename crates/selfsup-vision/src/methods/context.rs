//! Context prediction (Doersch, Gupta & Efros 2015, "Unsupervised Visual
//! Representation Learning by Context Prediction", arXiv:1505.05192): the
//! centre patch of a 3x3 grid and one of its 8 neighbours go through the same
//! encoder; a classifier on the two concatenated feature vectors tells which
//! neighbour it was (8-way cross-entropy).
//!
//! Patches are `tile_ratio` of a grid cell (the paper: 96-pixel patches,
//! 48-pixel gaps, so 2/3 of a 144-pixel cell), each moved from its cell's
//! centre by up to `jitter` of the room left in the cell (the paper: up to 7
//! of 24 pixels), so the gap varies and edges do not line up. The paper's
//! per-patch `fc6` is folded into the classifier; its chromatic-aberration
//! countermeasures (colour dropping / projection) are left out. Patches can
//! be resized (`tile_size`) for encoders that need more pixels than a patch
//! of a small image has. Trained from one augmented view per image.
//!
//! Label `k` in `0..8` is the neighbour's place in row-major order, skipping
//! the centre: 0 1 2 above, 3 left, 4 right, 5 6 7 below (grid cell
//! `k + (k >= 4)`).
use super::pretext::{
    check_fraction, cross_entropy, prepare_tiles, single_view, square_side, ClassifierConfig,
    TileGrid,
};
use crate::models::{build_encoder, EncoderConfig};
use selfsup_core::encoder::Encoder;
use selfsup_core::head::MlpHead;
use selfsup_core::method::{Batch, LossOut, Method, StepCtx};
use selfsup_core::target::TargetKind;
use selfsup_core::{Error, Result};
use serde::{Deserialize, Serialize};
use tch::{nn, Kind, Tensor};

/// Number of neighbour classes.
pub const NEIGHBOURS: i64 = 8;

/// Context-prediction settings (the `[method]` table with `name = "context"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ContextConfig {
    /// Patch side as a fraction of a grid cell (paper: 96 / 144).
    pub tile_ratio: f64,
    /// Largest move of a patch from its cell's centre, as a fraction of the
    /// room left in the cell, each way (paper: 7 / 24).
    pub jitter: f64,
    /// Resize patches to this side before the encoder (default: keep).
    pub tile_size: Option<i64>,
    /// The classifier on the concatenated centre and neighbour features.
    pub head: ClassifierConfig,
}

impl Default for ContextConfig {
    fn default() -> Self {
        Self {
            tile_ratio: 96.0 / 144.0,
            jitter: 7.0 / 24.0,
            tile_size: None,
            head: ClassifierConfig::default(),
        }
    }
}

impl ContextConfig {
    /// Checks ranges; the error names the key.
    pub fn validate(&self) -> Result<()> {
        check_fraction("context", "tile_ratio", self.tile_ratio, true)?;
        check_fraction("context", "jitter", self.jitter, false)?;
        if let Some(s) = self.tile_size.filter(|&s| s < 1) {
            return Err(Error::Config(format!(
                "context: tile_size must be positive, got {s}"
            )));
        }
        self.head.validate("context")
    }
}

/// The context-prediction method: encoder under `encoder.`, classifier under `head.`.
pub struct Context {
    vs: nn::VarStore,
    encoder: Box<dyn Encoder>,
    encoder_cfg: EncoderConfig,
    head: MlpHead,
    cfg: ContextConfig,
}

/// The grid cell (row-major 0..9) of neighbour label `labels` (`Int64`).
pub fn neighbour_cell(labels: &Tensor) -> Tensor {
    labels + labels.ge(4).to_kind(Kind::Int64)
}

impl Context {
    /// Builds the encoder and classifier on `device`; fails on a bad config.
    pub fn new(
        device: tch::Device,
        encoder: &EncoderConfig,
        in_channels: i64,
        cfg: &ContextConfig,
    ) -> Result<Self> {
        cfg.validate()?;
        let vs = nn::VarStore::new(device);
        let enc = build_encoder(&(vs.root() / "encoder"), encoder, in_channels);
        let head = cfg
            .head
            .build(&(vs.root() / "head"), 2 * enc.out_dim(), NEIGHBOURS);
        Ok(Self {
            vs,
            encoder: enc,
            encoder_cfg: encoder.clone(),
            head,
            cfg: cfg.clone(),
        })
    }

    /// The variable prefix of the encoder (what gets exported).
    pub const ENCODER_PREFIX: &'static str = "encoder";

    /// Centre patches, neighbour patches (both `[B, C, t, t]`, not yet
    /// resized) and neighbour labels `[B]` of square images `x`.
    pub fn pairs(&self, x: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        let side = square_side("context", x)?;
        let grid = TileGrid::new("context", side, self.cfg.tile_ratio, self.cfg.jitter)?;
        let n = x.size()[0];
        let labels = Tensor::randint(NEIGHBOURS, [n], (Kind::Int64, x.device()));
        let centre = grid.tile_of_cell(x, 4);
        let neighbour = grid.tile(x, &neighbour_cell(&labels));
        Ok((centre, neighbour, labels))
    }

    /// Neighbour logits `[B, 8]` of centre and neighbour patches.
    pub fn logits(&self, centre: &Tensor, neighbour: &Tensor, train: bool) -> Result<Tensor> {
        let n = centre.size()[0];
        let tiles = prepare_tiles(
            "context",
            Tensor::cat(&[centre, neighbour], 0),
            self.cfg.tile_size,
            &self.encoder_cfg,
        )?;
        let f = self.encoder.forward_t(&tiles, train);
        let pair = Tensor::cat(&[f.narrow(0, 0, n), f.narrow(0, n, n)], 1);
        Ok(pair.apply_t(&self.head, train))
    }
}

impl Method for Context {
    fn name(&self) -> &'static str {
        "context"
    }
    fn target(&self) -> TargetKind {
        TargetKind::Pretext
    }
    fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }
    fn step(&mut self, batch: &Batch, _ctx: &StepCtx) -> Result<LossOut> {
        let x = single_view("context", batch)?;
        let (centre, neighbour, labels) = self.pairs(x)?;
        let (loss, accuracy) = cross_entropy(&self.logits(&centre, &neighbour, true)?, &labels);
        Ok(LossOut {
            loss,
            terms: vec![("context_accuracy", accuracy)],
        })
    }
    fn embed(&self, xs: &Tensor) -> Tensor {
        self.encoder.forward_t(xs, false)
    }
    /// The encoder features of the whole image: the classifier only sees
    /// pairs of patches, so the collapse monitors watch the representation.
    fn project(&self, xs: &Tensor) -> Tensor {
        self.embed(xs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::methods::pretext::tests::coordinates;
    use selfsup_core::distributed::SingleProcess;
    use tch::nn::OptimizerConfig;
    use tch::Device;

    fn method(cfg: ContextConfig) -> Context {
        let enc = EncoderConfig::SmallCnn {
            channels: vec![8, 16],
        };
        Context::new(Device::Cpu, &enc, 1, &cfg).unwrap()
    }

    fn small() -> ContextConfig {
        ContextConfig {
            head: ClassifierConfig {
                hidden_dim: 32,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn ctx(comm: &SingleProcess) -> StepCtx<'_> {
        StepCtx {
            step: 0,
            total_steps: 1,
            epoch: 0,
            steps_per_epoch: 1,
            comm,
        }
    }

    #[test]
    fn labels_name_the_neighbours_place() {
        // 30 px: 10-px cells, 6-px patches centred 2 px into their cell.
        let m = method(ContextConfig {
            tile_ratio: 0.6,
            jitter: 0.0,
            ..small()
        });
        let x = coordinates(30).repeat([200, 1, 1, 1]);
        let (centre, neighbour, labels) = m.pairs(&x).unwrap();
        assert_eq!(centre.size(), vec![200, 1, 6, 6]);
        let corner = |t: &Tensor, i: i64| t.double_value(&[i, 0, 0, 0]) as i64;
        let labels = Vec::<i64>::try_from(&labels).unwrap();
        let offsets = [
            (-1, -1),
            (-1, 0),
            (-1, 1),
            (0, -1),
            (0, 1),
            (1, -1),
            (1, 0),
            (1, 1),
        ];
        for (i, &k) in labels.iter().enumerate() {
            let i = i as i64;
            assert_eq!(corner(&centre, i), 1212, "centre patch starts at (12, 12)");
            let (dy, dx) = offsets[k as usize];
            assert_eq!(
                corner(&neighbour, i),
                1212 + dy * 1000 + dx * 10,
                "label {k}"
            );
        }
        let mut seen = labels.clone();
        seen.sort();
        seen.dedup();
        assert_eq!(seen, (0..8).collect::<Vec<_>>());
    }

    #[test]
    fn jitter_moves_patches_within_their_cells() {
        // 30 px, 6-px patches, room of 2 px each way, jitter 1: shifts -2..=2.
        let m = method(ContextConfig {
            tile_ratio: 0.6,
            jitter: 1.0,
            ..small()
        });
        let x = coordinates(30).repeat([300, 1, 1, 1]);
        let (centre, neighbour, labels) = m.pairs(&x).unwrap();
        let top = |t: &Tensor| (t.select(1, 0).select(1, 0).select(1, 0) / 100.0).floor();
        let rows = top(&centre);
        assert_eq!(rows.min().double_value(&[]), 10.0);
        assert_eq!(rows.max().double_value(&[]), 14.0);
        // The neighbour's row shift from its cell centre is independent of the centre's.
        let cell_row = neighbour_cell(&labels).divide_scalar_mode(3, "floor") * 10 + 2;
        let shift = top(&neighbour) - cell_row;
        assert_eq!(shift.min().double_value(&[]), -2.0);
        assert_eq!(shift.max().double_value(&[]), 2.0);
        assert!(!shift.equal(&(&rows - 12.0)));
    }

    #[test]
    fn step_loss_is_cross_entropy_of_the_logits() {
        let m = method(small());
        let x = Tensor::randn([6, 1, 24, 24], (Kind::Float, Device::Cpu));
        let (c, nb, labels) = m.pairs(&x).unwrap();
        let logits = m.logits(&c, &nb, true).unwrap();
        assert_eq!(logits.size(), vec![6, 8]);
        let (loss, _) = cross_entropy(&logits, &labels);
        let rows = Vec::<Vec<f32>>::try_from(&logits).unwrap();
        let labels = Vec::<i64>::try_from(&labels).unwrap();
        let by_hand: f64 = rows
            .iter()
            .zip(&labels)
            .map(|(r, &k)| {
                r.iter().map(|&v| f64::from(v).exp()).sum::<f64>().ln() - f64::from(r[k as usize])
            })
            .sum::<f64>()
            / 6.0;
        assert!((loss.double_value(&[]) - by_hand).abs() < 1e-4);
    }

    #[test]
    fn a_few_steps_lower_the_loss() {
        // Structured images: a diagonal intensity ramp plus noise, so where a
        // patch came from shows in it.
        let mut m = method(small());
        let ramp = coordinates(24) / 2400.0;
        let x = ramp + Tensor::rand([32, 1, 24, 24], (Kind::Float, Device::Cpu)) * 0.1;
        let batch = Batch { views: vec![x] };
        let comm = SingleProcess;
        let mut opt = nn::Adam::default().build(m.var_store(), 3e-3).unwrap();
        let mut losses = Vec::new();
        for _ in 0..40 {
            let out = m.step(&batch, &ctx(&comm)).unwrap();
            opt.backward_step(&out.loss);
            losses.push(out.loss.double_value(&[]));
        }
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        let (first, last) = (mean(&losses[..5]), mean(&losses[35..]));
        assert!(last < first - 0.5, "{first} -> {last}: {losses:?}");
    }

    #[test]
    fn bad_input_and_config_are_refused() {
        let mut m = method(small());
        let comm = SingleProcess;
        let x = Tensor::zeros([2, 1, 24, 24], (Kind::Float, Device::Cpu));
        let two = Batch {
            views: vec![x.shallow_clone(), x],
        };
        assert!(m
            .step(&two, &ctx(&comm))
            .unwrap_err()
            .to_string()
            .contains("views = 1"));
        // 28 px with the default 4-block CNN: 6-px patches are too small.
        let enc = EncoderConfig::default();
        let mut deep = Context::new(Device::Cpu, &enc, 1, &small()).unwrap();
        let x28 = Tensor::zeros([2, 1, 28, 28], (Kind::Float, Device::Cpu));
        let err = deep
            .step(&Batch { views: vec![x28] }, &ctx(&comm))
            .unwrap_err()
            .to_string();
        assert!(err.contains("tile_size"), "{err}");
        for bad in [
            ContextConfig {
                tile_ratio: 0.0,
                ..small()
            },
            ContextConfig {
                jitter: 1.5,
                ..small()
            },
            ContextConfig {
                tile_size: Some(0),
                ..small()
            },
        ] {
            assert!(Context::new(Device::Cpu, &enc, 1, &bad).is_err(), "{bad:?}");
        }
        let err = toml::from_str::<ContextConfig>("gap = 3\n").unwrap_err();
        assert!(err.to_string().contains("gap"), "{err}");
    }
}
