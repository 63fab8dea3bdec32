//! `TextEmbedder`: a BERT written by the crate's own export embeds a text
//! file to the mean-pooled features the model computes in process (rows
//! padded to max_len as the evaluation pads them); bad files and exports are
//! one-line errors naming them.
use selfsup_text::corpus::Document;
use selfsup_text::embed::TextEmbedder;
use selfsup_text::export::export_mlm;
use selfsup_text::methods::Mlm;
use selfsup_text::model::ModelConfig;
use selfsup_text::tokenizer::TextTokenizer;
use tch::{Device, Tensor};

fn docs() -> Vec<Document> {
    let words = [
        "the cat sees the dog",
        "a red bird flies over the river",
        "bread and cheese for lunch",
        "the train leaves the station at noon",
        "winter storms bring rain and snow",
    ];
    (0..10)
        .map(|i| Document {
            id: format!("d{i}"),
            text: words
                .iter()
                .cycle()
                .skip(i)
                .take(4)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n"),
            label: None,
        })
        .collect()
}

fn tiny(tok: &TextTokenizer) -> (Mlm, usize) {
    let cfg = ModelConfig {
        layers: Some(2),
        hidden: Some(16),
        heads: Some(2),
        intermediate: Some(32),
        max_len: 12,
        max_position: 16,
        dropout: 0.0,
        ..ModelConfig::default()
    };
    let bert = cfg.resolve(tok.vocab_size, tok.pad_id).unwrap();
    (Mlm::new(&bert, Device::Cpu), 12)
}

#[test]
fn an_export_embeds_lines_as_the_model_pools_them_in_process() {
    let tok = TextTokenizer::train(&docs(), 120, 1, true).unwrap();
    tch::manual_seed(7);
    let (mlm, max_len) = tiny(&tok);
    let dir = tempfile::tempdir().unwrap();
    let export = dir.path().join("export");
    export_mlm(&mlm, &tok, max_len, &export).unwrap();
    let lines = [
        "the cat sees the dog",
        "bread",
        // Longer than max_len - 2 pieces: cut, [SEP] kept.
        "a red bird flies over the river and the train leaves the station at noon",
    ];
    let file = dir.path().join("texts.txt");
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let emb = TextEmbedder::load_export(&export, Device::Cpu).unwrap();
    assert_eq!(emb.max_len, max_len);
    let e = emb.embed_file(&file, 2).unwrap();
    assert_eq!(e.ids, lines);
    assert_eq!(e.embeddings.size(), vec![3, 16]);
    // In process: rows padded to max_len, as packing pads them.
    let mut ids = Vec::new();
    for l in lines {
        let pieces: Vec<i64> = tok.encode(l).unwrap().into_iter().map(i64::from).collect();
        let body = &pieces[..pieces.len().min(max_len - 2)];
        let mut row = vec![tok.cls_id];
        row.extend_from_slice(body);
        row.push(tok.sep_id);
        row.resize(max_len, tok.pad_id);
        ids.extend(row);
    }
    assert!(
        tok.encode(lines[2]).unwrap().len() > max_len - 2,
        "the long line is cut"
    );
    let ids = Tensor::from_slice(&ids).view([3, max_len as i64]);
    let want = tch::no_grad(|| mlm.pooled(&ids, false));
    let diff = (&e.embeddings - &want).abs().max().double_value(&[]);
    assert!(diff < 1e-5, "{diff}");
}

#[test]
fn bad_files_and_exports_are_named() {
    let tok = TextTokenizer::train(&docs(), 120, 1, true).unwrap();
    let (mlm, max_len) = tiny(&tok);
    let dir = tempfile::tempdir().unwrap();
    let export = dir.path().join("export");
    export_mlm(&mlm, &tok, max_len, &export).unwrap();
    let emb = TextEmbedder::load_export(&export, Device::Cpu).unwrap();
    let one_line = |e: selfsup_core::Error| {
        let s = e.to_string();
        assert!(!s.contains('\n'), "{s}");
        s
    };
    let empty = dir.path().join("empty.txt");
    std::fs::write(&empty, "").unwrap();
    let e = one_line(emb.embed_file(&empty, 8).err().unwrap());
    assert!(e.contains("empty.txt") && e.contains("no text"), "{e}");
    let gap = dir.path().join("gap.txt");
    std::fs::write(&gap, "one\n\nthree\n").unwrap();
    let e = one_line(emb.embed_file(&gap, 8).err().unwrap());
    assert!(e.contains("gap.txt: line 2"), "{e}");

    let other = dir.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    let e = one_line(
        TextEmbedder::load_export(&other, Device::Cpu)
            .err()
            .unwrap(),
    );
    assert!(e.contains("other/config.json"), "{e}");
    std::fs::write(other.join("config.json"), r#"{"model_type": "wav2vec2"}"#).unwrap();
    let e = one_line(
        TextEmbedder::load_export(&other, Device::Cpu)
            .err()
            .unwrap(),
    );
    assert!(e.contains("config.json") && e.contains("bert"), "{e}");
    // A tensor the model does not have.
    let w = export.join("model.safetensors");
    let mut t = selfsup_core::tensor_io::load(&w).unwrap().tensors;
    t.insert(
        "bert.pooler.dense.weight".into(),
        Tensor::zeros([16, 16], (tch::Kind::Float, Device::Cpu)),
    );
    let t: Vec<(String, Tensor)> = t.into_iter().collect();
    selfsup_core::tensor_io::save(&w, &t, None).unwrap();
    let e = one_line(
        TextEmbedder::load_export(&export, Device::Cpu)
            .err()
            .unwrap(),
    );
    assert!(
        e.contains("model.safetensors") && e.contains("bert.pooler.dense.weight"),
        "{e}"
    );
}
