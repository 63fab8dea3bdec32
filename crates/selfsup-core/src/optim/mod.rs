//! Optimisers written on tensors, so their whole state can be checkpointed and
//! restored exactly: SGD with momentum, AdamW, LARS.
//!
//! Parameters are the method's variables that require grad, in name order.
//! Weight decay (and LARS's trust ratio) skip one-dimensional parameters
//! (biases, norm scales) when `exclude_bias_and_norm` is set, as in SimCLR,
//! BYOL and timm: a rule on shape, not on names.
mod adamw;
pub mod fused;
mod lars;
mod sgd;

pub use adamw::AdamW;
pub use fused::FusedMode;
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
    /// When SGD and AdamW update every parameter with one fused kernel:
    /// `auto` (on CUDA), `on`, `off`. LARS always loops.
    pub fused: FusedMode,
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
            fused: FusedMode::Auto,
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

    /// The gradients that exist (parameters backward reached).
    fn defined_grads(&self) -> Vec<Tensor> {
        self.tensors
            .iter()
            .map(|t| t.grad())
            .filter(|g| g.defined())
            .collect()
    }

    /// Parameter indices in two groups: `[no weight decay, weight decay]`
    /// (1-D parameters skip decay when `exclude_bias_and_norm`).
    pub(crate) fn decay_groups(&self, exclude_bias_and_norm: bool) -> [Vec<usize>; 2] {
        let mut groups: [Vec<usize>; 2] = [Vec::new(), Vec::new()];
        for i in 0..self.tensors.len() {
            let decay = !(exclude_bias_and_norm && self.is_bias_or_norm(i));
            groups[usize::from(decay)].push(i);
        }
        groups
    }

    /// Sets every gradient to zero (one multi-tensor kernel; a loop if it fails).
    pub fn zero_grad(&mut self) {
        let grads = self.defined_grads();
        if tch::no_grad(|| fused::zero_(&grads)).is_ok() {
            return;
        }
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
            let grads = self.defined_grads();
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

impl Params {
    /// [`Params::clip_grad_norm`] without reading anything back to the host:
    /// the norm before clipping stays a float32 scalar on the parameters'
    /// device, and the scale is applied there (what a GPU step wants: the
    /// host queues the optimiser without waiting for the backward pass).
    /// Multi-tensor kernels; the loop of [`Params::clip_grad_norm`] if they fail.
    pub fn clip_grad_norm_on_device(&self, max_norm: Option<f64>) -> Tensor {
        let grads = self.defined_grads();
        let Some(first) = grads.first() else {
            return Tensor::zeros([], (Kind::Float, tch::Device::Cpu));
        };
        let device = first.device();
        let fused = tch::no_grad(|| -> std::result::Result<Tensor, fused::KernelError> {
            let norm = fused::total_norm(&grads)?;
            if let Some(max) = max_norm {
                // torch.nn.utils.clip_grad_norm_: scale by max / (norm + 1e-6)
                // when that is below 1; a non-finite norm leaves them as they are.
                let coef = ((&norm + 1e-6).reciprocal() * max).clamp_max(1.0);
                let coef = coef.where_self(&norm.isfinite(), &coef.ones_like());
                fused::mul_tensor_(&grads, &coef)?;
            }
            Ok(norm)
        });
        match fused {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!("multi-tensor gradient norm failed ({e}); using the loop");
                Tensor::from(self.clip_grad_norm(max_norm) as f32).to_device(device)
            }
        }
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
        three_steps_with(kind, FusedMode::Off)
    }

    fn three_steps_with(kind: OptimKind, fused: FusedMode) -> (Vec<f32>, Vec<f32>) {
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
            fused,
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

    /// The fused kernels reproduce torch.optim's numbers too.
    #[test]
    fn fused_sgd_and_adamw_match_torch_optim() {
        let (w, b) = three_steps_with(OptimKind::Sgd, FusedMode::On);
        assert!(
            close(&w, &[0.5376001, 0.43826225, 0.90016586, -0.8042516]),
            "{w:?}"
        );
        assert!(close(&b, &[-0.006_113_5, -0.446_951_27]), "{b:?}");
        let (w, b) = three_steps_with(OptimKind::AdamW, FusedMode::On);
        assert!(
            close(&w, &[0.647_330_05, -0.849_037_8, 1.847_547, -0.049_031_02]),
            "{w:?}"
        );
        assert!(close(&b, &[0.15275413, -0.34672016]), "{b:?}");
    }

    /// A small network with biases (no weight decay on them), trained 20
    /// steps by the loop and by the fused kernels from the same start: the
    /// same parameters, and the fused run's state continues in the loop.
    fn train(
        kind: OptimKind,
        fused: FusedMode,
        steps: usize,
        resume_from: Option<&BTreeMap<String, Tensor>>,
    ) -> (Vec<Tensor>, BTreeMap<String, Tensor>) {
        tch::manual_seed(11);
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let l1 = nn::linear(vs.root() / "l1", 6, 8, Default::default());
        let l2 = nn::linear(vs.root() / "l2", 8, 3, Default::default());
        let x = Tensor::randn([16, 6], (Kind::Float, tch::Device::Cpu));
        let y = Tensor::randn([16, 3], (Kind::Float, tch::Device::Cpu));
        let cfg = OptimConfig {
            kind,
            lr: 0.05,
            weight_decay: 0.1,
            fused,
            ..Default::default()
        };
        let mut params = Params::of(&vs);
        let mut opt = cfg.build(&params);
        if let Some(state) = resume_from {
            opt.load_state(state).unwrap();
        }
        for _ in 0..steps {
            params.zero_grad();
            let out = x.apply(&l1).relu().apply(&l2);
            (out - &y).square().mean(Kind::Float).backward();
            opt.step(&params, 0.05);
        }
        let state = opt.state().into_iter().collect();
        (
            params.tensors.iter().map(|t| t.detach().copy()).collect(),
            state,
        )
    }

    #[test]
    fn fused_kernels_train_as_the_loop_and_share_its_state() {
        for kind in [OptimKind::Sgd, OptimKind::AdamW] {
            let (looped, _) = train(kind, FusedMode::Off, 20, None);
            let (fused, _) = train(kind, FusedMode::On, 20, None);
            for (a, b) in looped.iter().zip(&fused) {
                let d = (a - b).abs().max().double_value(&[]);
                assert!(d < 1e-6, "{kind:?}: {d}");
            }
            // 10 fused steps, then 10 looped ones from the fused state: the
            // same as 20 looped ones (the state names and meanings agree).
            let (_, state) = train(kind, FusedMode::On, 10, None);
            let (_, loop_state) = train(kind, FusedMode::Off, 10, None);
            let names = |s: &BTreeMap<String, Tensor>| s.keys().cloned().collect::<Vec<_>>();
            assert_eq!(names(&state), names(&loop_state), "{kind:?}");
            // `train` starts from the seed's initial weights, so continuing
            // means replaying the first 10 steps' parameters: compare the
            // optimiser states instead, which carry everything else.
            for (k, t) in &state {
                let d = (t.to_kind(Kind::Double) - loop_state[k].to_kind(Kind::Double))
                    .abs()
                    .max()
                    .double_value(&[]);
                assert!(d < 1e-6, "{kind:?} {k}: {d}");
            }
        }
        // And a fresh fused optimiser loaded with a loop's state takes the
        // loop's next steps (AdamW's step counts come from `adamw.steps`).
        // (Each load gets its own copy: a loaded state shares its tensors.)
        let (_, loop_state) = train(OptimKind::AdamW, FusedMode::Off, 10, None);
        let copy = |s: &BTreeMap<String, Tensor>| -> BTreeMap<String, Tensor> {
            s.iter().map(|(k, t)| (k.clone(), t.copy())).collect()
        };
        let (a, _) = train(
            OptimKind::AdamW,
            FusedMode::Off,
            5,
            Some(&copy(&loop_state)),
        );
        let (b, _) = train(OptimKind::AdamW, FusedMode::On, 5, Some(&copy(&loop_state)));
        for (a, b) in a.iter().zip(&b) {
            let d = (a - b).abs().max().double_value(&[]);
            assert!(d < 1e-6, "{d}");
        }
    }

    #[test]
    fn zero_grad_zeroes_every_gradient() {
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let w = vs.root().var("w", &[3], nn::Init::Const(1.0));
        let b = vs.root().var("b", &[2], nn::Init::Const(1.0));
        let mut params = Params::of(&vs);
        ((&w * 3.0).sum(Kind::Float) + (&b * 2.0).sum(Kind::Float)).backward();
        assert!(w.grad().abs().sum(Kind::Float).double_value(&[]) > 0.0);
        params.zero_grad();
        for t in &params.tensors {
            assert_eq!(t.grad().abs().sum(Kind::Float).double_value(&[]), 0.0);
        }
    }

    /// The device-side clipping gives the loop's norm and clipped gradients.
    #[test]
    fn clipping_on_the_device_matches_the_loop() {
        for max in [None, Some(1.0), Some(1e6)] {
            let grads = |clip_on_device: bool| {
                let vs = nn::VarStore::new(tch::Device::Cpu);
                let w = vs.root().var("w", &[10], nn::Init::Const(1.0));
                let b = vs.root().var("b", &[4], nn::Init::Const(2.0));
                let params = Params::of(&vs);
                ((&w * 100.0).sum(Kind::Float) + (&b * &b * 30.0).sum(Kind::Float)).backward();
                let norm = if clip_on_device {
                    params.clip_grad_norm_on_device(max).double_value(&[])
                } else {
                    params.clip_grad_norm(max)
                };
                (norm, w.grad().copy(), b.grad().copy())
            };
            let (n1, w1, b1) = grads(false);
            let (n2, w2, b2) = grads(true);
            assert!((n1 - n2).abs() < 1e-3 * n1, "{max:?}: {n1} vs {n2}");
            assert!((w1 - w2).abs().max().double_value(&[]) < 1e-5, "{max:?}");
            assert!((b1 - b2).abs().max().double_value(&[]) < 1e-5, "{max:?}");
        }
    }

    #[test]
    fn fused_mode_follows_the_device() {
        assert!(!FusedMode::Auto.applies(tch::Device::Cpu));
        assert!(FusedMode::Auto.applies(tch::Device::Cuda(0)));
        assert!(FusedMode::On.applies(tch::Device::Cpu));
        assert!(!FusedMode::Off.applies(tch::Device::Cuda(0)));
        let cfg: OptimConfig = toml::from_str("fused = \"on\"").unwrap();
        assert_eq!(cfg.fused, FusedMode::On);
        assert!(toml::from_str::<OptimConfig>("fused = \"sometimes\"").is_err());
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
