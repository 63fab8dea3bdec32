//! wav2vec 2.0's losses, one type each.
//!
//! Core's `InfoNce` classifies each anchor against the other rows of a batch;
//! wav2vec 2.0 classifies each masked frame against K distractors drawn from
//! the same utterance, with cosine similarity and distractors equal to the
//! target masked out, so it is its own type here.
pub mod contrastive;
pub mod diversity;

pub use contrastive::ContrastiveLoss;
pub use diversity::{codebook_perplexity, diversity_loss};
