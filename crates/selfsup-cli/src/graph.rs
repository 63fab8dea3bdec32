//! `selfsup pretrain` for graph configs (`[method] name = "grace" | "dgi" |
//! "graphcl"`): overrides, progress, summary.
use crate::{
    default_data_root, git_commit, install_ctrlc, prepare_run_dir, progress, write_summary,
    Overrides, RunDirFlags,
};
use anyhow::Result;
use selfsup_core::metrics::peak_rss_mb;
use selfsup_graph::pretrain::{GraphRunConfig, GraphRunSummary, RunOptions};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// The graph methods' `[method] name`s.
pub const GRAPH_METHODS: [&str; 3] = ["grace", "dgi", "graphcl"];

pub fn pretrain_graph(
    mut cfg: GraphRunConfig,
    o: Overrides,
    data: Option<PathBuf>,
    run_dir: PathBuf,
    resume: bool,
    flags: RunDirFlags,
    stop_after: Option<u64>,
) -> Result<()> {
    o.apply(
        &mut cfg.trainer,
        &mut cfg.run.device,
        &mut cfg.run.batch_size,
        &mut cfg.run.threads,
    )?;
    let _run = prepare_run_dir(&run_dir, &cfg.to_toml(), resume, flags, true)?;
    let stop = Arc::new(AtomicBool::new(false));
    install_ctrlc(&stop)?;
    let mut observer = progress::Bars::new(stop.clone(), stop_after);
    let mut log = |line: &str| eprintln!("{line}");
    let summary = selfsup_graph::pretrain::pretrain(
        &cfg,
        RunOptions {
            data_root: data.unwrap_or_else(default_data_root),
            run_dir: run_dir.clone(),
            resume,
            observer: &mut observer,
            stop,
            git_commit: git_commit(),
            log: &mut log,
            distributed: None,
        },
    );
    observer.finish();
    let summary = summary?;
    write_summary(&run_dir, &summary)?;
    print_summary(&summary);
    Ok(())
}

fn print_summary(s: &GraphRunSummary) {
    let d = &s.data;
    println!();
    println!(
        "selfsup {} on {} ({} graph(s), {} nodes, {} edges; {})",
        s.method, d.name, d.graphs, d.nodes, d.edges, s.device
    );
    println!(
        "  fixed up: {} self-loops dropped, {} duplicate edges merged; {} records skipped",
        d.fixups.self_loops, d.fixups.duplicate_edges, d.skipped
    );
    println!(
        "  {:.3} M parameters, epochs {}, steps {}, final loss {:.4}",
        s.parameters as f64 / 1e6,
        s.epochs,
        s.steps,
        s.final_loss
    );
    println!(
        "  training {:.1} s ({:.1} ms per pass over the data), whole run {:.1} s, peak memory {}",
        s.train_seconds,
        s.seconds_per_pass * 1e3,
        s.wall_seconds,
        peak_rss_mb().map_or("n/a".into(), |m| format!("{m:.0} MB"))
    );
    if let Some(e) = &s.eval {
        let pct = e.metric == "accuracy";
        let f = |x: f64| {
            if pct {
                format!("{:.2}%", x * 100.0)
            } else {
                format!("{x:.4}")
            }
        };
        println!(
            "  {} on frozen embeddings ({} train / {} test, mean +- std over splits):",
            e.metric, e.train_examples, e.test_examples
        );
        for (name, sc) in [
            ("pre-trained", e.pretrained),
            ("random weights", e.random_weights),
            ("raw features", e.raw_features),
        ] {
            println!("    {name:<15} {:>9} +- {}", f(sc.mean), f(sc.std));
        }
    }
    if s.warnings.is_empty() {
        println!("  collapse monitors: no warning");
    } else {
        println!("  collapse monitors: {} warning(s):", s.warnings.len());
        for w in &s.warnings {
            println!("    - {w}");
        }
    }
    println!(
        "  exported embeddings and encoder: {}",
        s.export_dir.display()
    );
}
