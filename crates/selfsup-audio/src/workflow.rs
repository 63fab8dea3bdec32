//! Audio as one entry of the `selfsup` binary's registry: its method
//! names, its config parser ([`AudioPlan`]: pre-training in one process,
//! `--recordings`), and what it does with one of its checkpoints: linear
//! probes of the frozen encoder and the transformers export.
use crate::config::{AudioMethodConfig, AudioRunConfig};
use crate::dataset::LoadReport;
use crate::embed::check_size;
use crate::eval::PooledLayers;
use crate::export::{export_cpc, export_wav2vec2};
use crate::methods::{CpcMethod, Wav2Vec2Method};
use crate::pretrain::{check_folders, linear_probes, pretrain, AudioRunSummary};
use crate::report::{probe_lines, summary_lines};
use selfsup_core::checkpoint;
use selfsup_core::method::Method;
use selfsup_core::run::{default_data_root, seed_weights, Common, RunOptions};
use selfsup_core::workflow::{EvalRequest, Modality, Plan, Report};
use selfsup_core::{Error, Result};
use std::path::{Path, PathBuf};
use tch::Device;

/// The evaluations [`AudioModality::evaluate`] offers: `linear` (the
/// config's `[[eval.tasks]]` probes per layer, beside random weights and
/// the log-mel filterbank) and `finetune` ([`crate::finetune`]: label
/// efficiency on one task, `finetune.json` beside the checkpoint).
pub const EVALUATIONS: &[&str] = &["linear", crate::finetune::FINETUNE];

/// The audio modality (wav2vec 2.0).
pub struct AudioModality;

/// A parsed, checked audio config, and `--recordings` when given.
pub struct AudioPlan {
    pub cfg: AudioRunConfig,
    /// `--recordings DIR`: the run's data root instead of `--data`.
    pub recordings: Option<PathBuf>,
}

/// A finished audio run, as the terminal shows it.
pub struct AudioReport {
    pub summary: AudioRunSummary,
    /// The process's peak memory when the run ended, MB.
    pub peak_rss_mb: Option<f64>,
}

impl Modality for AudioModality {
    fn name(&self) -> &'static str {
        "audio"
    }

    fn methods(&self) -> &'static [&'static str] {
        AudioMethodConfig::NAMES
    }

    fn parse(&self, text: &str, origin: &Path) -> Result<Box<dyn Plan>> {
        Ok(Box::new(AudioPlan {
            cfg: AudioRunConfig::from_toml(text, origin)?,
            recordings: None,
        }))
    }

    fn evaluations(&self) -> &'static [&'static str] {
        EVALUATIONS
    }

    fn evaluate(&self, request: &EvalRequest<'_>) -> Result<Vec<String>> {
        if !EVALUATIONS.contains(&request.protocol) {
            return Err(Error::Config(format!(
                "eval {}: an audio checkpoint offers {}",
                request.protocol,
                EVALUATIONS.join(", ")
            )));
        }
        let cfg = AudioRunConfig::from_toml(request.config_toml, request.checkpoint)?;
        if cfg.eval.tasks.is_empty() {
            return Err(Error::Config(format!(
                "{}: its config has no [[eval.tasks]] to probe or fine-tune on",
                request.checkpoint.display()
            )));
        }
        let root = request
            .data
            .map_or_else(default_data_root, Path::to_path_buf);
        check_folders(&cfg, &root, false)?;
        let device = request.device.resolve()?;
        let restored = restore(request.checkpoint, &cfg, device)?;
        if request.protocol == crate::finetune::FINETUNE {
            let Restored::Wav2vec2(method) = &restored else {
                return Err(Error::Config(format!(
                    "eval {}: {} is a cpc checkpoint; fine-tuning is implemented for wav2vec2 \
                     only (use eval linear)",
                    request.protocol,
                    request.checkpoint.display()
                )));
            };
            return crate::finetune::report(request.checkpoint, &cfg, method, &root, device);
        }
        let mut report = LoadReport::default();
        let rows = linear_probes(
            &cfg,
            restored.probed(),
            &root,
            device,
            &mut report,
            &mut |_: &str| {},
        )?;
        let mut out: Vec<String> = rows.iter().flat_map(probe_lines).collect();
        if report.skipped > 0 {
            out.push(format!(
                "  {} probe file(s) skipped (unreadable; [data] skip_bad)",
                report.skipped
            ));
        }
        Ok(out)
    }

    fn export(&self, checkpoint: &Path, config_toml: &str, out: &Path) -> Result<String> {
        let cfg = AudioRunConfig::from_toml(config_toml, checkpoint)?;
        match restore(checkpoint, &cfg, Device::Cpu)? {
            Restored::Wav2vec2(method) => {
                export_wav2vec2(&method, out)?;
                Ok(format!(
                    "exported Wav2Vec2ForPreTraining (transformers layout) to {}",
                    out.display()
                ))
            }
            Restored::Cpc(method) => {
                export_cpc(&method, out)?;
                Ok(format!(
                    "exported CPC (model.safetensors + config.json; benchmarks/cpc_reference.py \
                     loads it in PyTorch) to {}",
                    out.display()
                ))
            }
        }
    }
}

/// A checkpoint's network, by method.
enum Restored {
    Wav2vec2(Box<Wav2Vec2Method>),
    Cpc(Box<CpcMethod>),
}

impl Restored {
    /// The network as the probes read it.
    fn probed(&self) -> &dyn PooledLayers {
        match self {
            Restored::Wav2vec2(m) => m.as_ref(),
            Restored::Cpc(m) => m.as_ref(),
        }
    }
}

/// The checkpoint's network (its size bounded before allocation).
fn restore(path: &Path, cfg: &AudioRunConfig, device: Device) -> Result<Restored> {
    check_size(&cfg.model).map_err(|e| Error::Data(format!("{}: {e}", path.display())))?;
    seed_weights(cfg.trainer.seed);
    match &cfg.method {
        AudioMethodConfig::Wav2vec2(m) => {
            let method = Wav2Vec2Method::new(&cfg.model, m, cfg.trainer.seed, device);
            checkpoint::restore_model(path, method.var_store(), method.name())?;
            Ok(Restored::Wav2vec2(Box::new(method)))
        }
        AudioMethodConfig::Cpc(m) => {
            let method = CpcMethod::new(&m.arch(&cfg.model), device);
            checkpoint::restore_model(path, method.var_store(), method.name())?;
            Ok(Restored::Cpc(Box::new(method)))
        }
    }
}

impl Plan for AudioPlan {
    fn common(&mut self) -> Common<'_> {
        self.cfg.run.common(&mut self.cfg.trainer)
    }

    fn to_toml(&self) -> String {
        self.cfg.to_toml()
    }

    fn progress_unit(&self) -> Option<(f64, &'static str)> {
        Some((self.cfg.data.crop_seconds, "audio s/s"))
    }

    fn use_recordings(&mut self, dir: PathBuf) -> Result<String> {
        let note = self.cfg.use_recordings(&dir)?;
        self.recordings = Some(dir);
        Ok(note)
    }

    fn pretrain(&self, mut opts: RunOptions<'_>) -> Result<Box<dyn Report>> {
        if let Some(dir) = &self.recordings {
            opts.data = Some(dir.clone());
        }
        let summary = pretrain(&self.cfg, opts)?;
        Ok(Box::new(AudioReport {
            summary,
            peak_rss_mb: selfsup_core::metrics::peak_rss_mb(),
        }))
    }
}

impl Report for AudioReport {
    fn lines(&self) -> Vec<String> {
        summary_lines(&self.summary, self.peak_rss_mb)
    }
}
