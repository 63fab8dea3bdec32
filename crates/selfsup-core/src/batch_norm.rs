//! Batch norm whose batch statistics can span every rank of a data-parallel
//! run (PyTorch's `SyncBatchNorm`).
//!
//! [`BatchNorm`] holds tch's `nn::BatchNorm` (the same variables: `weight`,
//! `bias`, `running_mean`, `running_var`, so checkpoints and exports keep
//! their names) and behaves exactly like it, except in training mode while
//! a synchronisation group is installed with more than one rank: the mean and
//! the biased variance then come from the per-channel sums over the global
//! batch, reduced with gradient ([`Collective::all_reduce_sum_with_grad`]),
//! so the forward and backward are those of one process with the global
//! batch. The trainer installs its collective for the duration of `fit` when
//! `sync_batch_norm` is set. The group belongs to the training thread (the
//! modules are built before the run exists, and forward passes run on the
//! thread that called `fit`), so other threads and tests are unaffected.
use std::cell::RefCell;
use std::sync::Arc;

use tch::nn::{self, ModuleT};
use tch::{Kind, Tensor};

use crate::distributed::Collective;

thread_local! {
    static SYNC_GROUP: RefCell<Option<Arc<dyn Collective>>> = const { RefCell::new(None) };
}

/// Makes every [`BatchNorm`] in training mode on this thread synchronise
/// over `group` until the returned guard is dropped.
pub fn sync_over(group: Arc<dyn Collective>) -> SyncGuard {
    SYNC_GROUP.with(|g| *g.borrow_mut() = Some(group));
    SyncGuard(std::marker::PhantomData)
}

/// Uninstalls the synchronisation group when dropped (on the same thread).
pub struct SyncGuard(std::marker::PhantomData<*const ()>);

impl Drop for SyncGuard {
    fn drop(&mut self) {
        SYNC_GROUP.with(|g| *g.borrow_mut() = None);
    }
}

fn sync_group() -> Option<Arc<dyn Collective>> {
    SYNC_GROUP.with(|g| g.borrow().as_ref().filter(|c| c.world_size() > 1).cloned())
}

/// A batch-norm layer over `nd`-dimensional inputs (1: `[N, C]` or
/// `[N, C, L]`, 2: `[N, C, H, W]`).
#[derive(Debug)]
pub struct BatchNorm {
    inner: nn::BatchNorm,
    eps: f64,
    momentum: f64,
}

/// `BatchNorm1d(c)` under `p`.
pub fn batch_norm1d<'a>(
    p: impl std::borrow::Borrow<nn::Path<'a>>,
    c: i64,
    cfg: nn::BatchNormConfig,
) -> BatchNorm {
    BatchNorm {
        inner: nn::batch_norm1d(p, c, cfg),
        eps: cfg.eps,
        momentum: cfg.momentum,
    }
}

/// `BatchNorm2d(c)` under `p`.
pub fn batch_norm2d<'a>(
    p: impl std::borrow::Borrow<nn::Path<'a>>,
    c: i64,
    cfg: nn::BatchNormConfig,
) -> BatchNorm {
    BatchNorm {
        inner: nn::batch_norm2d(p, c, cfg),
        eps: cfg.eps,
        momentum: cfg.momentum,
    }
}

impl BatchNorm {
    /// The running mean (a `running_mean` variable of the var store).
    pub fn running_mean(&self) -> &Tensor {
        &self.inner.running_mean
    }

    /// The running (unbiased) variance.
    pub fn running_var(&self) -> &Tensor {
        &self.inner.running_var
    }

    fn synchronised(&self, xs: &Tensor, group: &dyn Collective) -> Tensor {
        let c = xs.size()[1];
        let dims: Vec<i64> = (0..xs.dim() as i64).filter(|&d| d != 1).collect();
        let x = xs.to_kind(Kind::Float);
        let local_count = (x.numel() as i64 / c) as f64;
        let sum = x.sum_dim_intlist(dims.as_slice(), false, Kind::Float);
        let sumsq = (&x * &x).sum_dim_intlist(dims.as_slice(), false, Kind::Float);
        let count = Tensor::full([1], local_count, (Kind::Float, x.device()));
        let stats = group.all_reduce_sum_with_grad(&Tensor::cat(&[&sum, &sumsq, &count], 0));
        let n = stats.double_value(&[2 * c]);
        let mean = stats.narrow(0, 0, c) / n;
        let var = (stats.narrow(0, c, c) / n - &mean * &mean).clamp_min(0.0);
        tch::no_grad(|| {
            let m = self.momentum;
            let unbiased = var.detach() * (n / (n - 1.0).max(1.0));
            let rm = &self.inner.running_mean;
            let rv = &self.inner.running_var;
            let new_mean = rm * (1.0 - m) + mean.detach().to_kind(rm.kind()) * m;
            let new_var = rv * (1.0 - m) + unbiased.to_kind(rv.kind()) * m;
            rm.shallow_clone().copy_(&new_mean);
            rv.shallow_clone().copy_(&new_var);
        });
        let mut shape = vec![1i64; xs.dim()];
        shape[1] = c;
        let mut y =
            (&x - mean.view(shape.as_slice())) / (var + self.eps).sqrt().view(shape.as_slice());
        if let (Some(w), Some(b)) = (&self.inner.ws, &self.inner.bs) {
            y = y * w.view(shape.as_slice()) + b.view(shape.as_slice());
        }
        y.to_kind(xs.kind())
    }
}

impl ModuleT for BatchNorm {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        match (train, sync_group()) {
            (true, Some(group)) => self.synchronised(xs, group.as_ref()),
            _ => self.inner.forward_t(xs, train),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::distributed::SingleProcess;

    /// A "world" of two ranks that are the same process: the all-reduce
    /// doubles, which is what two ranks with identical batches would sum.
    struct Mirror;
    impl Collective for Mirror {
        fn rank(&self) -> usize {
            0
        }
        fn world_size(&self) -> usize {
            2
        }
        fn all_gather_with_grad(&self, t: &Tensor) -> Tensor {
            Tensor::cat(&[t, t], 0)
        }
        fn all_reduce_mean_(&self, _: &mut [Tensor]) {}
        fn broadcast_(&self, _: &mut [Tensor], _: usize) {}
        fn all_reduce_sum_with_grad(&self, t: &Tensor) -> Tensor {
            t * 2.0
        }
    }

    #[test]
    fn synchronised_statistics_match_tch_batch_norm() {
        tch::manual_seed(0);
        let x = Tensor::randn([6, 3, 4, 4], (Kind::Float, tch::Device::Cpu)) * 2.0 + 1.0;
        let cfg = nn::BatchNormConfig {
            ws_init: nn::Init::Const(1.5),
            bs_init: nn::Init::Const(0.25),
            ..Default::default()
        };
        let vs_a = nn::VarStore::new(tch::Device::Cpu);
        let vs_b = nn::VarStore::new(tch::Device::Cpu);
        let plain = batch_norm2d(vs_a.root(), 3, cfg);
        let synced = batch_norm2d(vs_b.root(), 3, cfg);
        let want = plain.forward_t(&x, true);
        // With two identical ranks the global batch statistics are the local
        // ones, except the unbiased running variance (n = 192, not 96).
        let got = {
            let _g = sync_over(Arc::new(Mirror));
            synced.forward_t(&x, true)
        };
        assert!(got.allclose(&want, 1e-4, 1e-5, false));
        assert!(synced
            .inner
            .running_mean
            .allclose(&plain.inner.running_mean, 1e-5, 1e-6, false));
        let var = x.var_dim([0i64, 2, 3].as_slice(), false, false);
        let expect_rv =
            Tensor::ones([3], (Kind::Float, tch::Device::Cpu)) * 0.9 + var * (192.0 / 191.0) * 0.1;
        assert!(synced
            .inner
            .running_var
            .allclose(&expect_rv, 1e-4, 1e-5, false));
        // Without a group, or in eval mode, it is tch's layer.
        let _g = sync_over(Arc::new(SingleProcess));
        assert!(synced
            .forward_t(&x, false)
            .equal(&synced.inner.forward_t(&x, false)));
    }
}
