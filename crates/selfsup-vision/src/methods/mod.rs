//! Vision methods, one per file, chosen by the `[method]` table of a run config.
pub mod ijepa;
pub mod mae;
pub mod simclr;

pub use ijepa::{Ijepa, IjepaConfig};
pub use mae::{Mae, MaeConfig};
use serde::{Deserialize, Serialize};
pub use simclr::{SimClr, SimClrConfig};

/// Which method, with its settings (`[method]` with `name = "simclr"`, ...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "snake_case", deny_unknown_fields)]
pub enum MethodConfig {
    Simclr(SimClrConfig),
    Mae(MaeConfig),
    Ijepa(IjepaConfig),
}

impl Default for MethodConfig {
    fn default() -> Self {
        Self::Simclr(SimClrConfig::default())
    }
}

#[cfg(test)]
pub(crate) mod test_util {
    use selfsup_core::distributed::SingleProcess;
    use selfsup_core::method::{Batch, Method, StepCtx};
    use selfsup_core::optim::{OptimConfig, OptimKind, Params};
    use tch::{Device, Kind, Tensor};

    /// `n` images `[n, c, hw, hw]`: a bright 5x5 square at a random place on
    /// a horizontal gradient of random slope, plus a little noise (std 0.02).
    pub(crate) fn structured_images(n: i64, c: i64, hw: i64, seed: i64) -> Tensor {
        tch::manual_seed(seed);
        let opts = (Kind::Float, Device::Cpu);
        let yy = Tensor::arange(hw, opts).view([1, 1, hw, 1]);
        let xx = Tensor::arange(hw, opts).view([1, 1, 1, hw]);
        let cy = Tensor::randint(hw - 5, [n, 1, 1, 1], opts);
        let cx = Tensor::randint(hw - 5, [n, 1, 1, 1], opts);
        let inside = yy.ge_tensor(&cy)
            * yy.lt_tensor(&(&cy + 5.0))
            * xx.ge_tensor(&cx)
            * xx.lt_tensor(&(&cx + 5.0));
        let slope = Tensor::rand([n, 1, 1, 1], opts) * 2.0 - 1.0;
        inside.to_kind(Kind::Float) * 2.0
            + &xx * slope / hw as f64
            + Tensor::randn([n, c, hw, hw], opts) * 0.02
    }

    /// `steps` AdamW steps (weight decay 0.05) at `lr`, cycling over
    /// `batches` (each given as two identical views), with torch seeded per
    /// step as the trainer does and `after_step` called; returns the mean
    /// loss of the first 5 and of the last 5 steps.
    pub(crate) fn train_steps(
        method: &mut dyn Method,
        batches: &[Tensor],
        steps: u64,
        lr: f64,
    ) -> (f64, f64) {
        let params = Params::of(method.var_store());
        let mut params = params;
        let mut opt = OptimConfig {
            kind: OptimKind::AdamW,
            lr,
            weight_decay: 0.05,
            betas: (0.9, 0.95),
            ..Default::default()
        }
        .build(&params);
        let mut losses = Vec::new();
        for step in 0..steps {
            tch::manual_seed(1000 + step as i64);
            let x = &batches[step as usize % batches.len()];
            let batch = Batch {
                views: vec![x.shallow_clone(), x.shallow_clone()],
            };
            let ctx = StepCtx {
                step,
                total_steps: steps,
                epoch: 0,
                comm: &SingleProcess,
            };
            params.zero_grad();
            let out = method.step(&batch, &ctx).unwrap();
            let loss = out.loss.double_value(&[]);
            assert!(loss.is_finite(), "step {step}: loss {loss}");
            out.loss.backward();
            opt.step(&params, lr);
            method.after_step(&ctx);
            losses.push(loss);
        }
        let mean = |xs: &[f64]| xs.iter().sum::<f64>() / xs.len() as f64;
        (mean(&losses[..5]), mean(&losses[losses.len() - 5..]))
    }
}
