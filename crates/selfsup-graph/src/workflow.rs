//! The graph modality as the `selfsup` binary sees it: its method names,
//! its config parser, the summary it prints, and what it does with one of
//! its checkpoints (the linear probe beside random weights and raw
//! features; the export of the encoder and the training graph's
//! embeddings).
use crate::config::{build_method, GraphRunConfig};
use crate::eval::{evaluate, EvalRow};
use crate::methods::{GraphMethod, GraphMethodConfig};
use crate::pretrain::{
    base_and_target, export_run, pretrain, read_dataset, GraphRunSummary, DATA_FLAG_HINT,
};
use crate::readers::ReadReport;
use selfsup_core::checkpoint::restore_model;
use selfsup_core::device::describe;
use selfsup_core::metrics::peak_rss_mb;
use selfsup_core::run::{default_data_root, seed_random_weights, seed_weights, Common, RunOptions};
use selfsup_core::workflow::{EvalRequest, Modality, Plan, Report};
use selfsup_core::{Error, Result};
use std::path::Path;

/// The evaluation [`GraphModality::evaluate`] offers: core's linear probe
/// (node or graph classes; ridge regression for QM9's values) on the frozen
/// embeddings, beside the same encoder with random weights and the raw
/// features, mean +- std over `[eval] splits` splits.
pub const LINEAR: &str = "linear";

/// GRACE, DGI and GraphCL.
pub struct GraphModality;

/// A parsed, checked graph config.
pub struct GraphPlan(pub GraphRunConfig);

impl Modality for GraphModality {
    fn name(&self) -> &'static str {
        "graph"
    }

    fn methods(&self) -> &'static [&'static str] {
        &GraphMethodConfig::NAMES
    }

    fn parse(&self, text: &str, origin: &Path) -> Result<Box<dyn Plan>> {
        Ok(Box::new(GraphPlan(GraphRunConfig::from_toml(
            text, origin,
        )?)))
    }

    fn evaluations(&self) -> &'static [&'static str] {
        &[LINEAR, crate::finetune::FINETUNE, crate::link::LINK]
    }

    fn evaluate(&self, request: &EvalRequest<'_>) -> Result<Vec<String>> {
        if !self.evaluations().contains(&request.protocol) {
            return Err(Error::Config(format!(
                "evaluation '{}': a graph checkpoint offers {}",
                request.protocol,
                self.evaluations().join(", ")
            )));
        }
        if request.protocol == crate::finetune::FINETUNE {
            return crate::finetune::report(request);
        }
        if request.protocol == crate::link::LINK {
            return link_report(request);
        }
        let cfg = GraphRunConfig::from_toml(request.config_toml, request.checkpoint)?;
        let device = request.device.resolve()?;
        let root = request
            .data
            .map_or_else(default_data_root, Path::to_path_buf);
        let (ds, report) = read_dataset(&cfg, &root, DATA_FLAG_HINT)?;
        // With [eval.link] the run trained on the graph without its held-out edges.
        let (ds, _) = crate::link::hold_out(ds, cfg.eval.link.as_ref(), &cfg.data)?;
        let (base, target, _) = base_and_target(&ds);
        let Some(target) = target else {
            return Err(Error::Data(format!(
                "{}: the dataset has no labels or targets: nothing for the probe to predict; \
                 give [data] a labels file (or evaluate on a labelled dataset with --data)",
                report.name
            )));
        };
        let (method, random) = restore(&cfg, base.share(), device, request.checkpoint)?;
        let base_dev = base.to_device(device);
        let row = evaluate(
            method.as_ref(),
            random.as_ref(),
            &base_dev,
            cfg.method.graph_level(),
            &target,
            &cfg.eval,
        )?;
        let mut lines = vec![format!(
            "{} checkpoint {} on {} ({} graph(s), {} nodes, {} edges; {})",
            cfg.method.name(),
            request.checkpoint.display(),
            report.name,
            report.graphs,
            report.nodes,
            report.edges,
            describe(device)
        )];
        lines.extend(eval_lines(&row));
        Ok(lines)
    }

    fn export(&self, checkpoint: &Path, config_toml: &str, out: &Path) -> Result<String> {
        let cfg = GraphRunConfig::from_toml(config_toml, checkpoint)?;
        let device = tch::Device::Cpu;
        let root = default_data_root();
        let (ds, report) = read_dataset(
            &cfg,
            &root,
            "`selfsup export` reads the training graph (whose embeddings it exports) from the \
             default data root: fetch the dataset there with `cargo xtask fetch`",
        )?;
        let (ds, _) = crate::link::hold_out(ds, cfg.eval.link.as_ref(), &cfg.data)?;
        let (base, target, _) = base_and_target(&ds);
        let (method, _) = restore(&cfg, base.share(), device, checkpoint)?;
        export_run(
            out,
            &cfg,
            method.as_ref(),
            &base,
            &base,
            target.as_ref(),
            report.feature_dim,
        )?;
        Ok(export_line(&report, out))
    }
}

fn export_line(report: &ReadReport, out: &Path) -> String {
    format!(
        "exported the encoder and the embeddings of {} ({} graph(s), {} nodes) to {}",
        report.name,
        report.graphs,
        report.nodes,
        out.display()
    )
}

/// The checkpoint's method, and the same architecture with the run's random
/// weights: built in the order and from the seeds of the pre-training run,
/// so the random-weights baseline is the one its summary reports.
fn restore(
    cfg: &GraphRunConfig,
    base: crate::graph::View,
    device: tch::Device,
    checkpoint: &Path,
) -> Result<(Box<dyn GraphMethod>, Box<dyn GraphMethod>)> {
    seed_weights(cfg.trainer.seed);
    let method = build_method(cfg, base.share(), device);
    seed_random_weights(cfg.trainer.seed);
    let random = build_method(cfg, base, device);
    restore_model(checkpoint, method.var_store(), method.name())?;
    Ok((method, random))
}

impl Plan for GraphPlan {
    fn common(&mut self) -> Common<'_> {
        self.0.run.common(&mut self.0.trainer)
    }

    fn to_toml(&self) -> String {
        self.0.to_toml()
    }

    fn pretrain(&self, opts: RunOptions<'_>) -> Result<Box<dyn Report>> {
        Ok(Box::new(pretrain(&self.0, opts)?))
    }
}

/// The probe's figures: a heading line and one line per representation
/// (validation and test).
fn eval_lines(e: &EvalRow) -> Vec<String> {
    e.lines()
}

impl Report for GraphRunSummary {
    fn lines(&self) -> Vec<String> {
        let (s, d) = (self, &self.data);
        let mut lines = vec![
            String::new(),
            format!(
                "selfsup {} on {} ({} graph(s), {} nodes, {} edges; {})",
                s.method, d.name, d.graphs, d.nodes, d.edges, s.device
            ),
            format!(
                "  fixed up: {} self-loops dropped, {} duplicate edges merged; {} records skipped",
                d.fixups.self_loops, d.fixups.duplicate_edges, d.skipped
            ),
            format!(
                "  {:.3} M parameters, epochs {}, steps {}, final loss {:.4}",
                s.parameters as f64 / 1e6,
                s.epochs,
                s.steps,
                s.final_loss
            ),
            format!(
                "  training {:.1} s ({:.1} ms per pass over the data), whole run {:.1} s, peak memory {}",
                s.train_seconds,
                s.seconds_per_pass * 1e3,
                s.wall_seconds,
                peak_rss_mb().map_or("n/a".into(), |m| format!("{m:.0} MB"))
            ),
        ];
        if let Some(e) = &s.eval {
            lines.extend(eval_lines(e));
        }
        if let Some(l) = &s.link {
            lines.extend(l.lines());
        }
        if s.warnings.is_empty() {
            lines.push("  collapse monitors: no warning".into());
        } else {
            lines.push(format!(
                "  collapse monitors: {} warning(s):",
                s.warnings.len()
            ));
            lines.extend(s.warnings.iter().map(|w| format!("    - {w}")));
        }
        lines.push(format!(
            "  exported embeddings and encoder: {}",
            s.export_dir.display()
        ));
        lines
    }
}

/// `selfsup eval link` on a checkpoint: the run's own split (its
/// `[eval.link]`, deterministic by its seed) of the dataset read again, the
/// checkpoint's method and the run's random-weights twin on the training
/// graph, as [`evaluate_link`]. A run without `[eval.link]` trained on every
/// edge, so any held-out edge would have been seen: refused.
fn link_report(request: &selfsup_core::workflow::EvalRequest<'_>) -> Result<Vec<String>> {
    use crate::config::{build_method, GraphRunConfig};
    use selfsup_core::run::{default_data_root, seed_random_weights, seed_weights};
    let cfg = GraphRunConfig::from_toml(request.config_toml, request.checkpoint)?;
    let Some(link) = cfg.eval.link.as_ref() else {
        return Err(Error::Config(format!(
            "{}: its run had no [eval.link], so it trained on every edge and no held-out edge is \
             unseen; pre-train with [eval.link] (e.g. configs/graph/gae-cpu.toml) to evaluate \
             link prediction",
            request.checkpoint.display()
        )));
    };
    let device = request.device.resolve()?;
    let root = request
        .data
        .map_or_else(default_data_root, std::path::Path::to_path_buf);
    let (ds, read) = crate::pretrain::read_dataset(&cfg, &root, crate::pretrain::DATA_FLAG_HINT)?;
    let (ds, split) = crate::link::hold_out(ds, Some(link), &cfg.data)?;
    let Some(split) = split else {
        return Err(Error::Data("link prediction: no edge split".into()));
    };
    let (base, _, _) = crate::pretrain::base_and_target(&ds);
    // Built in the order and from the seeds of the pre-training run.
    seed_weights(cfg.trainer.seed);
    let method = build_method(&cfg, base.share(), device);
    seed_random_weights(cfg.trainer.seed);
    let random = build_method(&cfg, base.share(), device);
    selfsup_core::checkpoint::restore_model(request.checkpoint, method.var_store(), method.name())?;
    let row = crate::link::evaluate_link(
        method.as_ref(),
        random.as_ref(),
        &base.to_device(device),
        &split,
    )?;
    let mut lines = vec![format!(
        "{} checkpoint {} on {} ({} nodes, {} edges; {})",
        cfg.method.name(),
        request.checkpoint.display(),
        read.name,
        read.nodes,
        read.edges,
        selfsup_core::device::describe(device)
    )];
    lines.extend(row.lines());
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;
    use selfsup_core::device::DeviceChoice;
    use selfsup_core::trainer::Silent;

    #[test]
    fn every_method_name_parses_as_a_method_config_of_that_name() {
        for name in GraphModality.methods() {
            let m: GraphMethodConfig = toml::from_str(&format!("name = \"{name}\""))
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(m.name(), *name);
        }
        assert!(toml::from_str::<GraphMethodConfig>("name = \"simclr\"").is_err());
    }

    #[test]
    fn a_checkpoint_is_evaluated_as_its_run_did_and_exported_on_the_cpu() {
        let _rng = crate::TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = crate::pretrain::tests::karate();
        cfg.run.device = DeviceChoice::Cpu;
        let mut plan = GraphModality
            .parse(&cfg.to_toml(), Path::new("karate.toml"))
            .unwrap();
        assert_eq!(*plan.common().batch_size, 128);
        let mut observer = Silent;
        let mut log = |_: &str| {};
        let report = plan
            .pretrain(RunOptions {
                data: None,
                run_dir: dir.path().join("run"),
                resume: false,
                observer: &mut observer,
                stop: Default::default(),
                git_commit: None,
                log: &mut log,
                distributed: None,
            })
            .unwrap();
        let printed = report.lines();
        assert_eq!(printed[0], "");
        assert!(
            printed[1].starts_with("selfsup grace on karate (1 graph(s), 34 nodes, 78 edges; cpu"),
            "{printed:?}"
        );
        let checkpoint = dir.path().join("run/checkpoint.safetensors");
        let config = std::fs::read_to_string(dir.path().join("run/config.toml")).unwrap();
        let request = |protocol| EvalRequest {
            protocol,
            checkpoint: &checkpoint,
            config_toml: &config,
            data: None,
            device: DeviceChoice::Cpu,
        };
        let lines = GraphModality.evaluate(&request(LINEAR)).unwrap();
        assert!(lines[0].starts_with("grace checkpoint "), "{lines:?}");
        // The same probe, trained weights, random weights and raw features
        // as the run's own summary.
        let probe: Vec<&String> = printed
            .iter()
            .skip_while(|l| !l.contains("on frozen embeddings"))
            .take(4)
            .collect();
        assert_eq!(probe.len(), 4, "{printed:?}");
        assert_eq!(lines[1..].iter().collect::<Vec<_>>(), probe);
        let e = GraphModality.evaluate(&request("knn")).unwrap_err();
        assert!(
            e.to_string().contains("'knn'") && e.to_string().contains("linear"),
            "{e}"
        );
        let out = dir.path().join("again");
        let line = GraphModality.export(&checkpoint, &config, &out).unwrap();
        assert!(line.contains("karate") && line.contains("again"), "{line}");
        let read = |d: &Path| {
            selfsup_core::tensor_io::load(&d.join("embeddings.safetensors"))
                .unwrap()
                .tensors
        };
        let (a, b) = (read(&dir.path().join("run/export")), read(&out));
        assert_eq!(a["embeddings"].size(), vec![34, 32]);
        assert!(a["embeddings"].allclose(&b["embeddings"], 1e-6, 1e-6, false));
        assert!(out.join("encoder.safetensors").is_file() && out.join("graph/y.npy").is_file());
    }
}
