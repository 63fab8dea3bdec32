//! Optimisers written on tensors, so their whole state can be checkpointed and
//! restored exactly: SGD with momentum, AdamW, LARS.
//!
//! Parameters are the method's variables that require grad, in name order.
//! Weight decay (and LARS's trust ratio) skip one-dimensional parameters
//! (biases, norm scales) when `exclude_bias_and_norm` is set, as in SimCLR,
//! BYOL and timm: a rule on shape, not on names.
mod adamw;
mod lars;
mod sgd;

pub use adamw::AdamW;
pub use lars::Lars;
pub use sgd::Sgd;

use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use tch::{nn, Kind, Tensor};

/// Which optimiser.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimKind {
    Sgd,
    AdamW,
    Lars,
}

/// Optimiser settings (one flat table in TOML).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimConfig {
    pub kind: OptimKind,
    /// Peak learning rate for a batch of 256; scaled linearly with the global batch.
    pub lr: f64,
    pub weight_decay: f64,
    /// SGD / LARS momentum.
    pub momentum: f64,
    /// AdamW's betas.
    pub betas: (f64, f64),
    /// AdamW's epsilon.
    pub eps: f64,
    /// LARS trust coefficient (eta).
    pub trust_coefficient: f64,
    /// No weight decay (and no LARS adaptation) on 1-D parameters.
    pub exclude_bias_and_norm: bool,
}

impl Default for OptimConfig {
    fn default() -> Self {
        Self {
            kind: OptimKind::Sgd,
            lr: 0.06,
            weight_decay: 5e-4,
            momentum: 0.9,
            betas: (0.9, 0.999),
            eps: 1e-8,
            trust_coefficient: 0.001,
            exclude_bias_and_norm: true,
        }
    }
}

impl OptimConfig {
    /// The learning rate for a global batch of `batch` (linear scaling rule).
    pub fn scaled_lr(&self, batch: usize) -> f64 {
        self.lr * batch as f64 / 256.0
    }

    /// Builds the optimiser for `params`.
    pub fn build(&self, params: &Params) -> Box<dyn Optimizer> {
        match self.kind {
            OptimKind::Sgd => Box::new(Sgd::new(self, params)),
            OptimKind::AdamW => Box::new(AdamW::new(self, params)),
            OptimKind::Lars => Box::new(Lars::new(self, params)),
        }
    }
}

/// The trainable parameters of a method, sorted by name.
#[derive(Debug)]
pub struct Params {
    pub names: Vec<String>,
    pub tensors: Vec<Tensor>,
}

impl Params {
    /// Every variable of `vs` that requires grad.
    pub fn of(vs: &nn::VarStore) -> Self {
        let sorted: BTreeMap<String, Tensor> = vs
            .variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .collect();
        let (names, tensors) = sorted.into_iter().unzip();
        Self { names, tensors }
    }

    /// Whether parameter `i` is exempt from weight decay and trust ratios.
    pub fn is_bias_or_norm(&self, i: usize) -> bool {
        self.tensors[i].dim() <= 1
    }

    /// Sets every gradient to zero.
    pub fn zero_grad(&mut self) {
        for t in &mut self.tensors {
            t.zero_grad();
        }
    }

    /// The gradients, with zeros for parameters that got none.
    pub fn grads(&self) -> Vec<Tensor> {
        self.tensors
            .iter()
            .map(|t| {
                let g = t.grad();
                if g.defined() {
                    g
                } else {
                    t.zeros_like()
                }
            })
            .collect()
    }

    /// Global l2 norm of the gradients; if `max_norm` is given and exceeded,
    /// scales every gradient down to it. Returns the norm before clipping.
    pub fn clip_grad_norm(&self, max_norm: Option<f64>) -> f64 {
        tch::no_grad(|| {
            let grads: Vec<Tensor> = self
                .tensors
                .iter()
                .map(|t| t.grad())
                .filter(|g| g.defined())
                .collect();
            if grads.is_empty() {
                return 0.0;
            }
            let sq: Vec<Tensor> = grads
                .iter()
                .map(|g| g.to_kind(Kind::Float).square().sum(Kind::Float))
                .collect();
            let norm = Tensor::stack(&sq, 0)
                .sum(Kind::Float)
                .sqrt()
                .double_value(&[]);
            if let Some(max) = max_norm {
                if norm > max && norm.is_finite() {
                    let scale = max / (norm + 1e-6);
                    for mut g in grads {
                        let _ = g.f_mul_scalar_(scale);
                    }
                }
            }
            norm
        })
    }
}

/// An optimiser over [`Params`] whose state is plain named tensors.
pub trait Optimizer {
    /// One update with learning rate `lr` from the current gradients.
    fn step(&mut self, params: &Params, lr: f64);
    /// The state to checkpoint, as `(name, tensor)` pairs.
    fn state(&self) -> Vec<(String, Tensor)>;
    /// Restores a state written by [`Optimizer::state`].
    fn load_state(&mut self, state: &BTreeMap<String, Tensor>) -> Result<()>;
}

/// A per-parameter buffer (momentum, moments), created lazily, named after its parameter.
#[derive(Debug)]
pub(crate) struct Buffers {
    prefix: &'static str,
    names: Vec<String>,
    /// The parameters' shapes and kinds: a loaded buffer must have its
    /// parameter's shape and is converted to its kind.
    shapes: Vec<(Vec<i64>, tch::Kind)>,
    bufs: Vec<Option<Tensor>>,
}

impl Buffers {
    pub(crate) fn new(prefix: &'static str, params: &Params) -> Self {
        Self {
            prefix,
            names: params.names.clone(),
            shapes: params
                .tensors
                .iter()
                .map(|t| (t.size(), t.kind()))
                .collect(),
            bufs: params.names.iter().map(|_| None).collect(),
        }
    }

    /// The buffer of parameter `i`, created as zeros like `like` on first use.
    pub(crate) fn get(&mut self, i: usize, like: &Tensor) -> &mut Tensor {
        self.bufs[i].get_or_insert_with(|| like.zeros_like())
    }

    pub(crate) fn state(&self) -> Vec<(String, Tensor)> {
        self.names
            .iter()
            .zip(&self.bufs)
            .filter_map(|(n, b)| {
                b.as_ref()
                    .map(|b| (format!("{}.{n}", self.prefix), b.shallow_clone()))
            })
            .collect()
    }

    pub(crate) fn load(
        &mut self,
        state: &BTreeMap<String, Tensor>,
        device: tch::Device,
    ) -> Result<()> {
        for ((name, (shape, kind)), buf) in self
            .names
            .iter()
            .zip(&self.shapes)
            .zip(self.bufs.iter_mut())
        {
            let key = format!("{}.{name}", self.prefix);
            *buf = match state.get(&key) {
                Some(t) if t.size() != *shape => {
                    return Err(Error::Config(format!(
                        "optimiser state {key}: shape {:?}, the parameter has {shape:?}",
                        t.size()
                    )))
                }
                Some(t) => Some(
                    t.f_to_kind(*kind)
                        .and_then(|t| t.f_to_device(device))
                        .map_err(|e| Error::Config(format!("optimiser state {key}: {e}")))?,
                ),
                None => None,
            };
        }
        let known: std::collections::BTreeSet<String> = self
            .names
            .iter()
            .map(|n| format!("{}.{n}", self.prefix))
            .collect();
        let stray: Vec<&String> = state
            .keys()
            .filter(|k| k.starts_with(&format!("{}.", self.prefix)) && !known.contains(*k))
            .take(5)
            .collect();
        if !stray.is_empty() {
            return Err(Error::Config(format!(
                "optimiser state for unknown parameters: {stray:?}"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Minimises ||w - target||^2 with each optimiser; all must get close.
    fn converges(kind: OptimKind, lr: f64) -> f64 {
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let w = vs.root().var("w", &[4, 3], nn::Init::Const(0.0));
        let target = Tensor::from_slice(&[
            1.0f32, -2.0, 0.5, 3.0, 0.0, -1.0, 2.0, 1.0, -0.5, 0.25, 1.5, -3.0,
        ])
        .reshape([4, 3]);
        let cfg = OptimConfig {
            kind,
            lr,
            weight_decay: 0.0,
            ..Default::default()
        };
        let mut params = Params::of(&vs);
        let mut opt = cfg.build(&params);
        for _ in 0..300 {
            params.zero_grad();
            (&w - &target).square().sum(Kind::Float).backward();
            opt.step(&params, lr);
        }
        (&w - &target).abs().max().double_value(&[])
    }

    #[test]
    fn optimisers_converge_on_a_quadratic() {
        assert!(converges(OptimKind::Sgd, 0.05) < 1e-3);
        assert!(converges(OptimKind::AdamW, 0.05) < 1e-2);
        // LARS scales the step by eta * |w| / |g|: give it a large lr.
        assert!(converges(OptimKind::Lars, 20.0) < 5e-2);
    }

    /// Three steps on a fixed least-squares problem, compared with torch.optim
    /// (PyTorch 2.11.0, weight decay on every parameter):
    ///   w = [[0.5, -1.0], [2.0, 0.1]]; b = [0.3, -0.2]
    ///   x = [[1.0, 2.0], [-0.5, 0.25], [0.3, -1.2]]; loss = ((x @ w.T + b) ** 2).sum()
    ///   SGD(lr=0.05, momentum=0.9, weight_decay=0.01) / AdamW(lr=0.05, weight_decay=0.01)
    fn three_steps(kind: OptimKind) -> (Vec<f32>, Vec<f32>) {
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let w = vs.root().var_copy(
            "w",
            &Tensor::from_slice(&[0.5f32, -1.0, 2.0, 0.1]).reshape([2, 2]),
        );
        let b = vs
            .root()
            .var_copy("b", &Tensor::from_slice(&[0.3f32, -0.2]));
        let x = Tensor::from_slice(&[1.0f32, 2.0, -0.5, 0.25, 0.3, -1.2]).reshape([3, 2]);
        let cfg = OptimConfig {
            kind,
            lr: 0.05,
            weight_decay: 0.01,
            exclude_bias_and_norm: false,
            ..Default::default()
        };
        let mut params = Params::of(&vs);
        let mut opt = cfg.build(&params);
        for _ in 0..3 {
            params.zero_grad();
            (x.matmul(&w.tr()) + &b)
                .square()
                .sum(Kind::Float)
                .backward();
            opt.step(&params, 0.05);
        }
        (
            Vec::try_from(w.flatten(0, -1)).unwrap(),
            Vec::try_from(&b).unwrap(),
        )
    }

    fn close(a: &[f32], b: &[f32]) -> bool {
        a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-5)
    }

    #[test]
    fn sgd_and_adamw_match_torch_optim() {
        let (w, b) = three_steps(OptimKind::Sgd);
        assert!(
            close(&w, &[0.5376001, 0.43826225, 0.90016586, -0.8042516]),
            "{w:?}"
        );
        assert!(close(&b, &[-0.006_113_5, -0.446_951_27]), "{b:?}");
        let (w, b) = three_steps(OptimKind::AdamW);
        assert!(
            close(&w, &[0.647_330_05, -0.849_037_8, 1.847_547, -0.049_031_02]),
            "{w:?}"
        );
        assert!(close(&b, &[0.15275413, -0.34672016]), "{b:?}");
    }

    #[test]
    fn clipping_caps_the_global_norm() {
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let w = vs.root().var("w", &[10], nn::Init::Const(1.0));
        let params = Params::of(&vs);
        (&w * 100.0).sum(Kind::Float).backward();
        let before = params.clip_grad_norm(Some(1.0));
        assert!((before - 100.0 * 10f64.sqrt()).abs() < 1e-3);
        let after = params.clip_grad_norm(None);
        assert!((after - 1.0).abs() < 1e-4, "{after}");
    }
}
