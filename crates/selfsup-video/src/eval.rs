//! Probes on frozen features: garment class and motion direction of
//! Moving Fashion-MNIST clips, each beside the same encoder with random
//! weights and the raw frames, through the same code (core's
//! [`LinearProbe`]).
//!
//! A clip holds several garments, so both tasks are set-valued: the probe
//! trains on every clip once per garment (its class, or its initial
//! direction bin, as the label) and a clip counts as a hit when the
//! probe's top class is one of its garments' labels ("hit@1"). Beside the
//! probes, the best constant guess (the label most often in a training
//! clip's set) gives the floor.
//!
//! Protocol: the probe clips (the first `[eval] probe_clips` training
//! clips) are split, stratified by the first garment's class, into a train
//! part and a validation part (`[eval] validation_fraction`, `split_seed`);
//! each `[eval] weight_decays` penalty is fitted on the train part and
//! scored on validation; the best one's probe is read once on the test
//! clips (garments of Fashion-MNIST's test split).
use crate::augment::{render, ClipParams};
use crate::batches::plain_clips;
use crate::clips::VideoSet;
use crate::config::EvalConfig;
use crate::methods::VideoMethod;
use crate::model::Pooling;
use crate::moving::MovingLabels;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use selfsup_core::eval::linear_probe::{LinearProbe, LinearProbeConfig};
use selfsup_core::trainer::{EpochEval, EpochEvaluator};
use selfsup_core::{Error, Result};
use serde::Serialize;
use std::collections::BTreeMap;
use tch::{Device, Kind, Tensor};

/// Final tokens of the clips `idx` of `set` (first `frames` frames,
/// unaugmented) under `method`'s evaluated encoder, pooled as `pooling`
/// says, `batch` clips per pass: `[len, pooling.dims()]` on the CPU.
pub fn encoder_features(
    method: &dyn VideoMethod,
    set: &VideoSet,
    idx: &[usize],
    frames: usize,
    batch: usize,
    pooling: Pooling,
    device: Device,
) -> Tensor {
    let parts: Vec<Tensor> = idx
        .chunks(batch.max(1))
        .map(|chunk| {
            let x = plain_clips(set, chunk, frames).to_device(device);
            tch::no_grad(|| method.encoder().pooled_by(&x, pooling)).to_device(Device::Cpu)
        })
        .collect();
    concat(parts)
}

/// The raw-frames baseline: each frame average-pooled `pool x pool`,
/// flattened: `[len, T * (S / pool)^2]`.
pub fn raw_features(set: &VideoSet, idx: &[usize], frames: usize, pool: i64) -> Tensor {
    let parts: Vec<Tensor> = idx
        .chunks(256)
        .map(|chunk| {
            plain_clips(set, chunk, frames)
                .squeeze_dim(1)
                .avg_pool2d([pool, pool], [pool, pool], [0, 0], false, true, None::<i64>)
                .flatten(1, 3)
        })
        .collect();
    concat(parts)
}

fn concat(parts: Vec<Tensor>) -> Tensor {
    if parts.is_empty() {
        Tensor::zeros([0, 1], (Kind::Float, Device::Cpu))
    } else {
        Tensor::cat(&parts, 0)
    }
}

/// A set-valued labelling: `sets[i]` the labels of clip `i`.
#[derive(Debug, Clone)]
pub struct SetTask<'a> {
    pub name: &'static str,
    pub sets: &'a [Vec<i64>],
    pub classes: i64,
}

fn pick(sets: &[Vec<i64>], idx: &[usize]) -> Vec<Vec<i64>> {
    idx.iter().filter_map(|&i| sets.get(i).cloned()).collect()
}

fn rows(feats: &Tensor, idx: &[usize]) -> Tensor {
    let i: Vec<i64> = idx.iter().map(|&i| i as i64).collect();
    feats.index_select(0, &Tensor::from_slice(&i).to_device(feats.device()))
}

/// Trains a probe on `feats` with one row per (clip, label of its set).
pub fn fit_sets(
    feats: &Tensor,
    sets: &[Vec<i64>],
    classes: i64,
    cfg: &LinearProbeConfig,
) -> Result<LinearProbe> {
    let (mut idx, mut labels) = (Vec::new(), Vec::new());
    for (i, s) in sets.iter().enumerate() {
        for &l in s {
            idx.push(i as i64);
            labels.push(l);
        }
    }
    let x = feats.index_select(0, &Tensor::from_slice(&idx).to_device(feats.device()));
    LinearProbe::fit(&x, &Tensor::from_slice(&labels), classes, cfg)
}

/// The share of clips whose set holds the probe's top class. Exact from
/// top-1 accuracies: for the `j`-th distinct label of each set the events
/// "top class = that label" are disjoint across `j`.
pub fn hit_rate(probe: &LinearProbe, feats: &Tensor, sets: &[Vec<i64>]) -> Result<f64> {
    if sets.is_empty() {
        return Err(Error::Eval("hit rate of no clip".into()));
    }
    let distinct: Vec<Vec<i64>> = sets
        .iter()
        .map(|s| {
            let mut d: Vec<i64> = Vec::new();
            for &l in s {
                if !d.contains(&l) {
                    d.push(l);
                }
            }
            d
        })
        .collect();
    let most = distinct.iter().map(Vec::len).max().unwrap_or(0);
    let mut hits = 0.0;
    for j in 0..most {
        let (idx, labels): (Vec<usize>, Vec<i64>) = distinct
            .iter()
            .enumerate()
            .filter_map(|(i, d)| d.get(j).map(|&l| (i, l)))
            .unzip();
        let acc = probe.top1(&rows(feats, &idx), &Tensor::from_slice(&labels))?;
        hits += acc * idx.len() as f64;
    }
    Ok(hits / sets.len() as f64)
}

/// The best constant guess: the label in most training sets, and its hit
/// rate on `eval_sets`.
pub fn constant_hit(train_sets: &[Vec<i64>], eval_sets: &[Vec<i64>]) -> (i64, f64) {
    let mut count: BTreeMap<i64, usize> = BTreeMap::new();
    for s in train_sets {
        let mut seen = Vec::new();
        for &l in s {
            if !seen.contains(&l) {
                seen.push(l);
                *count.entry(l).or_default() += 1;
            }
        }
    }
    let best = count
        .iter()
        .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
        .map_or(0, |(&l, _)| l);
    let hits = eval_sets.iter().filter(|s| s.contains(&best)).count();
    (best, hits as f64 / eval_sets.len().max(1) as f64)
}

/// One line of the probe table.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ProbeRow {
    /// `garment` or `direction`.
    pub task: String,
    /// The method's name, `random weights`, `raw frames` or `constant`.
    pub features: String,
    /// The penalty chosen on validation (`None`: the constant guess).
    pub weight_decay: Option<f64>,
    /// Hit@1 on the validation clips.
    pub validation: f64,
    /// Hit@1 on the test clips (read once).
    pub test: f64,
}

/// Features of one representation on the three parts.
pub struct FeatureSet {
    pub name: String,
    pub train: Tensor,
    pub validation: Tensor,
    pub test: Tensor,
}

/// The split of the probe clips and the labels of every part.
pub struct ProbeSplit<'a> {
    pub train: &'a [usize],
    pub validation: &'a [usize],
    pub probe_labels: &'a MovingLabels,
    pub test_labels: &'a MovingLabels,
    pub classes: [i64; 2],
}

/// The rows of both tasks for every feature set, plus the constant guess.
pub fn probe_table(
    split: &ProbeSplit<'_>,
    features: &[FeatureSet],
    cfg: &EvalConfig,
    log: &mut dyn FnMut(&str),
) -> Result<Vec<ProbeRow>> {
    type Task<'t> = (&'t str, &'t [Vec<i64>], &'t [Vec<i64>], i64);
    let tasks: [Task<'_>; 2] = [
        (
            "garment",
            &split.probe_labels.garments,
            &split.test_labels.garments,
            split.classes[0],
        ),
        (
            "direction",
            &split.probe_labels.directions,
            &split.test_labels.directions,
            split.classes[1],
        ),
    ];
    let mut out = Vec::new();
    for (task, probe_sets, test_sets, classes) in tasks {
        let train_sets = pick(probe_sets, split.train);
        let val_sets = pick(probe_sets, split.validation);
        let (_, val_const) = constant_hit(&train_sets, &val_sets);
        let (_, test_const) = constant_hit(&train_sets, test_sets);
        out.push(ProbeRow {
            task: task.into(),
            features: "constant".into(),
            weight_decay: None,
            validation: val_const,
            test: test_const,
        });
        for f in features {
            log(&format!("probe: {task} on {}", f.name));
            let mut best: Option<(f64, f64, LinearProbe)> = None;
            for &wd in &cfg.weight_decays {
                let pc = LinearProbeConfig {
                    weight_decay: wd,
                    ..cfg.probe.clone()
                };
                let probe = fit_sets(&f.train, &train_sets, classes, &pc)?;
                let v = hit_rate(&probe, &f.validation, &val_sets)?;
                if best.as_ref().is_none_or(|b| v > b.0) {
                    best = Some((v, wd, probe));
                }
            }
            let Some((v, wd, probe)) = best else {
                continue;
            };
            out.push(ProbeRow {
                task: task.into(),
                features: f.name.clone(),
                weight_decay: Some(wd),
                validation: v,
                test: hit_rate(&probe, &f.test, test_sets)?,
            });
        }
    }
    Ok(out)
}

/// The per-epoch evaluator: a garment and a direction probe fitted on some
/// probe clips and scored on the validation clips (the first penalty of
/// `[eval] weight_decays`), and two augmented views of the monitor clips
/// for the collapse monitors. The test clips are never read here.
pub struct VideoEpochEval {
    pub set: std::sync::Arc<VideoSet>,
    pub frames: usize,
    pub batch: usize,
    /// How the probes pool the final tokens (`[eval] pooling`).
    pub pooling: Pooling,
    pub device: Device,
    /// Probe clips fitted on each epoch, with their labels.
    pub fit_idx: Vec<usize>,
    /// Validation clips scored each epoch.
    pub val_idx: Vec<usize>,
    pub labels: Option<MovingLabels>,
    pub classes: [i64; 2],
    pub probe: LinearProbeConfig,
    /// Clips of the monitor views.
    pub monitor_idx: Vec<usize>,
    pub augment: crate::augment::AugmentConfig,
    pub seed: u64,
}

impl VideoEpochEval {
    /// The method's pretext accuracy on the validation clips (unaugmented),
    /// weighted by chunk size; `None` when it has none or there are no
    /// validation clips.
    fn held_out_pretext(&self, method: &dyn VideoMethod) -> Option<(String, f64)> {
        let (mut name, mut hits, mut count) = (None, 0.0, 0usize);
        for (k, chunk) in self.val_idx.chunks(self.batch.max(1)).enumerate() {
            let x = plain_clips(&self.set, chunk, self.frames).to_device(self.device);
            let (n, acc) = method.held_out_pretext(&x, k as u64)?;
            name = Some(n);
            hits += acc * chunk.len() as f64;
            count += chunk.len();
        }
        Some((name?.to_string(), hits / count.max(1) as f64))
    }

    fn views(&self, method: &dyn VideoMethod) -> Option<(Tensor, Tensor)> {
        if self.monitor_idx.len() < 2 {
            return None;
        }
        let size = self.set.size;
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed ^ 0x3011_7042);
        let mut views = Vec::new();
        for _ in 0..2 {
            let parts: Vec<Tensor> = self
                .monitor_idx
                .chunks(self.batch.max(1))
                .map(|chunk| {
                    let mut data = Vec::new();
                    for &i in chunk {
                        let clip = &self.set.clips[i];
                        let p = ClipParams::draw(
                            &self.augment,
                            clip.frames,
                            self.frames,
                            size,
                            &mut rng,
                        );
                        render(clip, size, self.frames, &p, &mut data);
                    }
                    let x = Tensor::from_slice(&data)
                        .view([
                            chunk.len() as i64,
                            1,
                            self.frames as i64,
                            size as i64,
                            size as i64,
                        ])
                        .to_device(self.device);
                    tch::no_grad(|| method.encoder().pooled(&x)).to_device(Device::Cpu)
                })
                .collect();
            views.push(concat(parts));
        }
        let b = views.pop()?;
        let a = views.pop()?;
        Some((a, b))
    }
}

impl EpochEvaluator<dyn VideoMethod> for VideoEpochEval {
    fn evaluate(&mut self, method: &dyn VideoMethod, _epoch: usize) -> Result<EpochEval> {
        let mut metrics = Vec::new();
        if let (Some(labels), false) = (
            &self.labels,
            self.fit_idx.is_empty() || self.val_idx.is_empty(),
        ) {
            let fit = encoder_features(
                method,
                &self.set,
                &self.fit_idx,
                self.frames,
                self.batch,
                self.pooling,
                self.device,
            );
            let val = encoder_features(
                method,
                &self.set,
                &self.val_idx,
                self.frames,
                self.batch,
                self.pooling,
                self.device,
            );
            for (name, sets, classes) in [
                ("val_garment_hit", &labels.garments, self.classes[0]),
                ("val_direction_hit", &labels.directions, self.classes[1]),
            ] {
                let probe = fit_sets(&fit, &pick(sets, &self.fit_idx), classes, &self.probe)?;
                metrics.push((
                    name.to_string(),
                    hit_rate(&probe, &val, &pick(sets, &self.val_idx))?,
                ));
            }
        }
        if let Some(m) = self.held_out_pretext(method) {
            metrics.push(m);
        }
        Ok(EpochEval {
            metrics,
            views: self.views(method),
        })
    }

    fn monitor_views(&mut self, method: &dyn VideoMethod) -> Result<Option<(Tensor, Tensor)>> {
        Ok(self.views(method))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hit_rate_counts_a_top_class_in_the_set() {
        // Two well separated classes 0 and 1 in 2-D; class 2 never predicted.
        let x = Tensor::from_slice(&[5.0f32, 0.0, 0.0, 5.0, 5.1, 0.1, 0.1, 5.1]).view([4, 2]);
        let sets = vec![vec![0, 2], vec![1, 1], vec![0, 0], vec![1, 2]];
        let cfg = LinearProbeConfig {
            epochs: 200,
            lr: 0.1,
            ..LinearProbeConfig::default()
        };
        let probe = fit_sets(&x, &sets, 3, &cfg).unwrap();
        assert!((hit_rate(&probe, &x, &sets).unwrap() - 1.0).abs() < 1e-9);
        // Sets that miss the top class: [2, 2] misses, [1, 0] hits once.
        let other = vec![vec![2, 2], vec![1, 0], vec![0, 2], vec![2, 0]];
        assert!((hit_rate(&probe, &x, &other).unwrap() - 0.5).abs() < 1e-9);
        assert_eq!(constant_hit(&sets, &other), (0, 0.75));
    }

    #[test]
    fn raw_features_pool_each_frame() {
        let set = VideoSet {
            size: 4,
            clips: vec![crate::clips::Clip {
                frames: 2,
                pixels: (0..32).map(|i| if i < 16 { 255 } else { 0 }).collect(),
            }],
            names: vec!["a".into()],
        };
        let f = raw_features(&set, &[0], 2, 2);
        assert_eq!(f.size(), vec![1, 8]);
        let v: Vec<f32> = Vec::try_from(f.flatten(0, 1)).unwrap();
        assert_eq!(v, vec![1.0, 1.0, 1.0, 1.0, -1.0, -1.0, -1.0, -1.0]);
    }
}
