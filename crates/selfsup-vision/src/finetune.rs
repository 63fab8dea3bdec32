//! `selfsup eval finetune` for images: core's label-efficiency protocol
//! ([`selfsup_core::eval::finetune`]: stratified fractions, seeds, both arms,
//! rows) with vision's model. The checkpoint's encoder plus a linear head
//! (the pre-trained arm) and the same network freshly initialised (the
//! scratch arm) train on the same subset, head initialisation, batches,
//! augmentation, steps, optimiser and schedule ([`FinetuneConfig`]). Batch
//! norm is in training mode while training, in inference mode for the test
//! top-1.
use crate::augment::{
    AugmentConfig, Augmenter, ColorJitter, GaussianBlur, HorizontalFlip, RandomGrayscale,
    RandomResizedCrop, Scratch, Solarize,
};
use crate::config::{FinetuneConfig, VisionRunConfig};
use crate::data::{ImageDataset, Normalize};
use crate::evaluate::eval_caps;
use crate::load::{load_data, spread};
use crate::methods::colorization::rgb_to_lab;
use crate::models::{build_encoder, PosEmbedInit, Vit};
use crate::vision_method::VisionMethod;
use selfsup_core::encoder::Encoder;
use selfsup_core::eval::finetune::{
    self as protocol, Arm, FineTune, LossTrace, Scored, ScoredOn, SubsetOrder, Trial,
};
use selfsup_core::eval::split::by_sample;
use selfsup_core::optim::Params;
use selfsup_core::run::seed_random_weights;
use selfsup_core::{Error, Result};
use serde::Serialize;
use std::collections::HashMap;
use std::path::Path;
use tch::{nn, Device, Kind, Tensor};

pub use selfsup_core::eval::finetune::{mean_std, stratified};

/// Test images scored per forward pass.
const TEST_CHUNK: usize = 512;

/// The labelled images fine-tuning draws from and the images it scores.
pub struct Splits {
    pub train: ImageDataset,
    pub train_labels: Vec<i64>,
    /// The scored images: the test split, or with `[eval.finetune]
    /// scored_on = "validation"` the validation part of the training split.
    pub test: ImageDataset,
    pub test_labels: Vec<i64>,
    pub classes: usize,
    /// Which of the two `test` holds.
    pub scored_on: ScoredOn,
}

impl Splits {
    /// The whole training split (`[data] train_images` is for pre-training)
    /// and the test split (at most `[eval] test_images`) of `dir`; with
    /// `[eval.finetune] scored_on = "validation"`, the training split less
    /// its validation part (`[eval] validation_fraction`, stratified, drawn
    /// with `[eval] split_seed`) and that part (at most `[eval]
    /// test_images`), the test split unread. An unlabelled folder is an
    /// error naming it.
    pub fn load(cfg: &VisionRunConfig, dir: &Path) -> Result<Self> {
        let mut all = cfg.clone();
        all.data.train_images = None;
        let loaded = load_data(&all, dir, &mut selfsup_core::trainer::Silent)?;
        let no_labels = |what: &str, d: &Path| {
            Error::Config(format!(
                "{}: fine-tuning needs labels and this {what} has none (images directly in the \
                 folder); give a folder with one sub-folder of images per class, and its test \
                 folder as [data] test_path",
                d.display()
            ))
        };
        let train_labels = loaded
            .train
            .labels
            .clone()
            .ok_or_else(|| no_labels("training folder", dir))?;
        let classes = loaded.train.classes.len().max(1);
        let scored_on = cfg.eval.finetune.scored_on;
        if scored_on == ScoredOn::Validation {
            let part = by_sample(
                &train_labels,
                cfg.eval.validation_fraction,
                cfg.eval.split_seed,
            )?;
            let validation = match eval_caps(cfg).1 {
                Some(k) if k < part.validation.len() => spread(part.validation.len(), k)
                    .into_iter()
                    .map(|i| part.validation[i])
                    .collect(),
                _ => part.validation,
            };
            let pick = |idx: &[usize]| idx.iter().map(|&i| train_labels[i]).collect::<Vec<_>>();
            return Ok(Self {
                train: loaded.train.subset(&part.train),
                train_labels: pick(&part.train),
                test: loaded.train.subset(&validation),
                test_labels: pick(&validation),
                classes,
                scored_on,
            });
        }
        let test = loaded.test.ok_or_else(|| {
            Error::Config(format!(
                "cannot fine-tune: {}",
                loaded.evaluation.trim_start_matches("skipped: ")
            ))
        })?;
        let test = match eval_caps(cfg).1 {
            Some(k) if k < test.len() => test.subset(&spread(test.len(), k)),
            _ => test,
        };
        let test_labels = test
            .labels
            .clone()
            .ok_or_else(|| no_labels("test split", dir))?;
        Ok(Self {
            train: loaded.train,
            train_labels,
            test,
            test_labels,
            classes,
            scored_on,
        })
    }
}

/// What the encoder takes: its channels, the normalisation of the images
/// handed to [`Net::logits`], and whether those are RGB turned into CIE L*
/// first (a colorization encoder on colour images).
#[derive(Clone)]
pub struct Input {
    pub channels: i64,
    pub norm: Normalize,
    lightness: Option<Normalize>,
    mean_patches: bool,
}

impl Input {
    /// The input of `method`'s encoder on `data_channels`-channel images.
    pub fn of(method: &dyn VisionMethod, data_channels: i64) -> Self {
        let enc = method.encoder_input(data_channels);
        let mean_patches = matches!(method.name(), "mae" | "ijepa");
        match enc.preprocess {
            Some(_) => Self {
                channels: enc.channels,
                norm: Normalize {
                    mean: vec![0.0; data_channels.max(0) as usize],
                    std: vec![1.0; data_channels.max(0) as usize],
                },
                lightness: Some(enc.normalize),
                mean_patches,
            },
            None => Self {
                channels: enc.channels,
                norm: enc.normalize,
                lightness: None,
                mean_patches,
            },
        }
    }
}

enum Body {
    Cnn(Box<dyn Encoder>),
    Patches(Box<Vit>),
}

/// An encoder of the run's architecture and a linear head, in one var store.
pub struct Net {
    vs: nn::VarStore,
    body: Body,
    head: nn::Linear,
    input: Input,
}

impl Net {
    /// A freshly initialised network (encoder, then head) on `device`.
    pub fn new(cfg: &VisionRunConfig, input: &Input, classes: i64, device: Device) -> Self {
        let vs = nn::VarStore::new(device);
        let p = vs.root() / "encoder";
        let body = match (cfg.model.vit_spec(), input.mean_patches) {
            (Some(spec), true) => Body::Patches(Box::new(Vit::new(
                &p,
                spec,
                input.channels,
                PosEmbedInit::FixedSinCos,
            ))),
            _ => Body::Cnn(build_encoder(&p, &cfg.model, input.channels)),
        };
        let head = nn::linear(
            vs.root() / "head",
            cfg.model.out_dim(),
            classes,
            nn::LinearConfig::default(),
        );
        Self {
            vs,
            body,
            head,
            input: input.clone(),
        }
    }

    /// Overwrites the encoder with `method`'s (every variable must be there,
    /// with its shape).
    pub fn load_encoder(&mut self, method: &dyn VisionMethod) -> Result<()> {
        let prefix = format!("{}.", method.encoder_prefix());
        let src: HashMap<String, Tensor> = method
            .var_store()
            .variables()
            .into_iter()
            .filter_map(|(k, v)| k.strip_prefix(&prefix).map(|r| (r.to_string(), v)))
            .collect();
        tch::no_grad(|| {
            for (name, mut dst) in self.vs.variables() {
                let Some(rest) = name.strip_prefix("encoder.") else {
                    continue;
                };
                match src.get(rest) {
                    Some(s) if s.size() == dst.size() => {
                        dst.copy_(&s.to_device(dst.device()));
                    }
                    other => {
                        return Err(Error::Config(format!(
                            "the checkpoint's encoder ({prefix}*) has no variable {rest} of shape \
                             {:?} (found {:?})",
                            dst.size(),
                            other.map(|t| t.size())
                        )))
                    }
                }
            }
            Ok(())
        })
    }

    /// Class logits of images normalised with [`Input::norm`].
    pub fn logits(&self, xs: &Tensor, train: bool) -> Tensor {
        let xs = xs.to_device(self.vs.device());
        let xs = match &self.input.lightness {
            Some(n) => {
                (rgb_to_lab(&xs).narrow(1, 0, 1) / 100.0 - f64::from(n.mean[0]))
                    / f64::from(n.std[0])
            }
            None => xs,
        };
        let features = match &self.body {
            Body::Cnn(e) => e.forward_t(&xs, train),
            Body::Patches(v) => v.mean_patch_features(&xs),
        };
        features.apply(&self.head)
    }

    /// Test top-1 over `data` with batch norm in inference mode.
    pub fn accuracy(&self, data: &ImageDataset, labels: &[i64]) -> f64 {
        let mut correct = 0i64;
        for start in (0..data.len()).step_by(TEST_CHUNK) {
            let idx: Vec<usize> = (start..(start + TEST_CHUNK).min(data.len())).collect();
            let y = Tensor::from_slice(&labels[start..start + idx.len()]);
            let pred = tch::no_grad(|| self.logits(&data.to_tensor(&idx, &self.input.norm), false))
                .argmax(1, false)
                .to_device(Device::Cpu);
            correct += pred.eq_tensor(&y).sum(Kind::Int64).int64_value(&[]);
        }
        correct as f64 / data.len().max(1) as f64
    }
}

/// The light augmentation of [`FinetuneConfig::augment`]: crop 64-100 % of
/// the area, flip with probability 0.5, nothing else.
pub fn light_augmentation() -> AugmentConfig {
    AugmentConfig {
        views: 1,
        crop: RandomResizedCrop {
            scale: (0.64, 1.0),
            ..RandomResizedCrop::default()
        },
        flip: HorizontalFlip { p: 0.5 },
        color_jitter: ColorJitter {
            p: 0.0,
            ..ColorJitter::default()
        },
        grayscale: RandomGrayscale { p: 0.0 },
        blur: GaussianBlur {
            p: 0.0,
            ..GaussianBlur::default()
        },
        solarize: Solarize {
            p: 0.0,
            ..Solarize::default()
        },
        local_crops: Default::default(),
    }
}

/// What one model was trained on and how it did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ArmRun {
    /// Top-1 on the scored images (test split, or the validation part).
    pub top1: f64,
    /// Mean loss of the first and of the last tenth of the steps.
    pub first_loss: f64,
    pub last_loss: f64,
    /// Optimisation steps and images (with repeats) trained on.
    pub steps: usize,
    pub images_seen: usize,
    /// Distinct images trained on.
    pub distinct_images: usize,
    /// FNV-1a of the sequence of image indices trained on (both arms of a
    /// seed see the same sequence, so the same digest).
    pub batches_digest: String,
}

/// One training run of `net` on `subset` of `data`: `ft.steps` steps of
/// `min(batch_size, |subset|)` images, the subset cycled in an order (and
/// augmented) by `seed`; `top1` is left at 0 for the caller to score.
pub fn train(
    net: &Net,
    data: &ImageDataset,
    labels: &[i64],
    subset: &[usize],
    ft: &FinetuneConfig,
    seed: u64,
) -> Result<ArmRun> {
    if subset.len() < 2 {
        return Err(Error::Config(format!(
            "{}: fine-tuning needs at least 2 labelled images, the fraction gives {}",
            data.name,
            subset.len()
        )));
    }
    let side = data.height;
    let aug = match ft.augment {
        true => Some(
            Augmenter::new(
                light_augmentation(),
                data.channels,
                side,
                net.input.norm.clone(),
            )?
            .with_input_size(data.height, data.width),
        ),
        false => None,
    };
    let batch = ft.batch_size.min(subset.len());
    let steps_per_pass = subset.len().div_ceil(batch) as u64;
    let warmup = (ft.schedule.warmup_epochs * steps_per_pass as f64).round() as u64;
    let peak = ft.optimizer.scaled_lr(batch);
    let mut params = Params::of(&net.vs);
    let mut opt = ft.optimizer.build(&params);
    let mut draw = SubsetOrder::new(subset, data.len(), seed);
    let (mut scratch, mut buf) = (Scratch::default(), Vec::new());
    let mut trace = LossTrace::new(ft.steps);
    for step in 0..ft.steps {
        let idx = draw.next_batch(batch);
        let xs = match &aug {
            Some(a) => {
                let len = a.view_len();
                buf.resize(len * batch, 0.0);
                for (k, &i) in idx.iter().enumerate() {
                    let out = &mut buf[k * len..(k + 1) * len];
                    a.augment_into(
                        data.image(i),
                        data.height,
                        data.width,
                        draw.rng(),
                        out,
                        &mut scratch,
                    );
                }
                let c = data.channels as i64;
                Tensor::from_slice(&buf).view([batch as i64, c, side as i64, side as i64])
            }
            None => data.to_tensor(&idx, &net.input.norm),
        };
        let y: Vec<i64> = idx.iter().map(|&i| labels[i]).collect();
        let y = Tensor::from_slice(&y).to_device(net.vs.device());
        params.zero_grad();
        let loss = net.logits(&xs, true).cross_entropy_for_logits(&y);
        loss.backward();
        let lr = ft.schedule.lr(peak, step as u64, ft.steps as u64, warmup);
        opt.step(&params, lr);
        trace.record(step, loss.double_value(&[]))?;
    }
    Ok(ArmRun {
        top1: 0.0,
        first_loss: trace.first,
        last_loss: trace.last,
        steps: ft.steps,
        images_seen: ft.steps * batch,
        distinct_images: draw.distinct(),
        batches_digest: draw.digest(),
    })
}

impl Scored for ArmRun {
    fn score(&self) -> f64 {
        self.top1
    }

    fn describe(&self) -> String {
        format!(
            "final loss {:.3}, top-1 {:.2}%",
            self.last_loss,
            self.top1 * 100.0
        )
    }
}

/// Both arms at one fraction (`images` in finetune.json: each seed's
/// labelled images).
pub type Row = protocol::Row<ArmRun>;

/// Vision's side of the protocol: a trial's arm is a [`Net`] of the run's
/// architecture (the pre-trained one starting from `method`'s encoder)
/// trained by [`train`] and scored on the test split.
struct Images<'a> {
    cfg: &'a VisionRunConfig,
    method: &'a dyn VisionMethod,
    splits: &'a Splits,
    input: Input,
    device: Device,
}

impl FineTune for Images<'_> {
    type Run = ArmRun;

    fn labels(&self) -> &[i64] {
        &self.splits.train_labels
    }

    fn scored_on(&self) -> ScoredOn {
        self.splits.scored_on
    }

    /// The weights of both arms from `trial.init_seed` (the head is the same
    /// draw), the batches from `trial.draw_seed ^ 1`.
    fn run(&self, arm: Arm, trial: &Trial<'_>) -> Result<ArmRun> {
        seed_random_weights(trial.init_seed);
        let mut net = Net::new(
            self.cfg,
            &self.input,
            self.splits.classes as i64,
            self.device,
        );
        if arm == Arm::Pretrained {
            net.load_encoder(self.method)?;
        }
        let mut run = train(
            &net,
            &self.splits.train,
            &self.splits.train_labels,
            trial.labelled,
            &self.cfg.eval.finetune,
            trial.draw_seed ^ 1,
        )?;
        run.top1 = net.accuracy(&self.splits.test, &self.splits.test_labels);
        Ok(run)
    }
}

/// Every fraction x seed x arm of `cfg.eval.finetune` (core's loop, seeded
/// by `[trainer] seed`), the pre-trained arm starting from `method`'s
/// encoder; `progress` hears one line per model.
pub fn finetune(
    cfg: &VisionRunConfig,
    method: &dyn VisionMethod,
    splits: &Splits,
    device: Device,
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<Row>> {
    let model = Images {
        cfg,
        method,
        splits,
        input: Input::of(method, splits.train.channels as i64),
        device,
    };
    protocol::finetune(
        &model,
        &cfg.eval.finetune,
        cfg.trainer.seed,
        "images",
        progress,
    )
}

#[cfg(test)]
pub(crate) mod tests;
