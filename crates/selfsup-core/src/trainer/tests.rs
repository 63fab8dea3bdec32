//! The trainer's tests: a toy method on toy data, trained, interrupted,
//! resumed and watched for collapse.
mod fixture;

use super::resume::resume_step;
use super::*;
use crate::checkpoint;
use crate::monitor::CollapseThresholds;
use crate::target::TargetKind;
use crate::Error;
use fixture::{ckpt, config, step_losses, Collapsed, Ranked, Toy, ToyMethod};
use serde_json::Value;
use std::sync::atomic::Ordering;
use tch::Kind;

#[test]
fn resume_maps_steps_across_world_sizes() {
    // 1000 samples; 2 ranks x 50 = 100 per step (10 steps per epoch),
    // resumed on 1 rank x 50 (20 per epoch) or 4 x 50 (5 per epoch).
    assert_eq!(resume_step(&ckpt(23, 10, 100), 10, 100), Ok(23));
    assert_eq!(resume_step(&ckpt(20, 10, 100), 20, 50), Ok(40));
    assert_eq!(resume_step(&ckpt(23, 10, 100), 20, 50), Ok(46));
    assert_eq!(resume_step(&ckpt(20, 10, 100), 5, 200), Ok(10));
    let mid = resume_step(&ckpt(23, 10, 100), 5, 200).unwrap_err();
    assert!(mid.contains("end-of-epoch checkpoint"), "{mid}");
    let data = resume_step(&ckpt(20, 10, 100), 40, 50).unwrap_err();
    assert!(data.contains("the dataset changed"), "{data}");
    let old = resume_step(&ckpt(20, 10, 0), 20, 50).unwrap_err();
    assert!(old.contains("dataset or batch size changed"), "{old}");
}

#[test]
fn training_lowers_the_loss_and_writes_the_run_folder() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = ToyMethod::new(0);
    let s = Trainer::new(config(6), dir.path(), tch::Device::Cpu)
        .fit(&mut m, &Toy::new(3), &mut NoEval, &mut Silent, false)
        .unwrap();
    assert_eq!(s.steps, 24);
    let losses = step_losses(dir.path());
    let first: f64 = losses[..4].iter().map(|l| l.1).sum::<f64>() / 4.0;
    let last: f64 = losses[20..].iter().map(|l| l.1).sum::<f64>() / 4.0;
    assert!(last < first * 0.8, "loss did not fall: {first} -> {last}");
    for f in [
        CHECKPOINT_FILE,
        METRICS_FILE,
        PLOT_FILE,
        crate::metrics::TENSORBOARD_DIR,
    ] {
        assert!(dir.path().join(f).exists(), "{f}");
    }
}

#[test]
fn interrupted_run_resumes_with_identical_losses() {
    let full = tempfile::tempdir().unwrap();
    let mut m = ToyMethod::new(0);
    Trainer::new(config(3), full.path(), tch::Device::Cpu)
        .fit(&mut m, &Toy::new(3), &mut NoEval, &mut Silent, false)
        .unwrap();
    let reference = step_losses(full.path());

    // Same run, interrupted after step 5 (mid-epoch), then resumed by a fresh process-like state.
    let part = tempfile::tempdir().unwrap();
    struct StopAt(Arc<AtomicBool>, u64);
    impl Observer for StopAt {
        fn on_step(&mut self, r: &StepReport) {
            if r.step + 1 == self.1 {
                self.0.store(true, Ordering::SeqCst);
            }
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let mut m = ToyMethod::new(0);
    let err = Trainer::new(config(3), part.path(), tch::Device::Cpu)
        .with_stop_flag(stop.clone())
        .fit(
            &mut m,
            &Toy::new(3),
            &mut NoEval,
            &mut StopAt(stop, 5),
            false,
        )
        .unwrap_err();
    assert!(matches!(err, Error::Interrupted { step: 5, .. }), "{err}");
    let mut m = ToyMethod::new(42); // different init: everything must come from the checkpoint
    let s = Trainer::new(config(3), part.path(), tch::Device::Cpu)
        .fit(&mut m, &Toy::new(3), &mut NoEval, &mut Silent, true)
        .unwrap();
    assert_eq!(s.resumed_from, Some(5));
    let resumed = step_losses(part.path());
    assert_eq!(resumed.len(), reference.len());
    for ((s1, l1), (s2, l2)) in reference.iter().zip(&resumed) {
        assert_eq!(s1, s2);
        assert!(
            (l1 - l2).abs() <= 1e-6 * l1.abs().max(1.0),
            "step {s1}: {l1} vs {l2}"
        );
    }
}

#[test]
fn non_finite_loss_stops_and_names_the_step() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = ToyMethod::new(0);
    m.poison_at = Some(7);
    let err = Trainer::new(config(3), dir.path(), tch::Device::Cpu)
        .fit(&mut m, &Toy::new(3), &mut NoEval, &mut Silent, false)
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::NonFiniteLoss { step: 7, .. }), "{msg}");
    assert!(msg.contains(CHECKPOINT_FILE), "{msg}");
    // The last good checkpoint (step 6) is intact and loadable.
    let meta = checkpoint::read_meta(&dir.path().join(CHECKPOINT_FILE)).unwrap();
    assert_eq!(meta.step, 6);
}

/// The GPU's step order (backward, clipping on the device and the fused
/// optimiser queued before the loss is read) trains exactly as the CPU's:
/// the same losses step for step, with SGD and AdamW and with clipping on.
#[test]
fn steps_queued_as_on_a_gpu_train_as_the_cpu_order() {
    for (kind, lr) in [
        (crate::optim::OptimKind::Sgd, 0.5),
        (crate::optim::OptimKind::AdamW, 0.05),
    ] {
        let mut cfg = config(3);
        cfg.optimizer.kind = kind;
        cfg.optimizer.lr = lr;
        cfg.grad_clip = Some(0.5);
        let cpu = tempfile::tempdir().unwrap();
        Trainer::new(cfg.clone(), cpu.path(), tch::Device::Cpu)
            .fit(
                &mut ToyMethod::new(0),
                &Toy::new(3),
                &mut NoEval,
                &mut Silent,
                false,
            )
            .unwrap();
        let mut gpu_cfg = cfg.clone();
        gpu_cfg.optimizer.fused = crate::optim::FusedMode::On;
        let gpu = tempfile::tempdir().unwrap();
        Trainer::new(gpu_cfg, gpu.path(), tch::Device::Cpu)
            .queue_steps_as_on_gpu()
            .fit(
                &mut ToyMethod::new(0),
                &Toy::new(3),
                &mut NoEval,
                &mut Silent,
                false,
            )
            .unwrap();
        let (a, b) = (step_losses(cpu.path()), step_losses(gpu.path()));
        assert_eq!(a.len(), b.len());
        assert!(a.len() >= 12, "{kind:?}: {} steps", a.len());
        for ((s1, l1), (s2, l2)) in a.iter().zip(&b) {
            assert_eq!(s1, s2);
            assert!(
                (l1 - l2).abs() <= 1e-5 * l1.abs().max(1.0),
                "{kind:?} step {s1}: {l1} vs {l2}"
            );
        }
        // The toy's gradients exceed 0.5 at first: clipping was exercised.
        let norms: Vec<f64> = std::fs::read_to_string(gpu.path().join(METRICS_FILE))
            .unwrap()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["kind"] == "step")
            .filter_map(|v| v["grad_norm"].as_f64())
            .collect();
        assert!(norms.iter().any(|n| *n > 0.5), "{kind:?}: {norms:?}");
    }
}

/// Queued as on a GPU, a non-finite loss still stops the run naming its
/// step, and the checkpoint on disk is the last good one.
#[test]
fn non_finite_loss_stops_a_queued_step_too() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = ToyMethod::new(0);
    m.poison_at = Some(7);
    let err = Trainer::new(config(3), dir.path(), tch::Device::Cpu)
        .queue_steps_as_on_gpu()
        .fit(&mut m, &Toy::new(3), &mut NoEval, &mut Silent, false)
        .unwrap_err();
    assert!(matches!(err, Error::NonFiniteLoss { step: 7, .. }), "{err}");
    let meta = checkpoint::read_meta(&dir.path().join(CHECKPOINT_FILE)).unwrap();
    assert_eq!(meta.step, 6);
}

/// The GPU running out of memory mid-run (tch panics with libtorch's
/// text) ends the run with one line naming the fix, not a C++ dump, and
/// the last checkpoint stays; any other panic is a bug and unwinds on.
#[test]
fn out_of_gpu_memory_is_one_line_and_keeps_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = ToyMethod::new(0);
    m.oom_at = Some(7);
    let err = Trainer::new(config(3), dir.path(), tch::Device::Cpu)
        .fit(&mut m, &Toy::new(3), &mut NoEval, &mut Silent, false)
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Device(_)), "{msg}");
    assert!(
        msg.contains("out of memory") && msg.contains("--batch-size") && !msg.contains('\n'),
        "{msg}"
    );
    let meta = checkpoint::read_meta(&dir.path().join(CHECKPOINT_FILE)).unwrap();
    assert_eq!(meta.step, 6);
    let other = std::panic::catch_unwind(|| {
        crate::device::guard_device_failure(|| panic!("index out of bounds"))
    });
    assert!(
        other.is_err(),
        "a bug's panic must not become a device error"
    );
}

/// The library's safety net: a fresh `fit` into a folder holding an
/// earlier run's checkpoint is refused (the CLI asks for --overwrite
/// first) and the earlier checkpoint is neither replaced nor named as
/// this run's "last good checkpoint".
#[test]
fn a_fresh_fit_over_an_earlier_checkpoint_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = ToyMethod::new(0);
    Trainer::new(config(1), dir.path(), tch::Device::Cpu)
        .fit(&mut m, &Toy::new(3), &mut NoEval, &mut Silent, false)
        .unwrap();
    let before = std::fs::read(dir.path().join(CHECKPOINT_FILE)).unwrap();
    let mut m = ToyMethod::new(1);
    m.poison_at = Some(0);
    let err = Trainer::new(config(1), dir.path(), tch::Device::Cpu)
        .fit(&mut m, &Toy::new(3), &mut NoEval, &mut Silent, false)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("already holds a run")
            && err.contains("--overwrite")
            && !err.contains("last good"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(dir.path().join(CHECKPOINT_FILE)).unwrap(),
        before
    );
}

/// Resumed from an end-of-epoch checkpoint, the run keeps that epoch's
/// record in metrics.jsonl: the whole history is there once.
#[test]
fn resume_at_an_epoch_end_keeps_the_epoch_record() {
    let full = tempfile::tempdir().unwrap();
    let mut m = ToyMethod::new(0);
    Trainer::new(config(2), full.path(), tch::Device::Cpu)
        .fit(&mut m, &Toy::new(3), &mut NoEval, &mut Silent, false)
        .unwrap();
    let part = tempfile::tempdir().unwrap();
    let mut m = ToyMethod::new(0);
    Trainer::new(config(1), part.path(), tch::Device::Cpu)
        .fit(&mut m, &Toy::new(3), &mut NoEval, &mut Silent, false)
        .unwrap();
    let mut m = ToyMethod::new(0);
    Trainer::new(config(2), part.path(), tch::Device::Cpu)
        .fit(&mut m, &Toy::new(3), &mut NoEval, &mut Silent, true)
        .unwrap();
    let kinds = |dir: &Path| -> Vec<(String, u64)> {
        std::fs::read_to_string(dir.join(METRICS_FILE))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .map(|v| {
                (
                    v["kind"].as_str().unwrap().to_string(),
                    v["step"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    let (a, b) = (kinds(full.path()), kinds(part.path()));
    assert_eq!(a.iter().filter(|k| k.0 == "epoch").count(), 2);
    assert_eq!(a, b);
}

#[test]
fn resume_without_checkpoint_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = ToyMethod::new(0);
    let err = Trainer::new(config(1), dir.path(), tch::Device::Cpu)
        .fit(&mut m, &Toy::new(3), &mut NoEval, &mut Silent, true)
        .unwrap_err()
        .to_string();
    assert!(err.contains("no checkpoint"), "{err}");
}

#[test]
fn collapse_is_reported_in_the_epoch_record() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = ToyMethod::new(0);
    let s = Trainer::new(config(1), dir.path(), tch::Device::Cpu)
        .fit(&mut m, &Toy::new(3), &mut Collapsed, &mut Silent, false)
        .unwrap();
    assert!(!s.warnings.is_empty());
    assert!(s.warnings[0].contains("collapse"), "{:?}", s.warnings);
}

#[test]
fn collapse_warnings_are_judged_against_the_state_before_the_first_step() {
    // Rank 1 of 32 before training and after: never spread, not collapsed.
    let dir = tempfile::tempdir().unwrap();
    let mut m = ToyMethod::new(0);
    let mut eval = Ranked {
        init_rank: 1,
        rank: 1,
        init_calls: 0,
    };
    let s = Trainer::new(config(1), dir.path(), tch::Device::Cpu)
        .fit(&mut m, &Toy::new(3), &mut eval, &mut Silent, false)
        .unwrap();
    let init = s
        .init_collapse
        .clone()
        .expect("measured before the first step");
    assert!(init.rankme < 1.5, "{init:?}");
    assert_eq!(s.warnings.len(), 1, "{:?}", s.warnings);
    assert!(
        s.warnings[0]
            .starts_with("epoch 1: low effective rank since initialisation: effective rank"),
        "{:?}",
        s.warnings
    );
    // The figure is in metrics.jsonl, and a resumed run judges by it too
    // without measuring again.
    let log = std::fs::read_to_string(dir.path().join(METRICS_FILE)).unwrap();
    let first: Value = serde_json::from_str(log.lines().next().unwrap()).unwrap();
    assert_eq!(first["kind"], "init");
    assert_eq!(first["step"], 0);
    let s = Trainer::new(config(2), dir.path(), tch::Device::Cpu)
        .fit(&mut m, &Toy::new(3), &mut eval, &mut Silent, true)
        .unwrap();
    assert_eq!(eval.init_calls, 1);
    assert_eq!(s.init_collapse, Some(init));
    assert!(
        s.warnings[0].starts_with("epoch 2: low effective rank since initialisation"),
        "{:?}",
        s.warnings
    );
    let log = std::fs::read_to_string(dir.path().join(METRICS_FILE)).unwrap();
    assert_eq!(log.matches("\"kind\":\"init\"").count(), 1, "{log}");

    // Spread before training (rank 32), rank 1 after: a collapse, with the
    // figure it fell from.
    let dir = tempfile::tempdir().unwrap();
    let mut eval = Ranked {
        init_rank: 32,
        rank: 1,
        init_calls: 0,
    };
    let s = Trainer::new(config(1), dir.path(), tch::Device::Cpu)
        .fit(
            &mut ToyMethod::new(0),
            &Toy::new(3),
            &mut eval,
            &mut Silent,
            false,
        )
        .unwrap();
    assert!(
        s.warnings[0].starts_with("epoch 1: possible collapse: effective rank 1.0"),
        "{:?}",
        s.warnings
    );
    assert!(
        s.warnings[0].contains("before the first step"),
        "{:?}",
        s.warnings
    );
}

/// The method's target is read once: the summary and the run's first epoch
/// record name it, and it sets the emphasis of the collapse warnings, which
/// fire exactly as before and keep their leading text.
#[test]
fn collapse_warnings_take_their_emphasis_from_the_target() {
    let (a, b) = Collapsed::views();
    let stats = crate::monitor::collapse_stats(&a, Some(&b));
    let plain = CollapseThresholds::default().warnings(&stats);
    assert!(!plain.is_empty());
    for (target, name) in [
        (TargetKind::Teacher, "teacher"),
        (TargetKind::OtherView, "other_view"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut m = ToyMethod::new(0);
        m.target = target;
        let s = Trainer::new(config(2), dir.path(), tch::Device::Cpu)
            .fit(&mut m, &Toy::new(3), &mut Collapsed, &mut Silent, false)
            .unwrap();
        assert_eq!(s.target, target);
        assert_eq!(serde_json::to_value(&s).unwrap()["target"], name);
        let emphasis = if target.collapse_prone() {
            "teacher target: nothing in the loss pushes embeddings apart, so the run has likely collapsed"
        } else {
            "contrastive target (negatives push embeddings apart): a weaker signal, check the probe"
        };
        let want: Vec<String> = (1..=2)
            .flat_map(|e| {
                plain
                    .iter()
                    .map(move |w| format!("epoch {e}: {w}; {emphasis}"))
            })
            .collect();
        assert_eq!(s.warnings, want);
        let epochs: Vec<Value> = std::fs::read_to_string(dir.path().join(METRICS_FILE))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|v| v["kind"] == "epoch")
            .collect();
        assert_eq!(epochs.len(), 2);
        assert_eq!(epochs[0]["target"], name);
        assert!(epochs[1].get("target").is_none(), "{}", epochs[1]);
    }
    for (target, prone) in [
        (TargetKind::OtherView, false),
        (TargetKind::Teacher, true),
        (TargetKind::Redundancy, false),
        (TargetKind::Prototypes, true),
        (TargetKind::MaskedContent, false),
        (TargetKind::Pretext, false),
    ] {
        let e = evaluation::emphasis(target);
        assert_eq!(
            e.contains("nothing in the loss pushes embeddings apart"),
            prone,
            "{e}"
        );
        assert_eq!(
            e.contains("a weaker signal, check the probe"),
            !prone,
            "{e}"
        );
    }
    // Non-finite embeddings get no emphasis: no target explains them.
    let nan = Tensor::full([64, 8], f64::NAN, (Kind::Float, tch::Device::Cpu));
    let nan_stats = crate::monitor::collapse_stats(&nan, None);
    let thresholds = CollapseThresholds::default();
    assert_eq!(
        evaluation::collapse_warnings(&thresholds, &nan_stats, None, TargetKind::Teacher),
        thresholds.warnings(&nan_stats)
    );
}
