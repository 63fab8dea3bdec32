//! The graph run config: one TOML file (see `configs/graph/`), its `[run]`
//! table core's [`RunSettings`], and the method it builds.
use crate::augment::AugmentConfig;
use crate::encoders::EncoderConfig;
use crate::eval::EvalConfig;
use crate::graph::{View, MAX_NODES};
use crate::methods::{Dgi, Gae, Grace, GraphCl, GraphMethod, GraphMethodConfig};
use crate::readers::DataConfig;
use selfsup_core::run::{BatchDefault, RunSettings};
use selfsup_core::trainer::TrainerConfig;
use selfsup_core::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The graph modality's default `[run] batch_size`: 128 graphs per batch
/// (graph-level methods; the node-level ones train on the full graph).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Graphs;

impl BatchDefault for Graphs {
    const BATCH: usize = 128;
}

/// `[run]`: core's run settings with the graph default batch. Its
/// `steps_per_epoch` is for the node-level methods (full-graph steps per
/// trainer epoch, [`DEFAULT_STEPS_PER_EPOCH`] when left out).
pub type RunConfig = RunSettings<Graphs>;

/// Full-graph steps per trainer epoch when `[run] steps_per_epoch` is left out.
pub const DEFAULT_STEPS_PER_EPOCH: usize = 50;

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
        if cfg.run.steps_per_epoch == Some(0) {
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
            GraphMethodConfig::Gae(c) => {
                if c.out_dim < 1 {
                    return Err(format!(
                        "[method] out_dim = {}: give a width of at least 1",
                        c.out_dim
                    ));
                }
            }
        }
        if let Some(link) = &cfg.eval.link {
            link.validate()?;
            if cfg.method.graph_level() {
                return Err(format!(
                    "[eval.link]: {} learns graph embeddings; link prediction scores node \
                     pairs of one graph: use a node-level method",
                    cfg.method.name()
                ));
            }
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
        selfsup_core::eval::split::check_fraction(
            "[eval] validation_fraction",
            cfg.eval.validation_fraction,
        )?;
        cfg.eval.probe.validate("[eval.probe]")?;
        cfg.eval.finetune.validate()?;
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

    /// Full-graph steps per trainer epoch of a node-level method.
    pub fn steps_per_epoch(&self) -> usize {
        self.run.steps_per_epoch.unwrap_or(DEFAULT_STEPS_PER_EPOCH)
    }

    /// The resolved config as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# unserialisable config: {e}"))
    }
}

/// The method `cfg` names, freshly initialised from libtorch's generator as
/// it stands (the caller seeds it), on the base graph `base`.
pub fn build_method(cfg: &GraphRunConfig, base: View, device: tch::Device) -> Box<dyn GraphMethod> {
    match &cfg.method {
        GraphMethodConfig::Grace(c) => Box::new(Grace::new(base, &cfg.encoder, c, device)),
        GraphMethodConfig::Dgi(c) => Box::new(Dgi::new(base, &cfg.encoder, c, device)),
        GraphMethodConfig::Graphcl(c) => Box::new(GraphCl::new(base, &cfg.encoder, c, device)),
        GraphMethodConfig::Gae(c) => {
            Box::new(Gae::new(base, &cfg.encoder, c, cfg.trainer.seed, device))
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::path::PathBuf;

    /// A preset of `configs/graph/`: its text and path.
    pub(crate) fn preset(name: &str) -> (String, PathBuf) {
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
                grace.replace("[eval]\n", "[eval]\nvalidation_fraction = 1.0\n"),
                "[eval] validation_fraction must be a fraction in (0, 1) of the training data, got 1",
            ),
            (
                &grace,
                &gpath,
                grace.replace("[eval]\n", "[eval]\nvalidation_fraction = 0.0\n"),
                "[eval] validation_fraction must be a fraction in (0, 1) of the training data, got 0",
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
}
