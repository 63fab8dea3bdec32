//! Checkpoints: model variables, optimiser state, position and resolved config
//! in one safetensors file, written atomically.
//!
//! Randomness is a pure function of `(seed, step)` everywhere in selfsup (data
//! order, augmentations, libtorch's generator is re-seeded every step), so the
//! seed and the step are the whole RNG state: a resumed run replays exactly.
use crate::optim::Optimizer;
use crate::{tensor_io, Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use tch::{nn, Tensor};

const META_KEY: &str = "selfsup.checkpoint";
const MODEL: &str = "model.";
const OPTIM: &str = "optim.";

/// Everything but the tensors.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CheckpointMeta {
    /// Optimisation steps completed.
    pub step: u64,
    /// Steps per epoch of the run that wrote it.
    pub steps_per_epoch: u64,
    /// The run's seed.
    pub seed: u64,
    /// Method name (`simclr`).
    pub method: String,
    /// The resolved configuration, as TOML.
    pub config: String,
    /// Git commit of the code that wrote it, when known.
    pub git_commit: Option<String>,
    /// Mean loss of the last steps before it was written.
    pub loss: f64,
    /// Samples per optimisation step over all ranks (0: unknown, written
    /// before it was recorded). Lets a run resume on another world size.
    #[serde(default)]
    pub samples_per_step: u64,
}

/// Writes a checkpoint of `vs` and `optimizer` to `path` atomically.
pub fn save(
    path: &Path,
    vs: &nn::VarStore,
    optimizer: &dyn Optimizer,
    meta: &CheckpointMeta,
) -> Result<()> {
    let mut tensors: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .map(|(n, t)| (format!("{MODEL}{n}"), t))
        .collect();
    tensors.extend(
        optimizer
            .state()
            .into_iter()
            .map(|(n, t)| (format!("{OPTIM}{n}"), t)),
    );
    let meta_json = serde_json::to_string(meta).map_err(|e| Error::Config(e.to_string()))?;
    tensor_io::save(
        path,
        &tensors,
        Some(HashMap::from([(META_KEY.to_string(), meta_json)])),
    )
}

/// What to do about a checkpoint that cannot be used, appended to its error.
pub const FIX: &str = "to start the run again use `selfsup pretrain --overwrite` \
     (or another --run-dir); otherwise point at a good checkpoint";

/// Adds [`FIX`] to a checkpoint error (other errors pass unchanged).
fn with_fix(e: Error) -> Error {
    match e {
        Error::Checkpoint { path, reason } => Error::Checkpoint {
            path,
            reason: format!("{reason}; {FIX}"),
        },
        other => other,
    }
}

/// Reads a checkpoint file: its tensors and its metadata.
fn load_checked(path: &Path) -> Result<(tensor_io::Loaded, CheckpointMeta)> {
    let loaded = tensor_io::load(path).map_err(with_fix)?;
    let meta = meta_of(path, &loaded.metadata).map_err(with_fix)?;
    Ok((loaded, meta))
}

/// Reads only the metadata of a checkpoint (its header, not its tensors).
pub fn read_meta(path: &Path) -> Result<CheckpointMeta> {
    let metadata = tensor_io::read_metadata(path).map_err(with_fix)?;
    meta_of(path, &metadata).map_err(with_fix)
}

fn meta_of(path: &Path, metadata: &HashMap<String, String>) -> Result<CheckpointMeta> {
    let bad = |reason: String| Error::Checkpoint {
        path: path.to_path_buf(),
        reason,
    };
    let raw = metadata
        .get(META_KEY)
        .ok_or_else(|| bad("not a selfsup checkpoint (no selfsup metadata)".into()))?;
    serde_json::from_str(raw).map_err(|e| bad(format!("unreadable metadata: {e}")))
}

/// Restores `vs` and `optimizer` from `path`. A checkpoint of another method or
/// another model is refused, naming the variables that do not fit.
pub fn restore(
    path: &Path,
    vs: &nn::VarStore,
    optimizer: &mut dyn Optimizer,
    method: &str,
) -> Result<CheckpointMeta> {
    let (loaded, meta) = load_checked(path)?;
    if meta.method != method {
        return Err(with_fix(Error::Checkpoint {
            path: path.to_path_buf(),
            reason: format!(
                "written by method '{}', this run is '{method}'",
                meta.method
            ),
        }));
    }
    let mut model = BTreeMap::new();
    let mut optim = BTreeMap::new();
    for (name, t) in loaded.tensors {
        if let Some(n) = name.strip_prefix(MODEL) {
            model.insert(n.to_string(), t);
        } else if let Some(n) = name.strip_prefix(OPTIM) {
            optim.insert(n.to_string(), t);
        }
    }
    copy_into(vs, &model).map_err(|reason| {
        with_fix(Error::Checkpoint {
            path: path.to_path_buf(),
            reason,
        })
    })?;
    optimizer.load_state(&optim).map_err(|e| {
        with_fix(Error::Checkpoint {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
    })?;
    Ok(meta)
}

/// Restores only the model variables (for evaluation and export).
pub fn restore_model(path: &Path, vs: &nn::VarStore, method: &str) -> Result<CheckpointMeta> {
    let (loaded, meta) = load_checked(path)?;
    if meta.method != method {
        return Err(with_fix(Error::Checkpoint {
            path: path.to_path_buf(),
            reason: format!("written by method '{}', expected '{method}'", meta.method),
        }));
    }
    let model: BTreeMap<String, Tensor> = loaded
        .tensors
        .into_iter()
        .filter_map(|(n, t)| n.strip_prefix(MODEL).map(|n| (n.to_string(), t)))
        .collect();
    copy_into(vs, &model).map_err(|reason| {
        with_fix(Error::Checkpoint {
            path: path.to_path_buf(),
            reason,
        })
    })?;
    Ok(meta)
}

/// Copies `tensors` into the variables of `vs`; every name and shape must match.
pub fn copy_into(
    vs: &nn::VarStore,
    tensors: &BTreeMap<String, Tensor>,
) -> std::result::Result<(), String> {
    let vars = vs.variables();
    let missing: Vec<&String> = vars.keys().filter(|k| !tensors.contains_key(*k)).collect();
    let unexpected: Vec<&String> = tensors.keys().filter(|k| !vars.contains_key(*k)).collect();
    let mismatched: Vec<String> = vars
        .iter()
        .filter_map(|(k, v)| {
            let t = tensors.get(k)?;
            (t.size() != v.size())
                .then(|| format!("{k}: model {:?}, file {:?}", v.size(), t.size()))
        })
        .collect();
    if !missing.is_empty() || !unexpected.is_empty() || !mismatched.is_empty() {
        let show = |v: Vec<String>| {
            let n = v.len();
            let mut s: Vec<String> = v.into_iter().take(8).collect();
            if n > 8 {
                s.push(format!("... {} more", n - 8));
            }
            s.join(", ")
        };
        let mut parts = Vec::new();
        if !missing.is_empty() {
            parts.push(format!("missing {}", show(sorted(missing))));
        }
        if !unexpected.is_empty() {
            parts.push(format!("unexpected {}", show(sorted(unexpected))));
        }
        if !mismatched.is_empty() {
            parts.push(format!("shape mismatch {}", show(mismatched)));
        }
        return Err(format!("does not fit this model: {}", parts.join("; ")));
    }
    tch::no_grad(|| {
        for (k, v) in &vars {
            let Some(t) = tensors.get(k) else {
                return Err(format!("missing {k}"));
            };
            let mut v = v.shallow_clone();
            t.f_to_kind(v.kind())
                .and_then(|t| v.f_copy_(&t))
                .map_err(|e| format!("{k}: {e}"))?;
        }
        Ok(())
    })
}

fn sorted(v: Vec<&String>) -> Vec<String> {
    let mut v: Vec<String> = v.into_iter().cloned().collect();
    v.sort();
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::{OptimConfig, Params};
    use tch::{Kind, Tensor};

    fn model(vs: &nn::VarStore, width: i64) -> nn::Linear {
        nn::linear(vs.root() / "fc", 3, width, Default::default())
    }

    fn meta() -> CheckpointMeta {
        CheckpointMeta {
            step: 7,
            steps_per_epoch: 5,
            seed: 1,
            method: "test".into(),
            config: "a = 1".into(),
            git_commit: None,
            loss: 0.5,
            samples_per_step: 8,
        }
    }

    #[test]
    fn round_trip_restores_weights_and_optimiser() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ckpt.safetensors");
        tch::manual_seed(0);
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let lin = model(&vs, 2);
        let mut params = Params::of(&vs);
        let mut opt = OptimConfig::default().build(&params);
        params.zero_grad();
        Tensor::ones([4, 3], (Kind::Float, tch::Device::Cpu))
            .apply(&lin)
            .sum(Kind::Float)
            .backward();
        opt.step(&params, 0.1);
        save(&path, &vs, opt.as_ref(), &meta()).unwrap();

        tch::manual_seed(1);
        let vs2 = nn::VarStore::new(tch::Device::Cpu);
        let _lin2 = model(&vs2, 2);
        let mut opt2 = OptimConfig::default().build(&Params::of(&vs2));
        let m = restore(&path, &vs2, opt2.as_mut(), "test").unwrap();
        assert_eq!(m, meta());
        for (k, v) in vs.variables() {
            assert!(v.equal(&vs2.variables()[&k]), "{k}");
        }
        let s1: BTreeMap<_, _> = opt.state().into_iter().collect();
        let s2: BTreeMap<_, _> = opt2.state().into_iter().collect();
        assert_eq!(s1.len(), 2);
        for (k, v) in &s1 {
            assert!(v.equal(&s2[k]), "{k}");
        }
    }

    #[test]
    fn checkpoint_of_another_model_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ckpt.safetensors");
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let _ = model(&vs, 2);
        let opt = OptimConfig::default().build(&Params::of(&vs));
        save(&path, &vs, opt.as_ref(), &meta()).unwrap();

        let other = nn::VarStore::new(tch::Device::Cpu);
        let _ = model(&other, 5);
        let mut opt2 = OptimConfig::default().build(&Params::of(&other));
        let err = restore(&path, &other, opt2.as_mut(), "test")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("shape mismatch") && err.contains("fc.weight"),
            "{err}"
        );
        let err = restore(&path, &other, opt2.as_mut(), "byol")
            .unwrap_err()
            .to_string();
        assert!(err.contains("method 'test'"), "{err}");
    }

    /// The same model, optimiser and position give the same file, byte for byte.
    #[test]
    fn a_checkpoint_is_the_same_bytes_twice() {
        let dir = tempfile::tempdir().unwrap();
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let _ = model(&vs, 2);
        let _ = nn::linear(vs.root() / "gc", 2, 3, Default::default());
        let opt = OptimConfig::default().build(&Params::of(&vs));
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        save(&a, &vs, opt.as_ref(), &meta()).unwrap();
        save(&b, &vs, opt.as_ref(), &meta()).unwrap();
        assert_eq!(std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
    }

    /// A checkpoint that cannot be read names the file and both ways out.
    #[test]
    fn an_unreadable_checkpoint_names_the_file_and_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ckpt.safetensors");
        std::fs::write(&path, b"\x10\0\0\0\0\0\0\0not json at all!").unwrap();
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let _ = model(&vs, 2);
        let mut opt = OptimConfig::default().build(&Params::of(&vs));
        for err in [
            read_meta(&path).unwrap_err().to_string(),
            restore(&path, &vs, opt.as_mut(), "test")
                .unwrap_err()
                .to_string(),
            restore_model(&path, &vs, "test").unwrap_err().to_string(),
        ] {
            assert!(
                err.contains("ckpt.safetensors")
                    && err.contains("--overwrite")
                    && err.contains("good checkpoint"),
                "{err}"
            );
        }
        // Wrong model: also the fix.
        save(&path, &vs, opt.as_ref(), &meta()).unwrap();
        let other = nn::VarStore::new(tch::Device::Cpu);
        let _ = model(&other, 5);
        let err = restore_model(&path, &other, "test")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("shape mismatch") && err.contains("--overwrite"),
            "{err}"
        );
    }

    /// Optimiser state of the wrong shape is refused before any step uses it.
    #[test]
    fn optimiser_state_of_the_wrong_shape_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ckpt.safetensors");
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let _ = model(&vs, 2);
        let mut tensors: Vec<(String, Tensor)> = vs
            .variables()
            .into_iter()
            .map(|(n, t)| (format!("{MODEL}{n}"), t))
            .collect();
        tensors.push((
            format!("{OPTIM}momentum.fc.weight"),
            Tensor::zeros([7], (Kind::Float, tch::Device::Cpu)),
        ));
        let meta_json = serde_json::to_string(&meta()).unwrap();
        tensor_io::save(
            &path,
            &tensors,
            Some(HashMap::from([(META_KEY.to_string(), meta_json)])),
        )
        .unwrap();
        let cfg = OptimConfig::default();
        let mut opt = cfg.build(&Params::of(&vs));
        let err = restore(&path, &vs, opt.as_mut(), "test")
            .unwrap_err()
            .to_string();
        assert!(err.contains("fc.weight") && err.contains("[7]"), "{err}");

        // AdamW's step count of the wrong shape: an error, not a panic.
        tensors.pop();
        tensors.push((
            format!("{OPTIM}adamw.steps"),
            Tensor::zeros([3], (Kind::Int64, tch::Device::Cpu)),
        ));
        let meta_json = serde_json::to_string(&meta()).unwrap();
        tensor_io::save(
            &path,
            &tensors,
            Some(HashMap::from([(META_KEY.to_string(), meta_json)])),
        )
        .unwrap();
        let adamw = OptimConfig {
            kind: crate::optim::OptimKind::AdamW,
            ..OptimConfig::default()
        };
        let mut opt = adamw.build(&Params::of(&vs));
        let err = restore(&path, &vs, opt.as_mut(), "test")
            .unwrap_err()
            .to_string();
        assert!(err.contains("adamw.steps") && err.contains("[3]"), "{err}");
    }
}
