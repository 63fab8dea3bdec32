//! The video modality as the `selfsup` binary sees it: its method names,
//! its config parser, the summary it prints, and what it does with one of
//! its checkpoints (the probes beside random weights and raw frames; the
//! export of the encoder).
use crate::config::VideoRunConfig;
use crate::eval::ProbeRow;
use crate::methods::{build, VideoMethod, VideoMethodConfig};
use crate::pretrain::{check_data, final_probes, load, pretrain, random_weights, VideoRunSummary};
use selfsup_core::checkpoint::restore_model;
use selfsup_core::device::describe;
use selfsup_core::run::{default_data_root, seed_weights, Common, RunOptions};
use selfsup_core::workflow::{EvalRequest, Modality, Plan, Report};
use selfsup_core::{Error, Result};
use std::path::Path;

/// The evaluation [`VideoModality::evaluate`] offers: the garment and
/// direction probes on frozen features beside random weights and raw frames.
pub const LINEAR: &str = "linear";

/// V-JEPA and temporal order.
pub struct VideoModality;

/// A parsed, checked video config.
pub struct VideoPlan(pub VideoRunConfig);

/// The checkpoint's method, built in the pre-training run's order and seed.
fn restore(
    cfg: &VideoRunConfig,
    checkpoint: &Path,
    device: tch::Device,
) -> Result<Box<dyn VideoMethod>> {
    seed_weights(cfg.trainer.seed);
    let method = build(&cfg.method, &cfg.model, cfg.trainer.seed, device)?;
    restore_model(checkpoint, method.var_store(), method.name())?;
    Ok(method)
}

impl Modality for VideoModality {
    fn name(&self) -> &'static str {
        "video"
    }

    fn methods(&self) -> &'static [&'static str] {
        &VideoMethodConfig::NAMES
    }

    fn parse(&self, text: &str, origin: &Path) -> Result<Box<dyn Plan>> {
        Ok(Box::new(VideoPlan(VideoRunConfig::from_toml(
            text, origin,
        )?)))
    }

    fn evaluations(&self) -> &'static [&'static str] {
        &[LINEAR]
    }

    fn evaluate(&self, request: &EvalRequest<'_>) -> Result<Vec<String>> {
        if request.protocol != LINEAR {
            return Err(Error::Config(format!(
                "evaluation '{}': a video checkpoint offers {}",
                request.protocol,
                self.evaluations().join(", ")
            )));
        }
        let cfg = VideoRunConfig::from_toml(request.config_toml, request.checkpoint)?;
        let device = request.device.resolve()?;
        let root = request
            .data
            .map_or_else(default_data_root, Path::to_path_buf);
        check_data(&cfg, &root)?;
        let data = load(&cfg, &root)?;
        let Some(lab) = &data.labelled else {
            return Err(Error::Data(format!(
                "{}: frame folders carry no labels; the probes run on Moving Fashion-MNIST \
                 configs",
                data.report.name
            )));
        };
        let method = restore(&cfg, request.checkpoint, device)?;
        let random = random_weights(&cfg, device)?;
        let rows = final_probes(
            &cfg,
            method.as_ref(),
            random.as_ref(),
            &data,
            lab,
            device,
            &mut |_: &str| {},
        )?;
        let mut lines = vec![format!(
            "{} checkpoint {} on {} ({})",
            cfg.method.name(),
            request.checkpoint.display(),
            data.report.name,
            describe(device)
        )];
        lines.extend(probe_lines(&rows));
        Ok(lines)
    }

    fn export(&self, checkpoint: &Path, config_toml: &str, out: &Path) -> Result<String> {
        let cfg = VideoRunConfig::from_toml(config_toml, checkpoint)?;
        let method = restore(&cfg, checkpoint, tch::Device::Cpu)?;
        crate::export::export_encoder(method.as_ref(), &cfg.model, out)?;
        Ok(format!(
            "exported the {} tubelet ViT encoder to {}",
            cfg.method.name(),
            out.display()
        ))
    }
}

impl Plan for VideoPlan {
    fn common(&mut self) -> Common<'_> {
        self.0.run.common(&mut self.0.trainer)
    }

    fn to_toml(&self) -> String {
        self.0.to_toml()
    }

    fn pretrain(&self, opts: RunOptions<'_>) -> Result<Box<dyn Report>> {
        Ok(Box::new(pretrain(&self.0, opts)?))
    }
}

/// The probe table, one line per task and features (hit@1 in percent).
pub fn probe_lines(rows: &[ProbeRow]) -> Vec<String> {
    let mut lines = vec![
        "  probes (hit@1: the top class is one of the clip's garments' labels; penalty chosen on \
         validation, test read once):"
            .to_string(),
    ];
    for r in rows {
        lines.push(format!(
            "    {:<9} {:<16} validation {:5.1} %  test {:5.1} %{}",
            r.task,
            r.features,
            100.0 * r.validation,
            100.0 * r.test,
            r.weight_decay
                .map_or_else(String::new, |wd| format!("  (weight decay {wd})"))
        ));
    }
    lines
}

impl Report for VideoRunSummary {
    fn lines(&self) -> Vec<String> {
        let mut lines = vec![
            String::new(),
            format!("selfsup {} on {} ({})", self.method, self.data.name, self.device),
            format!(
                "  {} training clips of {} frames {}x{} ({} tokens), {:.3} M parameters, epochs {}, \
                 steps {}, final loss {:.4}",
                self.data.train_clips,
                self.frames,
                self.image_size,
                self.image_size,
                self.tokens,
                self.parameters as f64 / 1e6,
                self.epochs,
                self.steps,
                self.final_loss
            ),
            format!(
                "  training {:.1} s ({:.1} clips/s), whole run {:.1} s",
                self.train_seconds, self.clips_per_s, self.wall_seconds
            ),
        ];
        if let Some((t, v, s)) = self.probe_sizes {
            lines.push(format!(
                "  probe clips: {t} train, {v} validation, {s} test"
            ));
        }
        lines.extend(probe_lines(&self.probes));
        if let Some(n) = &self.probe_note {
            lines.push(format!("  {n}"));
        }
        for w in &self.warnings {
            lines.push(format!("  warning: {w}"));
        }
        lines.push(format!("  export: {}", self.export_dir.display()));
        lines
    }
}
