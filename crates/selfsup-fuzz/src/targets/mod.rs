//! Every fuzz target, by modality.
use crate::engine::Target;

pub mod audio;
pub mod configs;
pub mod core;
pub mod graph;
pub mod multimodal;
pub mod selftest;
pub mod text;
pub mod vision;

/// All targets, in the order of the report.
pub fn all() -> Vec<Target> {
    let mut t = Vec::new();
    t.extend(vision::TARGETS);
    t.extend(audio::TARGETS);
    t.extend(graph::TARGETS);
    t.extend(multimodal::TARGETS);
    t.extend(text::TARGETS);
    t.extend(core::TARGETS);
    t.extend(configs::TARGETS);
    t
}

/// The target called `name` (the engine's self-tests included).
pub fn find(name: &str) -> Option<Target> {
    all()
        .into_iter()
        .chain(selftest::TARGETS)
        .find(|t| t.name == name)
}

/// `data.len() % n`: how targets vary a reader's options with the input.
pub(crate) fn pick(data: &[u8], n: usize) -> usize {
    data.len() % n
}
