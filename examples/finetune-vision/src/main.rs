//! Fine-tunes an encoder exported by `selfsup pretrain` (its
//! `runs/<name>/export` folder) on labelled images: a linear head is trained
//! on the frozen encoder first, then encoder and head together (LP-FT), and
//! the accuracy on held-out images is printed before and after.
//!
//! `cargo run --release -p finetune-vision -- EXPORT DATA EPOCHS FRACTION`
//! (see README.md and `--help`).
mod args;
mod convert;
mod data;
mod model;
mod train;

use args::{Args, USAGE};
use model::Classifier;
use selfsup_vision::embed::VisionEmbedder;
use selfsup_vision::tch::{self, Device};
use std::error::Error;
use std::process::ExitCode;
use train::Schedule;

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

/// Share of the most frequent label.
fn majority(labels: &[i64]) -> f64 {
    let mut counts = std::collections::BTreeMap::new();
    for l in labels {
        *counts.entry(l).or_insert(0usize) += 1;
    }
    counts.values().max().copied().unwrap_or(0) as f64 / labels.len().max(1) as f64
}

fn run(args: &Args) -> Result<(), Box<dyn Error>> {
    if let Some(t) = args.threads {
        tch::set_num_threads(t.min(i32::MAX as usize) as i32);
    }
    let emb = VisionEmbedder::load_export(&args.export, None, Device::Cpu)?;
    let splits = data::load(args, &emb)?;
    if splits.train.labels.len() < 2 {
        return Err(format!(
            "{} labelled training image: give a larger FRACTION",
            splits.train.labels.len()
        )
        .into());
    }
    let model = Classifier::from_export(&args.export, &emb, splits.classes.len(), args.seed)?;
    let method = if emb.method.is_empty() {
        "an unnamed method"
    } else {
        emb.method.as_str()
    };
    println!(
        "export: {} ({} trained by {method}; {} px, {} input channel(s), {}-d features)",
        args.export.display(),
        model.arch,
        emb.image_size,
        emb.in_channels,
        emb.dim
    );
    println!("data: {}", splits.described);
    println!(
        "majority class of the held-out images: {:.2}%",
        100.0 * majority(&splits.test.labels)
    );
    let schedule = |epochs| Schedule {
        epochs,
        lr: args.lr,
        batch_size: args.batch_size,
        seed: args.seed,
    };
    let loss = train::train_head(&model, &emb, &splits.train, schedule(args.probe_epochs))?;
    let before = train::accuracy(&model, &emb, &splits.test);
    println!(
        "before fine-tuning (frozen encoder, linear head {} epochs, loss {loss:.4}): held-out accuracy {:.2}%",
        args.probe_epochs,
        100.0 * before
    );
    if args.epochs == 0 {
        return Ok(());
    }
    let mut opts = train::optimizers(&model, schedule(args.epochs))?;
    for epoch in 0..args.epochs {
        let loss = train::finetune_epoch(
            &model,
            &emb,
            &splits.train,
            schedule(args.epochs),
            &mut opts,
            epoch,
        );
        println!(
            "fine-tuning epoch {}/{}: loss {loss:.4}",
            epoch + 1,
            args.epochs
        );
    }
    let after = train::accuracy(&model, &emb, &splits.test);
    println!(
        "after fine-tuning (encoder + head, {} epochs): held-out accuracy {:.2}% ({:+.2} points)",
        args.epochs,
        100.0 * after,
        100.0 * (after - before)
    );
    Ok(())
}
