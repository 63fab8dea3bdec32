//! AdamW (Loshchilov & Hutter 2019, arXiv:1711.05101): Adam with decoupled
//! weight decay, matching `torch.optim.AdamW`. Where [`super::FusedMode`]
//! applies, one fused kernel per weight-decay group updates every parameter
//! (`torch.optim.AdamW(fused=True)`); otherwise a loop over the parameters.
use super::{fused, Buffers, OptimConfig, Optimizer, Params};
use crate::{Error, Result};
use std::collections::BTreeMap;
use tch::Tensor;

/// AdamW.
#[derive(Debug)]
pub struct AdamW {
    betas: (f64, f64),
    eps: f64,
    weight_decay: f64,
    exclude_bias_and_norm: bool,
    steps: i64,
    m: Buffers,
    v: Buffers,
    device: tch::Device,
    /// Whether steps take the fused kernel (off for good after a failure).
    fused: bool,
    /// The fused kernel's per-parameter step counts (float32 on the
    /// device), made from `steps` on first use and after a state load.
    step_counts: Option<Vec<Tensor>>,
}

impl AdamW {
    /// A new optimiser for `params`.
    pub fn new(cfg: &OptimConfig, params: &Params) -> Self {
        Self {
            betas: cfg.betas,
            eps: cfg.eps,
            weight_decay: cfg.weight_decay,
            exclude_bias_and_norm: cfg.exclude_bias_and_norm,
            steps: 0,
            m: Buffers::new("exp_avg", params),
            v: Buffers::new("exp_avg_sq", params),
            device: params
                .tensors
                .first()
                .map_or(tch::Device::Cpu, |t| t.device()),
            fused: params
                .tensors
                .first()
                .is_some_and(|t| cfg.fused.applies(t.device())),
            step_counts: None,
        }
    }

    /// One fused update (`self.steps` already counts it): a kernel for the
    /// decayed parameters and one for the rest.
    fn fused_step(
        &mut self,
        params: &Params,
        lr: f64,
    ) -> std::result::Result<(), fused::KernelError> {
        let grads = params.grads();
        let counts = match self.step_counts.take() {
            Some(c) => {
                fused::add_scalar_(&c, 1.0)?;
                c
            }
            None => params
                .tensors
                .iter()
                .map(|p| Tensor::full([], self.steps as f64, (tch::Kind::Float, p.device())))
                .collect(),
        };
        let groups = params.decay_groups(self.exclude_bias_and_norm);
        for (decay, idx) in groups.iter().enumerate() {
            if idx.is_empty() {
                continue;
            }
            let pick =
                |f: &mut dyn FnMut(usize) -> Tensor| idx.iter().map(|&i| f(i)).collect::<Vec<_>>();
            let ps = pick(&mut |i| params.tensors[i].shallow_clone());
            let gs = pick(&mut |i| grads[i].shallow_clone());
            let ms = pick(&mut |i| self.m.get(i, &params.tensors[i]).shallow_clone());
            let vs = pick(&mut |i| self.v.get(i, &params.tensors[i]).shallow_clone());
            let cs = pick(&mut |i| counts[i].shallow_clone());
            let wd = if decay == 1 { self.weight_decay } else { 0.0 };
            tch::no_grad(|| fused::adamw(&ps, &gs, &ms, &vs, &cs, lr, self.betas, wd, self.eps))?;
        }
        self.step_counts = Some(counts);
        Ok(())
    }
}

impl Optimizer for AdamW {
    fn step(&mut self, params: &Params, lr: f64) {
        self.steps += 1;
        if self.fused {
            match self.fused_step(params, lr) {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!("fused AdamW failed ({e}); using the per-parameter loop");
                    self.fused = false;
                    self.step_counts = None;
                }
            }
        }
        let (b1, b2) = self.betas;
        let c1 = 1.0 - b1.powi(self.steps as i32);
        let c2 = 1.0 - b2.powi(self.steps as i32);
        tch::no_grad(|| {
            for (i, (p, g)) in params.tensors.iter().zip(params.grads()).enumerate() {
                let mut p = p.shallow_clone();
                let decay = !(self.exclude_bias_and_norm && params.is_bias_or_norm(i));
                if decay && self.weight_decay != 0.0 {
                    let _ = p.f_mul_scalar_(1.0 - lr * self.weight_decay);
                }
                let m = self.m.get(i, &p);
                let _ = m.f_mul_scalar_(b1);
                let _ = m.f_add_(&(&g * (1.0 - b1)));
                let m_hat = &*m / c1;
                let v = self.v.get(i, &p);
                let _ = v.f_mul_scalar_(b2);
                let _ = v.f_add_(&(g.square() * (1.0 - b2)));
                let denom = (&*v / c2).sqrt() + self.eps;
                let _ = p.f_sub_(&(m_hat / denom * lr));
            }
        })
    }
    fn state(&self) -> Vec<(String, Tensor)> {
        let mut s = self.m.state();
        s.extend(self.v.state());
        s.push(("adamw.steps".into(), Tensor::from(self.steps)));
        s
    }
    fn load_state(&mut self, state: &BTreeMap<String, Tensor>) -> Result<()> {
        self.m.load(state, self.device)?;
        self.v.load(state, self.device)?;
        self.step_counts = None;
        self.steps = match state.get("adamw.steps") {
            None => 0,
            Some(t) if t.numel() == 1 => t
                .reshape([1])
                .f_int64_value(&[0])
                .ok()
                .filter(|s| *s >= 0)
                .ok_or_else(|| {
                    Error::Config("optimiser state adamw.steps is not a step count".into())
                })?,
            Some(t) => {
                return Err(Error::Config(format!(
                    "optimiser state adamw.steps: shape {:?}, expected a scalar",
                    t.size()
                )))
            }
        };
        Ok(())
    }
}
