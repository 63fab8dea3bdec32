//! Measuring a wav2vec 2.0 encoder.
//!
//! Every epoch ([`AudioEpochEval`]): the collapse monitors on mean-pooled
//! final hidden states of two random crops of held-out clips (centred on
//! their common mean, as the text and graph evaluators do: pooled
//! transformer states share a large common component), and the perplexity
//! of each codebook's hard choices on those clips (a codebook collapsing
//! toward one entry reads 1).
//!
//! At the end ([`probe`]): frozen features mean-pooled per layer (the conv
//! feature encoder's output, the transformer's input, each layer), a linear
//! probe (core's) per layer for a labelled task whose test clips come from
//! speakers the probe never saw, beside the same encoder with random weights
//! and the log-mel filterbank baseline, all through the same probe code.
use crate::batch::{collate, random_crop};
use crate::dataset::Clip;
use crate::logmel::logmel_summary;
use crate::loss::codebook_perplexity;
use crate::methods::Wav2Vec2Method;
use crate::normalize::zero_mean_unit_var;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
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
    pub test: Vec<Clip>,
}

/// One probe task's accuracies, in `[0, 1]`.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeRow {
    pub name: String,
    pub classes: usize,
    pub train_clips: usize,
    pub test_clips: usize,
    /// Test clips whose label no training clip has (left out).
    pub unseen_label_clips: usize,
    /// Per layer: the feature encoder (conv) output, the transformer's
    /// input (after the positional conv), then each transformer layer.
    pub pretrained: Vec<f64>,
    pub random_weights: Vec<f64>,
    pub logmel: f64,
    /// The most frequent training label's share of the test clips.
    pub majority: f64,
}

/// Whole clips, normalised, capped at `max_samples`.
fn prepared(clip: &Clip, max_samples: usize) -> Vec<f32> {
    let mut x = clip.samples[..clip.samples.len().min(max_samples)].to_vec();
    zero_mean_unit_var(&mut x);
    x
}

/// Per-layer pooled features `[N, H]` of `clips`, one clip at a time (no
/// padding, as transformers advises for group-norm models).
fn layer_features(method: &Wav2Vec2Method, clips: &[Vec<f32>], device: Device) -> Vec<Tensor> {
    let mut per_layer: Vec<Vec<Tensor>> = Vec::new();
    for c in clips {
        let (wave, lengths) = collate(std::slice::from_ref(c));
        let layers = method.pooled_layers(&wave.to_device(device), &lengths.to_device(device));
        per_layer.resize_with(layers.len(), Vec::new);
        for (acc, l) in per_layer.iter_mut().zip(layers) {
            acc.push(l.to_device(Device::Cpu));
        }
    }
    per_layer.into_iter().map(|v| Tensor::cat(&v, 0)).collect()
}

/// Probes `trained` and `random` (same architecture) and the log-mel
/// baseline on `task`.
pub fn probe(
    task: &ProbeTask,
    trained: &Wav2Vec2Method,
    random: &Wav2Vec2Method,
    cfg: &LinearProbeConfig,
    max_samples: usize,
    device: Device,
) -> Result<ProbeRow> {
    let mut classes = BTreeMap::new();
    for c in &task.train {
        let next = classes.len() as i64;
        classes
            .entry(c.label.clone().unwrap_or_default())
            .or_insert(next);
    }
    let test: Vec<&Clip> = task
        .test
        .iter()
        .filter(|c| classes.contains_key(c.label.as_deref().unwrap_or_default()))
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
    let label = |c: &Clip| classes[c.label.as_deref().unwrap_or_default()];
    let ytr = Tensor::from_slice(&task.train.iter().map(label).collect::<Vec<i64>>());
    let yte = Tensor::from_slice(&test.iter().map(|c| label(c)).collect::<Vec<i64>>());
    let k = classes.len() as i64;
    let xtr: Vec<Vec<f32>> = task
        .train
        .iter()
        .map(|c| prepared(c, max_samples))
        .collect();
    let xte: Vec<Vec<f32>> = test.iter().map(|c| prepared(c, max_samples)).collect();
    let score = |tr: &Tensor, te: &Tensor| linear_probe_top1(tr, &ytr, te, &yte, k, cfg);
    let per_layer = |m: &Wav2Vec2Method| -> Result<Vec<f64>> {
        let ftr = layer_features(m, &xtr, device);
        let fte = layer_features(m, &xte, device);
        ftr.iter().zip(&fte).map(|(a, b)| score(a, b)).collect()
    };
    let pretrained = per_layer(trained)?;
    let random_weights = per_layer(random)?;
    let mel = |xs: &[Vec<f32>]| {
        Tensor::stack(&xs.iter().map(|x| logmel_summary(x)).collect::<Vec<_>>(), 0)
    };
    let logmel = score(&mel(&xtr), &mel(&xte))?;
    let counts = ytr.bincount::<Tensor>(None, k);
    let top = counts.argmax(0, false).int64_value(&[]);
    let majority = yte
        .eq(top)
        .to_kind(Kind::Float)
        .mean(Kind::Float)
        .double_value(&[]);
    Ok(ProbeRow {
        name: task.name.clone(),
        classes: classes.len(),
        train_clips: task.train.len(),
        test_clips: test.len(),
        unseen_label_clips: task.test.len() - test.len(),
        pretrained,
        random_weights,
        logmel,
        majority,
    })
}
