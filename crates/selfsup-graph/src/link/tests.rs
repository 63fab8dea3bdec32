use super::*;
use crate::graph::GraphBuilder;

/// A random graph of `n` nodes and about `n * k / 2` edges, degree features.
fn random_graph(n: usize, k: usize, seed: u64) -> Graph {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut b = GraphBuilder::new(n);
    for u in 0..n {
        for _ in 0..k / 2 {
            let v = rng.gen_range(0..n);
            b.add_edge(u, v, 1.0 + u as f32);
        }
    }
    let (f, d) = Featurize::Degree.apply(&b).unwrap();
    b.build(f, d, Some((0..n as i64).map(|i| i % 3).collect()))
}

fn edge_set(g: &Graph) -> HashSet<(usize, usize)> {
    edges_of(g).into_iter().map(|(u, v, _)| (u, v)).collect()
}

#[test]
fn held_out_edges_leave_the_training_graph_and_negatives_are_non_edges() {
    let g = random_graph(60, 6, 1);
    let full = edge_set(&g);
    let e = full.len();
    let cfg = LinkConfig::default();
    let s = split_edges(&g, &cfg).unwrap();
    let n_val = (e as f64 * 0.05).round() as usize;
    let n_test = (e as f64 * 0.1).round() as usize;
    assert_eq!(s.sizes(), (e - n_val - n_test, n_val, n_test));
    assert_eq!(s.validation.negative.len(), n_val);
    assert_eq!(s.test.negative.len(), n_test);
    let train: HashSet<(usize, usize)> = s.train.iter().map(|&(u, v, _)| (u, v)).collect();
    assert_eq!(train.len(), s.train.len());
    // Positives: edges of the full graph, none in the training graph; the
    // three parts cover every edge once.
    for &p in s.validation.positive.iter().chain(&s.test.positive) {
        assert!(full.contains(&p) && !train.contains(&p), "{p:?}");
    }
    let mut all: Vec<(usize, usize)> = train.iter().copied().collect();
    all.extend(&s.validation.positive);
    all.extend(&s.test.positive);
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), e);
    // Negatives: no edge of the full graph, u < v, all distinct.
    let negs: Vec<(usize, usize)> = s
        .validation
        .negative
        .iter()
        .chain(&s.test.negative)
        .copied()
        .collect();
    for &(u, v) in &negs {
        assert!(u < v && v < 60 && !full.contains(&(u, v)), "{u} {v}");
    }
    let distinct: HashSet<_> = negs.iter().collect();
    assert_eq!(distinct.len(), negs.len());
    // Weights travel with the kept edges.
    assert!(s.train.iter().all(|&(u, _, w)| w >= 1.0 + u as f32));
    // The training graph: the kept edges only, degree features from them.
    let t = s.training_graph(&g, Some(Featurize::Degree)).unwrap();
    assert_eq!(edge_set(&t), train);
    assert_eq!(t.labels, g.labels);
    let deg = |gr: &Graph, u: usize| gr.features[u * 3 + 1];
    let (u, v) = s.test.positive[0];
    let lost = s
        .validation
        .positive
        .iter()
        .chain(&s.test.positive)
        .filter(|&&(a, b)| a == u || b == u)
        .count() as f32;
    assert!((deg(&t, u).exp_m1() - (deg(&g, u).exp_m1() - lost)).abs() < 1e-3);
    assert!(deg(&t, v) < deg(&g, v));
}

#[test]
fn the_split_is_deterministic_by_seed() {
    let g = random_graph(50, 6, 2);
    let a = split_edges(&g, &LinkConfig::default()).unwrap();
    let b = split_edges(&g, &LinkConfig::default()).unwrap();
    assert_eq!(a, b);
    let c = split_edges(
        &g,
        &LinkConfig {
            seed: 1,
            ..Default::default()
        },
    )
    .unwrap();
    assert_ne!(a.test, c.test);
}

#[test]
fn dense_graphs_list_their_few_non_edges() {
    // The complete graph on 8 nodes less 3 edges: 25 edges, 3 non-edges.
    let mut b = GraphBuilder::new(8);
    let missing = [(0, 1), (2, 5), (6, 7)];
    for u in 0..8 {
        for v in u + 1..8 {
            if !missing.contains(&(u, v)) {
                b.add_edge(u, v, 1.0);
            }
        }
    }
    let (f, d) = Featurize::Identity.apply(&b).unwrap();
    let g = b.build(f, d, None);
    let cfg = LinkConfig {
        validation_fraction: 0.04,
        test_fraction: 0.08,
        seed: 3,
    };
    let s = split_edges(&g, &cfg).unwrap();
    assert_eq!(s.sizes(), (22, 1, 2));
    let mut negs: Vec<_> = s
        .validation
        .negative
        .iter()
        .chain(&s.test.negative)
        .copied()
        .collect();
    negs.sort_unstable();
    assert_eq!(negs, missing.to_vec());
    // One more negative than there are non-edges: refused, saying so.
    let e = split_edges(
        &g,
        &LinkConfig {
            validation_fraction: 0.08,
            ..cfg
        },
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("3 node pair(s) that are no edge") && e.contains("4 negatives"),
        "{e}"
    );
}

#[test]
fn too_small_graphs_and_bad_fractions_are_refused() {
    let mut b = GraphBuilder::new(4);
    b.add_edge(0, 1, 1.0);
    b.add_edge(1, 2, 1.0);
    let (f, d) = Featurize::Identity.apply(&b).unwrap();
    let g = b.build(f, d, None);
    let e = split_edges(&g, &LinkConfig::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("2 edge(s)") && e.contains("none to train on"),
        "{e}"
    );
    for (cfg, want) in [
        (
            LinkConfig {
                test_fraction: 0.0,
                ..Default::default()
            },
            "test_fraction = 0",
        ),
        (
            LinkConfig {
                validation_fraction: f64::NAN,
                ..Default::default()
            },
            "validation_fraction = NaN",
        ),
        (
            LinkConfig {
                validation_fraction: 0.5,
                test_fraction: 0.5,
                seed: 0,
            },
            "sum below 1",
        ),
    ] {
        let e = split_edges(&g, &cfg).unwrap_err().to_string();
        assert!(e.contains(want), "{want}: {e}");
    }
}

#[test]
fn auc_and_average_precision_match_an_independent_computation() {
    // /tmp/link_ref.py, numpy 2 in the libtorch Python:
    //   pos = [0.9, 0.8, 0.8, 0.3, 0.1, 0.5]; neg = [0.8, 0.7, 0.3, 0.2, 0.1, 0.05, 0.6]
    //   d = pos[:, None] - neg[None, :]
    //   auc = ((d > 0).sum() + 0.5 * (d == 0).sum()) / d.size
    //   s, y = concat(pos, neg), concat(ones, zeros); ap, prev = 0, 0
    //   for t in unique(s)[::-1]: sel = s >= t; tp = y[sel].sum()
    //       ap += (tp / y.sum() - prev) * tp / sel.sum(); prev = tp / y.sum()
    let pos = [0.9, 0.8, 0.8, 0.3, 0.1, 0.5];
    let neg = [0.8, 0.7, 0.3, 0.2, 0.1, 0.05, 0.6];
    assert!((auc(&pos, &neg) - 0.6904761904761905).abs() < 1e-12);
    assert!((average_precision(&pos, &neg) - 0.6878306878306879).abs() < 1e-12);
    // Perfect, reversed and all-tied rankings.
    assert_eq!(auc(&[2.0, 3.0], &[1.0]), 1.0);
    assert_eq!(auc(&[1.0], &[2.0, 3.0]), 0.0);
    assert_eq!(auc(&[1.0, 1.0], &[1.0]), 0.5);
    assert_eq!(average_precision(&[2.0, 3.0], &[1.0]), 1.0);
    // All tied: precision is the positive share.
    assert!((average_precision(&[1.0], &[1.0, 1.0]) - 1.0 / 3.0).abs() < 1e-12);
    assert!(auc(&[], &[1.0]).is_nan() && average_precision(&[], &[1.0]).is_nan());
}

#[test]
fn heuristics_match_hand_counts() {
    // 0-1, 0-2, 1-2, 1-3, 2-3, 3-4: N(0) = {1, 2}, N(3) = {1, 2, 4}, and
    // nodes 1 and 2 have degree 3.
    let edges = [(0, 1), (0, 2), (1, 2), (1, 3), (2, 3), (3, 4)].map(|(u, v)| (u, v, 1.0));
    let nb = Neighbours::new(5, &edges);
    assert_eq!(nb.common_neighbours(0, 3), 2.0);
    assert!((nb.adamic_adar(0, 3) - 2.0 / 3f64.ln()).abs() < 1e-12);
    assert_eq!(nb.common_neighbours(0, 4), 0.0);
    assert_eq!(nb.adamic_adar(0, 4), 0.0);
    assert!((nb.adamic_adar(1, 4) - 1.0 / 3f64.ln()).abs() < 1e-12);
    assert_eq!(nb.common_neighbours(4, 7), 0.0);
}

#[test]
fn embeddings_are_scored_by_the_similarity_chosen_on_validation() {
    // Node embeddings where edges join parallel vectors of different
    // lengths: cosine ranks every edge first, the dot product does not.
    let split = EdgeSplit {
        nodes: 6,
        train: vec![(0, 1, 1.0)],
        validation: Pairs {
            positive: vec![(0, 1), (2, 3)],
            negative: vec![(0, 2), (1, 4)],
        },
        test: Pairs {
            positive: vec![(4, 5)],
            negative: vec![(0, 4)],
        },
    };
    let z = Tensor::from_slice(&[
        1.0f32, 0.0, 0.1, 0.0, // 0, 1: along x, short
        0.0, 0.1, 0.0, 0.2, // 2, 3: along y, short
        5.0, 5.0, 0.1, 0.1, // 4, 5: diagonal
    ])
    .view([6, 2]);
    let dot = pair_scores(&z, &split.validation.negative, Similarity::Dot);
    assert_eq!(dot.len(), 2);
    assert!((dot[1] - 0.5).abs() < 1e-6 && dot[0] == 0.0, "{dot:?}");
    let e = embedding_entry("pretrained", &z, &split).unwrap();
    assert_eq!(e.similarity, Some(Similarity::Cosine));
    assert_eq!(e.validation.auc, 1.0);
    // Test: cos(4, 5) = 1 > cos(0, 4) = 1/sqrt(2).
    assert_eq!(e.test.auc, 1.0);
    let wrong = Tensor::zeros([5, 2], (Kind::Float, tch::Device::Cpu));
    let msg = embedding_entry("raw_features", &wrong, &split)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("raw_features gives 5 node embeddings for a graph of 6"),
        "{msg}"
    );
    let nan = Tensor::full([6, 2], f64::NAN, (Kind::Float, tch::Device::Cpu));
    let msg = embedding_entry("random_weights", &nan, &split)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("non-finite"), "{msg}");
}

/// `configs/graph/<name>` parsed.
fn preset(name: &str) -> crate::config::GraphRunConfig {
    let (text, path) = crate::config::tests::preset(name);
    crate::config::GraphRunConfig::from_toml(&text, &path).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn the_link_presets_parse_and_graph_level_link_runs_are_refused() {
    for name in [
        "gae-cpu.toml",
        "gae-gpu.toml",
        "grace-link-cpu.toml",
        "dgi-link-cpu.toml",
    ] {
        let cfg = preset(name);
        assert_eq!(cfg.eval.link, Some(LinkConfig::default()), "{name}");
        let again =
            crate::config::GraphRunConfig::from_toml(&cfg.to_toml(), std::path::Path::new(name))
                .unwrap();
        assert_eq!(again, cfg, "{name}");
    }
    assert_eq!(preset("gae-cpu.toml").method.name(), "gae");
    let (text, path) = crate::config::tests::preset("graphcl-cpu.toml");
    let bad = format!("{text}\n[eval.link]\n");
    let e = crate::config::GraphRunConfig::from_toml(&bad, &path)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("[eval.link]") && e.contains("graph embeddings"),
        "{e}"
    );
    let (text, path) = crate::config::tests::preset("gae-cpu.toml");
    for (from, to, want) in [
        ("out_dim = 16", "out_dim = 0", "out_dim = 0"),
        (
            "test_fraction = 0.1",
            "test_fraction = 1.5",
            "test_fraction = 1.5",
        ),
    ] {
        let e = crate::config::GraphRunConfig::from_toml(&text.replace(from, to), &path)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("gae-cpu.toml") && e.contains(want),
            "{want}: {e}"
        );
    }
}

#[test]
fn a_link_run_trains_without_the_held_out_edges_and_reports_them() {
    use selfsup_core::workflow::{EvalRequest, Modality};
    let _rng = crate::TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    // GAE on the karate club (built in), two short epochs.
    let mut cfg = preset("gae-cpu.toml");
    cfg.data = DataConfig::Karate {
        features: Featurize::Adjacency,
    };
    cfg.run.device = selfsup_core::device::DeviceChoice::Cpu;
    cfg.run.steps_per_epoch = Some(10);
    cfg.trainer.epochs = 2;
    cfg.eval.splits = 2;
    let mut observer = selfsup_core::trainer::Silent;
    let mut log = |_: &str| {};
    let run_dir = dir.path().join("run");
    let s = crate::pretrain::pretrain(
        &cfg,
        crate::pretrain::RunOptions {
            data: Some(dir.path().to_path_buf()),
            run_dir: run_dir.clone(),
            resume: false,
            observer: &mut observer,
            stop: Default::default(),
            git_commit: None,
            log: &mut log,
            distributed: None,
        },
    )
    .unwrap();
    let row = s.link.as_ref().unwrap();
    // 78 edges: 4 validation, 8 test, 66 to train on.
    assert_eq!(
        (row.train_edges, row.validation_edges, row.test_edges),
        (66, 4, 8)
    );
    let names: Vec<&str> = row.entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "pretrained",
            "random_weights",
            "raw_features",
            "common_neighbours",
            "adamic_adar"
        ]
    );
    for e in &row.entries {
        for x in [
            e.validation.auc,
            e.validation.average_precision,
            e.test.auc,
            e.test.average_precision,
        ] {
            assert!((0.0..=1.0).contains(&x), "{e:?}");
        }
    }
    // The graph the run trained on (exported beside the embeddings) holds
    // no held-out edge, and its adjacency features none either.
    let (ds, _) = crate::readers::load(&cfg.data, dir.path()).unwrap();
    let crate::readers::Dataset::Nodes { graph, .. } = ds else {
        panic!("karate is one graph")
    };
    let split = split_edges(&graph, cfg.eval.link.as_ref().unwrap()).unwrap();
    let edges = Tensor::read_npy(run_dir.join("export/graph/edges.npy")).unwrap();
    let x = Tensor::read_npy(run_dir.join("export/graph/x.npy")).unwrap();
    assert_eq!(edges.size(), [2, 66]);
    let flat = Vec::<i64>::try_from(edges.view([-1])).unwrap();
    let trained: HashSet<(usize, usize)> = (0..66)
        .map(|i| (flat[i] as usize, flat[66 + i] as usize))
        .map(|(u, v)| (u.min(v), u.max(v)))
        .collect();
    for &(u, v) in split.validation.positive.iter().chain(&split.test.positive) {
        assert!(!trained.contains(&(u, v)), "{u} {v}");
        assert_eq!(x.double_value(&[u as i64, v as i64]), 0.0);
        assert_eq!(x.double_value(&[v as i64, u as i64]), 0.0);
    }
    // In summary.json, and the same row from the checkpoint.
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(run_dir.join(selfsup_core::run::SUMMARY_FILE)).unwrap(),
    )
    .unwrap();
    assert_eq!(json["link"]["test_edges"], 8);
    assert_eq!(
        json["link"]["entries"][0]["test"]["auc"].as_f64(),
        Some(row.entries[0].test.auc)
    );
    let config = std::fs::read_to_string(run_dir.join("config.toml")).unwrap();
    let checkpoint = run_dir.join("checkpoint.safetensors");
    let request = |config_toml| EvalRequest {
        protocol: LINK,
        checkpoint: &checkpoint,
        config_toml,
        data: Some(dir.path()),
        device: selfsup_core::device::DeviceChoice::Cpu,
    };
    let lines = crate::workflow::GraphModality
        .evaluate(&request(&config))
        .unwrap();
    assert_eq!(lines[1..], row.lines()[..]);
    // The node probe from the checkpoint runs on the same training graph.
    let probe = crate::workflow::GraphModality
        .evaluate(&EvalRequest {
            protocol: crate::workflow::LINEAR,
            ..request(&config)
        })
        .unwrap();
    assert_eq!(probe[1..], s.eval.as_ref().unwrap().lines()[..]);
    // A run without [eval.link] saw every edge: refused.
    let plain = config.replace("[eval.link]", "[eval.unused]");
    let cut: String = plain.split("[eval.unused]").next().unwrap().to_string();
    let e = crate::workflow::GraphModality
        .evaluate(&request(&cut))
        .unwrap_err()
        .to_string();
    assert!(e.contains("no [eval.link]"), "{e}");
}
