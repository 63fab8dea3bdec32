//! `selfsup eval finetune` on a node-level checkpoint (GRACE, DGI): core's
//! label-efficiency protocol ([`selfsup_core::eval::finetune`]) with a GNN.
//!
//! The labelled nodes are split once, stratified by class, with `[eval]
//! split_seed`: the validation part (`[eval] validation_fraction`, the
//! probe's), then of the rest a test part (`1 - [eval] train_fraction`)
//! and the training nodes the fractions are drawn from. For every fraction
//! and seed, the checkpoint's encoder plus a linear head (the pre-trained
//! arm) and the same encoder freshly initialised plus the same head (the
//! scratch arm) are trained end to end on the same labelled nodes, in the
//! same order, with the same augmentation, steps, optimiser and schedule
//! (`[eval.finetune]`). Every step propagates over the whole graph and
//! takes the loss on `batch_size` labelled nodes; `optimizer.lr` is the
//! learning rate of one step, as graph runs give it (not scaled by the
//! batch). Each model is scored on the test nodes (the figure) and on the
//! validation nodes (never trained on); the rows go to `finetune.json`
//! beside the checkpoint. With `[eval.finetune] scored_on = "validation"`
//! (choosing the budget) the test nodes are never scored: the figure is
//! the validation nodes' and `accuracy` says so.
use crate::augment::edge_drop::drop_edges;
use crate::augment::feature_mask::mask_features;
use crate::config::{build_method, GraphRunConfig};
use crate::encoders::GraphEncoder;
use crate::graph::View;
use crate::methods::GraphMethod;
use crate::pretrain::{read_dataset, DATA_FLAG_HINT};
use crate::readers::Dataset;
use selfsup_core::checkpoint::restore_model;
use selfsup_core::eval::finetune::{
    self as protocol, Arm, FineTune, FinetuneConfig, LossTrace, Scored, ScoredOn, SubsetOrder,
    Trial,
};
use selfsup_core::eval::split::by_sample;
use selfsup_core::optim::Params;
use selfsup_core::run::{default_data_root, seed_random_weights, seed_weights};
use selfsup_core::workflow::EvalRequest;
use selfsup_core::{Error, Result};
use serde::Serialize;
use std::collections::HashMap;
use std::path::Path;
use tch::{nn, Device, Kind, Tensor};

/// The evaluation's name in `selfsup eval`.
pub const FINETUNE: &str = "finetune";

/// The table `selfsup eval finetune` writes beside the checkpoint.
pub const FINETUNE_FILE: &str = "finetune.json";

/// Share of the edges dropped, and of the feature columns masked, in every
/// training step when `[eval.finetune] augment` is on.
pub const AUGMENT_DROP: f64 = 0.2;

/// The labelled nodes of one graph, split once: `train` (what fractions
/// are drawn from), `validation` and `test`, disjoint, sorted node ids.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeSplits {
    /// The class of every node of the graph.
    pub node_labels: Vec<i64>,
    pub classes: usize,
    pub train: Vec<usize>,
    /// The classes of `train`, in its order (what subsets are drawn from).
    pub train_labels: Vec<i64>,
    pub validation: Vec<usize>,
    pub test: Vec<usize>,
}

impl NodeSplits {
    /// `validation_fraction` of the nodes (by class, seeded by `seed`) as the
    /// validation part, then `1 - train_fraction` of the rest as the test
    /// part; `what` names the dataset in errors.
    pub fn new(
        labels: Vec<i64>,
        classes: usize,
        validation_fraction: f64,
        train_fraction: f64,
        seed: u64,
        what: &str,
    ) -> Result<Self> {
        if classes < 2 {
            return Err(Error::Data(format!(
                "{what}: the labels hold {classes} class(es): fine-tuning needs at least 2"
            )));
        }
        let fail = |part: &str, e: Error| {
            Error::Data(format!(
                "{what}: {} labelled nodes cannot give a {part} part ({e}); give more labelled \
                 nodes or change [eval] validation_fraction / train_fraction",
                labels.len()
            ))
        };
        let v = by_sample(&labels, validation_fraction, seed).map_err(|e| fail("validation", e))?;
        let rest: Vec<i64> = v.train.iter().map(|&i| labels[i]).collect();
        let t = by_sample(&rest, 1.0 - train_fraction, seed.wrapping_add(1))
            .map_err(|e| fail("test", e))?;
        let train: Vec<usize> = t.train.iter().map(|&k| v.train[k]).collect();
        let test: Vec<usize> = t.validation.iter().map(|&k| v.train[k]).collect();
        if train.len() < 2 {
            return Err(fail(
                "training",
                Error::Data(format!("{} training node(s)", train.len())),
            ));
        }
        let train_labels = train.iter().map(|&i| labels[i]).collect();
        Ok(Self {
            node_labels: labels,
            classes,
            train,
            train_labels,
            validation: v.validation,
            test,
        })
    }
}

/// A GNN encoder of the run's architecture and a linear head, in one var
/// store (`encoder.*` as the methods name it, `head.*`).
pub struct Net {
    vs: nn::VarStore,
    encoder: GraphEncoder,
    head: nn::Linear,
}

impl Net {
    /// Freshly initialised from libtorch's generator as it stands.
    pub fn new(cfg: &GraphRunConfig, in_dim: i64, classes: i64, device: Device) -> Self {
        let vs = nn::VarStore::new(device);
        let encoder = GraphEncoder::new(&(vs.root() / "encoder"), in_dim, &cfg.encoder);
        let head = nn::linear(
            vs.root() / "head",
            encoder.node_dim(),
            classes,
            Default::default(),
        );
        Self { vs, encoder, head }
    }

    /// Overwrites the encoder with `method`'s (every variable must be there,
    /// with its shape).
    pub fn load_encoder(&mut self, method: &dyn GraphMethod) -> Result<()> {
        let src: HashMap<String, Tensor> = method.var_store().variables().into_iter().collect();
        tch::no_grad(|| {
            for (name, mut dst) in self.vs.variables() {
                if !name.starts_with("encoder.") {
                    continue;
                }
                match src.get(&name) {
                    Some(s) if s.size() == dst.size() => dst.copy_(&s.to_device(dst.device())),
                    other => {
                        return Err(Error::Config(format!(
                            "the checkpoint's {} method has no variable {name} of shape {:?} \
                             (found {:?})",
                            method.name(),
                            dst.size(),
                            other.map(|t| t.size())
                        )))
                    }
                }
            }
            Ok(())
        })
    }

    /// Class logits of every node of `v`.
    pub fn logits(&self, v: &View, train: bool) -> Tensor {
        self.encoder.nodes(v, train).apply(&self.head)
    }

    /// Accuracy on `nodes` of the graph `v` (inference mode; ids outside the
    /// graph or `labels` are left out).
    pub fn accuracy(&self, v: &View, labels: &[i64], nodes: &[usize]) -> f64 {
        let n = usize::try_from(v.nodes()).unwrap_or(0).min(labels.len());
        let (idx, y): (Vec<i64>, Vec<i64>) = nodes
            .iter()
            .filter(|&&i| i < n)
            .map(|&i| (i as i64, labels[i]))
            .unzip();
        if idx.is_empty() {
            return 0.0;
        }
        let pred = tch::no_grad(|| self.logits(v, false))
            .to_device(Device::Cpu)
            .index_select(0, &Tensor::from_slice(&idx))
            .argmax(1, false);
        let correct = pred
            .eq_tensor(&Tensor::from_slice(&y))
            .sum(Kind::Int64)
            .int64_value(&[]);
        correct as f64 / idx.len() as f64
    }
}

/// What one model was trained on and how it did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeRun {
    /// Accuracy on the nodes the figure is scored on: the test nodes, or
    /// the validation nodes under `scored_on = "validation"`.
    pub accuracy: f64,
    /// Which nodes `accuracy` is scored on.
    pub scored_on: ScoredOn,
    /// Accuracy on the validation nodes.
    pub validation_accuracy: f64,
    /// Mean loss of the first and of the last tenth of the steps.
    pub first_loss: f64,
    pub last_loss: f64,
    /// Optimisation steps, and labelled nodes (with repeats) trained on.
    pub steps: usize,
    pub nodes_seen: usize,
    /// Distinct labelled nodes trained on.
    pub distinct_nodes: usize,
    /// FNV-1a of the sequence of node ids trained on (both arms of a seed
    /// see the same sequence, so the same digest).
    pub batches_digest: String,
}

impl Scored for NodeRun {
    fn score(&self) -> f64 {
        self.accuracy
    }

    fn describe(&self) -> String {
        format!(
            "final loss {:.3}, validation {:.2}%{}",
            self.last_loss,
            self.validation_accuracy * 100.0,
            match self.scored_on {
                ScoredOn::Test => format!(", test {:.2}%", self.accuracy * 100.0),
                ScoredOn::Validation => " (test not scored)".into(),
            }
        )
    }
}

/// One training run of `net` on the labelled `nodes` of `base` (on the
/// net's device): `ft.steps` steps of `min(batch_size, |nodes|)` nodes, the
/// nodes cycled in an order (and the graph augmented) by `seed`; the
/// accuracies are left at 0 for the caller to score. `labels` holds one
/// class per node of `base`.
pub fn train(
    net: &Net,
    base: &View,
    labels: &[i64],
    nodes: &[usize],
    ft: &FinetuneConfig,
    seed: u64,
) -> Result<NodeRun> {
    if nodes.len() < 2 {
        return Err(Error::Data(format!(
            "fine-tuning needs at least 2 labelled nodes, the fraction gives {}",
            nodes.len()
        )));
    }
    let n = usize::try_from(base.nodes()).unwrap_or(0);
    if labels.len() != n {
        return Err(Error::Data(format!(
            "{} labels for a graph of {n} nodes: give one label per node",
            labels.len()
        )));
    }
    if let Some(bad) = nodes.iter().find(|&&i| i >= n) {
        return Err(Error::Data(format!(
            "labelled node {bad} is not a node of the graph ({n} nodes)"
        )));
    }
    let device = net.vs.device();
    let batch = ft.batch_size.min(nodes.len());
    let steps_per_pass = nodes.len().div_ceil(batch) as u64;
    let warmup = (ft.schedule.warmup_epochs * steps_per_pass as f64).round() as u64;
    let peak = ft.optimizer.lr;
    let mut params = Params::of(&net.vs);
    let mut opt = ft.optimizer.build(&params);
    let mut draw = SubsetOrder::new(nodes, labels.len(), seed);
    let mut trace = LossTrace::new(ft.steps);
    for step in 0..ft.steps {
        let idx = draw.next_batch(batch);
        let view = match ft.augment {
            true => mask_features(
                &drop_edges(base, AUGMENT_DROP, draw.rng()),
                AUGMENT_DROP,
                draw.rng(),
            ),
            false => base.share(),
        };
        let rows = Tensor::from_slice(&idx.iter().map(|&i| i as i64).collect::<Vec<_>>())
            .to_device(device);
        let y: Vec<i64> = idx.iter().map(|&i| labels[i]).collect();
        let y = Tensor::from_slice(&y).to_device(device);
        params.zero_grad();
        let loss = net
            .logits(&view, true)
            .index_select(0, &rows)
            .cross_entropy_for_logits(&y);
        loss.backward();
        let lr = ft.schedule.lr(peak, step as u64, ft.steps as u64, warmup);
        opt.step(&params, lr);
        trace.record(step, loss.double_value(&[]))?;
    }
    Ok(NodeRun {
        accuracy: 0.0,
        scored_on: ft.scored_on,
        validation_accuracy: 0.0,
        first_loss: trace.first,
        last_loss: trace.last,
        steps: ft.steps,
        nodes_seen: ft.steps * batch,
        distinct_nodes: draw.distinct(),
        batches_digest: draw.digest(),
    })
}

/// The graph's side of the protocol.
pub struct Nodes<'a> {
    pub cfg: &'a GraphRunConfig,
    pub method: &'a dyn GraphMethod,
    /// The whole graph, on `device`.
    pub base: &'a View,
    pub splits: &'a NodeSplits,
    pub device: Device,
}

impl FineTune for Nodes<'_> {
    type Run = NodeRun;

    fn labels(&self) -> &[i64] {
        &self.splits.train_labels
    }

    /// Weights of both arms from `trial.init_seed` (the same head), node
    /// order and augmentation from `trial.draw_seed ^ 1`.
    fn run(&self, arm: Arm, trial: &Trial<'_>) -> Result<NodeRun> {
        let s = self.splits;
        let nodes: Vec<usize> = trial
            .labelled
            .iter()
            .filter_map(|&k| s.train.get(k).copied())
            .collect();
        seed_random_weights(trial.init_seed);
        let mut net = Net::new(
            self.cfg,
            self.base.x.size()[1],
            s.classes as i64,
            self.device,
        );
        if arm == Arm::Pretrained {
            net.load_encoder(self.method)?;
        }
        let mut run = train(
            &net,
            self.base,
            &s.node_labels,
            &nodes,
            &self.cfg.eval.finetune,
            trial.draw_seed ^ 1,
        )?;
        run.validation_accuracy = net.accuracy(self.base, &s.node_labels, &s.validation);
        run.accuracy = match run.scored_on {
            ScoredOn::Test => net.accuracy(self.base, &s.node_labels, &s.test),
            ScoredOn::Validation => run.validation_accuracy,
        };
        Ok(run)
    }

    fn scored_on(&self) -> ScoredOn {
        self.cfg.eval.finetune.scored_on
    }
}

/// Every fraction x seed x arm of `cfg.eval.finetune` on `splits` of the
/// graph `base` (moved to `device`), seeded by `[trainer] seed`.
pub fn finetune(
    cfg: &GraphRunConfig,
    method: &dyn GraphMethod,
    base: &View,
    splits: &NodeSplits,
    device: Device,
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<protocol::Row<NodeRun>>> {
    let base = base.to_device(device);
    let model = Nodes {
        cfg,
        method,
        base: &base,
        splits,
        device,
    };
    protocol::finetune(
        &model,
        &cfg.eval.finetune,
        cfg.trainer.seed,
        "nodes",
        progress,
    )
}

/// `selfsup eval finetune` on a graph checkpoint: reads its dataset, refuses
/// graph-level and unlabelled ones, fine-tunes, writes `finetune.json`
/// beside the checkpoint and returns the lines to print (progress goes to
/// stderr as each model finishes).
pub fn report(request: &EvalRequest<'_>) -> Result<Vec<String>> {
    let checkpoint = request.checkpoint;
    let cfg = GraphRunConfig::from_toml(request.config_toml, checkpoint)?;
    if cfg.method.graph_level() {
        return Err(Error::Config(format!(
            "{}: a {} checkpoint learns graph embeddings ([data] {:?} is a graph-level dataset); \
             `selfsup eval finetune` fine-tunes node classification and needs a node-level \
             checkpoint (grace or dgi on a graph with node labels); evaluate this one with \
             `selfsup eval linear`",
            checkpoint.display(),
            cfg.method.name(),
            cfg.data.name()
        )));
    }
    let device = request.device.resolve()?;
    let root = request
        .data
        .map_or_else(default_data_root, Path::to_path_buf);
    let (ds, read) = read_dataset(&cfg, &root, DATA_FLAG_HINT)?;
    let (graph, classes) = match ds {
        Dataset::Nodes { graph, classes } => (graph, classes),
        Dataset::Graphs { .. } => {
            return Err(Error::Data(format!(
                "{}: {} is a graph-level dataset; fine-tuning needs one graph with node labels",
                checkpoint.display(),
                read.name
            )))
        }
    };
    let Some(labels) = graph.labels.clone() else {
        return Err(Error::Data(format!(
            "{}: {} has no node labels, and fine-tuning trains a classifier on them; give [data] \
             a labels file in the run's config (or --data a root where the dataset has labels)",
            checkpoint.display(),
            read.name
        )));
    };
    let splits = NodeSplits::new(
        labels,
        classes.len(),
        cfg.eval.validation_fraction,
        cfg.eval.train_fraction,
        cfg.eval.split_seed,
        &read.name,
    )?;
    let base = graph.tensors();
    drop(graph);
    seed_weights(cfg.trainer.seed);
    let method = build_method(&cfg, base.share(), device);
    restore_model(checkpoint, method.var_store(), method.name())?;
    let start = std::time::Instant::now();
    let rows = finetune(&cfg, method.as_ref(), &base, &splits, device, &mut |l| {
        eprintln!("{l}")
    })?;
    let seconds = start.elapsed().as_secs_f64();
    let ft = &cfg.eval.finetune;
    let json = serde_json::json!({
        "checkpoint": checkpoint.display().to_string(),
        "method": cfg.method.name(),
        "data": read.name,
        "nodes": read.nodes,
        "train_nodes": splits.train.len(),
        "validation_nodes": splits.validation.len(),
        "test_nodes": splits.test.len(),
        "scored_on": ft.scored_on.as_str(),
        "settings": ft,
        "rows": rows,
        "seconds": seconds,
    });
    let out = selfsup_core::eval::write_beside(checkpoint, FINETUNE_FILE, &json)?;
    let mut lines = vec![format!(
        "{} checkpoint {} on {}: fine-tuning end to end vs the same encoder from scratch, {} \
         steps of up to {} labelled nodes over the whole graph; {} training / {} validation / {} \
         test nodes; {} accuracy, mean ± std over seeds",
        cfg.method.name(),
        checkpoint.display(),
        read.name,
        ft.steps,
        ft.batch_size,
        splits.train.len(),
        splits.validation.len(),
        splits.test.len(),
        match ft.scored_on {
            ScoredOn::Test => "test",
            ScoredOn::Validation => "validation (the test nodes are not scored)",
        }
    )];
    let validation = |runs: &[NodeRun]| {
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
    lines.push(format!("wrote {} ({seconds:.0} s)", out.display()));
    Ok(lines)
}

#[cfg(test)]
mod tests;
