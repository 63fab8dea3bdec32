//! `selfsup eval finetune` on a wav2vec 2.0 checkpoint: core's
//! label-efficiency protocol ([`selfsup_core::eval::finetune`]) on one
//! `[[eval.tasks]]` probe task (`[eval] finetune_task`, else the first: the
//! spoken letters of the presets).
//!
//! The task's clips are split exactly as its linear probe splits them
//! ([`crate::eval::plan`]): whole training speakers set aside as the
//! validation part (`[eval] validation_fraction`, `split_seed`), the other
//! training speakers' clips are what the fractions are drawn from, and the
//! test speakers (kept out of pre-training) are scored once per model. For
//! every fraction and seed, two networks train end to end on the same clips
//! in the same order with the same crops, steps, optimiser and schedule: the
//! checkpoint's encoder (conv feature encoder, feature projection,
//! transformer) plus a linear head on the **last transformer layer's hidden
//! states, mean-pooled over the valid frames** (the probe's pooling; the
//! probe's chosen layer is not used: fine-tuning moves every layer), and the
//! same network freshly initialised. Both arms get the same head
//! initialisation and the same dropout draws (libtorch's generator is seeded
//! identically before each). The quantizer and the pre-training
//! projections are not part of the network.
//!
//! A training example is the clip (at most `[eval] max_seconds`), or with
//! `[eval.finetune] augment` a random window of 85-100 % of it; every
//! example is normalised to zero mean and unit variance and a batch is
//! zero-padded to its longest, as pre-training pads its crops. Validation
//! and test clips are scored whole (at most `[eval] max_seconds`), one at a
//! time, as the probe reads them; with `[eval.finetune] scored_on =
//! "validation"` the test clips are never scored (the rows' figure is the
//! validation speakers'). The rows go to `finetune.json` beside the
//! checkpoint.
use crate::batch::collate;
use crate::config::AudioRunConfig;
use crate::dataset::{LoadReport, RECEPTIVE_FIELD};
use crate::eval::{plan, ProbeTask, ValidationSplit};
use crate::methods::Wav2Vec2Method;
use crate::model::{Wav2Vec2, Wav2Vec2Config};
use crate::normalize::zero_mean_unit_var;
use crate::pretrain::probe_task;
use crate::resample::TARGET_RATE;
use rand::Rng;
use selfsup_core::eval::finetune::{
    self as protocol, Arm, FineTune, FinetuneConfig, LossTrace, Scored, ScoredOn, SubsetOrder,
    Trial,
};
use selfsup_core::method::Method;
use selfsup_core::optim::Params;
use selfsup_core::run::seed_random_weights;
use selfsup_core::{Error, Result};
use serde::Serialize;
use std::collections::HashMap;
use std::path::Path;
use tch::{nn, Device, Kind, Tensor};

/// The evaluation's name in `selfsup eval`.
pub const FINETUNE: &str = "finetune";

/// The table `selfsup eval finetune` writes beside the checkpoint.
pub const FINETUNE_FILE: &str = "finetune.json";

/// The shortest share of a clip an augmented training window keeps.
pub const MIN_WINDOW: f64 = 0.85;

/// The layer the head reads, as `finetune.json` names it.
pub const HEAD_INPUT: &str = "last transformer layer, mean over valid frames";

/// One task's clips as fine-tuning uses them: the training clips (of the
/// speakers other than the validation ones; capped, not normalised), the
/// validation and test clips (capped and normalised), their classes.
#[derive(Debug, Clone)]
pub struct TaskClips {
    pub name: String,
    /// Classes of the task (the labels of its training clips).
    pub classes: usize,
    pub train: Vec<Vec<f32>>,
    pub train_labels: Vec<i64>,
    pub validation: Vec<Vec<f32>>,
    pub validation_labels: Vec<i64>,
    pub test: Vec<Vec<f32>>,
    pub test_labels: Vec<i64>,
    /// The training folders whose clips are the validation part.
    pub validation_speakers: Vec<String>,
    /// Test clips left out: no training clip has their label.
    pub unseen_label_clips: usize,
}

/// The first `max_samples` of `x`.
fn capped(x: &[f32], max_samples: usize) -> Vec<f32> {
    x[..x.len().min(max_samples)].to_vec()
}

/// `capped`, normalised.
fn scored_clip(x: &[f32], max_samples: usize) -> Vec<f32> {
    let mut c = capped(x, max_samples);
    zero_mean_unit_var(&mut c);
    c
}

impl TaskClips {
    /// Splits `task` as its probe does ([`plan`]); every clip at most
    /// `max_samples` long.
    pub fn new(task: &ProbeTask, split: &ValidationSplit, max_samples: usize) -> Result<Self> {
        if max_samples < RECEPTIVE_FIELD {
            return Err(Error::Config(format!(
                "[eval] max_seconds gives {max_samples} samples per clip, fewer than one frame's \
                 {RECEPTIVE_FIELD}: give at least 0.025 s"
            )));
        }
        let p = plan(task, split)?;
        let ytr = Vec::<i64>::try_from(&p.labels.train)?;
        let yte = Vec::<i64>::try_from(&p.labels.test)?;
        let pick = |rows: &[usize]| -> (Vec<&[f32]>, Vec<i64>) {
            rows.iter()
                .filter_map(|&i| Some((task.train.get(i)?.samples.as_slice(), *ytr.get(i)?)))
                .unzip()
        };
        let (train, train_labels) = pick(&p.fit);
        let (validation, validation_labels) = pick(&p.validation);
        let test: Vec<Vec<f32>> = p
            .test
            .iter()
            .filter_map(|&i| task.test.get(i))
            .map(|c| scored_clip(&c.samples, max_samples))
            .collect();
        if train.len() < 2 || test.len() != yte.len() {
            return Err(Error::Data(format!(
                "fine-tuning task {}: {} training clip(s) outside the validation speakers and {} \
                 test clip(s) ({} labels); give at least 2 training clips",
                task.name,
                train.len(),
                test.len(),
                yte.len()
            )));
        }
        Ok(Self {
            name: task.name.clone(),
            classes: p.classes,
            train: train.iter().map(|x| capped(x, max_samples)).collect(),
            train_labels,
            validation: validation
                .iter()
                .map(|x| scored_clip(x, max_samples))
                .collect(),
            validation_labels,
            test,
            test_labels: yte,
            validation_speakers: p.validation_speakers,
            unseen_label_clips: task.test.len() - p.test.len(),
        })
    }
}

/// A wav2vec 2.0 of the run's shape and a linear head, in one var store
/// (`wav2vec2.*` as the checkpoint names it, `head.*`).
pub struct Net {
    vs: nn::VarStore,
    model: Wav2Vec2,
    head: nn::Linear,
}

/// The variables fine-tuning trains: the encoder's and the head's (not the
/// quantizer, the pre-training projections or the mask embedding).
fn trained(name: &str) -> bool {
    [
        "wav2vec2.feature_extractor.",
        "wav2vec2.feature_projection.",
        "wav2vec2.encoder.",
        "head.",
    ]
    .iter()
    .any(|p| name.starts_with(p))
}

impl Net {
    /// Freshly initialised from libtorch's generator as it stands (encoder,
    /// then head).
    pub fn new(cfg: &Wav2Vec2Config, classes: i64, device: Device) -> Self {
        let vs = nn::VarStore::new(device);
        let model = Wav2Vec2::new(&vs.root(), cfg);
        let head = nn::linear(
            vs.root() / "head",
            cfg.hidden_size,
            classes,
            Default::default(),
        );
        Self { vs, model, head }
    }

    /// Overwrites the encoder (every `wav2vec2.*` variable) with `method`'s;
    /// each must be there with its shape.
    pub fn load_encoder(&mut self, method: &Wav2Vec2Method) -> Result<()> {
        let src: HashMap<String, Tensor> = method.var_store().variables().into_iter().collect();
        tch::no_grad(|| {
            for (name, mut dst) in self.vs.variables() {
                if !name.starts_with("wav2vec2.") {
                    continue;
                }
                match src.get(&name) {
                    Some(s) if s.size() == dst.size() => dst.copy_(&s.to_device(dst.device())),
                    other => {
                        return Err(Error::Config(format!(
                            "the checkpoint has no variable {name} of shape {:?} (found {:?}): \
                             is its [model] the config's?",
                            dst.size(),
                            other.map(|t| t.size())
                        )))
                    }
                }
            }
            Ok(())
        })
    }

    /// The trained variables, by name.
    fn params(&self) -> Params {
        let mut vars: Vec<(String, Tensor)> = self
            .vs
            .variables()
            .into_iter()
            .filter(|(n, _)| trained(n))
            .collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let (names, tensors) = vars.into_iter().unzip();
        Params { names, tensors }
    }

    /// Class logits `[B, classes]` of `[B, L]` normalised waveforms with
    /// `lengths` valid samples: the last hidden state mean-pooled over the
    /// valid frames, through the head.
    pub fn logits(&self, wave: &Tensor, lengths: &Tensor, train: bool) -> Result<Tensor> {
        let device = self.vs.device();
        let (wave, lengths) = (wave.to_device(device), lengths.to_device(device));
        let out = self.model.forward_t(&wave, &lengths, None, train);
        let last = out
            .hidden_states
            .last()
            .ok_or_else(|| Error::Eval("wav2vec2 returned no hidden state".into()))?;
        let m = out.valid.to_kind(Kind::Float).unsqueeze(-1);
        let pooled = (last.to_kind(Kind::Float) * &m).sum_dim_intlist(1, false, Kind::Float)
            / m.sum_dim_intlist(1, false, Kind::Float).clamp_min(1.0);
        Ok(pooled.apply(&self.head))
    }

    /// Accuracy on normalised `clips` (inference mode, one clip at a time,
    /// no padding); 0 for none.
    pub fn accuracy(&self, clips: &[Vec<f32>], labels: &[i64]) -> Result<f64> {
        let mut correct = 0usize;
        for (c, &y) in clips.iter().zip(labels) {
            let (wave, lengths) = collate(std::slice::from_ref(c));
            let pred = tch::no_grad(|| self.logits(&wave, &lengths, false))?
                .argmax(1, false)
                .int64_value(&[0]);
            correct += usize::from(pred == y);
        }
        Ok(correct as f64 / clips.len().min(labels.len()).max(1) as f64)
    }
}

/// A training example of `clip` (at most `max` samples): the clip, or with
/// `augment` a window of 85-100 % of it (never under one frame) at a random
/// offset; normalised.
pub fn example(clip: &[f32], max: usize, augment: bool, rng: &mut impl Rng) -> Vec<f32> {
    let len = clip.len().min(max);
    let (start, width) = if augment {
        let share: f64 = rng.gen_range(MIN_WINDOW..=1.0);
        let w = ((len as f64 * share).round() as usize)
            .max(RECEPTIVE_FIELD)
            .min(len);
        (rng.gen_range(0..=len - w), w)
    } else {
        (0, len)
    };
    let mut x = clip[start..start + width].to_vec();
    zero_mean_unit_var(&mut x);
    x
}

/// What one model was trained on and how it did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClipRun {
    /// Accuracy on the test speakers' clips (`None` with `[eval.finetune]
    /// scored_on = "validation"`: the test clips are not scored).
    pub test_accuracy: Option<f64>,
    /// Accuracy on the validation speakers' clips (never trained on).
    pub validation_accuracy: f64,
    /// Mean loss of the first and of the last tenth of the steps.
    pub first_loss: f64,
    pub last_loss: f64,
    /// Optimisation steps, and clips (with repeats) trained on.
    pub steps: usize,
    pub clips_seen: usize,
    /// Distinct labelled clips trained on.
    pub distinct_clips: usize,
    /// Seconds of audio trained on (padding not counted).
    pub audio_seconds: f64,
    /// FNV-1a of the sequence of clip indices and window offsets and widths
    /// trained on (both arms of a seed see the same sequence, so the same
    /// digest).
    pub batches_digest: String,
}

impl Scored for ClipRun {
    /// The test accuracy, or the validation accuracy when the test clips
    /// were not scored.
    fn score(&self) -> f64 {
        self.test_accuracy.unwrap_or(self.validation_accuracy)
    }

    fn describe(&self) -> String {
        let test = self
            .test_accuracy
            .map(|t| format!(", test {:.2}%", t * 100.0))
            .unwrap_or_default();
        format!(
            "final loss {:.3}, validation {:.2}%{test}",
            self.last_loss,
            self.validation_accuracy * 100.0,
        )
    }
}

/// One training run of `net` on the `subset` rows of `clips` (`labels`
/// one class per clip): `ft.steps` steps of `min(batch_size, |subset|)`
/// examples of at most `max_samples`, the subset cycled in an order (and
/// windowed) by `seed`; the accuracies are left for the caller to score.
pub fn train(
    net: &Net,
    clips: &[Vec<f32>],
    labels: &[i64],
    subset: &[usize],
    ft: &FinetuneConfig,
    max_samples: usize,
    seed: u64,
) -> Result<ClipRun> {
    if subset.len() < 2 {
        return Err(Error::Data(format!(
            "fine-tuning needs at least 2 labelled clips, the fraction gives {}",
            subset.len()
        )));
    }
    if labels.len() != clips.len() {
        return Err(Error::Data(format!(
            "{} labels for {} clips: give one label per clip",
            labels.len(),
            clips.len()
        )));
    }
    if let Some(bad) = subset.iter().find(|&&i| i >= clips.len()) {
        return Err(Error::Data(format!(
            "labelled clip {bad} is not one of the {} training clips",
            clips.len()
        )));
    }
    let device = net.vs.device();
    let batch = ft.batch_size.min(subset.len());
    let steps_per_pass = subset.len().div_ceil(batch) as u64;
    let warmup = (ft.schedule.warmup_epochs * steps_per_pass as f64).round() as u64;
    let peak = ft.optimizer.scaled_lr(batch);
    let mut params = net.params();
    let mut opt = ft.optimizer.build(&params);
    let mut draw = SubsetOrder::new(subset, clips.len(), seed);
    let mut trace = LossTrace::new(ft.steps);
    let mut samples = 0usize;
    for step in 0..ft.steps {
        let mut xs = Vec::with_capacity(batch);
        let mut ys = Vec::with_capacity(batch);
        while xs.len() < batch {
            let Some(i) = draw.next_index() else {
                break;
            };
            let x = example(&clips[i], max_samples, ft.augment, draw.rng());
            draw.fold(x.len() as u64);
            samples += x.len();
            xs.push(x);
            ys.push(labels[i]);
        }
        let (wave, lengths) = collate(&xs);
        let y = Tensor::from_slice(&ys).to_device(device);
        params.zero_grad();
        let loss = net
            .logits(&wave, &lengths, true)?
            .cross_entropy_for_logits(&y);
        loss.backward();
        let lr = ft.schedule.lr(peak, step as u64, ft.steps as u64, warmup);
        opt.step(&params, lr);
        trace.record(step, loss.double_value(&[]))?;
    }
    Ok(ClipRun {
        test_accuracy: None,
        validation_accuracy: 0.0,
        first_loss: trace.first,
        last_loss: trace.last,
        steps: ft.steps,
        clips_seen: ft.steps * batch,
        distinct_clips: draw.distinct(),
        audio_seconds: samples as f64 / TARGET_RATE as f64,
        batches_digest: draw.digest(),
    })
}

/// Audio's side of the protocol: a trial's arm is a [`Net`] of the
/// checkpoint's shape (the pre-trained one starting from `method`'s
/// encoder) trained by [`train`] and scored on the validation and test
/// speakers.
pub struct Speakers<'a> {
    pub model: &'a Wav2Vec2Config,
    pub method: &'a Wav2Vec2Method,
    pub clips: &'a TaskClips,
    pub settings: &'a FinetuneConfig,
    pub max_samples: usize,
    pub device: Device,
}

impl FineTune for Speakers<'_> {
    type Run = ClipRun;

    fn labels(&self) -> &[i64] {
        &self.clips.train_labels
    }

    /// Weights of both arms from `trial.init_seed` (the same head, the same
    /// dropout draws), clip order and windows from `trial.draw_seed ^ 1`.
    fn run(&self, arm: Arm, trial: &Trial<'_>) -> Result<ClipRun> {
        let c = self.clips;
        seed_random_weights(trial.init_seed);
        let mut net = Net::new(self.model, c.classes as i64, self.device);
        if arm == Arm::Pretrained {
            net.load_encoder(self.method)?;
        }
        let mut run = train(
            &net,
            &c.train,
            &c.train_labels,
            trial.labelled,
            self.settings,
            self.max_samples,
            trial.draw_seed ^ 1,
        )?;
        run.validation_accuracy = net.accuracy(&c.validation, &c.validation_labels)?;
        if self.settings.scored_on == ScoredOn::Test {
            run.test_accuracy = Some(net.accuracy(&c.test, &c.test_labels)?);
        }
        Ok(run)
    }

    /// `[eval.finetune] scored_on`: the validation speakers are always held
    /// out, so both are offered.
    fn scored_on(&self) -> ScoredOn {
        self.settings.scored_on
    }
}

/// Both arms at one fraction (`clips` in finetune.json: each seed's
/// labelled clips).
pub type Row = protocol::Row<ClipRun>;

/// Every fraction x seed x arm of `settings` on `clips` (core's loop,
/// seeded by `seed`), the pre-trained arm starting from `method`'s encoder;
/// `progress` hears one line per model.
pub fn finetune(
    method: &Wav2Vec2Method,
    clips: &TaskClips,
    settings: &FinetuneConfig,
    max_samples: usize,
    seed: u64,
    device: Device,
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<Row>> {
    let model = Speakers {
        model: &method.model.cfg,
        method,
        clips,
        settings,
        max_samples,
        device,
    };
    protocol::finetune(&model, settings, seed, "clips", progress)
}

/// `selfsup eval finetune` on an audio checkpoint (`method`, restored from
/// `checkpoint` with its config `cfg`): reads the task's clips under
/// `root`, fine-tunes, writes `finetune.json` beside the checkpoint and
/// returns the lines to print (progress goes to stderr as each model
/// finishes).
pub fn report(
    checkpoint: &Path,
    cfg: &AudioRunConfig,
    method: &Wav2Vec2Method,
    root: &Path,
    device: Device,
) -> Result<Vec<String>> {
    let task_cfg = match &cfg.eval.finetune_task {
        Some(name) => cfg.eval.tasks.iter().find(|t| &t.name == name),
        None => cfg.eval.tasks.first(),
    }
    .ok_or_else(|| {
        Error::Config(format!(
            "{}: no [[eval.tasks]] to fine-tune on{}: give the config a labelled task (train and \
             test folders of different speakers)",
            checkpoint.display(),
            cfg.eval
                .finetune_task
                .as_ref()
                .map(|n| format!(" named {n:?} ([eval] finetune_task)"))
                .unwrap_or_default()
        ))
    })?;
    let start = std::time::Instant::now();
    let mut load = LoadReport::default();
    let task = probe_task(cfg, task_cfg, root, &mut load)?;
    let split = ValidationSplit {
        fraction: cfg.eval.validation_fraction,
        seed: cfg.eval.split_seed,
    };
    let max_samples = (cfg.eval.max_seconds * TARGET_RATE as f64) as usize;
    let clips = TaskClips::new(&task, &split, max_samples)?;
    drop(task);
    let ft = &cfg.eval.finetune;
    let rows = finetune(
        method,
        &clips,
        ft,
        max_samples,
        cfg.trainer.seed,
        device,
        &mut |l| eprintln!("{l}"),
    )?;
    let seconds = start.elapsed().as_secs_f64();
    let json = serde_json::json!({
        "checkpoint": checkpoint.display().to_string(),
        "method": method.name(),
        "task": clips.name,
        "classes": clips.classes,
        "head_input": HEAD_INPUT,
        "max_seconds": cfg.eval.max_seconds,
        "train_clips": clips.train.len(),
        "validation_speakers": clips.validation_speakers,
        "validation_clips": clips.validation.len(),
        "test_speakers": task_cfg.test,
        "test_clips": clips.test.len(),
        "unseen_label_test_clips": clips.unseen_label_clips,
        "skipped_files": load.skipped,
        "settings": ft,
        "rows": rows,
        "seconds": seconds,
    });
    let out = selfsup_core::eval::write_beside(checkpoint, FINETUNE_FILE, &json)?;
    let mut lines = vec![format!(
        "wav2vec2 checkpoint {} on {} ({} classes): fine-tuning end to end ({HEAD_INPUT}) vs the \
         same network from scratch, {} steps of up to {} clips; {} training clips, validation \
         speakers {} ({} clips), test speakers {} ({} clips); {} accuracy, mean ± std over seeds",
        checkpoint.display(),
        clips.name,
        clips.classes,
        ft.steps,
        ft.batch_size,
        clips.train.len(),
        clips.validation_speakers.join(", "),
        clips.validation.len(),
        task_cfg.test.join(", "),
        clips.test.len(),
        ft.scored_on.as_str()
    )];
    let validation = |runs: &[ClipRun]| {
        let v: Vec<f64> = runs.iter().map(|r| r.validation_accuracy).collect();
        protocol::mean_std(&v).0 * 100.0
    };
    for row in &rows {
        lines.push(format!(
            "{} (validation: pre-trained {:.1} %, from scratch {:.1} %)",
            row.line(),
            validation(&row.pretrained),
            validation(&row.scratch)
        ));
    }
    if load.skipped > 0 {
        lines.push(format!(
            "{} file(s) of the task skipped (unreadable; [data] skip_bad)",
            load.skipped
        ));
    }
    lines.push(format!("wrote {} ({seconds:.0} s)", out.display()));
    Ok(lines)
}

#[cfg(test)]
#[path = "finetune/tests.rs"]
mod tests;
