//! Peak memory of reading one very long line: the reliability issue found a
//! 50 MB single-line corpus peaking at 7.4 GB. This builds such a line (a
//! seeded stream of words, no newline), trains the WordPiece vocabulary on it
//! and packs it into 128-token sequences, as `selfsup pretrain` does, then
//! prints the sequences and the process's peak resident memory.
//!
//! ```text
//! /usr/bin/time -v cargo run -p selfsup-text --example long_line_memory -- 50
//! ```
use selfsup_text::corpus::Document;
use selfsup_text::packing::pack;
use selfsup_text::tokenizer::TextTokenizer;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mb: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(50);
    let words = [
        "the",
        "whale",
        "ship",
        "sea",
        "captain",
        "harpoon",
        "deck",
        "wind",
        "sail",
        "boat",
        "ocean",
        "storm",
        "crew",
        "night",
        "morning",
        "island",
        "ahab",
        "ishmael",
        "white",
        "voyage",
        "nantucket",
        "pequod",
        "starbuck",
        "queequeg",
        "spermaceti",
        "leviathan",
    ];
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut text = String::with_capacity(mb << 20);
    while text.len() < mb << 20 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        text.push_str(words[(state % words.len() as u64) as usize]);
        text.push(if state.is_multiple_of(11) { ',' } else { ' ' });
    }
    let docs = vec![Document {
        id: "one-line.txt".into(),
        text,
        label: None,
    }];
    let tok = TextTokenizer::train(&docs, 8192, 2, true)?;
    let packed = pack(&docs, &tok, 128)?;
    let peak = selfsup_core::metrics::peak_rss_mb().unwrap_or(f64::NAN);
    println!(
        "{mb} MB in one line: {} sequences of 128 tokens, peak RSS {peak:.0} MB",
        packed.len()
    );
    Ok(())
}
