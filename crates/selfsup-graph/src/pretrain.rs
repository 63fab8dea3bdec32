//! The graph workflow: read -> tensors -> views -> method -> trainer ->
//! evaluation beside both baselines -> export. The `selfsup` binary calls
//! this; it reads no argv or environment and draws nothing.
use crate::augment::AugmentConfig;
use crate::encoders::EncoderConfig;
use crate::eval::{evaluate, EvalConfig, EvalRow, GraphEpochEval};
use crate::export::{export, write_npy};
use crate::graph::View;
use crate::methods::{Dgi, Grace, GraphCl, GraphMethod, GraphMethodConfig};
use crate::readers::{load, DataConfig, Dataset, ReadReport, Targets};
use crate::source::{GraphViews, NodeViews};
use rand::SeedableRng;
use selfsup_core::device::{describe, DeviceChoice};
use selfsup_core::source::BatchSource;
use selfsup_core::trainer::{Trainer, TrainerConfig};
use selfsup_core::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::Tensor;

/// `[run]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunConfig {
    pub device: DeviceChoice,
    /// Graphs per batch (graph-level methods).
    pub batch_size: usize,
    /// Node-level methods: full-graph steps per trainer epoch (the trainer
    /// evaluates, checkpoints and plots once per trainer epoch).
    pub steps_per_epoch: usize,
    /// libtorch intra-op threads (default: libtorch's choice).
    pub threads: Option<usize>,
}

impl Default for RunConfig {
    fn default() -> Self {
        Self {
            device: DeviceChoice::Auto,
            batch_size: 128,
            steps_per_epoch: 50,
            threads: None,
        }
    }
}

/// A whole graph run, as one TOML file (see `configs/graph/`).
///
/// `[trainer.optimizer] lr` is the learning rate of one step, whatever the
/// batch (graph papers give it so); the workflow converts it to the
/// trainer's per-256-samples convention.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GraphRunConfig {
    pub run: RunConfig,
    pub data: DataConfig,
    pub augment: AugmentConfig,
    pub encoder: EncoderConfig,
    pub method: GraphMethodConfig,
    pub trainer: TrainerConfig,
    pub eval: EvalConfig,
}

impl GraphRunConfig {
    /// Parses a config; unknown keys and impossible values are errors
    /// naming the file.
    pub fn from_toml(text: &str, origin: &Path) -> Result<Self> {
        let cfg: Self = toml::from_str(text)
            .map_err(|e| Error::Config(format!("{}: {e}", origin.display())))?;
        let bad = |m: String| Error::Config(format!("{}: {m}", origin.display()));
        cfg.augment.view1.validate("view1").map_err(bad)?;
        cfg.augment.view2.validate("view2").map_err(bad)?;
        if cfg.method.graph_level()
            != matches!(cfg.data, DataConfig::Mice { .. } | DataConfig::Qm9(_))
        {
            return Err(bad(format!(
                "[method] {} learns {} embeddings but [data] format = {:?} is a {} dataset",
                cfg.method.name(),
                if cfg.method.graph_level() {
                    "graph"
                } else {
                    "node"
                },
                cfg.data.name(),
                if cfg.method.graph_level() {
                    "node-level"
                } else {
                    "graph-level"
                }
            )));
        }
        if cfg.method.graph_level() && !matches!(cfg.encoder, EncoderConfig::Gin(_)) {
            return Err(bad(
                "[encoder] kind = \"gin\" is what graphcl pools graph embeddings from".into(),
            ));
        }
        if !cfg.method.graph_level() && !matches!(cfg.encoder, EncoderConfig::Gcn(_)) {
            return Err(bad("node-level methods use [encoder] kind = \"gcn\"".into()));
        }
        Ok(cfg)
    }

    /// The resolved config as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# unserialisable config: {e}"))
    }
}

/// What a graph run produced (also written as `summary.json`).
#[derive(Debug, Clone, Serialize)]
pub struct GraphRunSummary {
    pub method: String,
    pub device: String,
    pub data: ReadReport,
    pub parameters: i64,
    pub epochs: usize,
    pub steps: u64,
    pub final_loss: f64,
    pub train_seconds: f64,
    /// Seconds per full pass over the data (node level: one step).
    pub seconds_per_pass: f64,
    pub wall_seconds: f64,
    pub eval: Option<EvalRow>,
    pub warnings: Vec<String>,
    pub export_dir: PathBuf,
}

pub use selfsup_core::run::RunOptions;

fn build(cfg: &GraphRunConfig, base: View, device: tch::Device) -> Box<dyn GraphMethod> {
    match &cfg.method {
        GraphMethodConfig::Grace(c) => Box::new(Grace::new(base, &cfg.encoder, c, device)),
        GraphMethodConfig::Dgi(c) => Box::new(Dgi::new(base, &cfg.encoder, c, device)),
        GraphMethodConfig::Graphcl(c) => Box::new(GraphCl::new(base, &cfg.encoder, c, device)),
    }
}

/// Pre-trains, evaluates and exports as `cfg` says.
pub fn pretrain(cfg: &GraphRunConfig, opts: RunOptions) -> Result<GraphRunSummary> {
    opts.single_process("graph pre-training")?;
    let wall = Instant::now();
    if let Some(t) = cfg.run.threads {
        tch::set_num_threads(t as i32);
    }
    let device = cfg.run.device.resolve()?;
    let seed = cfg.trainer.seed;
    (opts.log)(&format!(
        "reading {} from {}",
        cfg.data.name(),
        opts.data_root.display()
    ));
    let (ds, report) = load(&cfg.data, &opts.data_root)?;
    (opts.log)(&format!(
        "{} graph(s), {} nodes, {} undirected edges, {} features; fixed up: {} self-loops dropped, {} duplicate edges merged; {} records skipped",
        report.graphs, report.nodes, report.edges, report.feature_dim, report.fixups.self_loops, report.fixups.duplicate_edges, report.skipped
    ));
    let (base, target, source): (View, Option<Targets>, Box<dyn BatchSource>) = match ds {
        Dataset::Nodes { graph, classes } => {
            let base = graph.tensors();
            let target = graph.labels.clone().map(|ids| Targets::Classes {
                ids,
                names: classes,
            });
            let src = NodeViews {
                base: base.share(),
                augment: cfg.augment.clone(),
                steps_per_epoch: cfg.run.steps_per_epoch,
                seed,
                corrupt: matches!(cfg.method, GraphMethodConfig::Dgi(_)),
            };
            (base, target, Box::new(src))
        }
        Dataset::Graphs { graphs, targets } => {
            let views: Vec<View> = graphs.iter().map(|g| g.tensors()).collect();
            let refs: Vec<&View> = views.iter().collect();
            let base = View::batch_of(&refs);
            let src = GraphViews {
                graphs: views,
                augment: cfg.augment.clone(),
                batch_size: cfg.run.batch_size,
                seed,
            };
            (base, Some(targets), Box::new(src))
        }
    };
    let mut trainer_cfg = cfg.trainer.clone();
    trainer_cfg.optimizer.lr = cfg.trainer.optimizer.lr * 256.0 / source.batch_size().max(1) as f64;
    // Weights from the seed; the random-weights baseline from another seed.
    tch::manual_seed(seed as i64);
    let mut method = build(cfg, base.share(), device);
    tch::manual_seed(seed as i64 ^ 0x0BAD_5EED);
    let random = build(cfg, base.share(), device);
    let parameters: i64 = method
        .var_store()
        .trainable_variables()
        .iter()
        .map(|t| t.numel() as i64)
        .sum();
    let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(0xC011_A95E);
    let views = (
        cfg.augment.view1.apply(&base, &mut r).to_device(device),
        cfg.augment.view2.apply(&base, &mut r).to_device(device),
    );
    let base_dev = base.to_device(device);
    let mut evaluator = GraphEpochEval {
        base: base_dev.share(),
        target: target.clone(),
        cfg: cfg.eval.clone(),
        views,
    };
    (opts.log)(&format!(
        "training {}: {:.3} M parameters, {} steps per epoch, on {}",
        cfg.method.name(),
        parameters as f64 / 1e6,
        source.batches_per_epoch(),
        describe(device)
    ));
    let trainer = Trainer::new(trainer_cfg, &opts.run_dir, device)
        .with_stop_flag(opts.stop)
        .with_provenance(cfg.to_toml(), opts.git_commit);
    let summary = {
        let m: &mut dyn GraphMethod = method.as_mut();
        trainer.fit(
            m,
            source.as_ref(),
            &mut evaluator,
            opts.observer,
            opts.resume,
        )?
    };
    let eval = match &target {
        Some(t) => {
            (opts.log)(
                "evaluating: probe on frozen embeddings, random-weights and raw-feature baselines",
            );
            Some(evaluate(
                method.as_ref(),
                random.as_ref(),
                &base_dev,
                cfg.method.graph_level(),
                t,
                &cfg.eval,
            )?)
        }
        None => None,
    };
    let export_dir = opts.run_dir.join("export");
    let labels = target.as_ref().map(|t| match t {
        Targets::Classes { ids, .. } => Tensor::from_slice(ids),
        Targets::Values { values, .. } => Tensor::from_slice(values),
    });
    let config_json = serde_json::json!({
        "method": cfg.method, "encoder": cfg.encoder, "in_features": report.feature_dim,
        "level": if cfg.method.graph_level() { "graph" } else { "node" },
    });
    export(
        &export_dir,
        &method.represent(&base_dev),
        method.var_store(),
        &config_json,
        labels.as_ref(),
    )?;
    if !cfg.method.graph_level() {
        // The graph itself, for the PyTorch Geometric reference (benchmarks/pyg_graph.py).
        let g = export_dir.join("graph");
        std::fs::create_dir_all(&g).map_err(|e| Error::io(&g, e))?;
        write_npy(&g.join("x.npy"), &base.x)?;
        write_npy(&g.join("edges.npy"), &base.edges)?;
        if let Some(l) = &labels {
            write_npy(&g.join("y.npy"), l)?;
        }
    }
    let passes = match cfg.method.graph_level() {
        true => (summary.steps as f64 / source.batches_per_epoch().max(1) as f64).max(1.0),
        false => summary.steps.max(1) as f64,
    };
    Ok(GraphRunSummary {
        method: cfg.method.name().into(),
        device: describe(device),
        data: report,
        parameters,
        epochs: cfg.trainer.epochs,
        steps: summary.steps,
        final_loss: summary.final_loss,
        train_seconds: summary.train_seconds,
        seconds_per_pass: summary.train_seconds / passes,
        wall_seconds: wall.elapsed().as_secs_f64(),
        eval,
        warnings: summary.warnings,
        export_dir,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn preset(name: &str) -> (String, PathBuf) {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../configs/graph")
            .join(name);
        (std::fs::read_to_string(&path).unwrap(), path)
    }

    #[test]
    fn presets_parse_and_round_trip() {
        for name in [
            "grace-cpu.toml",
            "dgi-cpu.toml",
            "graphcl-cpu.toml",
            "graphcl-qm9-cpu.toml",
            "grace-karate-cpu.toml",
        ] {
            let (text, path) = preset(name);
            let cfg =
                GraphRunConfig::from_toml(&text, &path).unwrap_or_else(|e| panic!("{name}: {e}"));
            let again = GraphRunConfig::from_toml(&cfg.to_toml(), &path).unwrap();
            assert_eq!(again, cfg, "{name}");
        }
    }

    #[test]
    fn unknown_keys_and_mismatches_are_refused_naming_the_file() {
        let (text, path) = preset("grace-cpu.toml");
        let bad = text.replace("temperature =", "temprature =");
        let e = GraphRunConfig::from_toml(&bad, &path)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("grace-cpu.toml") && e.contains("temprature"),
            "{e}"
        );
        let bad = text.replace("[data]\n", "[data]\nlabels_file = \"x\"\n");
        let e = GraphRunConfig::from_toml(&bad, &path)
            .unwrap_err()
            .to_string();
        assert!(e.contains("labels_file"), "{e}");
        let (text, path) = preset("dgi-cpu.toml");
        let bad = text.replace("name = \"dgi\"", "name = \"graphcl\"");
        let e = GraphRunConfig::from_toml(&bad, &path)
            .unwrap_err()
            .to_string();
        assert!(e.contains("graph embeddings"), "{e}");
    }
}
