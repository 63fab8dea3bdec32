//! Export of a speech-text dual encoder: `model.safetensors`, `config.json`
//! and `vocab.txt` (the text tower's characters, one per line, after
//! `[PAD] [UNK] [CLS] [SEP]`: ids as [`CharVocab`] gives them).
//!
//! Names:
//!
//! - `audio_projection.weight` `[E, D_audio]`, `text_projection.weight`
//!   `[E, D_text]`, `logit_scale` (the log of the inverse temperature): as HF
//!   `CLIPModel` names its projections and scale (`audio_` for `visual_`);
//! - `audio_model.*`: with `kind = "wav2vec2"` transformers' `Wav2Vec2Model`
//!   names (strip `audio_model.`; `config.json`'s `audio_config` builds it:
//!   no masked-frame embedding), pooled by the mean of the last hidden state;
//!   with `kind = "log_mel"` selfsup's log-mel tower
//!   (`layers.N.conv` / `layers.N.layer_norm`, described in `audio_config`;
//!   `benchmarks/check_hf_speech_text_export.py` holds a PyTorch module);
//! - `text_model.bert.*`: a BERT encoder with `BertModel` names after
//!   `text_model.bert.` (mean pooling over the non-padding tokens; the MLM
//!   head is not exported).
//!
//! Audio input: 16 kHz mono, zero mean and unit variance per clip.
use crate::export::is_exported;
use crate::method::{Clip, ClipConfig};
use crate::model::logmel_tower::{EPS, HOP, WINDOW};
use crate::model::{AudioTowerConfig, SpeechTower};
use selfsup_core::method::Method;
use selfsup_core::tensor_io;
use selfsup_core::{Error, Result};
use selfsup_text::model::BertConfig;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// `format` of a speech-text export's `config.json`.
pub const SPEECH_EXPORT_FORMAT: &str = "selfsup-speech-text-v1";
/// The characters of a run, beside its checkpoint (written by the run).
pub const RUN_VOCAB_FILE: &str = "vocab.txt";

/// What rebuilding the model needs (`config.json` -> `selfsup`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpeechExportMeta {
    pub audio: AudioTowerConfig,
    pub text: BertConfig,
    pub embed_dim: i64,
    /// Characters of the text tower, in id order from 4.
    pub characters: String,
    /// Token rows: `[CLS]` and `[SEP]` included.
    pub max_len: usize,
    /// Seconds of each clip the run's evaluation read.
    pub eval_seconds: f64,
    pub clip: ClipConfig,
}

fn write_json(path: &Path, v: &serde_json::Value) -> Result<()> {
    let text = serde_json::to_string_pretty(v).map_err(|e| Error::Config(e.to_string()))?;
    tensor_io::write_atomic(path, text.as_bytes())
}

/// `audio_config` of `config.json`.
fn audio_config(audio: &AudioTowerConfig, out_dim: i64) -> serde_json::Value {
    match audio {
        AudioTowerConfig::Wav2Vec2(c) => {
            let mut v = c.hf_config_json();
            if let Some(o) = v.as_object_mut() {
                for (k, x) in [
                    ("architectures", serde_json::json!(["Wav2Vec2Model"])),
                    ("apply_spec_augment", serde_json::json!(false)),
                    ("mask_time_prob", serde_json::json!(0.0)),
                    ("mask_feature_prob", serde_json::json!(0.0)),
                    (
                        "selfsup_pooling",
                        serde_json::json!("mean of last_hidden_state over the valid frames"),
                    ),
                ] {
                    o.insert(k.into(), x);
                }
            }
            v
        }
        AudioTowerConfig::LogMel(c) => serde_json::json!({
            "model_type": "selfsup-log-mel",
            "sampling_rate": 16000,
            "window": WINDOW,
            "hop": HOP,
            "window_fn": "periodic hann",
            "n_fft": 512,
            "n_mels": 40,
            "mel_scale": "htk, 0-8000 Hz, triangular, unnormalised",
            "log_offset": 1e-6,
            "normalize": "per clip, one mean and variance over its valid frames and all bands: (x - mean) / sqrt(var + eps)",
            "eps": EPS,
            "channels": c.channels,
            "kernels": c.kernels,
            "strides": c.strides,
            "padding": "kernel // 2",
            "layer": "conv1d -> layer_norm over channels (eps 1e-5) -> gelu (erf) -> zero past the clip's frames",
            "pooling": "mean and sqrt(var + eps) over the valid frames, concatenated",
            "out_dim": out_dim,
        }),
    }
}

/// Writes the model, its description and `vocab.txt` into `dir`.
pub fn export_speech(clip: &Clip<SpeechTower>, meta: &SpeechExportMeta, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    tensor_io::save_pytorch_weights(
        &dir.join(crate::export::WEIGHTS_FILE),
        clip.var_store(),
        is_exported,
    )?;
    let mut text_config = meta.text.hf_config_json();
    text_config["architectures"] = serde_json::json!(["BertModel"]);
    let out_dim = crate::tower::Tower::out_dim(&clip.model.tower);
    let cfg = serde_json::json!({
        "format": SPEECH_EXPORT_FORMAT,
        "architectures": ["SelfsupSpeechTextModel"],
        "model_type": "selfsup-speech-text",
        "projection_dim": meta.embed_dim,
        "logit_scale_init_value": (1.0 / meta.clip.init_temperature).ln(),
        "logit_scale": clip.model.scale_value().ln(),
        "audio_config": audio_config(&meta.audio, out_dim),
        "audio_preprocess": "16 kHz mono, zero mean and unit variance per clip",
        "text_config": text_config,
        "text_pooling": "mean over non-padding tokens of the last hidden state",
        "text_tokens": "[CLS] characters [SEP] (vocab.txt: one token per line; a character never trained on is [UNK])",
        "hf_clip_names": {
            "same_as_CLIPModel": ["text_projection.weight", "logit_scale"],
            "audio_projection.weight": "CLIPModel's visual_projection for the audio tower",
            "audio_model": match meta.audio {
                AudioTowerConfig::Wav2Vec2(_) => "Wav2Vec2Model names after `audio_model.`",
                AudioTowerConfig::LogMel(_) => "selfsup's log-mel tower (see audio_config)",
            },
            "text_model": "BERT (BertModel names after `text_model.bert.`), not CLIPTextTransformer",
        },
        "selfsup": meta,
    });
    write_json(&dir.join(crate::export::CONFIG_FILE), &cfg)?;
    let mut vocab = String::from("[PAD]\n[UNK]\n[CLS]\n[SEP]\n");
    for c in meta.characters.chars() {
        vocab.push(c);
        vocab.push('\n');
    }
    tensor_io::write_atomic(&dir.join("vocab.txt"), vocab.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::captions::pad_batch;
    use crate::model::logmel_tower::LogMelConfig;
    use crate::speech::SpeechRunConfig;
    use crate::speech_eval::CharVocab;
    use selfsup_audio::model::Wav2Vec2Config;
    use selfsup_core::loss::info_nce::normalize;
    use tch::{Device, Kind, Tensor};

    fn model(audio: AudioTowerConfig) -> (Clip<SpeechTower>, SpeechExportMeta, CharVocab) {
        let mut cfg = SpeechRunConfig::default();
        cfg.model.audio = audio;
        cfg.model.text.hidden = Some(32);
        cfg.model.text.intermediate = Some(64);
        cfg.model.text.layers = Some(1);
        cfg.model.embed_dim = 16;
        let vocab = CharVocab::build(["ab", "c d", "é"]);
        let text = cfg.text_tower(&vocab).unwrap();
        let clip = crate::speech::build(&cfg, &text, Device::Cpu, false).unwrap();
        let meta = SpeechExportMeta {
            audio: cfg.model.audio.clone(),
            text,
            embed_dim: 16,
            characters: vocab.chars.iter().collect(),
            max_len: cfg.model.text.max_len,
            eval_seconds: 2.0,
            clip: cfg.method.clip().clone(),
        };
        (clip, meta, vocab)
    }

    fn log_mel() -> AudioTowerConfig {
        AudioTowerConfig::LogMel(LogMelConfig {
            channels: vec![8, 12],
            kernels: vec![3, 5],
            strides: vec![1, 2],
            dropout: 0.1,
            freq_mask: 4,
            time_mask: 5,
        })
    }

    fn wav2vec2() -> AudioTowerConfig {
        AudioTowerConfig::Wav2Vec2(Wav2Vec2Config {
            conv_dim: vec![8, 8, 8],
            conv_kernel: vec![10, 4, 4],
            conv_stride: vec![5, 4, 4],
            hidden_size: 16,
            num_hidden_layers: 1,
            num_attention_heads: 2,
            intermediate_size: 32,
            num_conv_pos_embeddings: 4,
            num_conv_pos_embedding_groups: 2,
            ..Wav2Vec2Config::default()
        })
    }

    const FORMS: [&str; 3] = ["ab", "c d", "bé?"];

    /// The export of `audio`, its reference outputs (and one off by 1e-3):
    /// the log-mel reference has a padded row, wav2vec 2.0's none (its
    /// group norm would see the padding, as in transformers).
    fn export_and_reference(audio: AudioTowerConfig, dir: &Path) -> (Tensor, Tensor) {
        let (clip, meta, vocab) = model(audio);
        export_speech(&clip, &meta, dir).unwrap();
        let wave = (Tensor::arange(2 * 6000, (Kind::Float, Device::Cpu)) * 0.013)
            .sin()
            .view([2, 6000])
            + Tensor::arange(6000, (Kind::Float, Device::Cpu)).view([1, 6000]) * 1e-4;
        let padded = matches!(meta.audio, AudioTowerConfig::LogMel(_));
        let lengths = Tensor::from_slice(&[6000i64, if padded { 4500 } else { 6000 }]);
        let keep = Tensor::arange(6000, (Kind::Int64, Device::Cpu))
            .lt_tensor(&lengths.unsqueeze(1))
            .to_kind(Kind::Float);
        let wave = wave * keep;
        let rows: Vec<Vec<i64>> = FORMS
            .iter()
            .map(|f| vocab.encode(f, meta.max_len))
            .collect();
        let refs: Vec<&[i64]> = rows.iter().map(Vec::as_slice).collect();
        let (ids, att) = pad_batch(&refs, CharVocab::PAD);
        let (a, t) = tch::no_grad(|| {
            (
                normalize(
                    &clip
                        .model
                        .encode_tower(&[wave.shallow_clone(), lengths.shallow_clone()], false),
                ),
                normalize(&clip.model.encode_text(&ids, &att, false)),
            )
        });
        let save = |name: &str, a: &Tensor| {
            tensor_io::save(
                &dir.join(name),
                &[
                    ("wave".into(), wave.shallow_clone()),
                    ("lengths".into(), lengths.shallow_clone()),
                    ("audio_embeddings".into(), a.shallow_clone()),
                    ("ids".into(), ids.shallow_clone()),
                    ("attention".into(), att.shallow_clone()),
                    ("text_embeddings".into(), t.shallow_clone()),
                ],
                None,
            )
            .unwrap();
        };
        save("reference.safetensors", &a);
        save("off.safetensors", &(&a + 1e-3));
        // The export reloads into a fresh model with the same embeddings.
        let (fresh, _, _) = model(meta.audio.clone());
        let loaded = tensor_io::load(&dir.join("model.safetensors"))
            .unwrap()
            .tensors;
        let vars = fresh.var_store().variables();
        let exported: Vec<&String> = vars.keys().filter(|k| is_exported(k)).collect();
        assert_eq!(exported.len(), loaded.len());
        tch::no_grad(|| {
            for (k, v) in &loaded {
                vars[k].shallow_clone().copy_(v);
            }
        });
        let again = tch::no_grad(|| {
            normalize(
                &fresh
                    .model
                    .encode_tower(&[wave.shallow_clone(), lengths.shallow_clone()], false),
            )
        });
        assert!(again.allclose(&a, 1e-6, 1e-6, false));
        (a, t)
    }

    /// Both audio kinds: CLIPModel's names, BertModel's names, vocab.txt in
    /// CharVocab's ids; PyTorch (transformers' Wav2Vec2Model / BertModel,
    /// the script's log-mel module) reproduces the embeddings when
    /// `SELFSUP_HF_PYTHON` names a Python with transformers (required under
    /// `CI=true`), and a reference off by 1e-3 fails.
    #[test]
    fn the_export_has_pytorch_names_and_pytorch_reproduces_it() {
        let _rng = crate::TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner());
        let python = match std::env::var_os("SELFSUP_HF_PYTHON") {
            Some(p) => Some(p),
            None if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") => {
                panic!("CI: SELFSUP_HF_PYTHON must name a Python with torch, safetensors and transformers (cargo xtask test sets it)")
            }
            None => {
                eprintln!("SELFSUP_HF_PYTHON not set: PyTorch check skipped (Rust side checked)");
                None
            }
        };
        for (kind, audio, key) in [
            ("log_mel", log_mel(), "audio_model.layers.1.layer_norm.bias"),
            (
                "wav2vec2",
                wav2vec2(),
                "audio_model.encoder.pos_conv_embed.conv.parametrizations.weight.original0",
            ),
        ] {
            tch::manual_seed(31);
            let dir = tempfile::tempdir().unwrap();
            let (_a, _t) = export_and_reference(audio, dir.path());
            let names = tensor_io::load(&dir.path().join("model.safetensors"))
                .unwrap()
                .tensors;
            for n in [
                "audio_projection.weight",
                "text_projection.weight",
                "logit_scale",
                "text_model.bert.embeddings.word_embeddings.weight",
                key,
            ] {
                assert!(names.contains_key(n), "{kind}: {n}");
            }
            assert!(!names.keys().any(|k| k.starts_with("text_model.cls.")));
            assert_eq!(names["audio_projection.weight"].size()[0], 16);
            let vocab = std::fs::read_to_string(dir.path().join("vocab.txt")).unwrap();
            let lines: Vec<&str> = vocab.split('\n').collect();
            assert_eq!(lines[..6], ["[PAD]", "[UNK]", "[CLS]", "[SEP]", " ", "a"]);
            let cfg: serde_json::Value = serde_json::from_str(
                &std::fs::read_to_string(dir.path().join("config.json")).unwrap(),
            )
            .unwrap();
            assert_eq!(cfg["format"], SPEECH_EXPORT_FORMAT);
            assert_eq!(cfg["text_config"]["vocab_size"], 4 + 6);
            assert_eq!(cfg["selfsup"]["audio"]["kind"], kind);
            let Some(python) = &python else { continue };
            let script = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../benchmarks/check_hf_speech_text_export.py");
            let run = |reference: &str| {
                let out = std::process::Command::new(python)
                    .arg(&script)
                    .arg(dir.path())
                    .arg(dir.path().join(reference))
                    .args(FORMS)
                    .output()
                    .expect("run SELFSUP_HF_PYTHON");
                let text = format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
                eprintln!("{kind}: {}", text.trim());
                (out.status.success(), text)
            };
            let (ok, text) = run("reference.safetensors");
            assert!(ok && text.contains("PASS"), "{kind}: {text}");
            let (ok, text) = run("off.safetensors");
            assert!(
                !ok && text.contains("FAIL"),
                "{kind}: a reference off by 1e-3 passed: {text}"
            );
        }
    }
}
