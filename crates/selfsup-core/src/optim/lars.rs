//! LARS (You et al. 2017, arXiv:1708.03888) as used by SimCLR, BYOL and
//! Barlow Twins: SGD with momentum whose per-layer step is scaled by the trust
//! ratio `eta * |w| / |g + wd * w|`. One-dimensional parameters get neither
//! weight decay nor the trust ratio when `exclude_bias_and_norm` is set.
use super::{Buffers, OptimConfig, Optimizer, Params};
use crate::Result;
use std::collections::BTreeMap;
use tch::{Kind, Tensor};

/// LARS.
#[derive(Debug)]
pub struct Lars {
    momentum: f64,
    weight_decay: f64,
    eta: f64,
    exclude_bias_and_norm: bool,
    bufs: Buffers,
    device: tch::Device,
}

impl Lars {
    /// A new optimiser for `params`.
    pub fn new(cfg: &OptimConfig, params: &Params) -> Self {
        Self {
            momentum: cfg.momentum,
            weight_decay: cfg.weight_decay,
            eta: cfg.trust_coefficient,
            exclude_bias_and_norm: cfg.exclude_bias_and_norm,
            bufs: Buffers::new("momentum", params),
            device: params
                .tensors
                .first()
                .map_or(tch::Device::Cpu, |t| t.device()),
        }
    }
}

impl Optimizer for Lars {
    fn step(&mut self, params: &Params, lr: f64) {
        tch::no_grad(|| {
            for (i, (p, g)) in params.tensors.iter().zip(params.grads()).enumerate() {
                let adapt = !(self.exclude_bias_and_norm && params.is_bias_or_norm(i));
                let g = if adapt {
                    let g = if self.weight_decay != 0.0 {
                        g + p * self.weight_decay
                    } else {
                        g
                    };
                    let w_norm = p.norm().to_kind(Kind::Float);
                    let g_norm = g.norm().to_kind(Kind::Float);
                    let ratio = (&w_norm * self.eta / g_norm.clamp_min(1e-12)).where_self(
                        &(w_norm.gt(0.0).logical_and(&g_norm.gt(0.0))),
                        &Tensor::ones_like(&w_norm),
                    );
                    g * ratio
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
