//! Contrastive Predictive Coding (van den Oord et al. 2018,
//! arXiv:1807.03748) on the core design: the view is a random crop of the
//! waveform, the target each future latent frame `z_{t+k}` (`k = 1 .. K`,
//! `TargetKind::MaskedContent`: content of the input hidden from the
//! context), the loss InfoNCE with one linear predictor per step.
//!
//! For step `k` the anchors are every valid context `c_t` of the batch whose
//! target `z_{t+k}` is a valid frame of the same crop; the logits of an
//! anchor are the dot products of `W_k c_t` with the targets of *every*
//! anchor of that step: its own (the positive) and, as negatives, the
//! frames `k` ahead of every other context of the batch, from the same
//! utterance (other times) and from the other utterances. The loss is the
//! cross-entropy of picking the positive, averaged over the anchors of each
//! step, then over the `K` steps. [`info_nce_steps`] is that loss;
//! the test checks it against plain loops.
//!
//! A clip shorter than the prediction horizon (fewer than `K + 1` latent
//! frames) has no anchor at step `K`: [`keep_predictable`] refuses it naming
//! the file and the fix, or skips and counts it with `[data] skip_bad`.
use crate::batch::{collate, random_crop};
use crate::dataset::{Clip, LoadReport};
use crate::eval::PooledLayers;
use crate::model::{CpcArch, CpcModel, Wav2Vec2Config};
use crate::resample::TARGET_RATE;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use selfsup_core::autocast::full_precision;
use selfsup_core::method::{Batch, LossOut, Method, StepCtx};
use selfsup_core::target::TargetKind;
use selfsup_core::trainer::{EpochEval, EpochEvaluator};
use selfsup_core::{Error, Result};
use serde::{Deserialize, Serialize};
use tch::{nn, Device, Kind, Tensor};

/// The most anchors (contexts) one batch may hold: each step's logits are
/// `anchors x anchors`.
pub const MAX_ANCHORS: i64 = 8192;

/// The `[method] name = "cpc"` table (the encoder's conv layers and
/// `layer_norm_eps` are `[model]`'s).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CpcMethodConfig {
    /// Width of the GRU context `c_t`.
    pub context_dim: i64,
    /// Stacked GRU layers.
    pub context_layers: i64,
    /// `K`: future frames predicted from each context (the paper: 12).
    pub prediction_steps: i64,
}

impl Default for CpcMethodConfig {
    fn default() -> Self {
        Self {
            context_dim: 128,
            context_layers: 1,
            prediction_steps: 12,
        }
    }
}

impl CpcMethodConfig {
    /// Refuses impossible sizes, naming the key.
    pub fn validate(&self) -> std::result::Result<(), String> {
        for (key, v, max) in [
            ("context_dim", self.context_dim, 2048),
            ("context_layers", self.context_layers, 4),
            ("prediction_steps", self.prediction_steps, 1000),
        ] {
            if !(1..=max).contains(&v) {
                return Err(format!("[method] {key} = {v}: must be in 1..={max}"));
            }
        }
        Ok(())
    }

    /// The network `[model]`'s conv layers and this table describe.
    pub fn arch(&self, model: &Wav2Vec2Config) -> CpcArch {
        CpcArch {
            feat_extract_norm: model.feat_extract_norm,
            conv_bias: model.conv_bias,
            conv_dim: model.conv_dim.clone(),
            conv_kernel: model.conv_kernel.clone(),
            conv_stride: model.conv_stride.clone(),
            layer_norm_eps: model.layer_norm_eps,
            context_dim: self.context_dim,
            context_layers: self.context_layers,
            prediction_steps: self.prediction_steps,
        }
    }

    /// Refuses crops too short for one prediction at the farthest step, and
    /// batches of more than [`MAX_ANCHORS`] frames, naming the keys.
    pub fn check_crops(
        &self,
        model: &Wav2Vec2Config,
        crop_seconds: f64,
        batch: usize,
    ) -> std::result::Result<(), String> {
        let frames = model.frames((crop_seconds * TARGET_RATE as f64) as i64);
        if frames <= self.prediction_steps {
            return Err(format!(
                "[data] crop_seconds = {crop_seconds} gives {frames} latent frames, fewer than \
                 [method] prediction_steps + 1 = {}: lengthen the crops or predict fewer steps",
                self.prediction_steps.saturating_add(1)
            ));
        }
        if (batch as i64).saturating_mul(frames) > MAX_ANCHORS {
            return Err(format!(
                "[run] batch_size = {batch} crops of {frames} frames ([data] crop_seconds = \
                 {crop_seconds}) is more than {MAX_ANCHORS} contexts per batch (CPC's logits are \
                 contexts x contexts per step): lower batch_size or crop_seconds"
            ));
        }
        Ok(())
    }
}

/// The anchors of step `k` in a `[B, T]` batch whose row `b` has
/// `frame_lens[b]` valid frames: flat indices `b * T + t` of the contexts
/// and `b * T + t + k` of their targets, for every `t + k < frame_lens[b]`.
pub fn step_pairs(frame_lens: &[usize], t: usize, k: usize) -> (Vec<i64>, Vec<i64>) {
    let mut anchors = Vec::new();
    let mut targets = Vec::new();
    for (b, &n) in frame_lens.iter().enumerate() {
        for s in 0..n.min(t).saturating_sub(k) {
            anchors.push((b * t + s) as i64);
            targets.push((b * t + s + k) as i64);
        }
    }
    (anchors, targets)
}

/// The InfoNCE loss over `k = 1 .. K`: `z` is `[B, T, C]`, `predictions[k-1]`
/// is `W_k c` (`[B, T, C]`), row `b` has `frame_lens[b]` valid frames.
/// Returns the loss (mean over steps of the mean over anchors) and each
/// step's accuracy (share of anchors whose positive scores highest).
/// Scores are float32 whatever the autocast state. A step with no anchor is
/// an error (clips shorter than the prediction horizon).
pub fn info_nce_steps(
    z: &Tensor,
    predictions: &[Tensor],
    frame_lens: &[usize],
) -> Result<(Tensor, Vec<f64>)> {
    let (b, t) = (z.size()[0], z.size()[1]);
    let device = z.device();
    let flat_z = z.reshape([b * t, -1]);
    let mut losses = Vec::new();
    let mut accs = Vec::new();
    for (i, pred) in predictions.iter().enumerate() {
        let k = i + 1;
        let (anchors, targets) = step_pairs(frame_lens, t as usize, k);
        if anchors.is_empty() {
            return Err(Error::Data(format!(
                "cpc: no context of this batch has a frame {k} step(s) ahead (valid frames per \
                 crop: {frame_lens:?}): clips must give at least prediction_steps + 1 latent frames"
            )));
        }
        let m = anchors.len() as i64;
        let a = Tensor::from_slice(&anchors).to_device(device);
        let tg = Tensor::from_slice(&targets).to_device(device);
        let p = pred.reshape([b * t, -1]).index_select(0, &a);
        let y = flat_z.index_select(0, &tg);
        let (loss, acc) = full_precision(|| {
            let logits = p.to_kind(Kind::Float).matmul(&y.to_kind(Kind::Float).tr());
            let labels = Tensor::arange(m, (Kind::Int64, device));
            let loss = logits.cross_entropy_for_logits(&labels);
            let acc = logits
                .argmax(1, false)
                .eq_tensor(&labels)
                .to_kind(Kind::Float)
                .mean(Kind::Float)
                .double_value(&[]);
            (loss, acc)
        });
        losses.push(loss);
        accs.push(acc);
    }
    if losses.is_empty() {
        return Err(Error::Config("cpc: no prediction step".into()));
    }
    Ok((Tensor::stack(&losses, 0).mean(Kind::Float), accs))
}

/// Refuses (or, with `skip_bad`, skips and counts in `report`) the clips
/// too short for one prediction at the farthest step: fewer than
/// `prediction_steps + 1` latent frames. The error names the file and the fix.
pub fn keep_predictable(
    clips: Vec<Clip>,
    arch: &CpcArch,
    skip_bad: bool,
    report: &mut LoadReport,
) -> Result<Vec<Clip>> {
    let need = arch.prediction_steps.saturating_add(1);
    let mut kept = Vec::with_capacity(clips.len());
    for clip in clips {
        let n = clip.samples.len() as i64;
        let frames = arch.frames(n);
        if frames >= need {
            kept.push(clip);
            continue;
        }
        let min = arch
            .min_samples()
            .map_or("more than an hour of".to_string(), |m| {
                format!(
                    "at least {m} samples ({:.3} s) of",
                    m as f64 / TARGET_RATE as f64
                )
            });
        let why = format!(
            "{}: {n} samples ({:.3} s at 16 kHz) give {frames} latent frame(s), fewer than \
             [method] prediction_steps + 1 = {need} (CPC predicts up to {} frames ahead of a \
             context): give clips of {min} audio, lower prediction_steps, or set [data] \
             skip_bad = true to skip and count such files",
            clip.path.display(),
            n as f64 / TARGET_RATE as f64,
            arch.prediction_steps
        );
        if !skip_bad {
            return Err(Error::Data(why));
        }
        report.skipped += 1;
        report.clips = report.clips.saturating_sub(1);
        report.seconds -= n as f64 / TARGET_RATE as f64;
        if report.skipped_examples.len() < 5 {
            report.skipped_examples.push(why);
        }
    }
    Ok(kept)
}

/// CPC pre-training.
pub struct CpcMethod {
    vs: nn::VarStore,
    pub model: CpcModel,
}

impl CpcMethod {
    /// A freshly initialised network on `device` (weights from libtorch's generator).
    pub fn new(arch: &CpcArch, device: Device) -> Self {
        let vs = nn::VarStore::new(device);
        let model = CpcModel::new(&vs.root(), arch);
        Self { vs, model }
    }

    /// The var store, mutable (loading weights).
    pub fn var_store_mut(&mut self) -> &mut nn::VarStore {
        &mut self.vs
    }

    /// Mean-pooled `z` and `c` for `[B, L]` waveforms (no gradient).
    pub fn pooled_layers(&self, wave: &Tensor, lengths: &Tensor) -> Vec<Tensor> {
        tch::no_grad(|| self.model.pooled_layers(wave, lengths))
    }

    /// The loss and per-step accuracies on one `(waveforms, lengths)` batch.
    pub fn loss(&self, wave: &Tensor, lengths: &Tensor) -> Result<(Tensor, Vec<f64>)> {
        let out = self.model.forward(wave, lengths);
        let preds = self.model.predictions(&out.c);
        info_nce_steps(&out.z, &preds, &out.frame_lens)
    }
}

impl PooledLayers for CpcMethod {
    fn clip_frames(&self, wave: &Tensor) -> Vec<Tensor> {
        let lengths = Tensor::from_slice(&[wave.size().last().copied().unwrap_or(0)])
            .to_device(wave.device());
        let out = tch::no_grad(|| self.model.forward(wave, &lengths));
        let n = out.frame_lens.first().copied().unwrap_or(0) as i64;
        [&out.z, &out.c]
            .iter()
            .map(|h| h.to_kind(Kind::Float).select(0, 0).narrow(0, 0, n))
            .collect()
    }

    fn layer_names(&self) -> Vec<String> {
        vec!["encoder z".into(), "GRU context c".into()]
    }
}

fn full_lengths(xs: &Tensor) -> Tensor {
    Tensor::full([xs.size()[0]], xs.size()[1], (Kind::Int64, xs.device()))
}

impl Method for CpcMethod {
    fn name(&self) -> &'static str {
        "cpc"
    }

    fn target(&self) -> TargetKind {
        TargetKind::MaskedContent
    }

    fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }

    fn step(&mut self, batch: &Batch, _ctx: &StepCtx) -> Result<LossOut> {
        let [wave, lengths] = batch.views.as_slice() else {
            return Err(Error::Config(format!(
                "cpc expects (waveforms, lengths) batches, got {} tensors",
                batch.views.len()
            )));
        };
        let (loss, accs) = self.loss(wave, lengths)?;
        let mean = accs.iter().sum::<f64>() / accs.len().max(1) as f64;
        let terms = vec![
            ("info_nce", loss.double_value(&[])),
            ("cpc_acc", mean),
            ("cpc_acc_first_step", accs.first().copied().unwrap_or(0.0)),
            ("cpc_acc_last_step", accs.last().copied().unwrap_or(0.0)),
        ];
        Ok(LossOut { loss, terms })
    }

    fn embed(&self, xs: &Tensor) -> Tensor {
        let mut layers = self.pooled_layers(xs, &full_lengths(xs));
        layers
            .pop()
            .unwrap_or_else(|| Tensor::zeros([0], (Kind::Float, xs.device())))
    }

    fn project(&self, xs: &Tensor) -> Tensor {
        tch::no_grad(|| {
            let out = self.model.forward(xs, &full_lengths(xs));
            match self.model.predictions(&out.c).first() {
                Some(p) => p.mean_dim(1, false, Kind::Float),
                None => out.c.mean_dim(1, false, Kind::Float),
            }
        })
    }
}

/// The per-epoch evaluator of a CPC run: InfoNCE loss and accuracy on fixed
/// crops of the held-out monitor clips, and the collapse monitors on their
/// mean-pooled contexts under two fixed crops (centred on their common mean).
pub struct CpcEpochEval {
    /// Held-out clips (16 kHz, not normalised).
    pub clips: Vec<Vec<f32>>,
    pub crop: usize,
    pub batch: usize,
    pub device: Device,
}

impl CpcEpochEval {
    fn crops(&self, key: u64) -> Vec<Vec<f32>> {
        self.clips
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let mut rng = ChaCha8Rng::seed_from_u64(key ^ (i as u64).wrapping_mul(0x9E37));
                random_crop(c, self.crop, &mut rng)
            })
            .collect()
    }

    /// The two centred views, and with `with_loss` the mean loss and
    /// accuracy on the first crops.
    fn pass(&self, method: &CpcMethod, with_loss: bool) -> Result<(Tensor, Tensor, Vec<f64>)> {
        let mut views = Vec::new();
        let (mut loss, mut acc, mut n) = (0.0, 0.0, 0.0);
        for key in [0xC9C0u64, 0x5EC1] {
            let mut pooled = Vec::new();
            for chunk in self.crops(key).chunks(self.batch.max(1)) {
                let (wave, lengths) = collate(chunk);
                let (wave, lengths) = (wave.to_device(self.device), lengths.to_device(self.device));
                let mut layers = method.pooled_layers(&wave, &lengths);
                if let Some(c) = layers.pop() {
                    pooled.push(c);
                }
                if with_loss && key == 0xC9C0 {
                    let (l, a) = tch::no_grad(|| method.loss(&wave, &lengths))?;
                    loss += l.double_value(&[]);
                    acc += a.iter().sum::<f64>() / a.len().max(1) as f64;
                    n += 1.0;
                }
            }
            views.push(Tensor::cat(&pooled, 0));
        }
        let mean = Tensor::cat(&views, 0).mean_dim(0, true, Kind::Float);
        let figures = if n > 0.0 {
            vec![loss / n, acc / n]
        } else {
            Vec::new()
        };
        Ok((&views[0] - &mean, &views[1] - &mean, figures))
    }
}

impl EpochEvaluator<CpcMethod> for CpcEpochEval {
    fn evaluate(&mut self, method: &CpcMethod, _epoch: usize) -> Result<EpochEval> {
        if self.clips.len() < 2 {
            return Ok(EpochEval::default());
        }
        let (a, b, figures) = self.pass(method, true)?;
        let metrics = ["val_info_nce", "val_cpc_acc"]
            .iter()
            .zip(&figures)
            .map(|(k, &v)| (k.to_string(), v))
            .collect();
        Ok(EpochEval {
            metrics,
            views: Some((a, b)),
        })
    }

    fn monitor_views(&mut self, method: &CpcMethod) -> Result<Option<(Tensor, Tensor)>> {
        if self.clips.len() < 2 {
            return Ok(None);
        }
        let (a, b, _) = self.pass(method, false)?;
        Ok(Some((a, b)))
    }
}

#[cfg(test)]
#[path = "cpc_tests.rs"]
mod tests;
