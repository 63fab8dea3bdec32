//! Rotation prediction (Gidaris, Singh & Komodakis 2018, "Unsupervised
//! Representation Learning by Predicting Image Rotations", arXiv:1803.07728):
//! each image is rotated by 0, 90, 180 or 270 degrees and a classifier on the
//! encoder features predicts which; cross-entropy over the four classes.
//!
//! As in the paper, every image goes in four times by default, once per
//! rotation, in one batch (`rotations = "all"`); `rotations = "random"`
//! rotates each image once by a rotation drawn uniformly (a batch of `B`
//! instead of `4B`). Trained from one augmented view per image.
//!
//! Label `k` means the image was turned by `k * 90` degrees counter-clockwise
//! (`torch.rot90(x, k, dims=(2, 3))`); `rot90(x, -k)` undoes it.
use super::pretext::{cross_entropy, single_view, square_side, ClassifierConfig};
use crate::models::{build_encoder, EncoderConfig};
use selfsup_core::encoder::Encoder;
use selfsup_core::head::MlpHead;
use selfsup_core::method::{Batch, LossOut, Method, StepCtx};
use selfsup_core::target::TargetKind;
use selfsup_core::Result;
use serde::{Deserialize, Serialize};
use tch::{nn, Kind, Tensor};

/// Number of rotation classes (0, 90, 180, 270 degrees).
pub const ROTATIONS: i64 = 4;

/// Which rotations of each image a batch holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RotationSampling {
    /// All four rotations of every image (the paper's choice).
    #[default]
    All,
    /// One rotation per image, drawn uniformly.
    Random,
}

/// Rotation settings (the `[method]` table with `name = "rotation"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RotationConfig {
    /// `"all"` four rotated copies per image, or `"random"` one.
    pub rotations: RotationSampling,
    /// The rotation classifier on the encoder features.
    pub head: ClassifierConfig,
}

/// The rotation method: encoder under `encoder.`, classifier under `head.`.
pub struct Rotation {
    vs: nn::VarStore,
    encoder: Box<dyn Encoder>,
    head: MlpHead,
    sampling: RotationSampling,
}

impl Rotation {
    /// Builds the encoder and classifier on `device`; fails on a bad head.
    pub fn new(
        device: tch::Device,
        encoder: &EncoderConfig,
        in_channels: i64,
        cfg: &RotationConfig,
    ) -> Result<Self> {
        cfg.head.validate("rotation")?;
        let vs = nn::VarStore::new(device);
        let enc = build_encoder(&(vs.root() / "encoder"), encoder, in_channels);
        let head = cfg
            .head
            .build(&(vs.root() / "head"), enc.out_dim(), ROTATIONS);
        Ok(Self {
            vs,
            encoder: enc,
            head,
            sampling: cfg.rotations,
        })
    }

    /// The variable prefix of the encoder (what gets exported).
    pub const ENCODER_PREFIX: &'static str = "encoder";

    /// The rotated images and their labels (`k` for `k * 90` degrees) for
    /// square images `x` `[B, C, S, S]`: `[4B, ...]` rotation-major for
    /// `"all"`, `[B, ...]` for `"random"`.
    pub fn rotate(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        square_side("rotation", x)?;
        let n = x.size()[0];
        let device = x.device();
        let all: Vec<Tensor> = (0..ROTATIONS).map(|k| x.rot90(k, [2, 3])).collect();
        Ok(match self.sampling {
            RotationSampling::All => (
                Tensor::cat(&all, 0),
                Tensor::arange(ROTATIONS, (Kind::Int64, device))
                    .repeat_interleave_self_int(n, None, None),
            ),
            RotationSampling::Random => {
                let labels = Tensor::randint(ROTATIONS, [n], (Kind::Int64, device));
                let pick = &labels * n + Tensor::arange(n, (Kind::Int64, device));
                (Tensor::cat(&all, 0).index_select(0, &pick), labels)
            }
        })
    }

    /// Rotation logits `[N, 4]` of (already rotated) images.
    pub fn logits(&self, xs: &Tensor, train: bool) -> Tensor {
        self.encoder.forward_t(xs, train).apply_t(&self.head, train)
    }
}

impl Method for Rotation {
    fn name(&self) -> &'static str {
        "rotation"
    }
    fn target(&self) -> TargetKind {
        TargetKind::Pretext
    }
    fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }
    fn step(&mut self, batch: &Batch, _ctx: &StepCtx) -> Result<LossOut> {
        let x = single_view("rotation", batch)?;
        let (inputs, labels) = self.rotate(x)?;
        let (loss, accuracy) = cross_entropy(&self.logits(&inputs, true), &labels);
        Ok(LossOut {
            loss,
            terms: vec![("rotation_accuracy", accuracy)],
        })
    }
    fn embed(&self, xs: &Tensor) -> Tensor {
        self.encoder.forward_t(xs, false)
    }
    /// The encoder features: the classifier only ever sees rotated copies,
    /// so the collapse monitors watch the representation itself.
    fn project(&self, xs: &Tensor) -> Tensor {
        self.embed(xs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use selfsup_core::distributed::SingleProcess as Single;
    use tch::nn::OptimizerConfig;
    use tch::Device;

    fn method(rotations: RotationSampling) -> Rotation {
        let cfg = RotationConfig {
            rotations,
            head: ClassifierConfig {
                hidden_dim: 32,
                ..Default::default()
            },
        };
        let enc = EncoderConfig::SmallCnn {
            channels: vec![8, 16],
        };
        Rotation::new(Device::Cpu, &enc, 1, &cfg).unwrap()
    }

    fn ctx(comm: &Single) -> StepCtx<'_> {
        StepCtx {
            step: 0,
            total_steps: 1,
            epoch: 0,
            steps_per_epoch: 1,
            comm,
        }
    }

    #[test]
    fn undoing_the_labelled_rotation_recovers_the_image() {
        let x = Tensor::arange(3 * 2 * 5 * 5, (Kind::Float, Device::Cpu)).view([3, 2, 5, 5]);
        for sampling in [RotationSampling::All, RotationSampling::Random] {
            let (r, labels) = method(sampling).rotate(&x).unwrap();
            let want_n = if sampling == RotationSampling::All {
                12
            } else {
                3
            };
            assert_eq!(r.size(), vec![want_n, 2, 5, 5]);
            let labels = Vec::<i64>::try_from(&labels).unwrap();
            for (i, &k) in labels.iter().enumerate() {
                let back = r.get(i as i64).rot90(-k, [1, 2]);
                assert!(back.equal(&x.get(i as i64 % 3)), "{sampling:?} {i}: {k}");
                if k % 4 != 0 {
                    assert!(!r.get(i as i64).equal(&x.get(i as i64 % 3)));
                }
            }
            if sampling == RotationSampling::All {
                assert_eq!(labels, vec![0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]);
            }
        }
        // Label 1 is a quarter turn counter-clockwise: the top-right corner
        // goes to the top-left.
        let (r, _) = method(RotationSampling::All).rotate(&x).unwrap();
        assert_eq!(r.double_value(&[3, 0, 0, 0]), x.double_value(&[0, 0, 0, 4]));
    }

    #[test]
    fn random_rotations_use_every_class() {
        let x = Tensor::zeros([400, 1, 4, 4], (Kind::Float, Device::Cpu));
        let (_, labels) = method(RotationSampling::Random).rotate(&x).unwrap();
        let counts = labels.bincount::<Tensor>(None, 4);
        let counts = Vec::<i64>::try_from(&counts).unwrap();
        assert!(counts.iter().all(|&c| c > 60), "{counts:?}");
    }

    #[test]
    fn step_loss_is_cross_entropy_of_the_logits() {
        let mut m = method(RotationSampling::All);
        let x = Tensor::randn([4, 1, 8, 8], (Kind::Float, Device::Cpu));
        let comm = Single;
        let out = m
            .step(
                &Batch {
                    views: vec![x.shallow_clone()],
                },
                &ctx(&comm),
            )
            .unwrap();
        // All four rotations: labels are fixed, so the loss can be redone by hand.
        let (inputs, labels) = m.rotate(&x).unwrap();
        let logits = tch::no_grad(|| m.logits(&inputs, true));
        let rows: Vec<Vec<f64>> = Vec::<Vec<f32>>::try_from(&logits)
            .unwrap()
            .into_iter()
            .map(|r| r.into_iter().map(f64::from).collect())
            .collect();
        let labels = Vec::<i64>::try_from(&labels).unwrap();
        let by_hand = rows
            .iter()
            .zip(&labels)
            .map(|(r, &k)| r.iter().map(|v| v.exp()).sum::<f64>().ln() - r[k as usize])
            .sum::<f64>()
            / rows.len() as f64;
        let loss = out.loss.double_value(&[]);
        assert!((loss - by_hand).abs() < 1e-4, "{loss} vs {by_hand}");
        assert_eq!(out.terms[0].0, "rotation_accuracy");
    }

    /// Images with an upright structure (a bright bar in the top rows).
    pub(crate) fn upright_images(n: i64, s: i64) -> Tensor {
        let noise = Tensor::rand([n, 1, s, s], (Kind::Float, Device::Cpu)) * 0.3;
        let bar = Tensor::zeros([1, 1, s, s], (Kind::Float, Device::Cpu));
        let _ = bar.narrow(2, 0, s / 4).narrow(3, 0, s / 2).fill_(1.0);
        noise + bar
    }

    #[test]
    fn a_few_steps_lower_the_loss() {
        let mut m = method(RotationSampling::All);
        let x = upright_images(16, 12);
        let batch = Batch { views: vec![x] };
        let comm = Single;
        let mut opt = nn::Adam::default().build(m.var_store(), 3e-3).unwrap();
        let mut losses = Vec::new();
        for _ in 0..30 {
            let out = m.step(&batch, &ctx(&comm)).unwrap();
            opt.backward_step(&out.loss);
            losses.push(out.loss.double_value(&[]));
        }
        let (first, last) = (losses[0], *losses.last().unwrap());
        assert!(last < 0.5 * first, "{losses:?}");
    }

    #[test]
    fn bad_input_and_config_are_refused() {
        let mut m = method(RotationSampling::All);
        let x = Tensor::zeros([2, 1, 8, 8], (Kind::Float, Device::Cpu));
        let comm = Single;
        let two = Batch {
            views: vec![x.shallow_clone(), x],
        };
        let err = m.step(&two, &ctx(&comm)).unwrap_err().to_string();
        assert!(err.contains("views = 1"), "{err}");
        let wide = Tensor::zeros([2, 1, 8, 6], (Kind::Float, Device::Cpu));
        assert!(m.rotate(&wide).unwrap_err().to_string().contains("square"));
        let err = toml::from_str::<RotationConfig>("rotations = \"some\"\n").unwrap_err();
        assert!(err.to_string().contains("some"), "{err}");
        let err = toml::from_str::<RotationConfig>("classes = 8\n").unwrap_err();
        assert!(err.to_string().contains("classes"), "{err}");
        let cfg: RotationConfig =
            toml::from_str("rotations = \"random\"\nhead = { layers = 1 }\n").unwrap();
        assert_eq!(cfg.rotations, RotationSampling::Random);
        let bad = RotationConfig {
            head: ClassifierConfig {
                layers: 0,
                ..Default::default()
            },
            ..Default::default()
        };
        let enc = EncoderConfig::default();
        assert!(Rotation::new(Device::Cpu, &enc, 1, &bad).is_err());
    }
}
