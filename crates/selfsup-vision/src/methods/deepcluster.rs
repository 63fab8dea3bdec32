//! DeepCluster (Caron, Bojanowski, Joulin & Douze 2018, "Deep Clustering for
//! Unsupervised Learning of Visual Features", arXiv:1807.05520): k-means on
//! the network's own features gives every image a pseudo-label, and the
//! network is trained to classify those pseudo-labels; features and
//! clusters improve in turn, one clustering per epoch.
//!
//! How this implementation fits the generic trainer, which hands the method
//! shuffled batches and no image indices:
//!
//! * **Features clustered.** The l2-normalised projector output of the first
//!   view of every image the method trains on goes into a ring buffer of
//!   `memory` rows (gathered over all processes, so every rank holds the
//!   same rows). At the first step of each epoch the buffer holds the last
//!   `memory` training images of the previous epoch, a uniform random sample
//!   of the training set since the loader shuffles, each embedded by the
//!   network as it was when it trained on it (DeepCluster v2's memory bank;
//!   the paper re-embeds the whole set). Before the first clustering the
//!   buffer fills up over the first `memory / batch` steps, during which the
//!   loss is zero and the network does not move: the first clustering is of
//!   the random network's features, as in the paper.
//! * **k-means** ([`super::kmeans`]): on the device, `chunk` rows at a time,
//!   k-means++ seeded from torch's generator, which the trainer seeds from
//!   `(seed, step)`; empty clusters are re-seeded by splitting the largest
//!   one with a small perturbation, as the paper does, and none is left
//!   empty.
//! * **Pseudo-labels and loss.** Within the epoch the centroids are fixed;
//!   each view's label is the nearest centroid of its (detached) feature,
//!   and a linear classifier on the other view's projection predicts it
//!   (swapped prediction: the label of a view, predicted from another crop
//!   of the same image, as the paper predicts the central crop's cluster
//!   from a random crop). The cross-entropy weighs each pseudo-class by the
//!   inverse of its size in the clustering, the loss-side equivalent of the
//!   paper's uniform sampling over pseudo-classes (`reweight = true`).
//! * **Classifier re-initialised** after every clustering (cluster `k` of one
//!   epoch has nothing to do with cluster `k` of the next). Its optimiser
//!   state (momentum) is the trainer's and is not reset.
//! * **Collapse.** The cluster-size distribution is in every step record:
//!   `cluster_entropy` (entropy of the sizes over `ln K`, 1 = balanced),
//!   `largest_cluster` (fraction of the clustered features in the largest
//!   cluster), `batch_largest_cluster` (the same for the batch's
//!   pseudo-labels, which catches a collapse inside an epoch) and
//!   `reseeded_clusters`. A clustering whose largest cluster holds more than
//!   `warn_largest_cluster` of the features adds a warning to the run's
//!   collapse warnings ([`DeepCluster::warnings`]).
//!
//! Variables: `encoder.` (exported with torchvision / timm names like every
//! other method), `projector.`, `classifier.{weight,bias}`, and the buffers
//! `memory`, `memory_ptr`, `memory_filled`, `centroids`, `cluster_sizes`,
//! `cluster_weights`, `clustered_epoch`, `kmeans_stats`, all in the
//! checkpoint, so a resumed run continues with the same clustering.
use super::branch::Branch;
use super::check_views;
use super::kmeans::{kmeans, nearest, size_stats, KMeansConfig, KMeansInit};
use crate::models::EncoderConfig;
use selfsup_core::autocast::full_precision;
use selfsup_core::head::HeadConfig;
use selfsup_core::loss::scores::normalize;
use selfsup_core::method::{Batch, LossOut, Method, StepCtx};
use selfsup_core::target::TargetKind;
use selfsup_core::{Error, Result};
use serde::{Deserialize, Serialize};
use tch::{nn, Kind, Reduction, Tensor};

/// Largest `memory` accepted (rows of features kept for k-means).
pub const MAX_MEMORY: usize = 1 << 22;
/// Largest `clusters` accepted.
pub const MAX_CLUSTERS: i64 = 1 << 20;

/// DeepCluster settings (the `[method]` table with `name = "deepcluster"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeepClusterConfig {
    /// Projector whose l2-normalised output is clustered and classified.
    pub projector: HeadConfig,
    /// Number of clusters `K` (paper: 10000 on ImageNet; over-clustering helps).
    pub clusters: i64,
    /// Features kept for k-means: the last `memory` training images seen
    /// (at least `clusters`, at most the number of training images).
    pub memory: usize,
    /// Lloyd iterations per clustering.
    pub kmeans_iterations: usize,
    /// `"plus_plus"` (k-means++) or `"random"` rows as first centroids.
    pub kmeans_init: KMeansInit,
    /// Rows whose distances to the centroids are computed at once.
    pub kmeans_chunk: i64,
    /// Weigh each pseudo-class by the inverse of its size (the paper samples
    /// pseudo-classes uniformly instead).
    pub reweight: bool,
    /// A clustering whose largest cluster holds more than this fraction of
    /// the features raises a collapse warning.
    pub warn_largest_cluster: f64,
}

impl Default for DeepClusterConfig {
    fn default() -> Self {
        Self {
            projector: HeadConfig {
                hidden_dim: 2048,
                out_dim: 128,
                layers: 2,
                batch_norm: true,
                last_batch_norm: false,
            },
            clusters: 1000,
            memory: 16384,
            kmeans_iterations: 10,
            kmeans_init: KMeansInit::PlusPlus,
            kmeans_chunk: 4096,
            reweight: true,
            warn_largest_cluster: 0.5,
        }
    }
}

impl DeepClusterConfig {
    /// Refuses settings that cannot train, whatever the data; errors name the key.
    pub fn check_ranges(&self) -> std::result::Result<(), String> {
        self.projector.validate("[method] projector")?;
        if self.clusters < 2 || self.clusters > MAX_CLUSTERS {
            return Err(format!(
                "[method] clusters = {}: must be between 2 and {MAX_CLUSTERS}",
                self.clusters
            ));
        }
        if self.memory < self.clusters as usize || self.memory > MAX_MEMORY {
            return Err(format!(
                "[method] memory = {}: must be between clusters ({}) and {MAX_MEMORY}",
                self.memory, self.clusters
            ));
        }
        if self.kmeans_iterations < 1 {
            return Err("[method] kmeans_iterations must be at least 1".into());
        }
        if self.kmeans_chunk < 1 {
            return Err(format!(
                "[method] kmeans_chunk = {}: must be at least 1",
                self.kmeans_chunk
            ));
        }
        let w = self.warn_largest_cluster;
        if !(w > 0.0 && w <= 1.0) {
            return Err(format!(
                "[method] warn_largest_cluster = {w}: must be in (0, 1]"
            ));
        }
        Ok(())
    }

    /// The memory must fit in the training set (else the ring never fills
    /// with distinct images).
    pub fn validate(&self, train_images: usize) -> Result<()> {
        if self.memory > train_images {
            return Err(Error::Config(format!(
                "[method] memory = {} is more than the {train_images} training images; use at most {train_images}",
                self.memory
            )));
        }
        Ok(())
    }

    fn kmeans(&self) -> KMeansConfig {
        KMeansConfig {
            k: self.clusters,
            iterations: self.kmeans_iterations,
            init: self.kmeans_init,
            chunk: self.kmeans_chunk,
        }
    }
}

/// The DeepCluster method (see the module docs).
pub struct DeepCluster {
    vs: nn::VarStore,
    branch: Branch,
    cls_weight: Tensor,
    cls_bias: Tensor,
    memory: Tensor,
    memory_ptr: Tensor,
    memory_filled: Tensor,
    centroids: Tensor,
    cluster_sizes: Tensor,
    cluster_weights: Tensor,
    clustered_epoch: Tensor,
    kmeans_stats: Tensor,
    cfg: DeepClusterConfig,
    pending: Option<Tensor>,
    warnings: Vec<String>,
}

impl DeepCluster {
    /// Builds the network, the classifier and the empty buffers on `device`;
    /// fails on settings [`DeepClusterConfig::check_ranges`] refuses.
    pub fn new(
        device: tch::Device,
        encoder: &EncoderConfig,
        in_channels: i64,
        cfg: &DeepClusterConfig,
    ) -> Result<Self> {
        cfg.check_ranges().map_err(Error::Config)?;
        let vs = nn::VarStore::new(device);
        let root = vs.root();
        let branch = Branch::new(
            &(&root / "encoder"),
            &(&root / "projector"),
            encoder,
            in_channels,
            &cfg.projector,
        );
        let (k, d) = (cfg.clusters, cfg.projector.out_dim);
        let bound = 1.0 / (d as f64).sqrt();
        let c = &root / "classifier";
        let cls_weight = c.var(
            "weight",
            &[k, d],
            nn::Init::Uniform {
                lo: -bound,
                up: bound,
            },
        );
        let cls_bias = c.var(
            "bias",
            &[k],
            nn::Init::Uniform {
                lo: -bound,
                up: bound,
            },
        );
        let buffer = |name: &str, dims: &[i64], value: f64| {
            root.var(name, dims, nn::Init::Const(value))
                .set_requires_grad(false)
        };
        Ok(Self {
            memory: root.zeros_no_train("memory", &[cfg.memory as i64, d]),
            memory_ptr: buffer("memory_ptr", &[1], 0.0),
            memory_filled: buffer("memory_filled", &[1], 0.0),
            centroids: root.zeros_no_train("centroids", &[k, d]),
            cluster_sizes: root.zeros_no_train("cluster_sizes", &[k]),
            cluster_weights: root.ones_no_train("cluster_weights", &[k]),
            clustered_epoch: buffer("clustered_epoch", &[1], -1.0),
            kmeans_stats: root.zeros_no_train("kmeans_stats", &[2]),
            vs,
            branch,
            cls_weight,
            cls_bias,
            cfg: cfg.clone(),
            pending: None,
            warnings: Vec::new(),
        })
    }

    /// The collapse warnings of the clusterings this process made (one per
    /// clustering whose largest cluster passed `warn_largest_cluster`); a
    /// resumed run's list starts at the resume, while the step records of
    /// `metrics.jsonl` keep every clustering's `largest_cluster`.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Whether a clustering has been made (the memory filled once).
    pub fn clustered(&self) -> bool {
        self.clustered_epoch.double_value(&[0]) >= 0.0
    }

    /// The centroids `[K, D]` of the current clustering.
    pub fn centroids(&self) -> &Tensor {
        &self.centroids
    }

    /// Rows per cluster of the current clustering.
    pub fn cluster_sizes(&self) -> Vec<i64> {
        Vec::<f64>::try_from(
            &self
                .cluster_sizes
                .to_kind(Kind::Double)
                .to_device(tch::Device::Cpu),
        )
        .map(|v| v.into_iter().map(|s| s as i64).collect())
        .unwrap_or_default()
    }

    /// The per-pseudo-class weights of the loss (`[K]`).
    pub fn cluster_weights(&self) -> &Tensor {
        &self.cluster_weights
    }

    fn memory_full(&self) -> bool {
        self.memory_filled.double_value(&[0]) >= self.cfg.memory as f64
    }

    fn needs_clustering(&self, epoch: usize) -> bool {
        let last = self.clustered_epoch.double_value(&[0]);
        self.memory_full() && (last < 0.0 || last < epoch as f64)
    }

    /// Appends detached feature rows to the memory ring.
    pub fn remember(&mut self, rows: &Tensor) {
        tch::no_grad(|| {
            let m = self.cfg.memory as i64;
            let n = rows.size().first().copied().unwrap_or(0).min(m);
            if n == 0 {
                return;
            }
            let rows = rows
                .narrow(0, 0, n)
                .to_kind(self.memory.kind())
                .to_device(self.memory.device());
            let ptr = self.memory_ptr.double_value(&[0]) as i64;
            let idx = (Tensor::arange(n, (Kind::Int64, rows.device())) + ptr).remainder(m);
            let _ = self.memory.index_copy_(0, &idx, &rows);
            let _ = self.memory_ptr.fill_(((ptr + n) % m) as f64);
            let filled = (self.memory_filled.double_value(&[0]) as i64 + n).min(m);
            let _ = self.memory_filled.fill_(filled as f64);
        });
    }

    /// Clusters the memory for `epoch`: new centroids, sizes and weights,
    /// and a freshly initialised classifier; the k-means seed is drawn from
    /// torch's generator.
    pub fn recluster(&mut self, epoch: usize) -> Result<()> {
        let seed = Tensor::randint(1 << 62, [1], (Kind::Int64, tch::Device::Cpu)).int64_value(&[0]);
        let c = kmeans(&self.memory, &self.cfg.kmeans(), seed as u64)?;
        let stats = size_stats(&c.sizes);
        tch::no_grad(|| {
            let dev = self.centroids.device();
            let sizes: Vec<f32> = c.sizes.iter().map(|&s| s as f32).collect();
            let sizes = Tensor::from_slice(&sizes).to_device(dev);
            let k = self.cfg.clusters as f64;
            let total = self.cfg.memory as f64;
            // w_k = N / (K n_k): a weighted mean over the clustered features is 1.
            let weights = if self.cfg.reweight {
                (sizes.clamp_min(1.0) * k).reciprocal() * total
            } else {
                sizes.ones_like()
            };
            self.centroids.copy_(&c.centroids.to_device(dev));
            self.cluster_sizes.copy_(&sizes);
            self.cluster_weights.copy_(&weights);
            let _ = self.clustered_epoch.fill_(epoch as f64);
            let kstats = Tensor::from_slice(&[c.reseeded as f32, c.inertia as f32]).to_device(dev);
            self.kmeans_stats.copy_(&kstats);
            let d = self.cfg.projector.out_dim as f64;
            let bound = 1.0 / d.sqrt();
            let w = Tensor::rand_like(&self.cls_weight) * (2.0 * bound) - bound;
            let b = Tensor::rand_like(&self.cls_bias) * (2.0 * bound) - bound;
            self.cls_weight.copy_(&w);
            self.cls_bias.copy_(&b);
        });
        if stats.largest > self.cfg.warn_largest_cluster {
            self.warnings.push(format!(
                "epoch {}: DeepCluster's k-means put {:.1} % of the {} clustered features in one of \
                 {} clusters (size entropy {:.3} of 1): the features have likely collapsed",
                epoch + 1,
                100.0 * stats.largest,
                self.cfg.memory,
                self.cfg.clusters,
                stats.entropy
            ));
        }
        Ok(())
    }

    /// Classifier logits of projections `p` `[N, D]`, in float32 with
    /// autocast off.
    pub fn logits(&self, p: &Tensor) -> Tensor {
        full_precision(|| {
            p.to_kind(Kind::Float)
                .linear(&self.cls_weight, Some(&self.cls_bias))
        })
    }

    /// Pseudo-labels of projections `p`: the nearest centroid of each
    /// l2-normalised row.
    pub fn pseudo_labels(&self, p: &Tensor) -> Tensor {
        let z = tch::no_grad(|| normalize(&p.detach().to_kind(Kind::Float)));
        nearest(&z, &self.centroids, self.cfg.kmeans_chunk).0
    }

    /// The weighted cross-entropy of `logits` against `labels` (weights
    /// `cluster_weights`: `sum_i w_{y_i} nll_i / sum_i w_{y_i}`).
    pub fn weighted_ce(&self, logits: &Tensor, labels: &Tensor) -> Tensor {
        logits.cross_entropy_loss(
            labels,
            Some(&self.cluster_weights),
            Reduction::Mean,
            -100,
            0.0,
        )
    }

    fn size_terms(&self) -> Vec<(&'static str, f64)> {
        let s = size_stats(&self.cluster_sizes());
        vec![
            ("cluster_entropy", s.entropy),
            ("largest_cluster", s.largest),
            ("reseeded_clusters", self.kmeans_stats.double_value(&[0])),
            ("kmeans_inertia", self.kmeans_stats.double_value(&[1])),
        ]
    }
}

impl Method for DeepCluster {
    fn name(&self) -> &'static str {
        "deepcluster"
    }
    fn target(&self) -> TargetKind {
        TargetKind::Prototypes
    }
    fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }
    fn step(&mut self, batch: &Batch, ctx: &StepCtx) -> Result<LossOut> {
        check_views("DeepCluster", batch, 2, 2)?;
        if self.needs_clustering(ctx.epoch) {
            self.recluster(ctx.epoch)?;
        }
        let p1 = self.branch.forward_t(&batch.views[0], true);
        let p2 = self.branch.forward_t(&batch.views[1], true);
        self.pending = Some(tch::no_grad(|| {
            normalize(&p1.detach().to_kind(Kind::Float))
        }));
        if !self.clustered() {
            // Filling the memory: no pseudo-labels yet, no gradient.
            let filled = self.memory_filled.double_value(&[0]) / self.cfg.memory as f64;
            return Ok(LossOut {
                loss: (p1.sum(Kind::Float) + p2.sum(Kind::Float)) * 0.0,
                terms: vec![("memory_filled", filled)],
            });
        }
        let (y1, y2) = (self.pseudo_labels(&p1), self.pseudo_labels(&p2));
        let (l1, l2) = (self.logits(&p1), self.logits(&p2));
        let loss = (self.weighted_ce(&l1, &y2) + self.weighted_ce(&l2, &y1)) * 0.5;
        let (accuracy, batch_largest) = tch::no_grad(|| {
            let hits = l1
                .argmax(1, false)
                .eq_tensor(&y2)
                .to_kind(Kind::Float)
                .sum(Kind::Float)
                + l2.argmax(1, false)
                    .eq_tensor(&y1)
                    .to_kind(Kind::Float)
                    .sum(Kind::Float);
            let labels = Tensor::cat(&[&y1, &y2], 0);
            let n = labels.size()[0].max(1) as f64;
            let counts = labels.bincount::<Tensor>(None, self.cfg.clusters);
            (
                hits.double_value(&[]) / n,
                counts.max().double_value(&[]) / n,
            )
        });
        let mut terms = vec![
            ("pseudo_label_accuracy", accuracy),
            ("batch_largest_cluster", batch_largest),
        ];
        terms.extend(self.size_terms());
        Ok(LossOut { loss, terms })
    }
    fn after_step(&mut self, ctx: &StepCtx) {
        if let Some(rows) = self.pending.take() {
            let rows = tch::no_grad(|| ctx.comm.all_gather_with_grad(&rows));
            self.remember(&rows);
        }
    }
    fn embed(&self, xs: &Tensor) -> Tensor {
        self.branch.embed(xs, false)
    }
    /// The projection whose normalised rows k-means clusters.
    fn project(&self, xs: &Tensor) -> Tensor {
        self.branch.forward_t(xs, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::methods::test_util::structured_images;
    use selfsup_core::distributed::SingleProcess;
    use tch::Device;

    fn small(clusters: i64, memory: usize) -> DeepCluster {
        let cfg = DeepClusterConfig {
            projector: HeadConfig {
                hidden_dim: 32,
                out_dim: 16,
                layers: 2,
                batch_norm: true,
                last_batch_norm: false,
            },
            clusters,
            memory,
            kmeans_chunk: 5,
            ..Default::default()
        };
        let enc = EncoderConfig::SmallCnn {
            channels: vec![8, 16],
        };
        tch::manual_seed(0);
        DeepCluster::new(Device::Cpu, &enc, 1, &cfg).unwrap()
    }

    fn ctx(step: u64, epoch: usize) -> StepCtx<'static> {
        StepCtx {
            step,
            total_steps: 100,
            epoch,
            steps_per_epoch: 1,
            comm: &SingleProcess,
        }
    }

    fn two_views(seed: i64) -> Batch {
        let a = structured_images(12, 1, 12, seed);
        let b = a.flip([3]) + Tensor::randn_like(&a) * 0.05;
        Batch { views: vec![a, b] }
    }

    /// Runs a step and its after-step hook; returns the loss and the terms.
    fn step(m: &mut DeepCluster, b: &Batch, c: &StepCtx) -> (f64, Vec<(&'static str, f64)>) {
        let out = m.step(b, c).unwrap();
        m.after_step(c);
        (out.loss.double_value(&[]), out.terms)
    }

    #[test]
    fn the_first_clustering_waits_for_a_full_memory_then_one_per_epoch() {
        let mut m = small(3, 20);
        let b = two_views(1);
        // 12 rows per step: the memory of 20 is full after the second step.
        let (loss, terms) = step(&mut m, &b, &ctx(0, 0));
        assert_eq!(loss, 0.0);
        assert_eq!(terms, vec![("memory_filled", 0.0)]);
        let out = m.step(&b, &ctx(1, 0)).unwrap();
        out.loss.backward();
        // The zero loss reaches the network with zero gradients.
        for (name, v) in m.var_store().variables() {
            if name.starts_with("encoder.") && v.requires_grad() {
                let g = v.grad();
                assert!(g.defined(), "{name}");
                assert_eq!(g.abs().sum(Kind::Double).double_value(&[]), 0.0, "{name}");
            }
        }
        m.after_step(&ctx(1, 0));
        assert!(!m.clustered());
        assert_eq!(m.memory_filled.double_value(&[0]), 20.0);
        let before = m.cls_weight.copy();
        let (loss, terms) = step(&mut m, &b, &ctx(2, 0));
        assert!(m.clustered() && loss > 0.0, "{loss}");
        assert!(
            !m.cls_weight.equal(&before),
            "classifier not re-initialised"
        );
        let names: Vec<&str> = terms.iter().map(|t| t.0).collect();
        for want in [
            "pseudo_label_accuracy",
            "batch_largest_cluster",
            "cluster_entropy",
            "largest_cluster",
            "reseeded_clusters",
        ] {
            assert!(names.contains(&want), "{names:?}");
        }
        let sizes = m.cluster_sizes();
        assert_eq!(sizes.iter().sum::<i64>(), 20);
        assert!(sizes.iter().all(|&s| s > 0), "{sizes:?}");
        // Same epoch: the clustering stays; next epoch: a new one.
        let centroids = m.centroids().copy();
        step(&mut m, &b, &ctx(3, 0));
        assert!(m.centroids().equal(&centroids));
        step(&mut m, &b, &ctx(4, 1));
        assert!(!m.centroids().equal(&centroids));
        assert_eq!(m.clustered_epoch.double_value(&[0]), 1.0);
    }

    #[test]
    fn loss_is_the_weighted_swapped_cross_entropy_computed_by_hand() {
        let mut m = small(4, 12);
        let b = two_views(2);
        step(&mut m, &b, &ctx(0, 0));
        tch::manual_seed(5);
        let out = m.step(&b, &ctx(1, 1)).unwrap();
        let loss = out.loss.double_value(&[]);
        // Independently: the same forward passes (train mode, same batch),
        // labels by brute-force nearest centroid, the classifier by hand.
        let rows = |t: &Tensor| -> Vec<Vec<f64>> {
            Vec::<Vec<f32>>::try_from(&t.to_kind(Kind::Float))
                .unwrap()
                .into_iter()
                .map(|r| r.into_iter().map(f64::from).collect())
                .collect()
        };
        let (p1, p2) = tch::no_grad(|| {
            (
                m.branch.forward_t(&b.views[0], true),
                m.branch.forward_t(&b.views[1], true),
            )
        });
        let cs = rows(m.centroids());
        let w = rows(&m.cls_weight);
        let bias: Vec<f64> = rows(&m.cls_bias.unsqueeze(0))[0].clone();
        let cw: Vec<f64> = rows(&m.cluster_weights().unsqueeze(0))[0].clone();
        let sizes = m.cluster_sizes();
        for (k, s) in sizes.iter().enumerate() {
            let want = 12.0 / (4.0 * *s as f64);
            assert!(
                (cw[k] - want).abs() < 1e-5,
                "weight {k}: {} vs {want}",
                cw[k]
            );
        }
        let label = |p: &[f64]| -> usize {
            let n = p.iter().map(|v| v * v).sum::<f64>().sqrt();
            let z: Vec<f64> = p.iter().map(|v| v / n).collect();
            let d = |c: &Vec<f64>| z.iter().zip(c).map(|(a, b)| (a - b).powi(2)).sum::<f64>();
            (0..cs.len())
                .min_by(|&a, &b| d(&cs[a]).total_cmp(&d(&cs[b])))
                .unwrap()
        };
        let nll = |p: &[f64], y: usize| -> f64 {
            let logits: Vec<f64> = w
                .iter()
                .zip(&bias)
                .map(|(r, b)| r.iter().zip(p).map(|(a, c)| a * c).sum::<f64>() + b)
                .collect();
            let lse = logits.iter().map(|v| v.exp()).sum::<f64>().ln();
            lse - logits[y]
        };
        let weighted = |pred: &[Vec<f64>], target: &[Vec<f64>]| -> f64 {
            let (mut num, mut den) = (0.0, 0.0);
            for (p, t) in pred.iter().zip(target) {
                let y = label(t);
                num += cw[y] * nll(p, y);
                den += cw[y];
            }
            num / den
        };
        let (r1, r2) = (rows(&p1), rows(&p2));
        let by_hand = 0.5 * (weighted(&r1, &r2) + weighted(&r2, &r1));
        assert!((loss - by_hand).abs() < 1e-4, "{loss} vs {by_hand}");
    }

    #[test]
    fn a_collapsed_clustering_warns_and_a_spread_one_does_not() {
        let mut spread = small(4, 40);
        tch::manual_seed(1);
        spread.remember(&normalize(&Tensor::randn(
            [40, 16],
            (Kind::Float, Device::Cpu),
        )));
        spread.recluster(0).unwrap();
        assert!(spread.warnings().is_empty(), "{:?}", spread.warnings());
        let s = size_stats(&spread.cluster_sizes());
        assert!(s.largest < 0.5 && s.entropy > 0.8, "{s:?}");

        let mut collapsed = small(4, 40);
        let one = normalize(&Tensor::ones([1, 16], (Kind::Float, Device::Cpu)));
        let rows = one.repeat([40, 1]) + Tensor::randn([40, 16], (Kind::Float, Device::Cpu)) * 1e-4;
        let rows = Tensor::cat(
            &[
                rows.narrow(0, 0, 37),
                normalize(&Tensor::randn([3, 16], (Kind::Float, Device::Cpu))),
            ],
            0,
        );
        collapsed.remember(&rows);
        collapsed.recluster(2).unwrap();
        let w = collapsed.warnings();
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].starts_with("epoch 3:") && w[0].contains("collapsed"),
            "{}",
            w[0]
        );
        // Nothing empty even so, and the weights favour the small clusters.
        let sizes = collapsed.cluster_sizes();
        assert!(sizes.iter().all(|&s| s > 0), "{sizes:?}");
        let big = sizes.iter().enumerate().max_by_key(|(_, &s)| s).unwrap().0;
        let cw = Vec::<f32>::try_from(collapsed.cluster_weights()).unwrap();
        assert!(cw.iter().all(|&v| v >= cw[big]), "{cw:?}");
    }

    #[test]
    fn the_memory_is_a_ring() {
        let mut m = small(2, 5);
        let rows = Tensor::arange(7, (Kind::Float, Device::Cpu))
            .view([7, 1])
            .repeat([1, 16]);
        m.remember(&rows.narrow(0, 0, 3));
        assert_eq!(m.memory_filled.double_value(&[0]), 3.0);
        m.remember(&rows.narrow(0, 3, 4));
        assert_eq!(m.memory_filled.double_value(&[0]), 5.0);
        assert_eq!(m.memory_ptr.double_value(&[0]), 2.0);
        let first: Vec<f32> = Vec::try_from(&m.memory.select(1, 0)).unwrap();
        assert_eq!(first, vec![5.0, 6.0, 2.0, 3.0, 4.0]);
    }

    #[test]
    fn training_on_fixed_pseudo_labels_lowers_the_loss() {
        let mut m = small(4, 24);
        let batches = [two_views(3), two_views(4)];
        let mut params = selfsup_core::optim::Params::of(m.var_store());
        let mut opt = selfsup_core::optim::OptimConfig {
            kind: selfsup_core::optim::OptimKind::AdamW,
            lr: 3e-3,
            weight_decay: 0.0,
            ..Default::default()
        }
        .build(&params);
        let mut losses = Vec::new();
        for s in 0..40u64 {
            tch::manual_seed(s as i64);
            let c = ctx(s, 0);
            params.zero_grad();
            let out = m.step(&batches[s as usize % 2], &c).unwrap();
            out.loss.backward();
            opt.step(&params, 3e-3);
            m.after_step(&c);
            if m.clustered() {
                losses.push(out.loss.double_value(&[]));
            }
        }
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        let (first, last) = (mean(&losses[..4]), mean(&losses[losses.len() - 4..]));
        assert!(last < 0.5 * first, "{first} -> {last}: {losses:?}");
    }

    #[test]
    fn settings_are_checked_naming_the_key() {
        let bad = |f: &dyn Fn(&mut DeepClusterConfig)| {
            let mut c = DeepClusterConfig::default();
            f(&mut c);
            c.check_ranges().unwrap_err()
        };
        assert!(bad(&|c| c.clusters = 1).contains("clusters"));
        assert!(bad(&|c| c.memory = 10).contains("memory"));
        assert!(bad(&|c| c.kmeans_iterations = 0).contains("kmeans_iterations"));
        assert!(bad(&|c| c.kmeans_chunk = 0).contains("kmeans_chunk"));
        assert!(bad(&|c| c.warn_largest_cluster = 1.5).contains("warn_largest_cluster"));
        assert!(bad(&|c| c.warn_largest_cluster = f64::NAN).contains("warn_largest_cluster"));
        let err = DeepClusterConfig::default()
            .validate(1000)
            .unwrap_err()
            .to_string();
        assert!(err.contains("memory") && err.contains("1000"), "{err}");
        let err = toml::from_str::<DeepClusterConfig>("clusterz = 3\n").unwrap_err();
        assert!(err.to_string().contains("clusterz"), "{err}");
    }

    /// The presets parse; the CPU one builds, steps and exports its encoder
    /// under the library's names (no `encoder.` prefix), and the GPU one's
    /// ResNet-18 with torchvision's.
    #[test]
    fn presets_build_and_export_library_names() {
        use crate::config::tests::preset;
        use crate::vision_method::{build_method, export};
        for (name, key) in [
            ("deepcluster-cpu.toml", None),
            ("deepcluster-gpu.toml", Some("layer4.1.conv2.weight")),
        ] {
            let cfg = preset(name);
            assert_eq!(cfg.method.name(), "deepcluster");
            let m = build_method(&cfg, Device::Cpu, 1).unwrap();
            let dir = tempfile::tempdir().unwrap();
            export(&cfg, m.as_ref(), 1, dir.path(), serde_json::json!({})).unwrap();
            let names: Vec<String> =
                Tensor::read_safetensors(dir.path().join(crate::export::WEIGHTS_FILE))
                    .unwrap()
                    .into_iter()
                    .map(|(n, _)| n)
                    .collect();
            assert!(!names.is_empty());
            assert!(
                names
                    .iter()
                    .all(|n| !n.starts_with("encoder.") && !n.contains("classifier")),
                "{names:?}"
            );
            if let Some(k) = key {
                assert!(names.iter().any(|n| n == k), "{names:?}");
            }
            assert!(m.method_warnings().is_empty());
        }
    }
}
