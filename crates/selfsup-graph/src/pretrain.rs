//! The graph workflow: read -> tensors -> views -> method -> trainer ->
//! evaluation beside both baselines -> export. The `selfsup` binary calls
//! this; it reads no argv or environment and draws nothing.
use crate::augment::AugmentConfig;
use crate::encoders::EncoderConfig;
use crate::eval::{evaluate, EvalConfig, EvalRow, GraphEpochEval};
use crate::export::{export, write_npy};
use crate::graph::{View, MAX_NODES};
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
    /// naming the file. Everything [`GraphRunConfig::validate`] checks is
    /// checked here, before any data is read.
    pub fn from_toml(text: &str, origin: &Path) -> Result<Self> {
        let cfg: Self = toml::from_str(text)
            .map_err(|e| Error::Config(format!("{}: {e}", origin.display())))?;
        cfg.validate()
            .map_err(|m| Error::Config(format!("{}: {m}", origin.display())))?;
        Ok(cfg)
    }

    /// Checks every range and combination that would train or evaluate
    /// nonsense; the message names the key and says what to give.
    pub fn validate(&self) -> std::result::Result<(), String> {
        use selfsup_core::trainer::{positive, unit_interval};
        let cfg = self;
        selfsup_core::run::common_ranges(&cfg.trainer, cfg.run.threads)?;
        if cfg.run.batch_size == 0 {
            return Err("[run] batch_size = 0: give at least 1 graph per batch".into());
        }
        if cfg.run.steps_per_epoch == 0 {
            return Err(
                "[run] steps_per_epoch = 0 trains nothing: give at least 1 step per epoch".into(),
            );
        }
        if cfg.method.graph_level() && cfg.run.batch_size < 2 {
            return Err(format!(
                "[run] batch_size = {}: {} contrasts the graphs of a batch with each other, \
                 give at least 2",
                cfg.run.batch_size,
                cfg.method.name()
            ));
        }
        cfg.augment.view1.validate("view1")?;
        cfg.augment.view2.validate("view2")?;
        match &cfg.method {
            GraphMethodConfig::Grace(c) => {
                positive("[method] temperature", c.temperature)?;
                if c.proj_hidden < 1 {
                    return Err(format!(
                        "[method] proj_hidden = {}: give a width of at least 1",
                        c.proj_hidden
                    ));
                }
            }
            GraphMethodConfig::Graphcl(c) => positive("[method] temperature", c.temperature)?,
            GraphMethodConfig::Dgi(_) => {}
        }
        match &cfg.encoder {
            EncoderConfig::Gcn(c) => {
                if c.dims.is_empty() {
                    return Err("[encoder] dims = []: give at least one layer width".into());
                }
                if let Some(d) = c.dims.iter().find(|&&d| d < 1) {
                    return Err(format!(
                        "[encoder] dims = {:?}: width {d}, every width must be at least 1",
                        c.dims
                    ));
                }
            }
            EncoderConfig::Gin(c) => {
                if c.hidden < 1 {
                    return Err(format!(
                        "[encoder] hidden = {}: give a width of at least 1",
                        c.hidden
                    ));
                }
                if c.layers == 0 {
                    return Err("[encoder] layers = 0: give at least 1 layer".into());
                }
            }
        }
        if cfg.eval.splits == 0 {
            return Err("[eval] splits = 0 evaluates nothing: give at least 1".into());
        }
        positive("[eval] train_fraction", cfg.eval.train_fraction)?;
        unit_interval("[eval] train_fraction", cfg.eval.train_fraction)?;
        cfg.eval.probe.validate("[eval.probe]")?;
        match &cfg.data {
            DataConfig::EdgeList {
                num_nodes: Some(n), ..
            } if *n == 0 || *n > MAX_NODES => {
                return Err(format!(
                    "[data] num_nodes = {n}: give between 1 and {MAX_NODES} (or leave it out: \
                     the largest node id + 1)"
                ))
            }
            DataConfig::Qm9(q) => {
                if q.files.is_empty() {
                    return Err("[data] files = []: give at least one QM9 CSV file".into());
                }
                if q.molecules == 0 {
                    return Err("[data] molecules = 0: give at least 1".into());
                }
                if !(q.target_scale.is_finite() && q.target_scale != 0.0) {
                    return Err(format!(
                        "[data] target_scale = {}: give a finite, non-zero factor",
                        q.target_scale
                    ));
                }
            }
            DataConfig::Planetoid { name, .. } if name.trim().is_empty() => {
                return Err(
                    "[data] name = \"\": give the dataset name (cora, citeseer, pubmed)".into(),
                )
            }
            _ => {}
        }
        if cfg.method.graph_level()
            != matches!(cfg.data, DataConfig::Mice { .. } | DataConfig::Qm9(_))
        {
            return Err(format!(
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
            ));
        }
        if cfg.method.graph_level() && !matches!(cfg.encoder, EncoderConfig::Gin(_)) {
            return Err(
                "[encoder] kind = \"gin\" is what graphcl pools graph embeddings from".into(),
            );
        }
        if !cfg.method.graph_level() && !matches!(cfg.encoder, EncoderConfig::Gcn(_)) {
            return Err("node-level methods use [encoder] kind = \"gcn\"".into());
        }
        Ok(())
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

/// Refuses data that would train or evaluate nonsense: fewer graphs than a
/// batch (an epoch of no step), fewer than 2 labelled samples (no probe
/// split), a single class (a probe that cannot miss).
fn check_trainable(ds: &Dataset, cfg: &GraphRunConfig) -> Result<()> {
    let name = cfg.data.name();
    if matches!(&cfg.encoder, EncoderConfig::Gcn(c) if c.weighted) {
        let graphs: Vec<&crate::graph::Graph> = match ds {
            Dataset::Nodes { graph, .. } => vec![graph],
            Dataset::Graphs { graphs, .. } => graphs.iter().collect(),
        };
        if let Some(w) = graphs
            .iter()
            .flat_map(|g| g.graph.edge_weights())
            .find(|&&w| w <= 0.0)
        {
            return Err(Error::Data(format!(
                "{name}: an edge of weight {w}: with [encoder] weighted = true the GCN \
                 normalises by weighted degrees, which must be positive; give positive weights \
                 or set weighted = false"
            )));
        }
    }
    let (samples, classes) = match ds {
        Dataset::Nodes { graph, classes } => (
            graph.labels.as_ref().map(Vec::len),
            graph.labels.as_ref().map(|_| classes.len()),
        ),
        Dataset::Graphs { graphs, targets } => {
            if graphs.len() < cfg.run.batch_size {
                return Err(Error::Data(format!(
                    "{name}: {} graph(s) read, fewer than [run] batch_size = {}: an epoch would \
                     have no step; lower batch_size or give more graphs",
                    graphs.len(),
                    cfg.run.batch_size
                )));
            }
            let classes = match targets {
                Targets::Classes { names, .. } => Some(names.len()),
                Targets::Values { .. } => None,
            };
            (Some(graphs.len()), classes)
        }
    };
    if let Some(n) = samples.filter(|&n| n < 2) {
        return Err(Error::Data(format!(
            "{name}: {n} labelled sample(s): the probe needs at least 2 (one to train on, one to \
             test); give more nodes or graphs"
        )));
    }
    if let Some(c) = classes.filter(|&c| c < 2) {
        return Err(Error::Data(format!(
            "{name}: the labels hold {c} class(es): a probe on one class cannot miss, so its \
             accuracy means nothing; give labels of at least 2 classes (or no labels file)"
        )));
    }
    Ok(())
}

/// Pre-trains, evaluates and exports as `cfg` says.
pub fn pretrain(cfg: &GraphRunConfig, opts: RunOptions) -> Result<GraphRunSummary> {
    selfsup_core::run::check_common(&cfg.trainer, cfg.run.threads)?;
    cfg.validate().map_err(Error::Config)?;
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
    check_trainable(&ds, cfg)?;
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
        "data": cfg.data,
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

    #[test]
    fn out_of_range_settings_are_refused_naming_the_key() {
        let (grace, gpath) = preset("grace-cpu.toml");
        let (qm9, qpath) = preset("graphcl-qm9-cpu.toml");
        let cases: Vec<(&str, &Path, String, &str)> = vec![
            (
                &grace,
                &gpath,
                grace.replace("temperature = 0.4", "temperature = 0.0"),
                "[method] temperature = 0",
            ),
            (
                &grace,
                &gpath,
                grace.replace("temperature = 0.4", "temperature = -1.0"),
                "temperature = -1",
            ),
            (
                &grace,
                &gpath,
                grace.replace("edge_drop = 0.2", "edge_drop = 1.0"),
                "edge_drop = 1",
            ),
            (
                &grace,
                &gpath,
                grace.replace("feature_mask = 0.3", "feature_mask = -0.1"),
                "feature_mask = -0.1",
            ),
            (
                &grace,
                &gpath,
                grace.replace("steps_per_epoch = 50 ", "steps_per_epoch = 0 "),
                "steps_per_epoch = 0",
            ),
            (
                &grace,
                &gpath,
                grace.replace("threads = 2", "threads = 0"),
                "threads = 0",
            ),
            (
                &grace,
                &gpath,
                grace.replace("epochs = 10 ", "epochs = 0 "),
                "epochs = 0",
            ),
            (
                &grace,
                &gpath,
                grace.replace("lr = 0.001 ", "lr = 0.0 "),
                "lr",
            ),
            (
                &grace,
                &gpath,
                grace.replace("proj_hidden = 128", "proj_hidden = 0"),
                "proj_hidden = 0",
            ),
            (
                &grace,
                &gpath,
                grace.replace("dims = [256, 128]", "dims = []"),
                "dims = []",
            ),
            (
                &grace,
                &gpath,
                grace.replace("dims = [256, 128]", "dims = [256, 0]"),
                "width 0",
            ),
            (
                &grace,
                &gpath,
                grace.replace("splits = 20", "splits = 0"),
                "[eval] splits = 0",
            ),
            (
                &grace,
                &gpath,
                grace.replace("train_fraction = 0.5", "train_fraction = 1.0"),
                "train_fraction = 1",
            ),
            (
                &grace,
                &gpath,
                grace.replace("train_fraction = 0.5", "train_fraction = 0.0"),
                "train_fraction = 0",
            ),
            (
                &grace,
                &gpath,
                grace.replace("[eval]\n", "[eval]\nprobe = { epochs = 0 }\n"),
                "probe].epochs = 0",
            ),
            (
                &qm9,
                &qpath,
                qm9.replace("batch_size = 128", "batch_size = 0"),
                "batch_size = 0",
            ),
            (
                &qm9,
                &qpath,
                qm9.replace("batch_size = 128", "batch_size = 1"),
                "batch_size = 1",
            ),
            (
                &qm9,
                &qpath,
                qm9.replace("temperature = 0.2", "temperature = 0.0"),
                "temperature = 0",
            ),
            (
                &qm9,
                &qpath,
                qm9.replace("hidden = 64", "hidden = 0"),
                "hidden = 0",
            ),
            (
                &qm9,
                &qpath,
                qm9.replace("layers = 3", "layers = 0"),
                "layers = 0",
            ),
            (
                &qm9,
                &qpath,
                qm9.replace("molecules = 2000", "molecules = 0"),
                "molecules = 0",
            ),
            (
                &qm9,
                &qpath,
                qm9.replace("target_scale = 27.211386", "target_scale = 0.0"),
                "target_scale = 0",
            ),
            (
                &qm9,
                &qpath,
                qm9.replace("subgraph = 0.8", "subgraph = 1.5"),
                "subgraph = 1.5",
            ),
        ];
        for (orig, path, bad, want) in cases {
            assert_ne!(orig, &bad, "{want}: replacement did not apply");
            let e = GraphRunConfig::from_toml(&bad, path)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(&path.display().to_string()) && e.contains(want),
                "{want}: {e}"
            );
        }
        let text = "[data]\nformat = \"edge-list\"\npath = \"e.txt\"\nnum_nodes = 0\n";
        let e = GraphRunConfig::from_toml(text, Path::new("x.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("num_nodes = 0"), "{e}");
    }

    fn run(cfg: &GraphRunConfig, root: &Path) -> Result<GraphRunSummary> {
        let mut observer = selfsup_core::trainer::Silent;
        let mut log = |_: &str| {};
        let opts = RunOptions {
            data_root: root.to_path_buf(),
            run_dir: root.join("run"),
            resume: false,
            observer: &mut observer,
            stop: Default::default(),
            git_commit: None,
            log: &mut log,
            distributed: None,
        };
        pretrain(cfg, opts)
    }

    #[test]
    fn pretrain_checks_the_settings_before_reading_data() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = GraphRunConfig::default();
        cfg.trainer.epochs = 0;
        // The data does not exist: the settings are refused first.
        let e = run(&cfg, &dir.path().join("missing")).unwrap_err();
        assert!(matches!(e, Error::Config(_)), "{e}");
        assert!(e.to_string().contains("epochs = 0"), "{e}");
        let mut cfg = GraphRunConfig::default();
        cfg.run.steps_per_epoch = 0;
        let e = run(&cfg, &dir.path().join("missing")).unwrap_err();
        assert!(e.to_string().contains("steps_per_epoch = 0"), "{e}");
    }

    #[test]
    fn data_errors_are_data_errors_not_configuration_errors() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("e.txt"), "0 1\n1 2\n").unwrap();
        std::fs::write(dir.path().join("l.txt"), "0,a\nb\n2,a\n").unwrap();
        let text = "[run]\ndevice = \"cpu\"\n[data]\nformat = \"edge-list\"\npath = \"e.txt\"\n\
                    labels = \"l.txt\"\nfeatures = \"degree\"\n";
        let cfg = GraphRunConfig::from_toml(text, Path::new("x.toml")).unwrap();
        let e = run(&cfg, dir.path()).unwrap_err();
        assert!(matches!(e, Error::Data(_)), "{e:?}");
        let msg = e.to_string();
        assert!(
            !msg.contains("invalid configuration") && msg.contains("l.txt: line 2"),
            "{msg}"
        );
        // A single class: a probe that cannot miss.
        std::fs::write(dir.path().join("l.txt"), "a\na\na\n").unwrap();
        let e = run(&cfg, dir.path()).unwrap_err();
        assert!(
            matches!(e, Error::Data(_)) && e.to_string().contains("1 class"),
            "{e}"
        );
    }

    #[test]
    fn non_positive_weights_are_refused_when_the_gcn_uses_them() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("e.txt"), "0 1 -2\n1 2\n").unwrap();
        let text = "[run]\ndevice = \"cpu\"\n[data]\nformat = \"edge-list\"\npath = \"e.txt\"\n\
                    features = \"degree\"\n[encoder]\nkind = \"gcn\"\nweighted = true\n";
        let cfg = GraphRunConfig::from_toml(text, Path::new("x.toml")).unwrap();
        let e = run(&cfg, dir.path()).unwrap_err();
        assert!(
            matches!(e, Error::Data(_)) && e.to_string().contains("weight -2"),
            "{e}"
        );
    }

    #[test]
    fn fewer_graphs_than_a_batch_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("q.csv"),
            "XYZ_file,Index,SMILES,HOMO_LUMO_gap_au\na,1,CC,0.5\nb,2,CO,0.4\nc,3,CN,0.3\n",
        )
        .unwrap();
        let (text, path) = preset("graphcl-qm9-cpu.toml");
        let text = text.replace("qm9/qm9_part1.csv", "q.csv");
        let cfg = GraphRunConfig::from_toml(&text, &path).unwrap();
        let e = run(&cfg, dir.path()).unwrap_err();
        assert!(
            matches!(e, Error::Data(_))
                && e.to_string().contains("3 graph(s)")
                && e.to_string().contains("batch_size = 128"),
            "{e}"
        );
    }
}
