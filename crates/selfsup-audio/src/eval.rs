//! Measuring a wav2vec 2.0 encoder.
//!
//! Every epoch ([`AudioEpochEval`]): the collapse monitors on mean-pooled
//! final hidden states of two random crops of held-out clips (centred on
//! their common mean, as the text and graph evaluators do: pooled
//! transformer states share a large common component), and the perplexity
//! of each codebook's hard choices on those clips (a codebook collapsing
//! toward one entry reads 1).
//!
//! The monitor clips are unlabelled clips of the pre-training sources (the
//! probe test folders are kept out of them): no probe label, no test clip
//! is read before the end.
//!
//! At the end ([`probe`]): frozen features per layer (the conv feature
//! encoder's output, the transformer's input, each layer; CPC: `z`, `c`),
//! summarised over time by their mean and standard deviation, the summary
//! the log-mel baseline gets ([`pool_frames`]), and a
//! linear probe (core's) per layer for a labelled task whose test clips
//! come from speakers the probe never saw. The layer is chosen on a
//! validation part of the *training* speakers (`[eval] validation_fraction`
//! of them, whole, drawn with `[eval] split_seed`: core's `by_group`): each
//! layer's probe trains on the other training speakers and is scored there;
//! the best layer's probe is then trained on every training speaker and
//! scored once on the test speakers ([`choose_layer`]). The same encoder
//! with random weights (its own best layer) and the log-mel filterbank
//! baseline go through the same code on the same split.
use crate::batch::{collate, random_crop};
use crate::dataset::Clip;
use crate::logmel::logmel_summary;
use crate::loss::codebook_perplexity;
use crate::methods::Wav2Vec2Method;
use crate::normalize::zero_mean_unit_var;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use selfsup_core::eval::split::by_group;
use selfsup_core::eval::{linear_probe_top1, LinearProbeConfig};
use selfsup_core::trainer::{EpochEval, EpochEvaluator};
use selfsup_core::{Error, Result};
use serde::Serialize;
use std::collections::BTreeMap;
use tch::{Device, Kind, Tensor};

/// The per-epoch evaluator of a pre-training run.
pub struct AudioEpochEval {
    /// Held-out clips (16 kHz, not normalised).
    pub clips: Vec<Vec<f32>>,
    pub crop: usize,
    pub batch: usize,
    pub device: Device,
    /// Per-codebook perplexity of every epoch so far.
    pub perplexity_history: Vec<Vec<f64>>,
}

impl AudioEpochEval {
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
}

impl AudioEpochEval {
    /// Mean-pooled last-layer features of the held-out clips under two fixed
    /// crops, centred on their common mean (the monitors' two views), and
    /// with `with_probs` the quantizer's probabilities on the first crop's
    /// valid frames, per batch (else none).
    fn pass(&self, method: &Wav2Vec2Method, with_probs: bool) -> (Tensor, Tensor, Vec<Tensor>) {
        let mut views = Vec::new();
        let mut probs = Vec::new();
        for key in [0xE7A1u64, 0x5EC0] {
            let crops = self.crops(key);
            let mut pooled = Vec::new();
            for chunk in crops.chunks(self.batch.max(1)) {
                let (wave, lengths) = collate(chunk);
                let (wave, lengths) = (wave.to_device(self.device), lengths.to_device(self.device));
                let out = tch::no_grad(|| method.model.forward_t(&wave, &lengths, None, false));
                let m = out.valid.to_kind(Kind::Float).unsqueeze(-1);
                let last = out.hidden_states.last().expect("the last layer");
                pooled.push(
                    (last.to_kind(Kind::Float) * &m).sum_dim_intlist(1, false, Kind::Float)
                        / m.sum_dim_intlist(1, false, Kind::Float).clamp_min(1.0),
                );
                if with_probs && key == 0xE7A1 {
                    let q = tch::no_grad(|| {
                        method
                            .model
                            .quantizer
                            .forward_t(&out.extract_features, 1.0, false)
                    });
                    let valid = out.valid.view([-1]);
                    probs.push(q.probs.index_select(0, &valid.nonzero().squeeze_dim(1)));
                }
            }
            views.push(Tensor::cat(&pooled, 0));
        }
        let mean = Tensor::cat(&views, 0).mean_dim(0, true, Kind::Float);
        (&views[0] - &mean, &views[1] - &mean, probs)
    }
}

impl EpochEvaluator<Wav2Vec2Method> for AudioEpochEval {
    fn evaluate(&mut self, method: &Wav2Vec2Method, _epoch: usize) -> Result<EpochEval> {
        if self.clips.len() < 2 {
            return Ok(EpochEval::default());
        }
        let (a, b, probs) = self.pass(method, true);
        let ppl = codebook_perplexity(&Tensor::cat(&probs, 0), None);
        let ppl = Vec::<f64>::try_from(ppl.to_kind(Kind::Double).to_device(Device::Cpu))?;
        let mut metrics = vec![(
            "val_codebook_perplexity".to_string(),
            ppl.iter().sum::<f64>(),
        )];
        metrics.push((
            "val_codebook_perplexity_min".to_string(),
            ppl.iter().copied().fold(f64::INFINITY, f64::min),
        ));
        self.perplexity_history.push(ppl);
        Ok(EpochEval {
            metrics,
            views: Some((a, b)),
        })
    }

    fn monitor_views(&mut self, method: &Wav2Vec2Method) -> Result<Option<(Tensor, Tensor)>> {
        if self.clips.len() < 2 {
            return Ok(None);
        }
        let (a, b, _) = self.pass(method, false);
        Ok(Some((a, b)))
    }
}

/// A labelled probe task: train and test clips from disjoint speakers.
pub struct ProbeTask {
    pub name: String,
    pub train: Vec<Clip>,
    /// The speaker of each training clip: the `[[eval.tasks]] train` folder
    /// it was read from (one speaker per folder).
    pub train_speakers: Vec<String>,
    pub test: Vec<Clip>,
}

/// How a task's training clips are divided and what the probe's choices are
/// made on.
#[derive(Debug, Clone)]
pub struct ValidationSplit {
    /// `[eval] validation_fraction`: the share of training speakers set
    /// aside, whole (core's `by_group`).
    pub fraction: f64,
    /// `[eval] split_seed`.
    pub seed: u64,
}

/// One feature family (the encoder's layers, or the log-mel summary): each
/// layer's validation accuracy, the layer chosen on it, and that layer's
/// test accuracy (read once).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerChoice {
    /// Per layer, accuracy on the validation speakers of a probe trained on
    /// the other training speakers.
    pub validation: Vec<f64>,
    /// The layer of highest validation accuracy (the first on a tie).
    pub chosen_layer: usize,
    /// Accuracy on the test speakers of the chosen layer's probe, trained
    /// on every training speaker (validation speakers included).
    pub test: f64,
}

/// One probe task's accuracies, in `[0, 1]`.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeRow {
    pub name: String,
    pub classes: usize,
    /// Every training clip (the probe of the test figure trains on them).
    pub train_clips: usize,
    /// The speakers (folders) whose clips are the validation part.
    pub validation_speakers: Vec<String>,
    /// Validation clips scored (those whose label the other training
    /// speakers have).
    pub validation_clips: usize,
    /// Training clips the validation probe trains on (the other speakers).
    pub fit_clips: usize,
    pub test_clips: usize,
    /// Test clips whose label no training clip has (left out).
    pub unseen_label_clips: usize,
    /// Validation clips whose label no other training speaker has (left out).
    pub validation_unseen_label_clips: usize,
    /// The name of each layer of `pretrained` and `random_weights`
    /// (wav2vec 2.0: the feature encoder (conv) output, the transformer's
    /// input, then each transformer layer; CPC: the encoder's `z`, the
    /// GRU context `c`).
    pub layers: Vec<String>,
    pub pretrained: LayerChoice,
    pub random_weights: LayerChoice,
    /// The log-mel filterbank summary (one "layer").
    pub logmel: LayerChoice,
    /// The most frequent training label's share of the test clips.
    pub majority: f64,
    /// The most frequent label of the other speakers' share of the
    /// validation clips.
    pub validation_majority: f64,
}

/// A frozen encoder as the probes read it: the frame features of each
/// layer of one clip (wav2vec 2.0, CPC), which the probes pool over time
/// with [`pool_frames`], the summary the log-mel baseline gets.
pub trait PooledLayers {
    /// Per layer, the `[T, D_layer]` frames of one unpadded `[1, L]`
    /// waveform, float32, no gradient.
    fn clip_frames(&self, wave: &Tensor) -> Vec<Tensor>;
    /// The name of each of those layers, as the report prints it.
    fn layer_names(&self) -> Vec<String>;
}

/// One clip's `[T, D]` frames summarised over time as the log-mel baseline
/// is ([`logmel_summary`]): the mean and the (population) standard
/// deviation of each dimension, `[2 D]`. A mean alone keeps what a clip
/// sounds like on average; the spread keeps how much each feature moves
/// (a consonant's burst against the vowel that follows).
pub fn pool_frames(frames: &Tensor) -> Tensor {
    let f = frames.to_kind(Kind::Float);
    let mean = f.mean_dim(0, false, Kind::Float);
    let std = f.std_dim(0, false, false);
    Tensor::cat(&[mean, std], 0)
}

impl PooledLayers for Wav2Vec2Method {
    fn clip_frames(&self, wave: &Tensor) -> Vec<Tensor> {
        let lengths = Tensor::from_slice(&[wave.size().last().copied().unwrap_or(0)])
            .to_device(wave.device());
        tch::no_grad(|| {
            let out = self.model.forward_t(wave, &lengths, None, false);
            std::iter::once(&out.extract_features)
                .chain(&out.hidden_states)
                .map(|h| h.to_kind(Kind::Float).select(0, 0))
                .collect()
        })
    }

    fn layer_names(&self) -> Vec<String> {
        let n = self.model.cfg.num_hidden_layers.max(0) as usize + 2;
        (0..n).map(layer_name).collect()
    }
}

/// Whole clips, normalised, capped at `max_samples`.
fn prepared(clip: &Clip, max_samples: usize) -> Vec<f32> {
    let mut x = clip.samples[..clip.samples.len().min(max_samples)].to_vec();
    zero_mean_unit_var(&mut x);
    x
}

/// Per-layer pooled features `[N, 2 H]` of `clips` ([`pool_frames`]), one
/// clip at a time (no padding, as transformers advises for group-norm
/// models).
fn layer_features(method: &dyn PooledLayers, clips: &[Vec<f32>], device: Device) -> Vec<Tensor> {
    let mut per_layer: Vec<Vec<Tensor>> = Vec::new();
    for c in clips {
        let wave = Tensor::from_slice(c).view([1, -1]).to_device(device);
        let layers = method.clip_frames(&wave);
        per_layer.resize_with(layers.len(), Vec::new);
        for (acc, l) in per_layer.iter_mut().zip(layers) {
            acc.push(pool_frames(&l).to_device(Device::Cpu));
        }
    }
    per_layer
        .into_iter()
        .map(|v| Tensor::stack(&v, 0))
        .collect()
}

/// The labels of a probe task and its parts, as row indices.
pub struct ProbeLabels {
    /// Class of every training clip `[N_train]`.
    pub train: Tensor,
    /// Rows of the training clips the validation probe trains on.
    pub fit: Tensor,
    /// Rows of the training clips it is scored on.
    pub validation: Tensor,
    /// Class of every test clip `[N_test]`.
    pub test: Tensor,
    pub classes: i64,
}

/// Chooses one of `train` (per layer `[N_train, D]`) on the validation
/// rows (a probe trained on the fit rows), then trains the chosen layer's
/// probe on every training row and scores it on `test` (the same layer of
/// the test clips): the only time the test clips are read.
pub fn choose_layer(
    train: &[Tensor],
    test: &[Tensor],
    labels: &ProbeLabels,
    cfg: &LinearProbeConfig,
) -> Result<LayerChoice> {
    let l = labels;
    let validation = train
        .iter()
        .map(|x| {
            linear_probe_top1(
                &x.index_select(0, &l.fit),
                &l.train.index_select(0, &l.fit),
                &x.index_select(0, &l.validation),
                &l.train.index_select(0, &l.validation),
                l.classes,
                cfg,
            )
        })
        .collect::<Result<Vec<f64>>>()?;
    let chosen_layer = validation
        .iter()
        .enumerate()
        .fold(None, |best: Option<(usize, f64)>, (i, &a)| match best {
            Some((_, b)) if b >= a => best,
            _ => Some((i, a)),
        })
        .map(|(i, _)| i)
        .ok_or_else(|| Error::Eval("probe: no layer to choose from".into()))?;
    let (Some(xtr), Some(xte)) = (train.get(chosen_layer), test.get(chosen_layer)) else {
        return Err(Error::Eval(format!(
            "probe: {} training and {} test feature layers",
            train.len(),
            test.len()
        )));
    };
    let test = linear_probe_top1(xtr, &l.train, xte, &l.test, l.classes, cfg)?;
    Ok(LayerChoice {
        validation,
        chosen_layer,
        test,
    })
}

/// The most frequent label of `from`'s share of `on`.
fn majority_share(from: &Tensor, on: &Tensor, classes: i64) -> f64 {
    let top = from
        .bincount::<Tensor>(None, classes)
        .argmax(0, false)
        .int64_value(&[]);
    on.eq(top)
        .to_kind(Kind::Float)
        .mean(Kind::Float)
        .double_value(&[])
}

/// How a task's clips are used: the classes, the validation speakers and
/// every part as row indices (see [`plan`]).
pub struct ProbePlan {
    pub labels: ProbeLabels,
    /// Number of classes (labels of the training clips).
    pub classes: usize,
    /// Rows of `task.test` scored (those with a training label).
    pub test: Vec<usize>,
    /// Rows of `task.train` the validation probe trains on.
    pub fit: Vec<usize>,
    /// Rows of `task.train` it is scored on.
    pub validation: Vec<usize>,
    /// Validation rows left out: their label is not among the fit rows'.
    pub validation_unseen: usize,
    pub validation_speakers: Vec<String>,
}

/// Classes from the training clips' labels; whole training speakers set
/// aside as `split` says; test clips whose label no training clip has are
/// left out, and so are validation clips whose label the other speakers
/// lack. Errors name the task and say what to give.
pub fn plan(task: &ProbeTask, split: &ValidationSplit) -> Result<ProbePlan> {
    let mut classes = BTreeMap::new();
    for c in &task.train {
        let next = classes.len() as i64;
        classes
            .entry(c.label.clone().unwrap_or_default())
            .or_insert(next);
    }
    let class_of = |c: &Clip| classes.get(c.label.as_deref().unwrap_or_default()).copied();
    let test: Vec<usize> = (0..task.test.len())
        .filter(|&i| class_of(&task.test[i]).is_some())
        .collect();
    if task.train.is_empty() || test.is_empty() || classes.len() < 2 {
        return Err(Error::Eval(format!(
            "probe {}: {} training clips in {} classes and {} test clips with a training label; need two classes and a test clip",
            task.name,
            task.train.len(),
            classes.len(),
            test.len()
        )));
    }
    if task.train_speakers.len() != task.train.len() {
        return Err(Error::Eval(format!(
            "probe {}: {} training clips but {} speaker names",
            task.name,
            task.train.len(),
            task.train_speakers.len()
        )));
    }
    let ytr: Vec<i64> = task
        .train
        .iter()
        .map(|c| class_of(c).unwrap_or_default())
        .collect();
    let yte: Vec<i64> = test
        .iter()
        .map(|&i| class_of(&task.test[i]).unwrap_or_default())
        .collect();
    let parts =
        by_group(&task.train_speakers, split.fraction, split.seed, "speaker").map_err(|e| {
            Error::Eval(format!(
                "probe {}: the layer is chosen on training speakers kept out of the probe \
                 ([eval] validation_fraction = {}): {e}; give [[eval.tasks]] train at least two \
                 folders of different speakers",
                task.name, split.fraction
            ))
        })?;
    let fit_labels: std::collections::BTreeSet<i64> = parts.train.iter().map(|&i| ytr[i]).collect();
    let validation: Vec<usize> = parts
        .validation
        .iter()
        .copied()
        .filter(|&i| fit_labels.contains(&ytr[i]))
        .collect();
    let validation_speakers = speakers_of(&task.train_speakers, &parts.validation);
    if fit_labels.len() < 2 || validation.is_empty() {
        return Err(Error::Eval(format!(
            "probe {}: the probe trained on the speakers other than the validation ones ({}) \
             sees {} class(es) and {} validation clip(s) have one of them; need two classes and \
             a validation clip (give more training speakers, or change [eval] split_seed)",
            task.name,
            validation_speakers.join(", "),
            fit_labels.len(),
            validation.len()
        )));
    }
    let rows = |v: &[usize]| Tensor::from_slice(&v.iter().map(|&i| i as i64).collect::<Vec<_>>());
    Ok(ProbePlan {
        labels: ProbeLabels {
            train: Tensor::from_slice(&ytr),
            fit: rows(&parts.train),
            validation: rows(&validation),
            test: Tensor::from_slice(&yte),
            classes: classes.len() as i64,
        },
        classes: classes.len(),
        test,
        validation_unseen: parts.validation.len() - validation.len(),
        fit: parts.train,
        validation,
        validation_speakers,
    })
}

/// Probes `trained` and `random` (same architecture) and the log-mel
/// baseline on `task`: every layer on the validation speakers (whole
/// training speakers set aside as `split` says), the layer best there on
/// the test speakers.
pub fn probe(
    task: &ProbeTask,
    trained: &dyn PooledLayers,
    random: &dyn PooledLayers,
    cfg: &LinearProbeConfig,
    split: &ValidationSplit,
    max_samples: usize,
    device: Device,
) -> Result<ProbeRow> {
    let plan = plan(task, split)?;
    let labels = &plan.labels;
    let xtr: Vec<Vec<f32>> = task
        .train
        .iter()
        .map(|c| prepared(c, max_samples))
        .collect();
    let xte: Vec<Vec<f32>> = plan
        .test
        .iter()
        .filter_map(|&i| task.test.get(i))
        .map(|c| prepared(c, max_samples))
        .collect();
    let per_layer = |m: &dyn PooledLayers| -> Result<LayerChoice> {
        choose_layer(
            &layer_features(m, &xtr, device),
            &layer_features(m, &xte, device),
            labels,
            cfg,
        )
    };
    let pretrained = per_layer(trained)?;
    let random_weights = per_layer(random)?;
    let mel = |xs: &[Vec<f32>]| {
        Tensor::stack(&xs.iter().map(|x| logmel_summary(x)).collect::<Vec<_>>(), 0)
    };
    let logmel = choose_layer(&[mel(&xtr)], &[mel(&xte)], labels, cfg)?;
    let k = labels.classes;
    Ok(ProbeRow {
        name: task.name.clone(),
        classes: plan.classes,
        train_clips: task.train.len(),
        validation_speakers: plan.validation_speakers.clone(),
        validation_clips: plan.validation.len(),
        fit_clips: plan.fit.len(),
        test_clips: plan.test.len(),
        unseen_label_clips: task.test.len() - plan.test.len(),
        validation_unseen_label_clips: plan.validation_unseen,
        layers: trained.layer_names(),
        pretrained,
        random_weights,
        logmel,
        majority: majority_share(&labels.train, &labels.test, k),
        validation_majority: majority_share(
            &labels.train.index_select(0, &labels.fit),
            &labels.train.index_select(0, &labels.validation),
            k,
        ),
    })
}

/// The distinct speakers of the rows `rows`, sorted.
fn speakers_of(speakers: &[String], rows: &[usize]) -> Vec<String> {
    let set: std::collections::BTreeSet<&String> =
        rows.iter().filter_map(|&i| speakers.get(i)).collect();
    set.into_iter().cloned().collect()
}

/// The name of probe layer `i` (0: the conv feature encoder, 1: the
/// transformer's input, then each transformer layer).
pub fn layer_name(i: usize) -> String {
    match i {
        0 => "conv feature encoder".to_string(),
        1 => "transformer input".to_string(),
        _ => format!("transformer layer {}", i - 1),
    }
}

#[cfg(test)]
#[path = "eval/tests.rs"]
mod tests;
