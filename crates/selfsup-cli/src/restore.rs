//! A trained method rebuilt from a checkpoint alone: the checkpoint carries
//! its resolved config, so `eval` and `export` need no config file.
use anyhow::{Context, Result};
use selfsup_core::checkpoint;
use selfsup_core::device::DeviceChoice;
use selfsup_vision::pretrain::{build_method, export, EvalData, VisionMethod, VisionRunConfig};
use std::path::{Path, PathBuf};

pub struct Loaded {
    cfg: VisionRunConfig,
    method: Box<dyn VisionMethod>,
}

/// Refuses, before parsing it as a vision config, the checkpoint of another
/// modality, saying which one it is and what works for it. `command` is
/// `eval` or `export`.
pub fn check_vision(path: &Path, meta: &checkpoint::CheckpointMeta, command: &str) -> Result<()> {
    let method = meta
        .config
        .parse::<toml::Value>()
        .ok()
        .and_then(|v| crate::method_name(&v).map(str::to_string))
        .unwrap_or_else(|| meta.method.clone());
    let modality = crate::modality_of(&method);
    if modality.is_none_or(|m| m == "vision") {
        return Ok(());
    }
    let modality = modality.unwrap_or("another");
    let run_dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let what = match command {
        "export" => format!(
            "its pretrain run already exported it to {} (a fresh export: run `selfsup pretrain` \
             with --resume and its config)",
            run_dir.join("export").display()
        ),
        _ => format!(
            "its pretrain run already evaluated it: see {} (and the summary it printed)",
            run_dir.join("summary.json").display()
        ),
    };
    let embed = if method == "clip" {
        "; `selfsup embed --checkpoint` embeds images or texts with it"
    } else {
        ""
    };
    anyhow::bail!(
        "{} is a {modality} checkpoint (method '{method}'): `selfsup {command}` works on vision \
         checkpoints only; {what}{embed}",
        path.display()
    )
}

/// The device `eval` / `export` run on: `--device` when given, otherwise
/// `auto` (a GPU when one is visible, else the CPU). Never the checkpoint's
/// `[run] device`: a checkpoint trained with `device = "cuda"` must load on a
/// machine without a GPU.
pub fn device_choice(flag: Option<&str>) -> Result<DeviceChoice> {
    Ok(match flag {
        Some(d) => d.parse::<DeviceChoice>()?,
        None => DeviceChoice::Auto,
    })
}

/// The checkpoint at `path` rebuilt on `device` (`--device`; see
/// [`device_choice`]) for `command` (`eval` or `export`).
pub fn load(path: &Path, device: Option<&str>, command: &str) -> Result<Loaded> {
    let meta = checkpoint::read_meta(path)?;
    check_vision(path, &meta, command)?;
    let cfg = VisionRunConfig::from_toml(&meta.config, path)
        .with_context(|| format!("the config stored in {}", path.display()))?;
    let device = device_choice(device)?.resolve()?;
    let method = build_method(&cfg, device, cfg.data.channels())?;
    checkpoint::restore_model(path, method.var_store(), method.name())?;
    Ok(Loaded { cfg, method })
}

impl Loaded {
    fn data(&self, dir: Option<PathBuf>) -> Result<EvalData> {
        let dir = dir
            .or_else(|| self.cfg.data.path.clone())
            .context("give the dataset folder with --data")?;
        Ok(EvalData::load(&self.cfg, &dir)?)
    }

    pub fn knn(&self, dir: Option<PathBuf>) -> Result<f64> {
        let data = self.data(dir)?;
        Ok(data.knn(&data.features(self.method.as_ref()), &self.cfg.eval.knn)?)
    }

    pub fn linear(&self, dir: Option<PathBuf>) -> Result<f64> {
        let data = self.data(dir)?;
        Ok(data.linear(&data.features(self.method.as_ref()), &self.cfg.eval.linear)?)
    }

    pub fn export(&self, out: &Path) -> Result<()> {
        export(
            &self.cfg,
            self.method.as_ref(),
            self.cfg.data.channels(),
            out,
            serde_json::json!({}),
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without `--device`, eval / export resolve `auto` whatever the
    /// checkpoint's config says, so a GPU run's checkpoint loads on a CPU.
    #[test]
    fn eval_and_export_default_to_auto_not_the_checkpoint_device() {
        assert_eq!(device_choice(None).unwrap(), DeviceChoice::Auto);
        assert_eq!(device_choice(Some("cpu")).unwrap(), DeviceChoice::Cpu);
        assert_eq!(
            device_choice(Some("cuda:1")).unwrap(),
            DeviceChoice::CudaIndex(1)
        );
        assert!(device_choice(Some("gpu")).is_err());
        // auto resolves on any machine (the CPU here).
        device_choice(None).unwrap().resolve().unwrap();
    }
}
