//! SGD with (optionally Nesterov-free) heavy-ball momentum and L2 weight decay,
//! matching `torch.optim.SGD(momentum=m, weight_decay=wd, dampening=0)`.
use super::{Buffers, OptimConfig, Optimizer, Params};
use crate::Result;
use std::collections::BTreeMap;
use tch::Tensor;

/// SGD with momentum.
#[derive(Debug)]
pub struct Sgd {
    momentum: f64,
    weight_decay: f64,
    exclude_bias_and_norm: bool,
    bufs: Buffers,
    device: tch::Device,
}

impl Sgd {
    /// A new optimiser for `params`.
    pub fn new(cfg: &OptimConfig, params: &Params) -> Self {
        Self {
            momentum: cfg.momentum,
            weight_decay: cfg.weight_decay,
            exclude_bias_and_norm: cfg.exclude_bias_and_norm,
            bufs: Buffers::new("momentum", params),
            device: params
                .tensors
                .first()
                .map_or(tch::Device::Cpu, |t| t.device()),
        }
    }
}

impl Optimizer for Sgd {
    fn step(&mut self, params: &Params, lr: f64) {
        tch::no_grad(|| {
            for (i, (p, g)) in params.tensors.iter().zip(params.grads()).enumerate() {
                let decay = !(self.exclude_bias_and_norm && params.is_bias_or_norm(i));
                let g = if decay && self.weight_decay != 0.0 {
                    g + p * self.weight_decay
                } else {
                    g
                };
                let buf = self.bufs.get(i, p);
                let _ = buf.f_mul_scalar_(self.momentum);
                let _ = buf.f_add_(&g);
                let mut p = p.shallow_clone();
                let _ = p.f_sub_(&(&*buf * lr));
            }
        })
    }
    fn state(&self) -> Vec<(String, Tensor)> {
        self.bufs.state()
    }
    fn load_state(&mut self, state: &BTreeMap<String, Tensor>) -> Result<()> {
        self.bufs.load(state, self.device)
    }
}
