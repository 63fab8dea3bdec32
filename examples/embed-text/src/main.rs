//! Embeds the lines of a text file with a BERT exported by `selfsup
//! pretrain` (its `runs/<name>/export` folder) and prints how similar they
//! are: the most similar pairs, and the cosine table of a short file.
//!
//! `cargo run --release -p embed-text -- EXPORT TEXTS` (see README.md).
mod args;
mod similarity;

use args::{Args, USAGE};
use selfsup_text::embed::{read_lines, TextEmbedder};
use selfsup_text::tch::{self, Device};
use std::error::Error;
use std::process::ExitCode;

/// The most texts this example compares (every pair is held in memory).
const MAX_TEXTS: usize = 5000;
/// Files of at most this many texts get the whole cosine table.
const MAX_TABLE: usize = 12;
/// Characters of a text shown.
const SHOWN: usize = 60;

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    match Args::parse(&argv) {
        Ok(None) => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
        Ok(Some(args)) => match run(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

/// A text cut to [`SHOWN`] characters.
fn shown(text: &str) -> String {
    if text.chars().count() <= SHOWN {
        text.to_string()
    } else {
        format!("{}...", text.chars().take(SHOWN).collect::<String>())
    }
}

fn run(args: &Args) -> Result<(), Box<dyn Error>> {
    if let Some(t) = args.threads {
        tch::set_num_threads(t.min(i32::MAX as usize) as i32);
    }
    let embedder = TextEmbedder::load_export(&args.export, Device::Cpu)?;
    let texts = read_lines(&args.texts)?;
    if texts.len() < 2 || texts.len() > MAX_TEXTS {
        return Err(format!(
            "{}: {} lines: give 2..={MAX_TEXTS} texts, one a line (every pair is compared)",
            args.texts.display(),
            texts.len()
        )
        .into());
    }
    let embeddings = embedder.embed_texts(&texts, args.batch_size)?;
    println!(
        "export: {} (BERT, {}-d embeddings: mean of the last hidden states, {} tokens a text at most)",
        args.export.display(),
        embedder.dim(),
        embedder.max_len
    );
    println!("texts: {} ({} lines)", args.texts.display(), texts.len());
    let sim = similarity::cosine_matrix(&embeddings);
    if texts.len() <= MAX_TABLE {
        println!("cosine similarity (texts numbered by line):");
        let header: String = (1..=texts.len()).map(|j| format!("{j:>7}")).collect();
        println!("    {header}");
        for (i, row) in sim.iter().enumerate() {
            let cells: String = row.iter().map(|s| format!("{s:>7.3}")).collect();
            println!("{:>4}{cells}  {}", i + 1, shown(&texts[i]));
        }
    }
    let top = similarity::top_pairs(&sim, args.top.max(1));
    for (rank, (i, j, s)) in top.iter().enumerate() {
        let what = if rank == 0 {
            "most similar pair".to_string()
        } else {
            format!("pair {}", rank + 1)
        };
        println!(
            "{what}: lines {} and {} (cosine {s:.3}): {:?} / {:?}",
            i + 1,
            j + 1,
            shown(&texts[*i]),
            shown(&texts[*j])
        );
    }
    Ok(())
}
