//! CLIP as the `selfsup` binary sees it: its method name, its config
//! parser, the summary it prints, and what it does with one of its
//! checkpoints (zero-shot classification and retrieval as the run's summary
//! computes them, beside random weights and chance; the export of the dual
//! encoder with its tokenizer).
use crate::config::{image_normalize, ClipRunConfig};
use crate::data::{build_suite, read_data};
use crate::embed::load;
use crate::export::export_clip;
use crate::method::ClipMethodConfig;
use crate::pretrain::{pretrain, random_weights, ClipRunSummary};
use selfsup_core::device::describe;
use selfsup_core::metrics::peak_rss_mb;
use selfsup_core::run::{default_data_root, Common, RunOptions};
use selfsup_core::workflow::{EvalRequest, Modality, Plan, Report};
use selfsup_core::{Error, Result};
use std::path::Path;

/// Zero-shot top-1 of every labelled set (class prompts from the config's
/// templates), as the run's summary reports it.
pub const ZERO_SHOT: &str = "zero-shot";
/// Recall@1/5/10 both ways on every held-out retrieval set, as the run's
/// summary reports it.
pub const RETRIEVAL: &str = "retrieval";

/// CLIP: image-text contrastive learning.
pub struct ClipModality;

/// A parsed, checked CLIP config.
pub struct ClipPlan(pub ClipRunConfig);

impl Modality for ClipModality {
    fn name(&self) -> &'static str {
        "image-text (CLIP)"
    }

    fn methods(&self) -> &'static [&'static str] {
        &ClipMethodConfig::NAMES
    }

    fn parse(&self, text: &str, origin: &Path) -> Result<Box<dyn Plan>> {
        if crate::speech::is_speech_config(text) {
            return Ok(Box::new(crate::speech::SpeechPlan(
                crate::speech::SpeechRunConfig::from_toml(text, origin)?,
            )));
        }
        Ok(Box::new(ClipPlan(ClipRunConfig::from_toml(text, origin)?)))
    }

    fn evaluations(&self) -> &'static [&'static str] {
        &[ZERO_SHOT, RETRIEVAL]
    }

    fn evaluate(&self, request: &EvalRequest<'_>) -> Result<Vec<String>> {
        let protocol = request.protocol;
        if !self.evaluations().contains(&protocol) {
            return Err(Error::Config(format!(
                "evaluation '{protocol}': a CLIP checkpoint offers {}",
                self.evaluations().join(", ")
            )));
        }
        if crate::speech::is_speech_config(request.config_toml) {
            return crate::speech::evaluate_checkpoint(request, protocol == ZERO_SHOT);
        }
        let cfg = ClipRunConfig::from_toml(request.config_toml, request.checkpoint)?;
        let device = request.device.resolve()?;
        let loaded = load(request.checkpoint, device)?;
        let root = request
            .data
            .map_or_else(default_data_root, Path::to_path_buf);
        let data = read_data(&cfg, &root)?;
        // The test sets, as the run's summary reads them once at its end.
        let mut suite = build_suite(
            &data.test,
            &loaded.tok,
            cfg.model.text.max_len,
            &image_normalize(),
        )?;
        if protocol == ZERO_SHOT {
            suite.retrieval.clear();
        } else {
            suite.zero_shot.clear();
        }
        if suite.retrieval.is_empty() && suite.zero_shot.is_empty() {
            return Err(Error::Data(format!(
                "{}: its config's sources hold no {protocol} set ({})",
                request.checkpoint.display(),
                if protocol == ZERO_SHOT {
                    "zero-shot needs a fashion-mnist or emoji source, or [eval] second_rendering"
                } else {
                    "retrieval needs a captions or emoji source with [data] held_out > 0, or \
                     [eval] second_rendering"
                }
            )));
        }
        let trained = suite.evaluate(&loaded.clip.model, device);
        let text = cfg.text_tower(&loaded.tok)?;
        let random = suite.evaluate(&random_weights(&cfg, &text, device)?.model, device);
        let chance: Vec<(String, f64)> = suite
            .zero_shot
            .iter()
            .map(|z| (z.name.clone(), z.chance))
            .collect();
        let mut lines = vec![format!(
            "clip checkpoint {}: {protocol} ({})",
            request.checkpoint.display(),
            describe(device)
        )];
        lines.extend(table(&trained, &random, &chance));
        Ok(lines)
    }

    fn export(&self, checkpoint: &Path, config_toml: &str, out: &Path) -> Result<String> {
        if crate::speech::is_speech_config(config_toml) {
            return crate::speech::export_checkpoint(checkpoint, config_toml, out);
        }
        // The checkpoint carries the config; parsing it here refuses a bad
        // one naming the checkpoint before any weight is read.
        ClipRunConfig::from_toml(config_toml, checkpoint)?;
        let loaded = load(checkpoint, tch::Device::Cpu)?;
        export_clip(&loaded.clip, &loaded.tok, &loaded.meta, out)?;
        Ok(format!(
            "exported the dual encoder (image and text towers, projections, tokenizer) to {}",
            out.display()
        ))
    }
}

impl Plan for ClipPlan {
    fn common(&mut self) -> Common<'_> {
        self.0.run.common(&mut self.0.trainer)
    }

    fn to_toml(&self) -> String {
        self.0.to_toml()
    }

    fn progress_unit(&self) -> Option<(f64, &'static str)> {
        Some((1.0, "pairs/s"))
    }

    fn pretrain(&self, opts: RunOptions<'_>) -> Result<Box<dyn Report>> {
        Ok(Box::new(pretrain(&self.0, opts)?))
    }
}

/// The figures as a table: trained, random weights and (zero-shot) chance.
fn table(
    metrics: &[(String, f64)],
    random: &[(String, f64)],
    chance: &[(String, f64)],
) -> Vec<String> {
    let mut lines = vec![format!(
        "  {:<52} {:>8} {:>8} {:>8}",
        "", "trained", "random", "chance"
    )];
    for ((name, v), (_, r)) in metrics.iter().zip(random) {
        let chance = chance
            .iter()
            .find(|(n, _)| n == name)
            .map_or(String::new(), |(_, c)| format!("{:.2}%", c * 100.0));
        lines.push(format!(
            "  {:<52} {:>7.2}% {:>7.2}% {:>8}",
            name,
            v * 100.0,
            r * 100.0,
            chance
        ));
    }
    lines
}

/// The validation figures: trained and (zero-shot) chance.
fn validation_table(metrics: &[(String, f64)], chance: &[(String, f64)]) -> Vec<String> {
    let mut lines = vec![format!("  {:<52} {:>8} {:>8}", "", "trained", "chance")];
    for (name, v) in metrics {
        let chance = chance
            .iter()
            .find(|(n, _)| n == name)
            .map_or(String::new(), |(_, c)| format!("{:.2}%", c * 100.0));
        lines.push(format!("  {:<52} {:>7.2}% {:>8}", name, v * 100.0, chance));
    }
    lines
}

impl Report for ClipRunSummary {
    fn lines(&self) -> Vec<String> {
        let s = self;
        let mut lines = vec![
            String::new(),
            format!(
                "selfsup clip on {} images with {} captions ({}; {} pairs skipped)",
                s.train_images,
                s.train_pairs,
                s.device,
                s.skipped.total()
            ),
            format!(
                "  image tower {} ({:.2} M), text tower BERT {} layers / hidden {} ({:.2} M), shared space {}, vocabulary {}",
                s.model.vision_arch,
                s.model.vision_params as f64 / 1e6,
                s.model.text_layers,
                s.model.text_hidden,
                s.model.text_params as f64 / 1e6,
                s.model.embed_dim,
                s.vocab_size
            ),
            format!(
                "  epochs {}, steps {}, batch {}, final loss {:.4}, logit scale {:.1}",
                s.epochs, s.steps, s.batch_size, s.final_loss, s.logit_scale
            ),
            format!(
                "  training {:.1} s ({:.0} pairs/s), whole run {:.1} s, peak memory {}",
                s.train_seconds,
                s.train_pairs_per_s,
                s.wall_seconds,
                peak_rss_mb().map_or("n/a".into(), |m| format!("{m:.0} MB"))
            ),
        ];
        lines.push("  test (read once, at the end):".to_string());
        lines.extend(table(&s.metrics, &s.random_weights, &s.chance));
        if !s.validation.is_empty() {
            lines.push(format!(
                "  validation ({} training images set aside, never trained on, and held-out-class \
                 images of the training split; the per-epoch figures):",
                s.validation_images
            ));
            lines.extend(validation_table(&s.validation, &s.validation_chance));
        }
        lines.extend(s.warnings.iter().map(|w| format!("  warning: {w}")));
        lines.push(format!(
            "  curves {}, export {}",
            s.curves.display(),
            s.export_dir.display()
        ));
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use selfsup_core::device::DeviceChoice;
    use selfsup_core::trainer::Silent;

    #[test]
    fn every_method_name_parses_as_a_method_config() {
        for name in ClipModality.methods() {
            let m: ClipMethodConfig = toml::from_str(&format!("name = \"{name}\"")).unwrap();
            assert_eq!(m, ClipMethodConfig::default());
        }
    }

    #[test]
    fn a_checkpoint_is_evaluated_as_its_run_did_and_exported_on_the_cpu() {
        let _rng = crate::TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let cfg = crate::pretrain::tests::tiny(dir.path());
        let mut plan = ClipModality
            .parse(&cfg.to_toml(), Path::new("tiny.toml"))
            .unwrap();
        assert_eq!(*plan.common().batch_size, 8);
        assert_eq!(plan.progress_unit(), Some((1.0, "pairs/s")));
        let mut observer = Silent;
        let mut log = |_: &str| {};
        let report = plan
            .pretrain(RunOptions {
                data: Some(dir.path().to_path_buf()),
                run_dir: dir.path().join("run"),
                resume: false,
                observer: &mut observer,
                stop: Default::default(),
                git_commit: None,
                log: &mut log,
                distributed: None,
            })
            .unwrap();
        let printed = report.lines();
        assert_eq!(printed[0], "");
        assert!(
            printed[1].starts_with("selfsup clip on ") && printed[1].ends_with("0 pairs skipped)"),
            "{printed:?}"
        );
        let row = |name: &str| -> String {
            printed
                .iter()
                .find(|l| l.trim_start().starts_with(name))
                .cloned()
                .unwrap_or_else(|| panic!("{name}: {printed:?}"))
        };
        // Test figures and validation figures in tables of their own.
        let at = |prefix: &str| {
            printed
                .iter()
                .position(|l| l.trim_start().starts_with(prefix))
                .unwrap_or_else(|| panic!("{prefix}: {printed:?}"))
        };
        let (test, val) = (at("test (read once"), at("validation ("));
        assert!(
            printed[val].contains("6 training images set aside"),
            "{printed:?}"
        );
        assert!(
            test < at("emoji-tiny held-out i->t R@1") && at("emoji-tiny held-out t->i R@10") < val
        );
        assert!(val < at("emoji-tiny validation categories zero-shot top-1"));
        assert!(row("emoji-tiny validation categories zero-shot top-1").ends_with("16.67%"));
        assert!(val < at("emoji-tiny validation t->i R@10"));
        let checkpoint = dir.path().join("run/checkpoint.safetensors");
        let config = std::fs::read_to_string(dir.path().join("run/config.toml")).unwrap();
        let request = |protocol| EvalRequest {
            protocol,
            checkpoint: &checkpoint,
            config_toml: &config,
            data: Some(dir.path()),
            device: DeviceChoice::Cpu,
        };
        // Trained, random weights and chance as the run's own summary.
        let zero = ClipModality.evaluate(&request(ZERO_SHOT)).unwrap();
        assert_eq!(zero.len(), 3, "{zero:?}");
        assert!(zero[0].contains("zero-shot"), "{zero:?}");
        assert!(zero[1].contains("trained") && zero[1].contains("chance"));
        assert_eq!(
            zero[2],
            row("emoji-tiny held-out categories zero-shot top-1")
        );
        let retrieval = ClipModality.evaluate(&request(RETRIEVAL)).unwrap();
        assert_eq!(retrieval.len(), 2 + 6, "{retrieval:?}");
        for l in &retrieval[2..] {
            let name = l.trim_start().split("  ").next().unwrap().trim_end();
            assert_eq!(l, &row(name));
        }
        let e = ClipModality.evaluate(&request("knn")).unwrap_err();
        assert!(
            e.to_string().contains("'knn'") && e.to_string().contains("zero-shot, retrieval"),
            "{e}"
        );
        let out = dir.path().join("again");
        let line = ClipModality.export(&checkpoint, &config, &out).unwrap();
        assert!(line.contains("again"), "{line}");
        let read = |d: &Path| {
            selfsup_core::tensor_io::load(&d.join(crate::export::WEIGHTS_FILE))
                .unwrap()
                .tensors
        };
        let (a, b) = (read(&dir.path().join("run/export")), read(&out));
        assert_eq!(a.len(), b.len());
        for (name, t) in &a {
            assert!(t.equal(&b[name]), "{name}");
        }
        assert!(out.join("tokenizer.json").is_file());
    }
}
