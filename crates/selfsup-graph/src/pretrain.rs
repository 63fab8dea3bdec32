//! The graph workflow: read -> tensors -> views -> method -> trainer ->
//! evaluation beside both baselines -> export, on core's [`Run`]. The
//! `selfsup` binary calls this (through [`crate::workflow`]); it reads no
//! argv or environment and draws nothing.
use crate::config::build_method;
use crate::encoders::EncoderConfig;
use crate::eval::{eval_splits, evaluate, EvalRow, GraphEpochEval};
use crate::export::{export, write_npy};
use crate::graph::View;
use crate::methods::{GraphMethod, GraphMethodConfig};
use crate::readers::{load, Dataset, ReadReport, Targets};
use crate::source::{GraphViews, NodeViews};
use rand::SeedableRng;
use selfsup_core::device::describe;
use selfsup_core::run::{seed_random_weights, seed_weights, trainable_parameters, Run};
use selfsup_core::source::BatchSource;
use selfsup_core::{Error, Result};
use serde::Serialize;
use std::path::{Path, PathBuf};
use tch::Tensor;

pub use crate::config::{GraphRunConfig, Graphs, RunConfig};
pub use selfsup_core::run::RunOptions;

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
    /// Link prediction on the held-out edges (with `[eval.link]`).
    pub link: Option<crate::link::LinkRow>,
    pub warnings: Vec<String>,
    pub export_dir: PathBuf,
}

/// Refuses data that would train or evaluate nonsense: fewer graphs than a
/// batch (an epoch of no step), fewer than 3 labelled samples (no probe
/// train / validation / test split), a single class (a probe that cannot miss).
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
    if let Some(n) = samples.filter(|&n| n < 3) {
        return Err(Error::Data(format!(
            "{name}: {n} labelled sample(s): the probe needs at least 3 (one to train on, one \
             to validate on, one to test); give more nodes or graphs"
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

/// What a missing dataset's error tells the user to do when the data root
/// came from `--data` or its default.
pub const DATA_FLAG_HINT: &str =
    "give the folder that holds the datasets with --data (registry datasets: `cargo xtask fetch`)";

/// Reads the dataset `cfg` names under the data root `root`; a file or
/// folder that is not there is an error naming it, the root and `hint`
/// (how to give another root, e.g. [`DATA_FLAG_HINT`]).
pub fn read_dataset(
    cfg: &GraphRunConfig,
    root: &Path,
    hint: &str,
) -> Result<(Dataset, ReadReport)> {
    load(&cfg.data, root).map_err(|e| match e {
        crate::GraphError::Io { path, source } if source.kind() == std::io::ErrorKind::NotFound => {
            Error::Data(format!(
                "{}: not found ({source}); [data] paths are relative to the data root {}: {hint}",
                path.display(),
                root.display()
            ))
        }
        other => other.into(),
    })
}

/// The labels (or targets) of the evaluated samples, as exported.
fn label_tensor(target: &Targets) -> Tensor {
    match target {
        Targets::Classes { ids, .. } => Tensor::from_slice(ids),
        Targets::Values { values, .. } => Tensor::from_slice(values),
    }
}

/// The evaluated base view (the graph, or every graph as one disjoint
/// union), its target, and (graph-level datasets) each graph's own view,
/// from a dataset as read.
pub fn base_and_target(ds: &Dataset) -> (View, Option<Targets>, Vec<View>) {
    match ds {
        Dataset::Nodes { graph, classes } => (
            graph.tensors(),
            graph.labels.clone().map(|ids| Targets::Classes {
                ids,
                names: classes.clone(),
            }),
            Vec::new(),
        ),
        Dataset::Graphs { graphs, targets } => {
            let views: Vec<View> = graphs.iter().map(|g| g.tensors()).collect();
            let refs: Vec<&View> = views.iter().collect();
            (View::batch_of(&refs), Some(targets.clone()), views)
        }
    }
}

/// The trained method's encoder and embeddings of `base` into `dir`
/// (with, for node-level methods, the graph itself in `dir/graph` for the
/// PyTorch Geometric reference, benchmarks/pyg_graph.py).
pub fn export_run(
    dir: &Path,
    cfg: &GraphRunConfig,
    method: &dyn GraphMethod,
    base: &View,
    base_dev: &View,
    target: Option<&Targets>,
    feature_dim: usize,
) -> Result<()> {
    let labels = target.map(label_tensor);
    let config_json = serde_json::json!({
        "method": cfg.method, "encoder": cfg.encoder, "in_features": feature_dim,
        "data": cfg.data,
        "level": if cfg.method.graph_level() { "graph" } else { "node" },
    });
    export(
        dir,
        &method.represent(base_dev),
        method.var_store(),
        &config_json,
        labels.as_ref(),
    )?;
    if !cfg.method.graph_level() {
        let g = dir.join("graph");
        std::fs::create_dir_all(&g).map_err(|e| Error::io(&g, e))?;
        write_npy(&g.join("x.npy"), &base.x)?;
        write_npy(&g.join("edges.npy"), &base.edges)?;
        if let Some(l) = &labels {
            write_npy(&g.join("y.npy"), l)?;
        }
        if let Some(t) = target {
            write_eval_splits(&g, t, cfg)?;
        }
    }
    Ok(())
}

/// The final evaluation's sample indices beside the graph, so that the
/// PyTorch Geometric reference probes exactly the same validation part and
/// train/test splits: `validation.npy` `[V]`, `split_train.npy` `[S, T]`
/// and `split_test.npy` `[S, N - V - T]` (int64).
fn write_eval_splits(dir: &Path, target: &Targets, cfg: &GraphRunConfig) -> Result<()> {
    let splits = eval_splits(target, &cfg.eval, cfg.eval.splits)?;
    write_npy(
        &dir.join("validation.npy"),
        &Tensor::from_slice(&splits.validation),
    )?;
    let (train, test): (Vec<Tensor>, Vec<Tensor>) = splits
        .parts
        .iter()
        .map(|(tr, te)| (Tensor::from_slice(tr), Tensor::from_slice(te)))
        .unzip();
    write_npy(&dir.join("split_train.npy"), &Tensor::stack(&train, 0))?;
    write_npy(&dir.join("split_test.npy"), &Tensor::stack(&test, 0))
}

/// Pre-trains, evaluates and exports as `cfg` says; writes `config.toml`
/// and `summary.json` into the run folder.
pub fn pretrain(cfg: &GraphRunConfig, opts: RunOptions) -> Result<GraphRunSummary> {
    cfg.validate().map_err(Error::Config)?;
    let mut run = Run::start(
        "graph pre-training",
        &cfg.run,
        &cfg.trainer,
        cfg.to_toml(),
        false,
        opts,
    )?;
    let device = run.device;
    let seed = cfg.trainer.seed;
    let root = run.data_root();
    run.log(&format!(
        "reading {} from {}",
        cfg.data.name(),
        root.display()
    ));
    let (ds, report) = read_dataset(cfg, &root, DATA_FLAG_HINT)?;
    run.log(&format!(
        "{} graph(s), {} nodes, {} undirected edges, {} features; fixed up: {} self-loops dropped, {} duplicate edges merged; {} records skipped",
        report.graphs, report.nodes, report.edges, report.feature_dim, report.fixups.self_loops, report.fixups.duplicate_edges, report.skipped
    ));
    check_trainable(&ds, cfg)?;
    // With [eval.link] the held-out edges leave the graph before anything
    // (features included) is computed from it.
    let (ds, link_split) = crate::link::hold_out(ds, cfg.eval.link.as_ref(), &cfg.data)?;
    if let Some(s) = &link_split {
        let (train, val, test) = s.sizes();
        run.log(&format!(
            "link prediction: {val} validation and {test} test edges held out, training on the \
             other {train}"
        ));
    }
    let (base, target, graphs) = base_and_target(&ds);
    drop(ds);
    // The validation part and the splits are drawn (and refused when the
    // labels cannot give them) before any training.
    if let Some(t) = &target {
        eval_splits(t, &cfg.eval, 1)?;
    }
    let source: Box<dyn BatchSource> = match cfg.method.graph_level() {
        false => Box::new(NodeViews {
            base: base.share(),
            augment: cfg.augment.clone(),
            steps_per_epoch: cfg.steps_per_epoch(),
            seed,
            corrupt: matches!(cfg.method, GraphMethodConfig::Dgi(_)),
        }),
        true => Box::new(GraphViews {
            graphs,
            augment: cfg.augment.clone(),
            batch_size: cfg.run.batch_size,
            seed,
        }),
    };
    let mut trainer_cfg = cfg.trainer.clone();
    trainer_cfg.optimizer.lr = cfg.trainer.optimizer.lr * 256.0 / source.batch_size().max(1) as f64;
    // Weights from the seed; the random-weights baseline from another seed.
    seed_weights(seed);
    let mut method = build_method(cfg, base.share(), device);
    seed_random_weights(seed);
    let random = build_method(cfg, base.share(), device);
    let parameters = trainable_parameters(method.var_store());
    let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(0xC011_A95E);
    let views = (
        cfg.augment.view1.apply(&base, &mut r).to_device(device),
        cfg.augment.view2.apply(&base, &mut r).to_device(device),
    );
    let base_dev = base.to_device(device);
    let mut evaluator =
        GraphEpochEval::new(base_dev.share(), target.clone(), cfg.eval.clone(), views)?;
    run.log(&format!(
        "training {}: {:.3} M parameters, {} steps per epoch, on {}",
        cfg.method.name(),
        parameters as f64 / 1e6,
        source.batches_per_epoch(),
        describe(device)
    ));
    let trainer = run.trainer(trainer_cfg);
    let summary = {
        let m: &mut dyn GraphMethod = method.as_mut();
        trainer.fit(m, source.as_ref(), &mut evaluator, run.observer, run.resume)?
    };
    let eval = match &target {
        Some(t) => {
            run.log(
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
    let link = match &link_split {
        Some(s) => {
            run.log("evaluating link prediction: frozen embeddings beside the controls");
            Some(crate::link::evaluate_link(
                method.as_ref(),
                random.as_ref(),
                &base_dev,
                s,
            )?)
        }
        None => None,
    };
    let export_dir = run.run_dir.join("export");
    export_run(
        &export_dir,
        cfg,
        method.as_ref(),
        &base,
        &base_dev,
        target.as_ref(),
        report.feature_dim,
    )?;
    let passes = match cfg.method.graph_level() {
        true => (summary.steps as f64 / source.batches_per_epoch().max(1) as f64).max(1.0),
        false => summary.steps.max(1) as f64,
    };
    let wall_seconds = run.seconds();
    run.finish(GraphRunSummary {
        method: cfg.method.name().into(),
        device: describe(device),
        data: report,
        parameters,
        epochs: cfg.trainer.epochs,
        steps: summary.steps,
        final_loss: summary.final_loss,
        train_seconds: summary.train_seconds,
        seconds_per_pass: summary.train_seconds / passes,
        wall_seconds,
        eval,
        link,
        warnings: summary.warnings,
        export_dir,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::tests::preset;

    fn run(cfg: &GraphRunConfig, root: &Path) -> Result<GraphRunSummary> {
        let mut observer = selfsup_core::trainer::Silent;
        let mut log = |_: &str| {};
        let opts = RunOptions {
            data: Some(root.to_path_buf()),
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

    /// The karate club (built in) for one short epoch.
    pub(crate) fn karate() -> GraphRunConfig {
        let (text, path) = preset("grace-karate-cpu.toml");
        let mut cfg = GraphRunConfig::from_toml(&text, &path).unwrap();
        cfg.trainer.epochs = 1;
        cfg.run.steps_per_epoch = Some(3);
        cfg.eval.splits = 3;
        cfg
    }

    #[test]
    fn pretrain_writes_the_config_and_the_summary_through_the_run() {
        let _rng = crate::TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let cfg = karate();
        let s = run(&cfg, dir.path()).unwrap();
        let run_dir = dir.path().join("run");
        let written =
            std::fs::read_to_string(run_dir.join(selfsup_core::run::CONFIG_FILE)).unwrap();
        assert_eq!(
            GraphRunConfig::from_toml(&written, Path::new("config.toml")).unwrap(),
            cfg
        );
        let json: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(run_dir.join(selfsup_core::run::SUMMARY_FILE)).unwrap(),
        )
        .unwrap();
        assert_eq!(json["method"], "grace");
        assert_eq!(json["steps"], 3);
        assert_eq!((s.steps, s.data.nodes, s.data.edges), (3, 34, 78));
        assert_eq!(json["final_loss"].as_f64(), Some(s.final_loss));
        assert!(s.final_loss.is_finite() && s.final_loss > 0.0);
        assert!(json["peak_rss_mb"].is_number() || cfg!(not(target_os = "linux")));
        let e = s.eval.as_ref().unwrap();
        assert_eq!(e.metric, "accuracy");
        // 34 members: a stratified fifth (3 + 3) for validation, the other
        // 28 split in halves.
        assert_eq!(
            (e.train_examples, e.validation_examples, e.test_examples),
            (14, 6, 14)
        );
        assert_eq!(
            json["eval"]["validation"]["pretrained"]["mean"].as_f64(),
            Some(e.validation.pretrained.mean)
        );
        assert_eq!(
            json["eval"]["pretrained"]["mean"].as_f64(),
            Some(e.pretrained.mean)
        );
        assert!((0.0..=1.0).contains(&e.random_weights.mean));
        // The per-epoch figure is the validation one.
        let metrics = std::fs::read_to_string(run_dir.join("metrics.jsonl")).unwrap();
        assert!(
            metrics.contains("\"val_probe_accuracy\"") && !metrics.contains("\"probe_accuracy\""),
            "{metrics}"
        );
        assert!(run_dir.join("export/encoder.safetensors").is_file());
        assert!(run_dir.join("export/graph/x.npy").is_file());
        // The reference probes the same samples: the validation part and
        // the splits are exported, disjoint and covering all 34 members.
        let read = |name: &str| Tensor::read_npy(run_dir.join("export/graph").join(name)).unwrap();
        let (v, tr, te) = (
            read("validation.npy"),
            read("split_train.npy"),
            read("split_test.npy"),
        );
        assert_eq!(
            (v.size(), tr.size(), te.size()),
            (vec![6], vec![3, 14], vec![3, 14])
        );
        for k in 0..3 {
            let mut all: Vec<i64> =
                Vec::try_from(Tensor::cat(&[&v, &tr.get(k), &te.get(k)], 0)).unwrap();
            all.sort_unstable();
            assert_eq!(all, (0..34).collect::<Vec<i64>>());
        }
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
        cfg.run.steps_per_epoch = Some(0);
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
    fn a_missing_dataset_names_the_file_the_root_and_the_flag() {
        let dir = tempfile::tempdir().unwrap();
        let (text, path) = preset("grace-cpu.toml");
        let cfg = GraphRunConfig::from_toml(&text, &path).unwrap();
        let e = run(&cfg, &dir.path().join("empty"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("graspologic") && e.contains("empty") && e.contains("--data"),
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
