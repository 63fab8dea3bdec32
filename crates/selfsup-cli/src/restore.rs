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

pub fn load(path: &Path, device: Option<&str>) -> Result<Loaded> {
    let meta = checkpoint::read_meta(path)?;
    let cfg = VisionRunConfig::from_toml(&meta.config, path)
        .with_context(|| format!("the config stored in {}", path.display()))?;
    let device = match device {
        Some(d) => d.parse::<DeviceChoice>()?,
        None => cfg.run.device,
    }
    .resolve()?;
    let method = build_method(&cfg, device, cfg.data.format.channels())?;
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
            self.cfg.data.format.channels(),
            out,
            serde_json::json!({}),
        )?;
        Ok(())
    }
}
