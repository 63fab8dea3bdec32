//! Grey video clips in memory: `frames` square frames of `size x size`
//! bytes each, frame after frame.
use serde::Serialize;

/// One clip: `frames * size * size` bytes, frame-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clip {
    /// Frames in the clip (at least the model's `frames`).
    pub frames: usize,
    /// `frames * size * size` grey bytes.
    pub pixels: Vec<u8>,
}

/// Clips of one frame size, with their names (folders, or generated ids).
#[derive(Debug, Clone)]
pub struct VideoSet {
    /// The side of every frame.
    pub size: usize,
    pub clips: Vec<Clip>,
    /// `names[i]` names clip `i` in messages.
    pub names: Vec<String>,
}

impl VideoSet {
    /// Number of clips.
    pub fn len(&self) -> usize {
        self.clips.len()
    }

    /// Whether there is no clip.
    pub fn is_empty(&self) -> bool {
        self.clips.is_empty()
    }

    /// The clips at `idx`, in that order.
    pub fn subset(&self, idx: &[usize]) -> VideoSet {
        VideoSet {
            size: self.size,
            clips: idx
                .iter()
                .filter_map(|&i| self.clips.get(i).cloned())
                .collect(),
            names: idx
                .iter()
                .filter_map(|&i| self.names.get(i).cloned())
                .collect(),
        }
    }
}

/// What a data source produced, for the summary.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DataReport {
    /// `moving-fashion-mnist` or the frame folder.
    pub name: String,
    /// Clips pre-trained on.
    pub train_clips: usize,
    /// Labelled test clips (Moving Fashion-MNIST only), read once at the end.
    pub test_clips: usize,
    /// Frames read from disk (frame folders).
    pub frames_read: usize,
    /// Clips whose frames were resized to the model's image size.
    pub resized_clips: usize,
}
