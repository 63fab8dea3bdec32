//! `GraphEmbedder`: an encoder exported by the crate's own `export` embeds a
//! graph file to the features the method computes in process; bad exports
//! and graphs that do not fit are one-line errors naming the file.
use selfsup_core::method::Method;
use selfsup_graph::embed::GraphEmbedder;
use selfsup_graph::encoders::{gcn::GcnConfig, gin::GinConfig, EncoderConfig};
use selfsup_graph::export::export;
use selfsup_graph::graph::Featurize;
use selfsup_graph::methods::{
    Dgi, DgiConfig, Grace, GraceConfig, GraphCl, GraphClConfig, GraphMethod,
};
use selfsup_graph::readers::edge_list::read_edge_list;
use std::path::Path;
use tch::Device;

const EDGES: &str = "0 1\n1 2\n2 0\n2 3\n3 4\n4 5\n5 3\n5 6 2.0\n6 7\n7 0\n";

fn write_graph(dir: &Path) -> std::path::PathBuf {
    let p = dir.join("g.edges");
    std::fs::write(&p, EDGES).unwrap();
    p
}

fn max_abs_diff(a: &tch::Tensor, b: &tch::Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

/// Exports `m` as the workflow does and embeds `file` with the export.
fn export_and_embed(
    m: &dyn GraphMethod,
    encoder: &EncoderConfig,
    features: Featurize,
    file: &Path,
    dir: &Path,
    method: serde_json::Value,
) -> (tch::Tensor, Vec<String>) {
    let b = read_edge_list(file, None).unwrap();
    let (f, d) = features.apply(&b).unwrap();
    let base = b.build(f, d, None).tensors();
    let cfg = serde_json::json!({
        "method": method, "encoder": encoder, "in_features": d,
        "data": {"format": "edge-list", "path": "g.edges", "features": features},
        "level": "node",
    });
    let out = dir.join("export");
    export(&out, &m.represent(&base), m.var_store(), &cfg, None).unwrap();
    let e = GraphEmbedder::load_export(&out, Device::Cpu)
        .unwrap()
        .embed_file(file)
        .unwrap();
    let want = tch::no_grad(|| m.encoder().nodes(&base, false));
    assert_eq!(e.embeddings.size(), want.size());
    assert!(max_abs_diff(&e.embeddings, &want) < 1e-5);
    (e.embeddings, e.ids)
}

#[test]
fn grace_dgi_and_graphcl_exports_embed_as_in_process() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_graph(dir.path());
    tch::manual_seed(3);
    for (i, features) in [Featurize::Degree, Featurize::Adjacency, Featurize::Identity]
        .into_iter()
        .enumerate()
    {
        let b = read_edge_list(&file, None).unwrap();
        let (f, d) = features.apply(&b).unwrap();
        let base = b.build(f, d, None).tensors();
        let enc = EncoderConfig::Gcn(GcnConfig {
            dims: vec![8, 4],
            ..Default::default()
        });
        let sub = dir.path().join(format!("grace{i}"));
        let m = Grace::new(base.share(), &enc, &GraceConfig::default(), Device::Cpu);
        let (emb, ids) = export_and_embed(
            &m,
            &enc,
            features,
            &file,
            &sub,
            serde_json::json!({"name": "grace"}),
        );
        // The GRACE export's own embeddings hold the same rows.
        let saved = selfsup_core::tensor_io::load(&sub.join("export/embeddings.safetensors"))
            .unwrap()
            .tensors
            .remove("embeddings")
            .unwrap();
        assert!(max_abs_diff(&saved, &emb) < 1e-5);
        assert_eq!(ids, (0..8).map(|i| i.to_string()).collect::<Vec<_>>());
        assert_eq!(emb.size(), vec![8, 4]);
        assert!(emb.abs().sum(tch::Kind::Float).double_value(&[]) > 0.0);
        let m = Dgi::new(base.share(), &enc, &DgiConfig::default(), Device::Cpu);
        let sub = dir.path().join(format!("dgi{i}"));
        let _ = export_and_embed(
            &m,
            &enc,
            features,
            &file,
            &sub,
            serde_json::json!({"name": "dgi"}),
        );
    }
    let b = read_edge_list(&file, None).unwrap();
    let (f, d) = Featurize::Degree.apply(&b).unwrap();
    let base = b.build(f, d, None).tensors();
    let gin = EncoderConfig::Gin(GinConfig {
        hidden: 6,
        layers: 2,
        ..Default::default()
    });
    let m = GraphCl::new(base.share(), &gin, &GraphClConfig::default(), Device::Cpu);
    let sub = dir.path().join("graphcl");
    let (emb, _) = export_and_embed(
        &m,
        &gin,
        Featurize::Degree,
        &file,
        &sub,
        serde_json::json!({"name": "graphcl"}),
    );
    assert_eq!(emb.size(), vec![8, 6]);
}

#[test]
fn bad_exports_and_unfitting_graphs_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_graph(dir.path());
    let one_line = |e: selfsup_core::Error| {
        let s = e.to_string();
        assert!(!s.contains('\n'), "{s}");
        s
    };
    // No config.json.
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let e = one_line(
        GraphEmbedder::load_export(&empty, Device::Cpu)
            .err()
            .unwrap(),
    );
    assert!(
        e.contains("empty/config.json") && e.contains("no such file"),
        "{e}"
    );
    // A config.json of another kind of export.
    std::fs::write(empty.join("config.json"), r#"{"model_type": "bert"}"#).unwrap();
    let e = one_line(
        GraphEmbedder::load_export(&empty, Device::Cpu)
            .err()
            .unwrap(),
    );
    assert!(
        e.contains("config.json") && e.contains("not a graph export"),
        "{e}"
    );

    // An identity-featured encoder of 8 nodes, given a graph of 9.
    let b = read_edge_list(&file, None).unwrap();
    let (f, d) = Featurize::Identity.apply(&b).unwrap();
    let base = b.build(f, d, None).tensors();
    let enc = EncoderConfig::Gcn(GcnConfig {
        dims: vec![4],
        ..Default::default()
    });
    let m = Grace::new(base.share(), &enc, &GraceConfig::default(), Device::Cpu);
    let out = dir.path().join("export");
    let cfg = serde_json::json!({
        "method": {"name": "grace"}, "encoder": enc, "in_features": d,
        "data": {"format": "edge-list", "path": "g.edges", "features": "identity"},
    });
    export(&out, &m.represent(&base), m.var_store(), &cfg, None).unwrap();
    let bigger = dir.path().join("bigger.txt");
    std::fs::write(&bigger, format!("{EDGES}7 8\n")).unwrap();
    let emb = GraphEmbedder::load_export(&out, Device::Cpu).unwrap();
    let e = one_line(emb.embed_file(&bigger).err().unwrap());
    assert!(
        e.contains("bigger.txt") && e.contains("9 features") && e.contains("takes 8"),
        "{e}"
    );
    // A weights file with a tensor too many.
    let w = out.join("encoder.safetensors");
    let mut t = selfsup_core::tensor_io::load(&w).unwrap().tensors;
    t.insert(
        "extra.weight".into(),
        tch::Tensor::zeros([2], (tch::Kind::Float, Device::Cpu)),
    );
    let t: Vec<(String, tch::Tensor)> = t.into_iter().collect();
    selfsup_core::tensor_io::save(&w, &t, None).unwrap();
    let e = one_line(
        GraphEmbedder::load_export(&out, Device::Cpu)
            .unwrap()
            .embed_file(&file)
            .err()
            .unwrap(),
    );
    assert!(
        e.contains("encoder.safetensors") && e.contains("extra.weight"),
        "{e}"
    );
    // A Planetoid-trained encoder cannot embed a featureless graph.
    let mut cfg = cfg;
    cfg["data"] = serde_json::json!({"format": "planetoid", "dir": "p", "name": "cora"});
    std::fs::write(out.join("config.json"), cfg.to_string()).unwrap();
    let e = one_line(GraphEmbedder::load_export(&out, Device::Cpu).err().unwrap());
    assert!(e.contains("planetoid"), "{e}");
}
