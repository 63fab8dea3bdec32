//! SGD with (optionally Nesterov-free) heavy-ball momentum and L2 weight decay,
//! matching `torch.optim.SGD(momentum=m, weight_decay=wd, dampening=0)`. Where
//! [`super::FusedMode`] applies (and momentum is not 0), one fused kernel per
//! weight-decay group updates every parameter; otherwise a loop.
use super::{fused, Buffers, OptimConfig, Optimizer, Params};
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
    /// Whether steps take the fused kernel (off for good after a failure).
    fused: bool,
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
            fused: cfg.momentum > 0.0
                && params
                    .tensors
                    .first()
                    .is_some_and(|t| cfg.fused.applies(t.device())),
        }
    }

    /// One fused update: a kernel for the decayed parameters and one for the rest.
    fn fused_step(
        &mut self,
        params: &Params,
        lr: f64,
    ) -> std::result::Result<(), fused::KernelError> {
        let grads = params.grads();
        let groups = params.decay_groups(self.exclude_bias_and_norm);
        for (decay, idx) in groups.iter().enumerate() {
            if idx.is_empty() {
                continue;
            }
            let ps: Vec<Tensor> = idx
                .iter()
                .map(|&i| params.tensors[i].shallow_clone())
                .collect();
            let gs: Vec<Tensor> = idx.iter().map(|&i| grads[i].shallow_clone()).collect();
            let bs: Vec<Tensor> = idx
                .iter()
                .map(|&i| self.bufs.get(i, &params.tensors[i]).shallow_clone())
                .collect();
            let wd = if decay == 1 { self.weight_decay } else { 0.0 };
            tch::no_grad(|| fused::sgd(&ps, &gs, &bs, wd, self.momentum, lr))?;
        }
        Ok(())
    }
}

impl Optimizer for Sgd {
    fn step(&mut self, params: &Params, lr: f64) {
        if self.fused {
            match self.fused_step(params, lr) {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!("fused SGD failed ({e}); using the per-parameter loop");
                    self.fused = false;
                }
            }
        }
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
