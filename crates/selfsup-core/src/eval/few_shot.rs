//! N-way K-shot episodes on frozen features (the survey's few-shot
//! protocol, in SimpleShot's form: Wang et al. 2019): each episode draws N
//! classes, K labelled "support" examples and Q "query" examples of each;
//! every query takes the class whose support mean is nearest to it (on
//! L2-normalised features, i.e. by cosine). The score is the mean accuracy
//! over episodes with its 95 % confidence interval (1.96 standard errors).
//!
//! Episodes are drawn from a seeded generator, so two feature sets of the
//! same examples (pre-trained, random weights, raw input) are scored on the
//! very same episodes.
use crate::{Error, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// `[eval.few_shot]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FewShotConfig {
    /// Classes per episode (N).
    pub ways: usize,
    /// Labelled examples per class, one score for each (K).
    pub shots: Vec<usize>,
    /// Query examples per class and episode.
    pub queries: usize,
    pub episodes: usize,
    pub seed: u64,
}

impl Default for FewShotConfig {
    fn default() -> Self {
        Self {
            ways: 5,
            shots: vec![1, 5],
            queries: 15,
            episodes: 600,
            seed: 0,
        }
    }
}

impl FewShotConfig {
    /// The ranges, as a message naming `key` (e.g. `[eval.few_shot]`).
    pub fn validate(&self, key: &str) -> std::result::Result<(), String> {
        if self.ways < 2 {
            return Err(format!(
                "{key} ways = {}: an episode needs at least 2 classes",
                self.ways
            ));
        }
        if self.shots.is_empty() || self.shots.contains(&0) {
            return Err(format!(
                "{key} shots = {:?}: give one or more shot counts, each at least 1",
                self.shots
            ));
        }
        if self.queries == 0 || self.episodes == 0 {
            return Err(format!(
                "{key} queries = {}, episodes = {}: both must be at least 1",
                self.queries, self.episodes
            ));
        }
        if self.episodes > 100_000 || self.ways > 1000 || self.queries > 10_000 {
            return Err(format!(
                "{key}: at most 100000 episodes, 1000 ways and 10000 queries"
            ));
        }
        Ok(())
    }
}

impl FewShotConfig {
    /// This config with `ways` lowered to the number of classes that have
    /// enough examples (`max(shots) + queries`) among `labels`, for a
    /// dataset with fewer classes than `ways`; `None` when fewer than 2
    /// classes qualify (no episode can be drawn).
    pub fn fitted_to(&self, labels: &Tensor) -> Option<FewShotConfig> {
        let labels: Vec<i64> =
            Vec::try_from(labels.to_kind(Kind::Int64).to_device(tch::Device::Cpu)).ok()?;
        let mut counts: std::collections::BTreeMap<i64, usize> = Default::default();
        for l in labels {
            *counts.entry(l).or_default() += 1;
        }
        let need = self.shots.iter().max().copied().unwrap_or(1) + self.queries;
        let eligible = counts.values().filter(|&&c| c >= need).count();
        (eligible >= 2).then(|| FewShotConfig {
            ways: self.ways.min(eligible),
            ..self.clone()
        })
    }
}

/// One N-way K-shot score.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct FewShotScore {
    pub ways: usize,
    pub shots: usize,
    pub episodes: usize,
    /// Mean accuracy over the episodes, in `[0, 1]`.
    pub mean: f64,
    /// Half-width of the 95 % confidence interval of the mean.
    pub ci95: f64,
}

/// The examples of one episode: for each of its classes, the support and
/// the query indices into the feature rows.
#[derive(Debug, Clone, PartialEq)]
pub struct Episode {
    pub support: Vec<Vec<usize>>,
    pub query: Vec<Vec<usize>>,
}

/// The episodes `cfg` draws for `shots` from `labels` (classes with fewer
/// than `shots + queries` examples are never drawn). An error when fewer
/// than `ways` classes have enough examples.
pub fn episodes(labels: &[i64], cfg: &FewShotConfig, shots: usize) -> Result<Vec<Episode>> {
    let mut by_class: std::collections::BTreeMap<i64, Vec<usize>> = Default::default();
    for (i, &l) in labels.iter().enumerate() {
        by_class.entry(l).or_default().push(i);
    }
    let need = shots + cfg.queries;
    let eligible: Vec<&Vec<usize>> = by_class.values().filter(|v| v.len() >= need).collect();
    if eligible.len() < cfg.ways {
        return Err(Error::Eval(format!(
            "{}-way {shots}-shot episodes need {} classes with at least {need} examples \
             ({shots} support + {} queries); only {} of the {} classes have that many",
            cfg.ways,
            cfg.ways,
            cfg.queries,
            eligible.len(),
            by_class.len()
        )));
    }
    // One stream per shot count, so adding a shot count does not move the
    // episodes of the others.
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ (shots as u64).wrapping_mul(0x9E37_79B9));
    let mut out = Vec::with_capacity(cfg.episodes);
    for _ in 0..cfg.episodes {
        let classes: Vec<&&Vec<usize>> = eligible.choose_multiple(&mut rng, cfg.ways).collect();
        let mut support = Vec::with_capacity(cfg.ways);
        let mut query = Vec::with_capacity(cfg.ways);
        for members in classes {
            let picked: Vec<usize> = members.choose_multiple(&mut rng, need).copied().collect();
            support.push(picked[..shots].to_vec());
            query.push(picked[shots..].to_vec());
        }
        out.push(Episode { support, query });
    }
    Ok(out)
}

/// The accuracy of nearest-class-mean on one episode, features `[N, D]`
/// already L2-normalised.
fn episode_accuracy(feats: &Tensor, e: &Episode) -> f64 {
    let index =
        |ids: &[usize]| Tensor::from_slice(&ids.iter().map(|&i| i as i64).collect::<Vec<_>>());
    let means: Vec<Tensor> = e
        .support
        .iter()
        .map(|s| {
            feats
                .index_select(0, &index(s).to_device(feats.device()))
                .mean_dim(0, false, Kind::Float)
        })
        .collect();
    let means = Tensor::stack(&means, 0).to_kind(Kind::Float);
    let (mut right, mut total) = (0i64, 0i64);
    for (class, q) in e.query.iter().enumerate() {
        let x = feats.index_select(0, &index(q).to_device(feats.device()));
        // Squared distance up to a per-query constant: |m|^2 - 2 x.m
        let d = means
            .pow_tensor_scalar(2)
            .sum_dim_intlist(1, false, Kind::Float)
            .unsqueeze(0)
            - x.matmul(&means.transpose(0, 1)) * 2.0;
        let pred = d.argmin(1, false);
        right += pred.eq(class as i64).sum(Kind::Int64).int64_value(&[]);
        total += q.len() as i64;
    }
    right as f64 / total.max(1) as f64
}

/// N-way K-shot accuracy of `feats` `[N, D]` with integer `labels` `[N]`,
/// one score per configured shot count.
pub fn few_shot(feats: &Tensor, labels: &Tensor, cfg: &FewShotConfig) -> Result<Vec<FewShotScore>> {
    cfg.validate("[eval.few_shot]").map_err(Error::Eval)?;
    let n = feats.size().first().copied().unwrap_or(0);
    if feats.dim() != 2 || labels.size() != [n] {
        return Err(Error::Eval(format!(
            "few-shot: features must be [N, D] and labels [N], got {:?} and {:?}",
            feats.size(),
            labels.size()
        )));
    }
    let labels: Vec<i64> = Vec::try_from(labels.to_kind(Kind::Int64).to_device(tch::Device::Cpu))
        .map_err(|e| Error::Eval(format!("few-shot labels: {e}")))?;
    let feats = tch::no_grad(|| {
        let f = feats.detach().to_kind(Kind::Float);
        let norm = f.norm_scalaropt_dim(2, [1], true).clamp_min(1e-12);
        f / norm
    });
    let mut scores = Vec::with_capacity(cfg.shots.len());
    for &shots in &cfg.shots {
        let accs: Vec<f64> = tch::no_grad(|| {
            episodes(&labels, cfg, shots)
                .map(|eps| eps.iter().map(|e| episode_accuracy(&feats, e)).collect())
        })?;
        let (mean, ci95) = mean_ci95(&accs);
        scores.push(FewShotScore {
            ways: cfg.ways,
            shots,
            episodes: accs.len(),
            mean,
            ci95,
        });
    }
    Ok(scores)
}

/// Mean and 1.96 standard errors (sample standard deviation) of `xs`.
pub fn mean_ci95(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    if xs.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let mean = xs.iter().sum::<f64>() / n;
    if xs.len() < 2 {
        return (mean, 0.0);
    }
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, 1.96 * (var / n).sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Features in `classes` clusters: class c sits at unit vector e_c plus
    /// noise of the given size.
    fn clusters(classes: i64, per: i64, noise: f64, seed: i64) -> (Tensor, Tensor) {
        tch::manual_seed(seed);
        let labels = Tensor::arange(classes, (Kind::Int64, tch::Device::Cpu))
            .repeat_interleave_self_int(per, 0, None);
        let centres =
            Tensor::eye(classes, (Kind::Float, tch::Device::Cpu)).index_select(0, &labels);
        let x = centres
            + Tensor::randn([classes * per, classes], (Kind::Float, tch::Device::Cpu)) * noise;
        (x, labels)
    }

    /// Nearest class mean computed with plain loops (no tensors), the
    /// independent reference for the tensor code.
    fn reference_accuracy(rows: &[Vec<f64>], e: &Episode) -> f64 {
        let unit = |v: &Vec<f64>| {
            let n = v.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-12);
            v.iter().map(|x| x / n).collect::<Vec<f64>>()
        };
        let means: Vec<Vec<f64>> = e
            .support
            .iter()
            .map(|s| {
                let d = rows[0].len();
                let mut m = vec![0.0; d];
                for &i in s {
                    for (a, b) in m.iter_mut().zip(unit(&rows[i])) {
                        *a += b / s.len() as f64;
                    }
                }
                m
            })
            .collect();
        let (mut right, mut total) = (0, 0);
        for (c, q) in e.query.iter().enumerate() {
            for &i in q {
                let x = unit(&rows[i]);
                let best = (0..means.len())
                    .min_by(|&a, &b| {
                        let da: f64 = means[a].iter().zip(&x).map(|(m, v)| (m - v).powi(2)).sum();
                        let db: f64 = means[b].iter().zip(&x).map(|(m, v)| (m - v).powi(2)).sum();
                        da.total_cmp(&db)
                    })
                    .unwrap_or(0);
                right += usize::from(best == c);
                total += 1;
            }
        }
        right as f64 / total as f64
    }

    #[test]
    fn accuracy_matches_a_loop_reference_on_the_same_episodes() {
        let (x, y) = clusters(8, 30, 0.9, 3);
        let cfg = FewShotConfig {
            episodes: 40,
            shots: vec![1, 5],
            ..FewShotConfig::default()
        };
        let scores = few_shot(&x, &y, &cfg).unwrap();
        let rows: Vec<Vec<f64>> = (0..x.size()[0])
            .map(|i| Vec::<f64>::try_from(x.get(i).to_kind(Kind::Double)).unwrap())
            .collect();
        let labels: Vec<i64> = Vec::try_from(&y).unwrap();
        for (s, &shots) in scores.iter().zip(&cfg.shots) {
            let accs: Vec<f64> = episodes(&labels, &cfg, shots)
                .unwrap()
                .iter()
                .map(|e| reference_accuracy(&rows, e))
                .collect();
            let (mean, ci) = mean_ci95(&accs);
            assert!(
                (s.mean - mean).abs() < 1e-9,
                "{shots}-shot: {} vs {mean}",
                s.mean
            );
            assert!((s.ci95 - ci).abs() < 1e-9);
            assert_eq!(s.episodes, 40);
        }
        // Noisy clusters: more shots, better class means.
        assert!(scores[1].mean > scores[0].mean, "{scores:?}");
    }

    #[test]
    fn separated_classes_score_one_and_structureless_features_score_chance() {
        let (x, y) = clusters(6, 25, 0.01, 1);
        let s = few_shot(&x, &y, &FewShotConfig::default()).unwrap();
        assert!(s.iter().all(|s| s.mean == 1.0 && s.ci95 == 0.0), "{s:?}");
        // Features that ignore the label: 5-way chance is 0.2.
        tch::manual_seed(2);
        let noise = Tensor::randn([150, 16], (Kind::Float, tch::Device::Cpu));
        let s = few_shot(&noise, &y, &FewShotConfig::default()).unwrap();
        for s in s {
            assert!((s.mean - 0.2).abs() < 3.0 * s.ci95.max(0.01), "{s:?}");
        }
    }

    #[test]
    fn ways_are_fitted_to_the_classes_that_have_enough_examples() {
        let cfg = FewShotConfig::default();
        // 4 classes of 30 and one of 10 (too few for 5 shots + 15 queries).
        let labels: Vec<i64> = (0..130).map(|i| if i < 120 { i % 4 } else { 4 }).collect();
        let fitted = cfg.fitted_to(&Tensor::from_slice(&labels)).unwrap();
        assert_eq!(fitted.ways, 4);
        assert!(episodes(&labels, &fitted, 5).is_ok());
        let one: Vec<i64> = vec![0; 50];
        assert!(cfg.fitted_to(&Tensor::from_slice(&one)).is_none());
        let many: Vec<i64> = (0..400).map(|i| i % 10).collect();
        assert_eq!(cfg.fitted_to(&Tensor::from_slice(&many)).unwrap().ways, 5);
    }

    #[test]
    fn episodes_are_seeded_disjoint_and_bad_settings_are_refused() {
        let labels: Vec<i64> = (0..120).map(|i| i % 6).collect();
        let cfg = FewShotConfig::default();
        let a = episodes(&labels, &cfg, 5).unwrap();
        assert_eq!(a, episodes(&labels, &cfg, 5).unwrap());
        for e in &a[..20] {
            let mut all: Vec<usize> = e
                .support
                .iter()
                .chain(&e.query)
                .flatten()
                .copied()
                .collect();
            let n = all.len();
            all.sort_unstable();
            all.dedup();
            assert_eq!(all.len(), n, "an example used twice in one episode");
            for (s, q) in e.support.iter().zip(&e.query) {
                let c = labels[s[0]];
                assert!(s.iter().chain(q).all(|&i| labels[i] == c));
            }
        }
        // 20 examples per class < 5 + 15 + 1: 19-query episodes cannot be drawn.
        let many = FewShotConfig {
            queries: 16,
            ..cfg.clone()
        };
        let err = episodes(&labels, &many, 5).unwrap_err().to_string();
        assert!(err.contains("only 0 of the 6 classes"), "{err}");
        for (bad, needle) in [
            (
                FewShotConfig {
                    ways: 1,
                    ..cfg.clone()
                },
                "ways = 1",
            ),
            (
                FewShotConfig {
                    shots: vec![0],
                    ..cfg.clone()
                },
                "shots = [0]",
            ),
            (
                FewShotConfig {
                    episodes: 0,
                    ..cfg.clone()
                },
                "episodes = 0",
            ),
        ] {
            assert!(bad
                .validate("[eval.few_shot]")
                .unwrap_err()
                .contains(needle));
        }
    }
}
