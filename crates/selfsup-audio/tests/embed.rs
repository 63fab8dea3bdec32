//! `AudioEmbedder`: a wav2vec 2.0 written by the crate's own export embeds a
//! folder of WAV files to the model's mean last hidden state computed in
//! process; bad folders, files and exports are one-line errors naming them.
use selfsup_audio::embed::AudioEmbedder;
use selfsup_audio::export::export_wav2vec2;
use selfsup_audio::methods::{Wav2Vec2Method, Wav2Vec2MethodConfig};
use selfsup_audio::model::Wav2Vec2Config;
use std::path::Path;
use tch::{Device, Kind, Tensor};

fn small() -> Wav2Vec2Config {
    Wav2Vec2Config {
        conv_dim: vec![16; 7],
        hidden_size: 16,
        num_hidden_layers: 2,
        num_attention_heads: 2,
        intermediate_size: 32,
        num_conv_pos_embeddings: 8,
        num_conv_pos_embedding_groups: 2,
        num_codevectors_per_group: 8,
        codevector_dim: 16,
        proj_codevector_dim: 8,
        ..Wav2Vec2Config::default()
    }
}

fn write_wav(path: &Path, rate: u32, channels: u16, samples: &[f32]) {
    let spec = hound::WavSpec {
        channels,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for s in samples {
        for _ in 0..channels {
            w.write_sample((s * 20_000.0) as i16).unwrap();
        }
    }
    w.finalize().unwrap();
}

fn tone(n: usize, f: f32, rate: f32) -> Vec<f32> {
    (0..n)
        .map(|i| (i as f32 * f * std::f32::consts::TAU / rate).sin() * 0.5 + 0.1)
        .collect()
}

/// The model's last hidden state averaged over time, for normalised samples.
fn in_process(m: &Wav2Vec2Method, samples: &[f32]) -> Tensor {
    let mut x = samples.to_vec();
    let n = x.len() as f64;
    let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
    for v in x.iter_mut() {
        *v = ((*v as f64 - mean) / (var + 1e-7).sqrt()) as f32;
    }
    let wave = Tensor::from_slice(&x).view([1, -1]);
    let lengths = Tensor::from_slice(&[x.len() as i64]);
    tch::no_grad(|| {
        let out = m.model.forward_t(&wave, &lengths, None, false);
        out.hidden_states
            .last()
            .unwrap()
            .mean_dim(1, false, Kind::Float)
    })
}

#[test]
fn an_export_embeds_wav_files_as_the_model_does_in_process() {
    let dir = tempfile::tempdir().unwrap();
    tch::manual_seed(5);
    let m = Wav2Vec2Method::new(&small(), &Wav2Vec2MethodConfig::default(), 0, Device::Cpu);
    let export = dir.path().join("export");
    export_wav2vec2(&m, &export).unwrap();
    let clips = dir.path().join("clips");
    std::fs::create_dir_all(clips.join("sub")).unwrap();
    let a = tone(8000, 220.0, 16_000.0);
    let b = tone(12_000, 440.0, 16_000.0);
    write_wav(&clips.join("b.wav"), 16_000, 2, &b); // stereo: mixed down
    write_wav(&clips.join("a.wav"), 16_000, 1, &a);
    std::fs::write(clips.join("notes.txt"), "not audio").unwrap();
    let e = AudioEmbedder::load_export(&export, Device::Cpu)
        .unwrap()
        .embed_folder(&clips)
        .unwrap();
    assert_eq!(e.ids, vec!["a.wav", "b.wav"]);
    assert_eq!(e.skipped.len(), 2, "notes.txt and sub/ are skipped");
    assert_eq!(e.embeddings.size(), vec![2, 16]);
    // 16-bit quantisation of the written samples, as the file holds them.
    let q = |s: &[f32]| -> Vec<f32> {
        s.iter()
            .map(|v| ((v * 20_000.0) as i16) as f32 / 32_768.0)
            .collect()
    };
    let want = Tensor::cat(&[in_process(&m, &q(&a)), in_process(&m, &q(&b))], 0);
    let diff = (&e.embeddings - &want).abs().max().double_value(&[]);
    assert!(diff < 1e-5, "{diff}");
    assert!(want.abs().sum(Kind::Float).double_value(&[]) > 0.0);
}

#[test]
fn bad_folders_files_and_exports_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let m = Wav2Vec2Method::new(&small(), &Wav2Vec2MethodConfig::default(), 0, Device::Cpu);
    let export = dir.path().join("export");
    export_wav2vec2(&m, &export).unwrap();
    let emb = AudioEmbedder::load_export(&export, Device::Cpu).unwrap();
    let one_line = |e: selfsup_core::Error| {
        let s = e.to_string();
        assert!(!s.contains('\n'), "{s}");
        s
    };
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let e = one_line(emb.embed_folder(&empty).err().unwrap());
    assert!(e.contains("empty") && e.contains("no .wav"), "{e}");
    std::fs::write(empty.join("broken.wav"), b"RIFF....WAVEfmt garbage").unwrap();
    let e = one_line(emb.embed_folder(&empty).err().unwrap());
    assert!(e.contains("broken.wav"), "{e}");

    let e = one_line(
        AudioEmbedder::load_export(&empty, Device::Cpu)
            .err()
            .unwrap(),
    );
    assert!(e.contains("empty/config.json"), "{e}");
    std::fs::write(empty.join("config.json"), r#"{"model_type": "bert"}"#).unwrap();
    let e = one_line(
        AudioEmbedder::load_export(&empty, Device::Cpu)
            .err()
            .unwrap(),
    );
    assert!(e.contains("config.json") && e.contains("wav2vec2"), "{e}");
    // A tensor missing from the weights.
    let w = export.join("model.safetensors");
    let mut t = selfsup_core::tensor_io::load(&w).unwrap().tensors;
    let _ = t.remove("wav2vec2.masked_spec_embed").unwrap();
    let t: Vec<(String, Tensor)> = t.into_iter().collect();
    selfsup_core::tensor_io::save(&w, &t, None).unwrap();
    let e = one_line(
        AudioEmbedder::load_export(&export, Device::Cpu)
            .err()
            .unwrap(),
    );
    assert!(
        e.contains("model.safetensors") && e.contains("wav2vec2.masked_spec_embed"),
        "{e}"
    );
}
