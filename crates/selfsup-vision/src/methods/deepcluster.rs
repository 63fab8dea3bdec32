//! DeepCluster (Caron, Bojanowski, Joulin & Douze 2018, "Deep Clustering for
//! Unsupervised Learning of Visual Features", arXiv:1807.05520): k-means on
//! the network's own features gives every image a pseudo-label, and the
//! network is trained to classify those pseudo-labels; features and
//! clusters improve in turn, one clustering per epoch.
//!
//! How this implementation fits the generic trainer, which hands the method
//! shuffled batches and no image indices:
//!
//! * **Features clustered.** The projector output of the first view of the
//!   training images, computed by the network in inference mode (batch norm
//!   on its running statistics) right after the optimiser step, goes into a
//!   ring buffer of `memory` rows (gathered over all processes). Only the
//!   steps whose rows can still be in the ring at the end of the epoch write
//!   it, so at the first step of each epoch it holds the last `memory`
//!   training images of the previous epoch (a uniform sample, the loader
//!   shuffles), embedded by the network as it ends that epoch. Before the
//!   first clustering the buffer fills up over the first `memory / batch`
//!   steps, during which the loss is zero and the network does not run in
//!   training mode: the first clustering is of the random network's
//!   features, as in the paper.
//! * **PCA-whitening, l2, k-means** ([`super::kmeans`]): the clustered rows
//!   are centred, projected on their `pca_dim` leading principal directions,
//!   whitened and l2-normalised (the paper's preprocessing), then k-means on
//!   the device, k-means++ seeded from torch's generator (which the trainer
//!   seeds from `(seed, step)`); empty clusters are re-seeded by splitting
//!   the largest one, as the paper does, and none is left empty.
//! * **Pseudo-labels fixed for the epoch.** The paper labels every image
//!   once per epoch and trains on those labels. Without image indices, the
//!   network is copied into a frozen *snapshot* at each clustering, and an
//!   image's label is the nearest centroid of the snapshot's whitened,
//!   normalised inference-mode feature: a fixed function of the image for
//!   the whole epoch, that the training cannot move. (Labels from the
//!   training network itself, as the first version did, let it drag every
//!   image into one cluster within an epoch: its loss rose from 1.2 to 4.3
//!   over six epochs while one cluster took 70 % of a batch.)
//! * **Loss.** A linear classifier on the projection of each view predicts
//!   the other view's pseudo-label (both views are random crops: the label
//!   of one crop predicted from another crop of the same image, as the paper
//!   predicts the central crop's cluster from a random crop). The
//!   cross-entropy weighs each pseudo-class by the inverse of its size in
//!   the clustering, the loss-side equivalent of the paper's uniform
//!   sampling over pseudo-classes (`reweight = true`).
//! * **Classifier re-initialised** after every clustering (cluster `k` of one
//!   epoch has nothing to do with cluster `k` of the next). Its optimiser
//!   state (momentum) belongs to the trainer and is not reset: the paper
//!   builds a fresh optimiser for its top layer each epoch.
//! * **Monitors.** Every step record has `cluster_entropy` (entropy of the
//!   sizes over `ln K`, 1 = balanced), `largest_cluster` (fraction of the
//!   clustered features in the largest cluster), `batch_largest_cluster`
//!   (the same for the batch's pseudo-labels), `reseeded_clusters`,
//!   `kmeans_inertia` and `nmi_previous` (normalised mutual information
//!   between the memory's labels under the previous clustering and under the
//!   new one: the paper's NMI between successive epochs' assignments; 0
//!   before the second clustering). A clustering whose largest cluster holds
//!   more than `warn_largest_cluster` of the features adds a warning to the
//!   run's collapse warnings ([`DeepCluster::warnings`]).
//!
//! Variables: `encoder.` (exported with torchvision / timm names like every
//! other method), `projector.`, `classifier.{weight,bias}`, the frozen
//! `snapshot.{encoder,projector}.`, and the buffers `memory`, `memory_ptr`,
//! `memory_filled`, `pca_mean`, `pca_matrix`, `centroids`, `cluster_sizes`,
//! `cluster_weights`, `clustered_epoch`, `kmeans_stats`, all in the
//! checkpoint, so a resumed run continues with the same clustering.
use super::branch::Branch;
use super::check_views;
use super::kmeans::{kmeans, nearest, nmi, size_stats, KMeansConfig, KMeansInit, Whitening};
use crate::models::EncoderConfig;
use selfsup_core::autocast::full_precision;
use selfsup_core::head::HeadConfig;
use selfsup_core::method::{Batch, LossOut, Method, StepCtx};
use selfsup_core::target::TargetKind;
use selfsup_core::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use tch::{nn, Kind, Reduction, Tensor};

/// Largest `memory` accepted (rows of features kept for k-means).
pub const MAX_MEMORY: usize = 1 << 22;
/// Largest `clusters` accepted.
pub const MAX_CLUSTERS: i64 = 1 << 20;
/// Rows the snapshot or the network embeds at once outside training.
const EMBED_CHUNK: i64 = 1024;

/// DeepCluster settings (the `[method]` table with `name = "deepcluster"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeepClusterConfig {
    /// Projector whose output is clustered and classified.
    pub projector: HeadConfig,
    /// Number of clusters `K` (paper: 10000 on ImageNet; over-clustering helps).
    pub clusters: i64,
    /// Features kept for k-means: the last `memory` training images of an
    /// epoch (at least `clusters`, at most the number of training images).
    pub memory: usize,
    /// Principal components kept by the PCA-whitening before k-means (the
    /// paper: 256 of 4096); 0 = no PCA, l2 normalisation only. At most the
    /// projector's `out_dim`.
    pub pca_dim: i64,
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
            pca_dim: 32,
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
        if self.pca_dim < 0 || self.pca_dim > self.projector.out_dim {
            return Err(format!(
                "[method] pca_dim = {}: must be between 0 (no PCA) and the projector's out_dim ({})",
                self.pca_dim, self.projector.out_dim
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

    /// Dimension of the whitened features (the centroids').
    fn whitened_dim(&self) -> i64 {
        if self.pca_dim == 0 {
            self.projector.out_dim
        } else {
            self.pca_dim
        }
    }
}

/// The DeepCluster method (see the module docs).
pub struct DeepCluster {
    vs: nn::VarStore,
    branch: Branch,
    snapshot: Branch,
    /// `(snapshot, network)` variable pairs, by name.
    snapshot_pairs: Vec<(Tensor, Tensor)>,
    cls_weight: Tensor,
    cls_bias: Tensor,
    memory: Tensor,
    memory_ptr: Tensor,
    memory_filled: Tensor,
    pca_mean: Tensor,
    pca_matrix: Tensor,
    centroids: Tensor,
    cluster_sizes: Tensor,
    cluster_weights: Tensor,
    clustered_epoch: Tensor,
    kmeans_stats: Tensor,
    cfg: DeepClusterConfig,
    pending: Option<Tensor>,
    warnings: Vec<String>,
}

/// The variables under `prefix.`, by the rest of their name.
fn under(
    vars: &std::collections::HashMap<String, Tensor>,
    prefix: &str,
) -> BTreeMap<String, Tensor> {
    let p = format!("{prefix}.");
    vars.iter()
        .filter_map(|(k, t)| {
            k.strip_prefix(&p)
                .map(|r| (r.to_string(), t.shallow_clone()))
        })
        .collect()
}

impl DeepCluster {
    /// Builds the network, its snapshot, the classifier and the empty
    /// buffers on `device`; fails on settings
    /// [`DeepClusterConfig::check_ranges`] refuses.
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
        let s = &root / "snapshot";
        let snapshot = Branch::new(
            &(&s / "encoder"),
            &(&s / "projector"),
            encoder,
            in_channels,
            &cfg.projector,
        );
        let vars = vs.variables();
        let mut snapshot_pairs = Vec::new();
        for prefix in ["encoder", "projector"] {
            let live = under(&vars, prefix);
            let mut frozen = under(&vars, &format!("snapshot.{prefix}"));
            for (name, v) in live {
                let t = frozen.remove(&name).ok_or_else(|| {
                    Error::Config(format!(
                        "DeepCluster: '{prefix}.{name}' has no 'snapshot.{prefix}.{name}'"
                    ))
                })?;
                snapshot_pairs.push((t.set_requires_grad(false), v));
            }
            if let Some(extra) = frozen.keys().next() {
                return Err(Error::Config(format!(
                    "DeepCluster: 'snapshot.{prefix}.{extra}' has no counterpart under '{prefix}.'"
                )));
            }
        }
        let buffer = |name: &str, dims: &[i64], value: f64| {
            root.var(name, dims, nn::Init::Const(value))
                .set_requires_grad(false)
        };
        let w = cfg.whitened_dim();
        let m = Self {
            memory: root.zeros_no_train("memory", &[cfg.memory as i64, d]),
            memory_ptr: buffer("memory_ptr", &[1], 0.0),
            memory_filled: buffer("memory_filled", &[1], 0.0),
            pca_mean: root.zeros_no_train("pca_mean", &[d]),
            pca_matrix: root.zeros_no_train("pca_matrix", &[d, w]),
            centroids: root.zeros_no_train("centroids", &[k, w]),
            cluster_sizes: root.zeros_no_train("cluster_sizes", &[k]),
            cluster_weights: root.ones_no_train("cluster_weights", &[k]),
            clustered_epoch: buffer("clustered_epoch", &[1], -1.0),
            kmeans_stats: root.zeros_no_train("kmeans_stats", &[3]),
            vs,
            branch,
            snapshot,
            snapshot_pairs,
            cls_weight,
            cls_bias,
            cfg: cfg.clone(),
            pending: None,
            warnings: Vec::new(),
        };
        m.take_snapshot();
        Ok(m)
    }

    /// Copies the network (weights and batch-norm statistics) into the
    /// frozen snapshot that labels the images until the next clustering.
    fn take_snapshot(&self) {
        tch::no_grad(|| {
            for (t, s) in &self.snapshot_pairs {
                t.shallow_clone().copy_(s);
            }
        });
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

    /// The centroids `[K, d]` of the current clustering (whitened space).
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

    /// The inference-mode projections of `xs` by `branch`, `EMBED_CHUNK`
    /// rows at a time, detached, in float32.
    fn embed_with(branch: &Branch, xs: &Tensor) -> Tensor {
        tch::no_grad(|| {
            let n = xs.size().first().copied().unwrap_or(0);
            let parts: Vec<Tensor> = (0..n)
                .step_by(EMBED_CHUNK as usize)
                .map(|s| {
                    branch
                        .forward_t(&xs.narrow(0, s, EMBED_CHUNK.min(n - s)), false)
                        .to_kind(Kind::Float)
                })
                .collect();
            if parts.is_empty() {
                branch.forward_t(xs, false).to_kind(Kind::Float)
            } else {
                Tensor::cat(&parts, 0)
            }
        })
    }

    /// Labels of feature rows `[N, D]` under the current clustering: the
    /// nearest centroid of each whitened, l2-normalised row.
    fn labels_of_features(&self, f: &Tensor) -> Tensor {
        let z = Whitening::apply(f, &self.pca_mean, &self.pca_matrix);
        nearest(&z, &self.centroids, self.cfg.kmeans_chunk).0
    }

    /// Pseudo-labels of images `xs`: the snapshot's inference-mode
    /// projection, whitened and l2-normalised, to the nearest centroid.
    /// Fixed until the next clustering, whatever the training does.
    pub fn pseudo_labels(&self, xs: &Tensor) -> Tensor {
        let f = Self::embed_with(&self.snapshot, xs);
        self.labels_of_features(&f)
    }

    /// Clusters the memory for `epoch`: the network is copied into the
    /// snapshot, the memory PCA-whitened and clustered (new centroids, sizes
    /// and weights), and the classifier freshly initialised; the k-means
    /// seed is drawn from torch's generator.
    pub fn recluster(&mut self, epoch: usize) -> Result<()> {
        let previous = if self.clustered() {
            Some(self.labels_of_features(&self.memory))
        } else {
            None
        };
        let w = Whitening::fit(&self.memory, self.cfg.pca_dim)?;
        let z = Whitening::apply(&self.memory, &w.mean, &w.matrix);
        let seed = Tensor::randint(1 << 62, [1], (Kind::Int64, tch::Device::Cpu)).int64_value(&[0]);
        let c = kmeans(&z, &self.cfg.kmeans(), seed as u64)?;
        let stats = size_stats(&c.sizes);
        let to_vec = |t: &Tensor| Vec::<i64>::try_from(&t.to_device(tch::Device::Cpu)).ok();
        let nmi_previous = previous
            .and_then(|p| nmi(&to_vec(&p)?, &to_vec(&c.assignments)?))
            .unwrap_or(0.0);
        self.take_snapshot();
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
            self.pca_mean.copy_(&w.mean.to_device(dev));
            self.pca_matrix.copy_(&w.matrix.to_device(dev));
            self.centroids.copy_(&c.centroids.to_device(dev));
            self.cluster_sizes.copy_(&sizes);
            self.cluster_weights.copy_(&weights);
            let _ = self.clustered_epoch.fill_(epoch as f64);
            let kstats =
                Tensor::from_slice(&[c.reseeded as f32, c.inertia as f32, nmi_previous as f32])
                    .to_device(dev);
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
            ("nmi_previous", self.kmeans_stats.double_value(&[2])),
        ]
    }

    /// Whether the rows of this step can still be in the memory at the end
    /// of its epoch (or the memory is still filling): only those are embedded.
    fn writes_memory(&self, batch: i64, ctx: &StepCtx) -> bool {
        if !self.clustered() {
            return true;
        }
        let per_epoch = ctx.steps_per_epoch.max(1);
        let position = ctx.step % per_epoch;
        let needed = (self.cfg.memory as u64).div_ceil(batch.max(1) as u64);
        position + needed >= per_epoch
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
        let (v0, v1) = (&batch.views[0], &batch.views[1]);
        self.pending = self
            .writes_memory(batch.len(), ctx)
            .then(|| v0.shallow_clone());
        if !self.clustered() {
            // Filling the memory: no pseudo-labels yet, the network does not
            // run in training mode (its batch-norm statistics stay those the
            // memory is embedded with), a zero loss.
            let filled = self.memory_filled.double_value(&[0]) / self.cfg.memory as f64;
            return Ok(LossOut {
                loss: (self.cls_weight.sum(Kind::Float) + self.cls_bias.sum(Kind::Float)) * 0.0,
                terms: vec![("memory_filled", filled)],
            });
        }
        let (y0, y1) = (self.pseudo_labels(v0), self.pseudo_labels(v1));
        let p0 = self.branch.forward_t(v0, true);
        let p1 = self.branch.forward_t(v1, true);
        let (l0, l1) = (self.logits(&p0), self.logits(&p1));
        let loss = (self.weighted_ce(&l1, &y0) + self.weighted_ce(&l0, &y1)) * 0.5;
        let (accuracy, batch_largest) = tch::no_grad(|| {
            let hits = l1
                .argmax(1, false)
                .eq_tensor(&y0)
                .to_kind(Kind::Float)
                .sum(Kind::Float)
                + l0.argmax(1, false)
                    .eq_tensor(&y1)
                    .to_kind(Kind::Float)
                    .sum(Kind::Float);
            let labels = Tensor::cat(&[&y0, &y1], 0);
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
        if let Some(images) = self.pending.take() {
            let rows = Self::embed_with(&self.branch, &images);
            let rows = tch::no_grad(|| ctx.comm.all_gather_with_grad(&rows));
            self.remember(&rows);
        }
    }
    fn embed(&self, xs: &Tensor) -> Tensor {
        self.branch.embed(xs, false)
    }
    /// The projection the classifier reads.
    fn project(&self, xs: &Tensor) -> Tensor {
        self.branch.forward_t(xs, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::methods::test_util::structured_images;
    use selfsup_core::distributed::SingleProcess;
    use selfsup_core::loss::scores::normalize;
    use tch::Device;

    fn small_pca(clusters: i64, memory: usize, pca_dim: i64) -> DeepCluster {
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
            pca_dim,
            kmeans_chunk: 5,
            ..Default::default()
        };
        let enc = EncoderConfig::SmallCnn {
            channels: vec![8, 16],
        };
        tch::manual_seed(0);
        DeepCluster::new(Device::Cpu, &enc, 1, &cfg).unwrap()
    }

    fn small(clusters: i64, memory: usize) -> DeepCluster {
        small_pca(clusters, memory, 4)
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

    /// Whether the snapshot holds exactly the network's weights (a training
    /// forward pass moves the batch-norm statistics of the network alone).
    fn snapshot_is_network(m: &DeepCluster) -> bool {
        m.snapshot_pairs
            .iter()
            .filter(|(_, s)| s.requires_grad())
            .all(|(t, s)| t.equal(s))
    }

    #[test]
    fn the_first_clustering_waits_for_a_full_memory_then_one_per_epoch() {
        let mut m = small(3, 20);
        let b = two_views(1);
        let network: Vec<Tensor> = m.snapshot_pairs.iter().map(|(_, s)| s.copy()).collect();
        // 12 rows per step: the memory of 20 is full after the second step.
        let (loss, terms) = step(&mut m, &b, &ctx(0, 0));
        assert_eq!(loss, 0.0);
        assert_eq!(terms, vec![("memory_filled", 0.0)]);
        let out = m.step(&b, &ctx(1, 0)).unwrap();
        out.loss.backward();
        // The zero loss gives the network no gradient, and the filling steps
        // leave it (batch-norm statistics included) as it was.
        for (name, v) in m.var_store().variables() {
            if name.starts_with("encoder.") && v.requires_grad() {
                let g = v.grad();
                assert!(
                    !g.defined() || g.abs().sum(Kind::Double).double_value(&[]) == 0.0,
                    "{name}"
                );
            }
        }
        m.after_step(&ctx(1, 0));
        for ((_, s), before) in m.snapshot_pairs.iter().zip(&network) {
            assert!(s.equal(before), "the filling steps moved the network");
        }
        assert!(!m.clustered());
        assert_eq!(m.memory_filled.double_value(&[0]), 20.0);
        // The memory holds the network's inference-mode projections.
        let want = DeepCluster::embed_with(&m.branch, &b.views[0]);
        let got = m.memory.narrow(0, 12, 8);
        assert!(got.allclose(&want.narrow(0, 0, 8), 1e-5, 1e-5, false));
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
            "kmeans_inertia",
            "nmi_previous",
        ] {
            assert!(names.contains(&want), "{names:?}");
        }
        // Centroids live in the whitened space: 4 dimensions, unit length.
        assert_eq!(m.centroids().size(), vec![3, 4]);
        let sizes = m.cluster_sizes();
        assert_eq!(sizes.iter().sum::<i64>(), 20);
        assert!(sizes.iter().all(|&s| s > 0), "{sizes:?}");
        // Same epoch: the clustering stays; next epoch: a new one, with the
        // network as it is then copied into the snapshot.
        let centroids = m.centroids().copy();
        step(&mut m, &b, &ctx(3, 0));
        assert!(m.centroids().equal(&centroids));
        assert!(snapshot_is_network(&m));
        // As an optimiser step would: the network moves, the snapshot not.
        tch::no_grad(|| {
            for (_, s) in m.snapshot_pairs.iter().filter(|(_, s)| s.requires_grad()) {
                let _ = s.shallow_clone().f_add_scalar_(0.01);
            }
        });
        assert!(!snapshot_is_network(&m));
        let out = m.step(&b, &ctx(4, 1)).unwrap();
        assert!(snapshot_is_network(&m));
        assert!(!m.centroids().equal(&centroids));
        assert_eq!(m.clustered_epoch.double_value(&[0]), 1.0);
        let nmi = out.terms.iter().find(|t| t.0 == "nmi_previous").unwrap().1;
        assert!((0.0..=1.0).contains(&nmi), "{nmi}");
    }

    /// The fix of the run where the loss rose epoch after epoch: within an
    /// epoch an image's label depends on the snapshot only, so training the
    /// network cannot move the labels (it did when the training network
    /// labelled its own views).
    #[test]
    fn pseudo_labels_stay_fixed_while_the_network_trains() {
        let mut m = small(4, 24);
        let b = two_views(7);
        let probe = two_views(8);
        let mut params = selfsup_core::optim::Params::of(m.var_store());
        let mut opt = selfsup_core::optim::OptimConfig {
            kind: selfsup_core::optim::OptimKind::Sgd,
            lr: 0.5,
            momentum: 0.9,
            weight_decay: 0.0,
            ..Default::default()
        }
        .build(&params);
        let mut labels = None;
        let mut projections = None;
        for s in 0..8u64 {
            tch::manual_seed(s as i64);
            let c = ctx(s, 0);
            params.zero_grad();
            let out = m.step(&b, &c).unwrap();
            out.loss.backward();
            opt.step(&params, 0.5);
            m.after_step(&c);
            if m.clustered() {
                let y = m.pseudo_labels(&probe.views[0]);
                let p = m.project(&probe.views[0]);
                match (&labels, &projections) {
                    (None, _) => {
                        labels = Some(y);
                        projections = Some(p);
                    }
                    (Some(l), Some(q)) => {
                        assert!(y.equal(l), "step {s}: the labels moved");
                        let moved = (&p - q).abs().max().double_value(&[]);
                        projections = Some(p);
                        assert!(moved > 0.0, "step {s}: the network did not train");
                    }
                    _ => unreachable!(),
                }
            }
        }
        assert!(labels.is_some(), "never clustered");
        // Labelled by the training network instead (the first version), the
        // same probe's labels do change.
        let live = m.labels_of_features(&m.project(&probe.views[0]));
        let snap = m.pseudo_labels(&probe.views[0]);
        assert!(!live.equal(&snap), "the network and its snapshot agree");
    }

    /// After the clustering, only the steps whose rows can still be in the
    /// memory at the end of the epoch embed their images.
    #[test]
    fn only_the_end_of_an_epoch_is_remembered() {
        let mut m = small(3, 20);
        let b = two_views(1);
        let c = |step: u64| StepCtx {
            step,
            total_steps: 100,
            epoch: (step / 10) as usize,
            steps_per_epoch: 10,
            comm: &SingleProcess,
        };
        step(&mut m, &b, &c(0));
        step(&mut m, &b, &c(1));
        assert!(m.memory_full() && !m.clustered());
        let mut wrote = Vec::new();
        for s in 2..10u64 {
            let before = m.memory.copy();
            step(&mut m, &b, &c(s));
            wrote.push(!m.memory.equal(&before));
        }
        // 20 rows, 12 per step: the last two steps of the epoch (8 and 9).
        assert_eq!(
            wrote,
            [false, false, false, false, false, false, true, true]
        );
    }

    #[test]
    fn loss_is_the_weighted_swapped_cross_entropy_computed_by_hand() {
        let mut m = small(4, 12);
        let b = two_views(2);
        step(&mut m, &b, &ctx(0, 0));
        tch::manual_seed(5);
        let out = m.step(&b, &ctx(1, 1)).unwrap();
        let loss = out.loss.double_value(&[]);
        // Independently: the snapshot's inference-mode projections, whitened
        // by hand with the fitted mean and matrix, labels by brute-force
        // nearest centroid; the training-mode forward passes and the
        // classifier by hand.
        let rows = |t: &Tensor| -> Vec<Vec<f64>> {
            Vec::<Vec<f32>>::try_from(&t.to_kind(Kind::Float))
                .unwrap()
                .into_iter()
                .map(|r| r.into_iter().map(f64::from).collect())
                .collect()
        };
        let (f0, f1, p0, p1) = tch::no_grad(|| {
            (
                m.snapshot.forward_t(&b.views[0], false),
                m.snapshot.forward_t(&b.views[1], false),
                m.branch.forward_t(&b.views[0], true),
                m.branch.forward_t(&b.views[1], true),
            )
        });
        let cs = rows(m.centroids());
        let w = rows(&m.cls_weight);
        let bias: Vec<f64> = rows(&m.cls_bias.unsqueeze(0))[0].clone();
        let cw: Vec<f64> = rows(&m.cluster_weights().unsqueeze(0))[0].clone();
        let mean: Vec<f64> = rows(&m.pca_mean.unsqueeze(0))[0].clone();
        let pca = rows(&m.pca_matrix);
        let sizes = m.cluster_sizes();
        for (k, s) in sizes.iter().enumerate() {
            let want = 12.0 / (4.0 * *s as f64);
            assert!(
                (cw[k] - want).abs() < 1e-5,
                "weight {k}: {} vs {want}",
                cw[k]
            );
        }
        let label = |f: &[f64]| -> usize {
            let centred: Vec<f64> = f.iter().zip(&mean).map(|(a, b)| a - b).collect();
            let z: Vec<f64> = (0..4)
                .map(|j| centred.iter().zip(&pca).map(|(c, r)| c * r[j]).sum())
                .collect();
            let n = z.iter().map(|v| v * v).sum::<f64>().sqrt();
            let z: Vec<f64> = z.iter().map(|v| v / n).collect();
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
        let by_hand = 0.5 * (weighted(&rows(&p1), &rows(&f0)) + weighted(&rows(&p0), &rows(&f1)));
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

        // PCA to 2 dimensions: the leading directions are those of the few
        // distinct rows, and the near-duplicates stay together.
        let mut collapsed = small_pca(4, 40, 2);
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
