//! Vision's entry in the `selfsup` binary's registry: its method names, its
//! config parser ([`VisionPlan`]), and `eval` / `export` on one of its
//! checkpoints (the checkpoint carries its resolved config, so neither needs
//! a config file).
use crate::config::VisionRunConfig;
use crate::evaluate::EvalData;
use crate::pretrain::pretrain;
use crate::vision_method::{build_method, export, VisionMethod};
use selfsup_core::checkpoint;
use selfsup_core::run::{Common, RunOptions};
use selfsup_core::workflow::{EvalRequest, Modality, Plan, Report};
use selfsup_core::{Error, Result};
use std::path::{Path, PathBuf};

/// The frozen-encoder evaluations `selfsup eval` offers on a vision
/// checkpoint.
pub const EVALUATIONS: [&str; 2] = ["knn", "linear"];

/// Vision in the registry: the fifteen image methods.
pub struct VisionModality;

/// A parsed, checked vision run config, ready to pre-train.
pub struct VisionPlan {
    cfg: VisionRunConfig,
}

impl VisionPlan {
    /// A plan of `cfg` (checked again when it trains).
    pub fn new(cfg: VisionRunConfig) -> Self {
        Self { cfg }
    }

    /// The config, with any command-line overrides applied.
    pub fn config(&self) -> &VisionRunConfig {
        &self.cfg
    }
}

impl Plan for VisionPlan {
    fn common(&mut self) -> Common<'_> {
        self.cfg.run.common(&mut self.cfg.trainer)
    }

    fn to_toml(&self) -> String {
        self.cfg.to_toml()
    }

    /// Every rank trains its shard of each global batch.
    fn data_parallel(&self) -> bool {
        true
    }

    fn pretrain(&self, opts: RunOptions<'_>) -> Result<Box<dyn Report>> {
        Ok(Box::new(pretrain(&self.cfg, opts)?))
    }
}

impl Modality for VisionModality {
    fn name(&self) -> &'static str {
        "vision"
    }

    fn methods(&self) -> &'static [&'static str] {
        &crate::methods::NAMES
    }

    fn parse(&self, text: &str, origin: &Path) -> Result<Box<dyn Plan>> {
        Ok(Box::new(VisionPlan::new(VisionRunConfig::from_toml(
            text, origin,
        )?)))
    }

    fn evaluations(&self) -> &'static [&'static str] {
        &EVALUATIONS
    }

    /// kNN (`knn`) or linear-probe (`linear`) top-1 of the checkpoint's
    /// frozen encoder on the test split of its dataset (`--data` overrides
    /// the config's `[data] path`), with the config's `[eval]` settings.
    fn evaluate(&self, request: &EvalRequest<'_>) -> Result<Vec<String>> {
        if !EVALUATIONS.contains(&request.protocol) {
            return Err(Error::Config(format!(
                "no evaluation '{}' for vision checkpoints: give one of {}",
                request.protocol,
                EVALUATIONS.join(", ")
            )));
        }
        let cfg = stored_config(request.checkpoint, request.config_toml)?;
        let dir = dataset_folder(&cfg, request.data)?;
        let device = request.device.resolve()?;
        let method = restore(request.checkpoint, &cfg, device)?;
        let data = EvalData::load(&cfg, &dir)?;
        let features = data.features(method.as_ref());
        let (name, top1) = match request.protocol {
            "knn" => ("kNN top-1", data.knn(&features, &cfg.eval.knn)?),
            _ => (
                "linear probe top-1",
                data.linear(&features, &cfg.eval.linear)?,
            ),
        };
        Ok(vec![format!(
            "{name} on the test split: {:.2}%",
            top1 * 100.0
        )])
    }

    /// The checkpoint's encoder, rebuilt on the CPU, in the layout of a
    /// run's `export/` folder.
    fn export(&self, checkpoint: &Path, config_toml: &str, out: &Path) -> Result<String> {
        let cfg = stored_config(checkpoint, config_toml)?;
        let method = restore(checkpoint, &cfg, tch::Device::Cpu)?;
        export(
            &cfg,
            method.as_ref(),
            cfg.data.channels(),
            out,
            serde_json::json!({}),
        )?;
        Ok(format!("exported the encoder to {}", out.display()))
    }
}

/// The config a checkpoint carries, parsed and checked; errors name the
/// checkpoint.
fn stored_config(checkpoint: &Path, config_toml: &str) -> Result<VisionRunConfig> {
    let origin = PathBuf::from(format!("{} (its stored config)", checkpoint.display()));
    VisionRunConfig::from_toml(config_toml, &origin)
}

/// The method of `cfg` on `device` with the checkpoint's weights.
fn restore(
    checkpoint: &Path,
    cfg: &VisionRunConfig,
    device: tch::Device,
) -> Result<Box<dyn VisionMethod>> {
    let method = build_method(cfg, device, cfg.data.channels())?;
    checkpoint::restore_model(checkpoint, method.var_store(), method.name())?;
    Ok(method)
}

/// The dataset folder to evaluate on: `--data`, else the config's
/// `[data] path`; a missing one names `--data`.
fn dataset_folder(cfg: &VisionRunConfig, flag: Option<&Path>) -> Result<PathBuf> {
    let (dir, whence) =
        match (flag, &cfg.data.path) {
            (Some(d), _) => (d.to_path_buf(), "--data"),
            (None, Some(p)) => (p.clone(), "the checkpoint's [data] path"),
            (None, None) => return Err(Error::Config(
                "the checkpoint's config has no [data] path: give the dataset folder with --data \
                 DIR"
                .into(),
            )),
        };
    if !dir.is_dir() {
        return Err(Error::Config(format!(
            "{}: no such dataset folder ({whence}); give the dataset folder with --data DIR",
            dir.display()
        )));
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use selfsup_core::device::DeviceChoice;

    #[test]
    fn methods_and_evaluations_are_listed() {
        let m = VisionModality;
        assert_eq!(m.name(), "vision");
        assert_eq!(m.methods().len(), 15);
        assert!(m.methods().contains(&"barlow_twins"));
        assert_eq!(m.evaluations(), ["knn", "linear"]);
    }

    #[test]
    fn a_config_parses_into_a_data_parallel_plan_and_flags_override_it() {
        let text = "[method]\nname = \"byol\"\n[run]\nbatch_size = 64\n";
        let mut plan = VisionModality.parse(text, Path::new("b.toml")).unwrap();
        assert!(plan.data_parallel());
        selfsup_core::workflow::Overrides {
            epochs: Some(2),
            batch_size: Some(16),
            ..Default::default()
        }
        .apply(plan.common())
        .unwrap();
        let back = VisionRunConfig::from_toml(&plan.to_toml(), Path::new("back.toml")).unwrap();
        assert_eq!(
            (back.method.name(), back.run.batch_size, back.trainer.epochs),
            ("byol", 16, 2)
        );
        let err = VisionModality
            .parse(
                "[method]\nname = \"byol\"\n[run]\nbatch = 3\n",
                Path::new("c.toml"),
            )
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("c.toml") && err.contains("batch"), "{err}");
    }

    #[test]
    fn a_missing_dataset_folder_names_the_flag() {
        let cfg = VisionRunConfig::default();
        let err = dataset_folder(&cfg, None).unwrap_err().to_string();
        assert!(err.contains("--data"), "{err}");
        let err = dataset_folder(&cfg, Some(Path::new("/no/such/fm")))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("/no/such/fm") && err.contains("--data"),
            "{err}"
        );
        let t = tempfile::tempdir().unwrap();
        assert_eq!(dataset_folder(&cfg, Some(t.path())).unwrap(), t.path());
    }

    #[test]
    fn stored_config_errors_name_the_checkpoint() {
        let err = stored_config(
            Path::new("run/checkpoint.safetensors"),
            "[run]\nthreads = 0\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("run/checkpoint.safetensors") && err.contains("threads = 0"),
            "{err}"
        );
    }

    /// An unknown protocol is refused before the checkpoint is read, listing
    /// the offered ones.
    #[test]
    fn an_unknown_protocol_is_refused_listing_the_offered_ones() {
        let request = EvalRequest {
            protocol: "probe",
            checkpoint: Path::new("missing.safetensors"),
            config_toml: "",
            data: None,
            device: DeviceChoice::Cpu,
        };
        let err = VisionModality.evaluate(&request).unwrap_err().to_string();
        assert!(
            err.contains("'probe'") && err.contains("knn, linear"),
            "{err}"
        );
    }
}
