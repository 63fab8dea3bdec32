//! One optimisation step, and the step arithmetic of a run.
use super::Trainer;
use crate::method::{Batch, Method, StepCtx};
use crate::optim::{OptimConfig, Optimizer, Params};
use crate::source::BatchSource;
use crate::{Error, Result};
use std::sync::atomic::Ordering;
use tch::Tensor;

/// The step arithmetic of a run, fixed before its first step.
pub(super) struct Shape {
    /// Optimisation steps per epoch (complete batches of the data).
    pub(super) steps_per_epoch: u64,
    /// Optimisation steps of the whole run.
    pub(super) total: u64,
    /// Samples per optimisation step over all processes.
    pub(super) global_batch: usize,
    /// The learning rate the schedule peaks at, scaled to the global batch.
    pub(super) peak_lr: f64,
    /// Warm-up steps.
    pub(super) warmup: u64,
}

/// The trainable parameters and the optimiser that updates them.
pub(super) struct Optimisation {
    pub(super) params: Params,
    pub(super) optimizer: Box<dyn Optimizer>,
}

impl Optimisation {
    /// Every variable of `method` that requires grad, and `cfg`'s optimiser.
    pub(super) fn of<M: Method + ?Sized>(cfg: &OptimConfig, method: &M) -> Self {
        let params = Params::of(method.var_store());
        let optimizer = cfg.build(&params);
        Self { params, optimizer }
    }
}

/// The gradient norm before clipping: read at once (CPU) or left on the device
/// until the step is queued (GPU).
enum GradNorm {
    Host(f64),
    Device(Tensor),
}

/// What one optimisation step produced.
pub(super) struct Stepped {
    /// The global step just taken (0-based).
    pub(super) step: u64,
    /// Its epoch (0-based).
    pub(super) epoch: usize,
    /// Loss of the global batch.
    pub(super) loss: f64,
    /// The scheduled learning rate.
    pub(super) lr: f64,
    /// Gradient norm before clipping.
    pub(super) grad_norm: f64,
    /// The method's named loss parts.
    pub(super) terms: Vec<(String, f64)>,
    /// Samples of the step over all processes.
    pub(super) samples: usize,
}

impl Trainer {
    /// Creates the run folder, forgets any earlier checkpoint as this run's
    /// own, and fixes the step arithmetic; refuses data without one
    /// complete batch.
    pub(super) fn prepare(&self, data: &dyn BatchSource) -> Result<Shape> {
        std::fs::create_dir_all(&self.run_dir).map_err(|e| Error::io(&self.run_dir, e))?;
        self.checkpoint_ok.store(false, Ordering::SeqCst);
        let steps_per_epoch = data.batches_per_epoch() as u64;
        if steps_per_epoch == 0 {
            return Err(Error::Config(format!(
                "the dataset yields no complete batch of {} samples",
                data.batch_size()
            )));
        }
        let global_batch = data.batch_size() * self.comm.world_size();
        Ok(Shape {
            steps_per_epoch,
            total: steps_per_epoch * self.cfg.epochs as u64,
            global_batch,
            peak_lr: self.cfg.optimizer.scaled_lr(global_batch),
            warmup: (self.cfg.schedule.warmup_epochs * steps_per_epoch as f64).round() as u64,
        })
    }

    /// Whether steps run under autocast: mixed precision asked, on CUDA.
    fn use_amp(&self) -> bool {
        self.cfg.mixed_precision && self.device.is_cuda()
    }

    /// Sets autocast's CUDA dtype (bfloat16) when steps run under it, and on
    /// CUDA lets cuDNN pick its fastest convolution algorithms for the run's
    /// fixed shapes (`torch.backends.cudnn.benchmark`; runs on a GPU are not
    /// bit-for-bit reproducible anyway).
    pub(super) fn enable_autocast(&self) -> Result<()> {
        if self.device.is_cuda() {
            tch::Cuda::cudnn_set_benchmark(true);
        }
        if self.use_amp() {
            crate::autocast::set_cuda_autocast_dtype(crate::autocast::AutocastDtype::BFloat16)?;
        }
        Ok(())
    }

    /// One optimisation step of `method` on `batch`, global step `step` of
    /// `epoch`: seeding, autocast, the non-finite guard, backward, gradients
    /// averaged across processes, clipping, the optimiser and
    /// [`Method::after_step`].
    pub(super) fn step<M: Method + ?Sized>(
        &self,
        method: &mut M,
        batch: Batch,
        opt: &mut Optimisation,
        shape: &Shape,
        step: u64,
        epoch: usize,
    ) -> Result<Stepped> {
        let batch = batch.to_device(self.device);
        tch::manual_seed((self.cfg.seed ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15)) as i64);
        let ctx = StepCtx {
            step,
            total_steps: shape.total,
            epoch,
            steps_per_epoch: shape.steps_per_epoch,
            comm: self.comm.as_ref(),
        };
        let lr = self
            .cfg
            .schedule
            .lr(shape.peak_lr, step, shape.total, shape.warmup);
        opt.params.zero_grad();
        let use_amp = self.use_amp();
        // A GPU running out of memory panics inside tch's calls: it ends the
        // run with one line naming the fix, and the last checkpoint stays
        // (as for a non-finite loss).
        let out = crate::device::guard_device_failure(|| {
            tch::autocast(use_amp, || method.step(&batch, &ctx))
        })??;
        self.check_ranks()?;
        // On the CPU the loss is checked before backward. On a GPU every host
        // read waits for the device: there the step is queued whole
        // (backward, clipping on the device, optimiser) and read once at its
        // end; the run still stops at a non-finite loss, and the checkpoint on
        // disk is the last good one either way.
        let queued = self.queue_steps;
        let checked = if queued {
            None
        } else {
            Some(self.finite_loss(&out.loss, step)?)
        };
        crate::device::guard_device_failure(|| out.loss.backward())?;
        let mut grads = opt.params.grads();
        self.comm.all_reduce_mean_(&mut grads);
        self.check_ranks()?;
        let grad_norm = if queued {
            GradNorm::Device(opt.params.clip_grad_norm_on_device(self.cfg.grad_clip))
        } else {
            GradNorm::Host(opt.params.clip_grad_norm(self.cfg.grad_clip))
        };
        crate::device::guard_device_failure(|| opt.optimizer.step(&opt.params, lr))?;
        method.after_step(&ctx);
        let loss = match checked {
            Some(l) => l,
            None => self.finite_loss(&out.loss, step)?,
        };
        let grad_norm = match grad_norm {
            GradNorm::Host(v) => v,
            GradNorm::Device(t) => t.double_value(&[]),
        };
        Ok(Stepped {
            step,
            epoch,
            loss,
            lr,
            grad_norm,
            terms: out.terms.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            samples: batch.len() as usize * self.comm.world_size(),
        })
    }

    /// The global batch's loss, or the non-finite-loss error naming `step`.
    fn finite_loss(&self, loss: &Tensor, step: u64) -> Result<f64> {
        let loss = self.global_mean(loss)?;
        if !loss.is_finite() {
            return Err(Error::NonFiniteLoss {
                step,
                value: loss,
                last_good: self.last_good_checkpoint(),
            });
        }
        Ok(loss)
    }

    /// The checkpoint a failure names as the last good one.
    fn last_good_checkpoint(&self) -> String {
        if self.checkpoint_ok.load(Ordering::SeqCst) {
            self.checkpoint_path().display().to_string()
        } else {
            "none (no checkpoint written yet)".into()
        }
    }

    /// The collective's first failure, with what the user can do about it.
    pub(super) fn check_ranks(&self) -> Result<()> {
        self.comm.check().map_err(|e| {
            let ckpt = self.checkpoint_path();
            let last = if self.checkpoint_ok.load(Ordering::SeqCst) {
                format!(
                    "the last checkpoint is {}: continue with --resume",
                    ckpt.display()
                )
            } else {
                "no checkpoint was written yet".into()
            };
            Error::Distributed(format!(
                "{}; another rank has probably stopped (see its output); {last}",
                match e {
                    Error::Distributed(m) => m,
                    other => other.to_string(),
                }
            ))
        })
    }

    /// The mean over ranks of a scalar (what the log shows: the loss of the
    /// global batch, not of this rank's share).
    fn global_mean(&self, t: &Tensor) -> Result<f64> {
        if self.comm.world_size() == 1 {
            return Ok(t.double_value(&[]));
        }
        let mut v = [t.detach().to_kind(tch::Kind::Float).reshape([1])];
        self.comm.all_reduce_mean_(&mut v);
        self.check_ranks()?;
        Ok(v[0].double_value(&[0]))
    }
}
