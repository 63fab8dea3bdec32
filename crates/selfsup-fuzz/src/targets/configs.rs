//! TOML run configurations of every modality (`XRunConfig::from_toml`), seeded
//! with the presets in `configs/`.
use crate::engine::Target;
use crate::seeds;
use std::path::Path;

const DICT: &[&[u8]] = &[
    b"[method]",
    b"[data]",
    b"[trainer]",
    b"[eval]",
    b"[model]",
    b"[augment]",
    b"[optimizer]",
    b"name = ",
    b"epochs = ",
    b"batch_size = ",
    b"lr = ",
    b" = true",
    b" = false",
    b" = \"\"",
    b" = []",
    b" = {}",
    b"\"cpu\"",
    b"\"cuda\"",
    b"nan",
    b"inf",
    b"-inf",
    b"1e400",
    b"0x7fffffffffffffff",
    b"'''",
    b"[[",
    b"]]",
];

pub const TARGETS: [Target; 5] = [
    Target {
        name: "config-vision",
        about: "selfsup_vision::pretrain::VisionRunConfig::from_toml",
        run: run_vision,
        seeds: seeds_vision,
        dict: DICT,
        max_len: 16 << 10,
    },
    Target {
        name: "config-text",
        about: "selfsup_text::pretrain::TextRunConfig::from_toml",
        run: run_text,
        seeds: seeds_text,
        dict: DICT,
        max_len: 16 << 10,
    },
    Target {
        name: "config-graph",
        about: "selfsup_graph::pretrain::GraphRunConfig::from_toml",
        run: run_graph,
        seeds: seeds_graph,
        dict: DICT,
        max_len: 16 << 10,
    },
    Target {
        name: "config-audio",
        about: "selfsup_audio::pretrain::AudioRunConfig::from_toml",
        run: run_audio,
        seeds: seeds_audio,
        dict: DICT,
        max_len: 16 << 10,
    },
    Target {
        name: "config-clip",
        about: "selfsup_multimodal::pretrain::ClipRunConfig::from_toml",
        run: run_clip,
        seeds: seeds_clip,
        dict: DICT,
        max_len: 16 << 10,
    },
];

const ORIGIN: &str = "fuzz.toml";

fn text(data: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(data)
}

fn run_vision(data: &[u8]) -> Result<(), String> {
    selfsup_vision::pretrain::VisionRunConfig::from_toml(&text(data), Path::new(ORIGIN))
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn run_text(data: &[u8]) -> Result<(), String> {
    selfsup_text::pretrain::TextRunConfig::from_toml(&text(data), Path::new(ORIGIN))
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn run_graph(data: &[u8]) -> Result<(), String> {
    selfsup_graph::pretrain::GraphRunConfig::from_toml(&text(data), Path::new(ORIGIN))
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn run_audio(data: &[u8]) -> Result<(), String> {
    selfsup_audio::pretrain::AudioRunConfig::from_toml(&text(data), Path::new(ORIGIN))
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn run_clip(data: &[u8]) -> Result<(), String> {
    selfsup_multimodal::pretrain::ClipRunConfig::from_toml(&text(data), Path::new(ORIGIN))
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// The presets, or (outside a checkout) a minimal config.
fn presets(sub: &str, fallback: &str) -> Vec<Vec<u8>> {
    let mut out = seeds::workspace_configs(sub);
    out.push(fallback.as_bytes().to_vec());
    out
}

fn seeds_vision() -> Vec<Vec<u8>> {
    presets("vision", "[method]\nname = \"simclr\"\n")
}

fn seeds_text() -> Vec<Vec<u8>> {
    presets("text", "[method]\nname = \"mlm\"\n")
}

fn seeds_graph() -> Vec<Vec<u8>> {
    presets("graph", "[method]\nname = \"grace\"\n")
}

fn seeds_audio() -> Vec<Vec<u8>> {
    presets("audio", "[method]\nname = \"wav2vec2\"\n")
}

fn seeds_clip() -> Vec<Vec<u8>> {
    presets("multimodal", "[method]\nname = \"clip\"\n")
}
