//! Tests of `finetune`.
use super::*;
use crate::graph::{Featurize, GraphBuilder};
use crate::workflow::GraphModality;
use selfsup_core::device::DeviceChoice;
use selfsup_core::run::RunOptions;
use selfsup_core::workflow::Modality;

/// Three communities of `per` nodes each (a ring inside every community
/// plus chords, one edge between neighbouring communities), adjacency
/// features; the label of a node is its community.
fn communities(per: usize) -> (View, Vec<i64>) {
    let n = 3 * per;
    let mut b = GraphBuilder::new(n);
    for c in 0..3 {
        let base = c * per;
        for k in 0..per {
            b.add_edge(base + k, base + (k + 1) % per, 1.0);
            b.add_edge(base + k, base + (k + 3) % per, 1.0);
        }
        b.add_edge(base, (base + per) % n, 1.0);
    }
    let labels: Vec<i64> = (0..n).map(|i| (i / per) as i64).collect();
    let (f, d) = Featurize::Adjacency.apply(&b).unwrap();
    (b.build(f, d, Some(labels.clone())).tensors(), labels)
}

fn tiny_config() -> GraphRunConfig {
    let (text, path) = crate::config::tests::preset("grace-karate-cpu.toml");
    let mut cfg = GraphRunConfig::from_toml(&text, &path).unwrap();
    cfg.encoder = crate::encoders::EncoderConfig::Gcn(crate::encoders::gcn::GcnConfig {
        dims: vec![16, 8],
        ..Default::default()
    });
    let ft = &mut cfg.eval.finetune;
    (ft.fractions, ft.seeds, ft.steps, ft.batch_size) = (vec![0.3, 1.0], 2, 6, 8);
    cfg
}

fn request<'a>(checkpoint: &'a Path, config_toml: &'a str) -> EvalRequest<'a> {
    EvalRequest {
        protocol: FINETUNE,
        checkpoint,
        config_toml,
        data: None,
        device: DeviceChoice::Cpu,
    }
}

#[test]
fn the_finetune_table_is_core_s_and_refused_out_of_range() {
    let (text, path) = crate::config::tests::preset("grace-karate-cpu.toml");
    let cfg = GraphRunConfig::from_toml(&text, &path).unwrap();
    assert!(cfg.eval.finetune.is_default());
    assert!(!cfg.to_toml().contains("finetune"));
    let given =
        format!("{text}\n[eval.finetune]\nsteps = 7\n[eval.finetune.optimizer]\nlr = 0.02\n");
    let cfg = GraphRunConfig::from_toml(&given, &path).unwrap();
    let ft = &cfg.eval.finetune;
    assert_eq!((ft.steps, ft.optimizer.lr, ft.seeds), (7, 0.02, 3));
    assert_eq!(
        GraphRunConfig::from_toml(&cfg.to_toml(), &path).unwrap(),
        cfg
    );
    for (extra, needle) in [
        ("[eval.finetune]\nstepz = 1\n", "stepz"),
        (
            "[eval.finetune]\nfractions = [0.0]\n",
            "[eval.finetune] fractions: 0",
        ),
        (
            "[eval.finetune]\nfractions = [1.5]\n",
            "[eval.finetune] fractions: 1.5",
        ),
        (
            "[eval.finetune.optimizer]\nlr = -1.0\n",
            "[eval.finetune] optimizer.lr",
        ),
    ] {
        let e = GraphRunConfig::from_toml(&format!("{text}\n{extra}"), &path)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("grace-karate-cpu.toml") && e.contains(needle),
            "{needle}: {e}"
        );
    }
}

#[test]
fn the_node_splits_are_disjoint_stratified_and_seeded() {
    let labels: Vec<i64> = (0..60).map(|i| i % 3).collect();
    let s = NodeSplits::new(labels.clone(), 3, 0.2, 0.5, 4, "g").unwrap();
    let mut all: Vec<usize> = [&s.train[..], &s.validation, &s.test].concat();
    all.sort_unstable();
    assert_eq!(all, (0..60).collect::<Vec<_>>(), "every node once");
    // 20 % of each class of 20: 4 validation nodes; half the other 16 test.
    let per_class = |idx: &[usize], c: i64| idx.iter().filter(|&&i| labels[i] == c).count();
    for c in 0..3 {
        assert_eq!(
            (
                per_class(&s.validation, c),
                per_class(&s.test, c),
                per_class(&s.train, c)
            ),
            (4, 8, 8)
        );
    }
    assert_eq!(
        s.train_labels,
        s.train.iter().map(|&i| labels[i]).collect::<Vec<_>>()
    );
    // The validation part is the probe's: core's by_sample with the seed.
    assert_eq!(s.validation, by_sample(&labels, 0.2, 4).unwrap().validation);
    assert_eq!(
        s,
        NodeSplits::new(labels.clone(), 3, 0.2, 0.5, 4, "g").unwrap()
    );
    assert_ne!(
        s.test,
        NodeSplits::new(labels, 3, 0.2, 0.5, 5, "g").unwrap().test
    );
    // One class, or too few nodes: refused naming the dataset.
    let e = NodeSplits::new(vec![0; 10], 1, 0.2, 0.5, 0, "flat").unwrap_err();
    assert!(
        e.to_string().contains("flat") && e.to_string().contains("1 class"),
        "{e}"
    );
    let e = NodeSplits::new(vec![0, 1], 2, 0.2, 0.5, 0, "pair").unwrap_err();
    assert!(e.to_string().contains("pair: 2 labelled nodes"), "{e}");
}

/// A GCN and its head trained end to end on the communities: the loss falls
/// and held-out accuracy is far above chance (1/3).
#[test]
fn training_end_to_end_learns_the_communities() {
    let _rng = crate::TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner());
    let (base, labels) = communities(20);
    let cfg = tiny_config();
    let ft = FinetuneConfig {
        steps: 60,
        batch_size: 16,
        augment: false,
        ..cfg.eval.finetune.clone()
    };
    let train_nodes: Vec<usize> = (0..60).filter(|i| i % 2 == 0).collect();
    let test_nodes: Vec<usize> = (0..60).filter(|i| i % 2 == 1).collect();
    seed_random_weights(0);
    let net = Net::new(&cfg, base.x.size()[1], 3, Device::Cpu);
    let run = train(&net, &base, &labels, &train_nodes, &ft, 3).unwrap();
    let acc = net.accuracy(&base, &labels, &test_nodes);
    assert!(
        run.last_loss < 0.5 * run.first_loss,
        "loss {} -> {}",
        run.first_loss,
        run.last_loss
    );
    assert!(acc > 0.8, "test accuracy {acc}");
    assert_eq!(
        (run.steps, run.nodes_seen, run.distinct_nodes),
        (60, 960, 30)
    );
}

/// Both arms of a seed train on the same nodes in the same order for the
/// same steps; the pre-trained arm starts from the method's encoder.
#[test]
fn both_arms_share_the_nodes_and_the_budget() {
    let _rng = crate::TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner());
    let (base, labels) = communities(10);
    let cfg = tiny_config();
    seed_weights(9);
    let method = build_method(&cfg, base.share(), Device::Cpu);
    let mut net = Net::new(&cfg, base.x.size()[1], 3, Device::Cpu);
    net.load_encoder(method.as_ref()).unwrap();
    let theirs = method.var_store().variables();
    for (name, t) in net.vs.variables() {
        if name.starts_with("encoder.") {
            assert!(t.equal(&theirs[&name]), "{name}");
        }
    }
    let splits = NodeSplits::new(labels, 3, 0.2, 0.5, 0, "communities").unwrap();
    let mut lines = Vec::new();
    let rows = finetune(
        &cfg,
        method.as_ref(),
        &base,
        &splits,
        Device::Cpu,
        &mut |l| lines.push(l.to_string()),
    )
    .unwrap();
    assert_eq!(lines.len(), 2 * 2 * 2);
    assert!(
        lines[0].starts_with("  30% labels, seed 0, pre-trained: final loss "),
        "{}",
        lines[0]
    );
    assert_eq!(rows.len(), 2);
    // 30 nodes: 6 validation, 12 test, 12 training (4 per class).
    assert_eq!(
        (
            splits.train.len(),
            splits.validation.len(),
            splits.test.len()
        ),
        (12, 6, 12)
    );
    // 30 % of 12: round(3.6) = 4, each class round(4 / 3) = 1.
    assert_eq!(rows[0].labelled, vec![3, 3]);
    assert_eq!(rows[1].labelled, vec![12, 12]);
    for row in &rows {
        for (p, s) in row.pretrained.iter().zip(&row.scratch) {
            assert_eq!(p.batches_digest, s.batches_digest);
            assert_eq!((p.steps, p.nodes_seen), (s.steps, s.nodes_seen));
            assert_eq!(p.steps, 6);
            assert!((0.0..=1.0).contains(&p.accuracy) && (0.0..=1.0).contains(&s.accuracy));
            // The two arms start from different encoders.
            assert_ne!(p.first_loss, s.first_loss);
        }
    }
    assert_eq!(rows[1].pretrained[0].distinct_nodes, 12);
    let json = serde_json::to_value(&rows[0]).unwrap();
    assert_eq!(json["nodes"], serde_json::json!([3, 3]));
    assert!(json["scratch"][1]["validation_accuracy"].is_number());
    assert_eq!(json["scratch"][1]["scored_on"], "test");

    // Scored on validation (choosing the budget): the figure is the
    // validation nodes', and the test nodes are never scored.
    let mut on_val = cfg.clone();
    on_val.eval.finetune.scored_on = ScoredOn::Validation;
    let mut lines = Vec::new();
    let val_rows = finetune(
        &on_val,
        method.as_ref(),
        &base,
        &splits,
        Device::Cpu,
        &mut |l| lines.push(l.to_string()),
    )
    .unwrap();
    for (row, val_row) in rows.iter().zip(&val_rows) {
        for (r, v) in row.pretrained.iter().zip(&val_row.pretrained) {
            // Same training, so the same validation figure; only what is
            // scored differs.
            assert_eq!(r.validation_accuracy, v.validation_accuracy);
            assert_eq!(v.accuracy, v.validation_accuracy);
            assert_eq!(v.scored_on, ScoredOn::Validation);
        }
    }
    assert!(
        lines.iter().all(|l| l.ends_with("(test not scored)")),
        "{lines:?}"
    );
}

/// `selfsup eval finetune` on a short karate-club GRACE run: one line per
/// fraction and finetune.json beside the checkpoint; graph-level configs,
/// configs of another modality and unlabelled graphs are refused naming
/// the checkpoint and what is needed.
#[test]
fn eval_finetune_on_a_checkpoint_writes_its_rows_and_refuses_bad_input() {
    let _rng = crate::TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = crate::pretrain::tests::karate();
    cfg.run.device = DeviceChoice::Cpu;
    cfg.eval.finetune = tiny_config().eval.finetune;
    let plan = GraphModality
        .parse(&cfg.to_toml(), Path::new("karate.toml"))
        .unwrap();
    let mut observer = selfsup_core::trainer::Silent;
    let mut log = |_: &str| {};
    plan.pretrain(RunOptions {
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
    let checkpoint = dir.path().join("run/checkpoint.safetensors");
    let config = std::fs::read_to_string(dir.path().join("run/config.toml")).unwrap();
    assert!(config.contains("[eval.finetune]"), "{config}");
    let request = |config_toml| request(&checkpoint, config_toml);
    assert!(GraphModality.evaluations().contains(&FINETUNE));
    let lines = GraphModality.evaluate(&request(&config)).unwrap();
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert!(lines[0].starts_with("grace checkpoint "), "{}", lines[0]);
    assert!(
        lines[1].starts_with("fine-tuning on 30% of the labels (")
            && lines[1].contains("nodes, 2 seeds): pre-trained ")
            && lines[1].contains("(validation: pre-trained "),
        "{}",
        lines[1]
    );
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("run").join(FINETUNE_FILE)).unwrap(),
    )
    .unwrap();
    assert_eq!(json["method"], "grace");
    assert_eq!(json["nodes"], 34);
    let rows = json["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1]["fraction"], 1.0);
    assert_eq!(rows[1]["pretrained"].as_array().unwrap().len(), 2);
    assert_eq!(json["settings"]["steps"], 6);
    let (train, val, test) = (
        json["train_nodes"].as_u64().unwrap(),
        json["validation_nodes"].as_u64().unwrap(),
        json["test_nodes"].as_u64().unwrap(),
    );
    assert_eq!(train + val + test, 34);
    assert_eq!(rows[1]["nodes"][0].as_u64(), Some(train));

    // A graph-level checkpoint's config.
    let (qm9, _) = crate::config::tests::preset("graphcl-qm9-cpu.toml");
    let e = GraphModality
        .evaluate(&request(&qm9))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("checkpoint.safetensors") && e.contains("node-level checkpoint"),
        "{e}"
    );
    // Another modality's config: refused naming the checkpoint.
    let vision = "[model]\nkind = \"resnet18\"\n[method]\nname = \"simclr\"\n";
    let e = GraphModality
        .evaluate(&request(vision))
        .unwrap_err()
        .to_string();
    assert!(e.contains("checkpoint.safetensors"), "{e}");
    // A graph without node labels.
    std::fs::write(dir.path().join("e.txt"), "0 1\n1 2\n2 0\n").unwrap();
    let unlabelled = "[data]\nformat = \"edge-list\"\npath = \"e.txt\"\nfeatures = \"degree\"\n";
    let e = GraphModality
        .evaluate(&EvalRequest {
            data: Some(dir.path()),
            ..request(unlabelled)
        })
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("checkpoint.safetensors") && e.contains("has no node labels"),
        "{e}"
    );
}
