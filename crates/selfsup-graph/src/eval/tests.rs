use super::*;
use crate::config::build_method;
use crate::pretrain::{base_and_target, read_dataset};
use selfsup_core::trainer::EpochEvaluator;
use std::collections::BTreeSet;

fn classes(ids: Vec<i64>) -> Targets {
    let k = ids.iter().copied().max().unwrap_or(0) + 1;
    Targets::Classes {
        ids,
        names: (0..k).map(|c| format!("c{c}")).collect(),
    }
}

fn cfg(splits: usize) -> EvalConfig {
    EvalConfig {
        splits,
        epoch_splits: splits,
        probe: LinearProbeConfig {
            epochs: 30,
            ..Default::default()
        },
        ..Default::default()
    }
}

#[test]
fn the_validation_part_is_fixed_stratified_and_apart_from_every_split() {
    // 60 of class 0, 30 of class 1, 10 of class 2.
    let ids: Vec<i64> = (0..100)
        .map(|i| (i >= 60) as i64 + (i >= 90) as i64)
        .collect();
    let t = classes(ids.clone());
    let s = eval_splits(&t, &cfg(5), 5).unwrap();
    let val: BTreeSet<i64> = s.validation.iter().copied().collect();
    assert_eq!(val.len(), 20);
    let per_class = |c| {
        s.validation
            .iter()
            .filter(|&&i| ids[i as usize] == c)
            .count()
    };
    assert_eq!((per_class(0), per_class(1), per_class(2)), (12, 6, 2));
    assert_eq!(s.parts.len(), 5);
    for (tr, te) in &s.parts {
        assert_eq!((tr.len(), te.len()), (40, 40));
        let mut all: Vec<i64> = tr.iter().chain(te).chain(&s.validation).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..100).collect::<Vec<_>>(), "each sample on one side");
        assert!(tr.iter().chain(te).all(|i| !val.contains(i)));
    }
    assert_ne!(s.parts[0], s.parts[1], "the splits differ");
    assert_eq!(s, eval_splits(&t, &cfg(5), 5).unwrap(), "seeded");
    let mut other = cfg(5);
    other.split_seed = 1;
    assert_ne!(s.validation, eval_splits(&t, &other, 5).unwrap().validation);
    // Regression targets: an unstratified fifth.
    let v = Targets::Values {
        values: (0..10).map(f64::from).collect(),
        unit: "eV".into(),
    };
    assert_eq!(eval_splits(&v, &cfg(1), 1).unwrap().validation.len(), 2);
}

#[test]
fn too_few_samples_or_a_bad_fraction_are_errors_naming_the_key() {
    let e = eval_splits(&classes(vec![0, 1]), &cfg(1), 1).unwrap_err();
    assert!(e.to_string().contains("validation_fraction"), "{e}");
    let e = eval_splits(&classes(vec![0, 0]), &cfg(1), 1).unwrap_err();
    assert!(e.to_string().contains("fewer than the 2"), "{e}");
    let mut c = cfg(1);
    c.validation_fraction = 1.5;
    let e = eval_splits(&classes(vec![0, 0, 1, 1, 0, 1]), &c, 1).unwrap_err();
    assert!(e.to_string().contains("[eval] validation_fraction"), "{e}");
}

/// Features that give the class away on the samples of `good` and say
/// nothing elsewhere.
fn telling_on(ids: &[i64], good: &BTreeSet<i64>) -> Tensor {
    let rows: Vec<f32> = ids
        .iter()
        .enumerate()
        .flat_map(|(i, &c)| {
            let noise = ((i * 7919) % 13) as f32 / 13.0;
            if good.contains(&(i as i64)) {
                [c as f32 * 4.0 - 2.0, noise]
            } else {
                [noise - 0.5, noise]
            }
        })
        .collect();
    Tensor::from_slice(&rows).view([ids.len() as i64, 2])
}

#[test]
fn validation_and_test_figures_come_from_their_own_samples() {
    let ids: Vec<i64> = (0..80).map(|i| i % 2).collect();
    let t = classes(ids.clone());
    let c = cfg(1);
    let s = eval_splits(&t, &c, 1).unwrap();
    let (tr, te) = &s.parts[0];
    // Telling on the training and validation samples only: validation
    // perfect, test at chance.
    let good: BTreeSet<i64> = tr.iter().chain(&s.validation).copied().collect();
    let (v, test) = score(&telling_on(&ids, &good), &t, &c, &s, true).unwrap();
    let test = test.unwrap();
    assert_eq!(v.mean, 1.0);
    assert!(test.mean < 0.75, "{test:?}");
    // Telling on training and test samples: the other way round.
    let good: BTreeSet<i64> = tr.iter().chain(te).copied().collect();
    let (v, test) = score(&telling_on(&ids, &good), &t, &c, &s, true).unwrap();
    assert_eq!(test.unwrap().mean, 1.0);
    assert!(v.mean < 0.75, "{v:?}");
    let (_, none) = score(&telling_on(&ids, &good), &t, &c, &s, false).unwrap();
    assert_eq!(none, None);
}

#[test]
fn ridge_picks_its_penalty_on_the_validation_rows() {
    // y = 3 x0 exactly on the training rows and on half the other rows,
    // y = 0 on the rest: the least penalty fits the first, the largest
    // comes closest to the second.
    let n = 60i64;
    let x = Tensor::arange(n, (Kind::Float, tch::Device::Cpu)).view([n, 1]) / 10.0;
    let line = &x.squeeze_dim(1) * 3.0;
    let tr = Tensor::arange_start(0, 40, (Kind::Int64, tch::Device::Cpu));
    let a = Tensor::arange_start(40, 50, (Kind::Int64, tch::Device::Cpu));
    let b = Tensor::arange_start(50, 60, (Kind::Int64, tch::Device::Cpu));
    let y = line.index_fill(0, &b, 0.0);
    let (va, ta) = ridge_mae(&x, &y, &tr, &a, Some(&b));
    assert!(va < 1e-2, "validation on the line: least penalty, {va}");
    let (vb, tb) = ridge_mae(&x, &y, &tr, &b, Some(&a));
    // Chosen on the zero rows: the largest penalty shrinks toward the mean.
    assert!(vb < ta.unwrap(), "{vb} {ta:?}");
    assert!(tb.unwrap() > 1.0, "a penalty chosen on b misses a: {tb:?}");
}

#[test]
fn the_per_epoch_figure_reads_validation_labels_never_test_labels() {
    let _rng = crate::TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner());
    let cfg = crate::pretrain::tests::karate();
    let dir = tempfile::tempdir().unwrap();
    let (ds, _) = read_dataset(&cfg, dir.path(), "").unwrap();
    let (base, target, _) = base_and_target(&ds);
    let method = build_method(&cfg, base.share(), tch::Device::Cpu);
    let mut eval_cfg = cfg.eval.clone();
    eval_cfg.epoch_splits = 1;
    let mut e =
        GraphEpochEval::new(base.share(), target, eval_cfg, (base.share(), base.share())).unwrap();
    let figure = |e: &mut GraphEpochEval| {
        let out = EpochEvaluator::<dyn GraphMethod>::evaluate(e, method.as_ref(), 1).unwrap();
        assert_eq!(out.metrics[0].0, "val_probe_accuracy");
        out.metrics[0].1
    };
    let before = figure(&mut e);
    assert!((0.0..=1.0).contains(&before));
    let (val, test) = {
        let s = e.splits().unwrap();
        (s.validation.clone(), s.parts[0].1.clone())
    };
    let flip = |e: &mut GraphEpochEval, rows: &[i64]| {
        if let Some((Targets::Classes { ids, .. }, _)) = &mut e.quick {
            for &i in rows {
                ids[i as usize] = 1 - ids[i as usize];
            }
        }
    };
    // Every test label flipped: the same figure, to the bit.
    flip(&mut e, &test);
    assert_eq!(figure(&mut e), before);
    // Every validation label flipped: the figure becomes its complement.
    flip(&mut e, &val);
    let after = figure(&mut e);
    assert!((after - (1.0 - before)).abs() < 1e-9, "{before} {after}");
}
