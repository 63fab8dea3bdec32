//! Text as one entry of the `selfsup` binary's registry: its method names,
//! its config parser ([`TextPlan`]: pre-training, data-parallel), and what
//! it does with one of its checkpoints: the frozen encoder's validation
//! figures or downstream linear probes, and the transformers export.
use crate::config::{TextMethodConfig, TextRunConfig};
use crate::eval::{unigram_baseline, validate};
use crate::export::export_mlm;
use crate::loader::MaskVocab;
use crate::methods::Mlm;
use crate::packing::pack;
use crate::pretrain::{pretrain, read_split, subsample, TextRunSummary};
use crate::report::summary_lines;
use crate::tokenizer::TextTokenizer;
use selfsup_core::checkpoint;
use selfsup_core::method::Method;
use selfsup_core::run::{default_data_root, Common, RunOptions};
use selfsup_core::workflow::{EvalRequest, Modality, Plan, Report};
use selfsup_core::{Error, Result};
use std::path::{Path, PathBuf};
use tch::Device;

/// The evaluations [`TextModality::evaluate`] offers: `linear` (the
/// config's `[[eval.downstream]]` probes, beside random weights and bag of
/// words) and `validation` (masked-token loss, accuracy and perplexity on
/// the validation documents, beside the unigram baseline) and `finetune`
/// (the encoder fine-tuned end to end on fractions of the downstream sets'
/// labels against the same network from scratch, [`crate::finetune`]);
/// next-token checkpoints also `test` (perplexity on held-out documents,
/// [`crate::pretrain_next_token::test_documents`]).
pub const EVALUATIONS: &[&str] = &[
    "linear",
    "validation",
    crate::finetune::FINETUNE,
    crate::pretrain_next_token::TEST,
];

/// The text modality (BERT's masked language modelling).
pub struct TextModality;

/// A parsed, checked text config.
pub struct TextPlan {
    pub cfg: TextRunConfig,
}

/// A finished text run, as the terminal shows it.
pub struct TextReport {
    pub summary: TextRunSummary,
    pub run_dir: PathBuf,
    /// The process's peak memory when the run ended, MB.
    pub peak_rss_mb: Option<f64>,
    /// Whether this process is the one that reports (rank 0).
    pub primary: bool,
}

impl Modality for TextModality {
    fn name(&self) -> &'static str {
        "text"
    }

    fn methods(&self) -> &'static [&'static str] {
        TextMethodConfig::NAMES
    }

    fn parse(&self, text: &str, origin: &Path) -> Result<Box<dyn Plan>> {
        Ok(Box::new(TextPlan {
            cfg: TextRunConfig::from_toml(text, origin)?,
        }))
    }

    fn evaluations(&self) -> &'static [&'static str] {
        EVALUATIONS
    }

    fn evaluate(&self, request: &EvalRequest<'_>) -> Result<Vec<String>> {
        if !EVALUATIONS.contains(&request.protocol) {
            return Err(Error::Config(format!(
                "eval {}: a text checkpoint offers {}",
                request.protocol,
                EVALUATIONS.join(", ")
            )));
        }
        let cfg = TextRunConfig::from_toml(request.config_toml, request.checkpoint)?;
        let device = request.device.resolve()?;
        let root = request
            .data
            .map_or_else(default_data_root, Path::to_path_buf);
        if request.protocol == crate::finetune::FINETUNE {
            crate::finetune::needs_mlm(&cfg, request.checkpoint)?;
        }
        if cfg.method == TextMethodConfig::NextToken {
            return crate::pretrain_next_token::evaluate(
                request.protocol,
                &cfg,
                request.checkpoint,
                &root,
                device,
            );
        }
        if request.protocol == crate::pretrain_next_token::TEST {
            return Err(Error::Config(format!(
                "eval {}: only a next_token checkpoint has a test split; an mlm checkpoint offers linear, validation, {}",
                request.protocol,
                crate::finetune::FINETUNE
            )));
        }
        let (mlm, tok) = restore(request.checkpoint, &cfg, device)?;
        if request.protocol == crate::finetune::FINETUNE {
            let file =
                selfsup_core::eval::result_file_name(crate::finetune::FINETUNE_FILE, request.data);
            let paths = crate::finetune::ReportPaths {
                checkpoint: request.checkpoint,
                root: &root,
                file: &file,
            };
            crate::finetune::report(&cfg, &mlm, &tok, device, &paths)
        } else if request.protocol == "linear" {
            let random = || Mlm::new(&mlm.bert.cfg, device);
            crate::report::probe_lines(&cfg, &mlm, random, &tok, &root, device, request.checkpoint)
        } else {
            validation(&cfg, &mlm, &tok, &root, device)
        }
    }

    fn export(&self, checkpoint: &Path, config_toml: &str, out: &Path) -> Result<String> {
        let cfg = TextRunConfig::from_toml(config_toml, checkpoint)?;
        if cfg.method == TextMethodConfig::NextToken {
            return crate::pretrain_next_token::export_checkpoint(checkpoint, &cfg, out);
        }
        let (mlm, tok) = restore(checkpoint, &cfg, Device::Cpu)?;
        export_mlm(&mlm, &tok, cfg.model.max_len, out)?;
        Ok(format!(
            "exported BertForMaskedLM and its tokenizer (transformers layout) to {}",
            out.display()
        ))
    }
}

/// The checkpoint's MLM and the run's tokenizer (`tokenizer/tokenizer.json`
/// beside the checkpoint).
fn restore(path: &Path, cfg: &TextRunConfig, device: Device) -> Result<(Mlm, TextTokenizer)> {
    let run_dir = path.parent().unwrap_or(Path::new("."));
    let tok = TextTokenizer::from_file(&run_dir.join("tokenizer").join("tokenizer.json"))?;
    let bert = cfg
        .model
        .resolve(tok.vocab_size, tok.pad_id)
        .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
    let mlm = Mlm::new(&bert, device);
    checkpoint::restore_model(path, mlm.var_store(), mlm.name())?;
    Ok((mlm, tok))
}

/// `eval validation`: the validation figures of the frozen encoder on the
/// run's validation documents (the same split, masks and sequences as the
/// run's last epoch), beside the unigram baseline.
fn validation(
    cfg: &TextRunConfig,
    mlm: &Mlm,
    tok: &TextTokenizer,
    root: &Path,
    device: Device,
) -> Result<Vec<String>> {
    let split = read_split(cfg, root, &mut |_: &str| {})?;
    let max_len = cfg.model.max_len;
    let mut train = pack(&split.train, tok, max_len)?;
    let val = pack(&split.val, tok, max_len)?.take(cfg.eval.val_sequences);
    subsample(&mut train, cfg.data.max_train_sequences, cfg.trainer.seed);
    let vocab = MaskVocab::of(tok);
    let unigram = unigram_baseline(&train, &val, &vocab, &cfg.masking, tok.vocab_size);
    let v = validate(mlm, &val, &vocab, &cfg.masking, cfg.run.batch_size, device);
    Ok(vec![
        format!(
            "validation ({} sequences of {} documents): loss {:.4}, masked-token accuracy {:.2}%, perplexity {:.1} ({} predicted tokens)",
            val.len(),
            split.val.len(),
            v.loss,
            v.masked_acc * 100.0,
            v.perplexity,
            v.predicted_tokens
        ),
        format!(
            "unigram baseline:  masked-token accuracy {:.2}%, perplexity {:.1}",
            unigram.masked_acc * 100.0,
            unigram.perplexity
        ),
    ])
}

impl Plan for TextPlan {
    fn common(&mut self) -> Common<'_> {
        self.cfg.run.common(&mut self.cfg.trainer)
    }

    fn to_toml(&self) -> String {
        self.cfg.to_toml()
    }

    fn data_parallel(&self) -> bool {
        true
    }

    fn progress_unit(&self) -> Option<(f64, &'static str)> {
        Some((self.cfg.model.max_len as f64, "tokens/s"))
    }

    fn pretrain(&self, opts: RunOptions<'_>) -> Result<Box<dyn Report>> {
        let run_dir = opts.run_dir.clone();
        let primary = opts
            .distributed
            .as_ref()
            .is_none_or(selfsup_core::distributed::Distributed::is_primary);
        if self.cfg.method == TextMethodConfig::NextToken {
            let summary = crate::pretrain_next_token::pretrain(&self.cfg, opts)?;
            return Ok(Box::new(NextTokenReport {
                summary,
                run_dir,
                peak_rss_mb: selfsup_core::metrics::peak_rss_mb(),
                primary,
            }));
        }
        let summary = pretrain(&self.cfg, opts)?;
        Ok(Box::new(TextReport {
            summary,
            run_dir,
            peak_rss_mb: selfsup_core::metrics::peak_rss_mb(),
            primary,
        }))
    }
}

impl Report for TextReport {
    fn lines(&self) -> Vec<String> {
        if !self.primary {
            return Vec::new();
        }
        summary_lines(&self.summary, self.peak_rss_mb, &self.run_dir)
    }
}

/// A finished next-token run, as the terminal shows it.
pub struct NextTokenReport {
    pub summary: crate::pretrain_next_token::NextTokenRunSummary,
    pub run_dir: PathBuf,
    /// The process's peak memory when the run ended, MB.
    pub peak_rss_mb: Option<f64>,
    /// Whether this process is the one that reports (rank 0).
    pub primary: bool,
}

impl Report for NextTokenReport {
    fn lines(&self) -> Vec<String> {
        if !self.primary {
            return Vec::new();
        }
        crate::pretrain_next_token::summary_lines(&self.summary, self.peak_rss_mb, &self.run_dir)
    }
}
