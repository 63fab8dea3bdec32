//! ATen's multi-tensor optimiser kernels (`cpp/optim_shim.cpp`): one fused
//! AdamW or SGD update, one gradient norm, one zeroing and one scaling for a
//! whole list of parameters, where the per-parameter loops launch a dozen
//! kernels per parameter (about a thousand per step for a BERT). What
//! `torch.optim.AdamW(fused=True)` and `torch.nn.utils.clip_grad_norm_(foreach=True)`
//! call. A kernel that fails (an unsupported dtype or device) is reported as
//! an error, so the caller can fall back to its loop.
use serde::{Deserialize, Serialize};
use std::ffi::{c_char, CStr};
use tch::Tensor;
use torch_sys::C_tensor;

/// When the optimisers use the fused kernels (`[trainer.optimizer] fused`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FusedMode {
    /// On CUDA, where launch overhead dominates small parameters; the
    /// per-parameter loop on the CPU (which keeps CPU runs bit-for-bit what
    /// they were).
    #[default]
    Auto,
    /// Always (falls back to the loop, with a warning, where a kernel fails).
    On,
    /// Never.
    Off,
}

impl FusedMode {
    /// Whether parameters on `device` take the fused path.
    pub fn applies(self, device: tch::Device) -> bool {
        match self {
            FusedMode::Auto => device.is_cuda(),
            FusedMode::On => true,
            FusedMode::Off => false,
        }
    }
}

extern "C" {
    fn selfsup_fused_adamw(
        params: *const *mut C_tensor,
        grads: *const *mut C_tensor,
        exp_avgs: *const *mut C_tensor,
        exp_avg_sqs: *const *mut C_tensor,
        steps: *const *mut C_tensor,
        n: usize,
        lr: f64,
        beta1: f64,
        beta2: f64,
        weight_decay: f64,
        eps: f64,
        err: *mut *mut c_char,
    ) -> i32;
    fn selfsup_fused_sgd(
        params: *const *mut C_tensor,
        grads: *const *mut C_tensor,
        momentum_bufs: *const *mut C_tensor,
        n: usize,
        weight_decay: f64,
        momentum: f64,
        lr: f64,
        err: *mut *mut c_char,
    ) -> i32;
    fn selfsup_foreach_add_scalar(
        ts: *const *mut C_tensor,
        n: usize,
        value: f64,
        err: *mut *mut c_char,
    ) -> i32;
    fn selfsup_foreach_zero(ts: *const *mut C_tensor, n: usize, err: *mut *mut c_char) -> i32;
    fn selfsup_foreach_total_norm(
        ts: *const *mut C_tensor,
        n: usize,
        out: *mut *mut C_tensor,
        err: *mut *mut c_char,
    ) -> i32;
    fn selfsup_foreach_mul_tensor(
        ts: *const *mut C_tensor,
        n: usize,
        factor: *mut C_tensor,
        err: *mut *mut c_char,
    ) -> i32;
}

/// A failed fused kernel: ATen's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelError(pub String);

impl std::fmt::Display for KernelError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn ptrs(ts: &[Tensor]) -> Vec<*mut C_tensor> {
    ts.iter().map(|t| t.as_ptr() as *mut C_tensor).collect()
}

/// Turns the shim's status and message into a result (frees the message).
fn status(rc: i32, err: *mut c_char) -> Result<(), KernelError> {
    if rc == 0 {
        return Ok(());
    }
    if err.is_null() {
        return Err(KernelError(
            "the fused kernel failed without a message".into(),
        ));
    }
    // SAFETY: the shim wrote a NUL-terminated string it allocated with malloc.
    let msg = unsafe { CStr::from_ptr(err) }
        .to_string_lossy()
        .into_owned();
    // SAFETY: allocated by malloc in the shim, freed once here.
    unsafe { libc::free(err.cast()) };
    Err(KernelError(msg.lines().next().unwrap_or("").to_string()))
}

/// The common length of `lists`, whose i-th tensors must all have the shape
/// and device of the first list's (the CPU kernels do not check this).
fn same_len(lists: &[&[Tensor]]) -> Result<usize, KernelError> {
    let Some(first) = lists.first() else {
        return Ok(0);
    };
    let n = first.len();
    if lists.iter().any(|l| l.len() != n) {
        return Err(KernelError("tensor lists of different lengths".into()));
    }
    for (i, p) in first.iter().enumerate() {
        for l in &lists[1..] {
            if l[i].size() != p.size() || l[i].device() != p.device() {
                return Err(KernelError(format!(
                    "tensor {i}: shape {:?} on {:?} beside the parameter's {:?} on {:?}",
                    l[i].size(),
                    l[i].device(),
                    p.size(),
                    p.device()
                )));
            }
        }
    }
    Ok(n)
}

/// AdamW (decoupled decay, bias-corrected) over every parameter of `params`:
/// `steps` are float step counts, one per parameter, already counting this step.
#[allow(clippy::too_many_arguments)]
pub fn adamw(
    params: &[Tensor],
    grads: &[Tensor],
    exp_avgs: &[Tensor],
    exp_avg_sqs: &[Tensor],
    steps: &[Tensor],
    lr: f64,
    betas: (f64, f64),
    weight_decay: f64,
    eps: f64,
) -> Result<(), KernelError> {
    let n = same_len(&[params, grads, exp_avgs, exp_avg_sqs])?;
    if steps.len() != n {
        return Err(KernelError("one step count per parameter".into()));
    }
    let (p, g, m, v, s) = (
        ptrs(params),
        ptrs(grads),
        ptrs(exp_avgs),
        ptrs(exp_avg_sqs),
        ptrs(steps),
    );
    let mut err = std::ptr::null_mut();
    // SAFETY: every pointer is a live at::Tensor owned by the slices above,
    // which outlive the call; the shim only reads the arrays.
    let rc = unsafe {
        selfsup_fused_adamw(
            p.as_ptr(),
            g.as_ptr(),
            m.as_ptr(),
            v.as_ptr(),
            s.as_ptr(),
            n,
            lr,
            betas.0,
            betas.1,
            weight_decay,
            eps,
            &mut err,
        )
    };
    status(rc, err)
}

/// SGD with heavy-ball momentum (`momentum > 0`) and L2 weight decay;
/// `momentum_bufs` start as zeros.
pub fn sgd(
    params: &[Tensor],
    grads: &[Tensor],
    momentum_bufs: &[Tensor],
    weight_decay: f64,
    momentum: f64,
    lr: f64,
) -> Result<(), KernelError> {
    let n = same_len(&[params, grads, momentum_bufs])?;
    let (p, g, b) = (ptrs(params), ptrs(grads), ptrs(momentum_bufs));
    let mut err = std::ptr::null_mut();
    // SAFETY: as in `adamw`.
    let rc = unsafe {
        selfsup_fused_sgd(
            p.as_ptr(),
            g.as_ptr(),
            b.as_ptr(),
            n,
            weight_decay,
            momentum,
            lr,
            &mut err,
        )
    };
    status(rc, err)
}

/// Adds `value` to every tensor in place.
pub fn add_scalar_(ts: &[Tensor], value: f64) -> Result<(), KernelError> {
    let p = ptrs(ts);
    let mut err = std::ptr::null_mut();
    // SAFETY: as in `adamw`.
    let rc = unsafe { selfsup_foreach_add_scalar(p.as_ptr(), p.len(), value, &mut err) };
    status(rc, err)
}

/// Zeroes every tensor in place.
pub fn zero_(ts: &[Tensor]) -> Result<(), KernelError> {
    let p = ptrs(ts);
    let mut err = std::ptr::null_mut();
    // SAFETY: as in `adamw`.
    let rc = unsafe { selfsup_foreach_zero(p.as_ptr(), p.len(), &mut err) };
    status(rc, err)
}

/// The l2 norm of all tensors together, a float32 scalar on their device
/// (nothing is read back to the host).
pub fn total_norm(ts: &[Tensor]) -> Result<Tensor, KernelError> {
    let p = ptrs(ts);
    let mut out: *mut C_tensor = std::ptr::null_mut();
    let mut err = std::ptr::null_mut();
    // SAFETY: as in `adamw`; on success `out` is a new at::Tensor we own.
    let rc = unsafe { selfsup_foreach_total_norm(p.as_ptr(), p.len(), &mut out, &mut err) };
    status(rc, err)?;
    if out.is_null() {
        return Err(KernelError("the norm kernel returned no tensor".into()));
    }
    // SAFETY: `out` was allocated by the shim with `new at::Tensor`; tch takes
    // ownership and frees it on drop.
    Ok(unsafe { Tensor::from_ptr(out) })
}

/// Multiplies every tensor in place by the scalar tensor `factor` (on their
/// device: no host read).
pub fn mul_tensor_(ts: &[Tensor], factor: &Tensor) -> Result<(), KernelError> {
    let p = ptrs(ts);
    let mut err = std::ptr::null_mut();
    // SAFETY: as in `adamw`; the shim only reads `factor`.
    let rc = unsafe {
        selfsup_foreach_mul_tensor(
            p.as_ptr(),
            p.len(),
            factor.as_ptr() as *mut C_tensor,
            &mut err,
        )
    };
    status(rc, err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    fn t(v: &[f32]) -> Tensor {
        Tensor::from_slice(v)
    }

    /// The kernels run on the CPU (so the optimisers' tests exercise them,
    /// not the fallback), with torch.optim's arithmetic.
    #[test]
    fn kernels_run_and_compute_what_torch_does() {
        // One AdamW step from zero moments, step 1: the update is
        // lr * g / (|g| + eps) after decay p * (1 - lr * wd).
        let p = t(&[1.0, -2.0]);
        let g = t(&[0.5, -0.25]);
        let (m, v) = (p.zeros_like(), p.zeros_like());
        let s = Tensor::full([], 1.0, (Kind::Float, Device::Cpu));
        adamw(
            &[p.shallow_clone()],
            &[g.shallow_clone()],
            &[m.shallow_clone()],
            &[v.shallow_clone()],
            &[s],
            0.1,
            (0.9, 0.999),
            0.01,
            1e-8,
        )
        .unwrap();
        let want = [1.0 * (1.0 - 0.001) - 0.1, -2.0 * (1.0 - 0.001) + 0.1];
        let got = Vec::<f32>::try_from(&p).unwrap();
        assert!(
            (got[0] - want[0]).abs() < 1e-6 && (got[1] - want[1]).abs() < 1e-6,
            "{got:?}"
        );
        assert!((Vec::<f32>::try_from(&m).unwrap()[0] - 0.05).abs() < 1e-7);

        // SGD: buf = 0.9 * 0 + (g + wd p); p -= lr * buf.
        let p = t(&[1.0]);
        let b = p.zeros_like();
        sgd(
            &[p.shallow_clone()],
            &[t(&[2.0])],
            &[b.shallow_clone()],
            0.5,
            0.9,
            0.1,
        )
        .unwrap();
        assert!((Vec::<f32>::try_from(&p).unwrap()[0] - (1.0 - 0.1 * 2.5)).abs() < 1e-6);
        assert!((Vec::<f32>::try_from(&b).unwrap()[0] - 2.5).abs() < 1e-6);

        let xs = [t(&[3.0, 0.0]), t(&[4.0])];
        let n = total_norm(&xs).unwrap();
        assert!((n.double_value(&[]) - 5.0).abs() < 1e-6);
        mul_tensor_(&xs, &Tensor::from(0.5f32)).unwrap();
        assert_eq!(Vec::<f32>::try_from(&xs[1]).unwrap(), vec![2.0]);
        add_scalar_(&xs, 1.0).unwrap();
        assert_eq!(Vec::<f32>::try_from(&xs[0]).unwrap(), vec![2.5, 1.0]);
        zero_(&xs).unwrap();
        assert_eq!(Vec::<f32>::try_from(&xs[0]).unwrap(), vec![0.0, 0.0]);
    }

    /// ATen's refusals come back as errors with its message, not aborts.
    #[test]
    fn a_failing_kernel_is_an_error() {
        let p = t(&[1.0, 2.0]);
        let short = t(&[1.0]);
        let e = sgd(
            &[p.shallow_clone()],
            &[short],
            &[p.zeros_like()],
            0.0,
            0.9,
            0.1,
        )
        .unwrap_err();
        assert!(!e.0.is_empty());
        let e = adamw(&[p], &[], &[], &[], &[], 0.1, (0.9, 0.999), 0.0, 1e-8).unwrap_err();
        assert!(e.0.contains("different lengths"), "{e}");
        assert!(total_norm(&[]).is_err());
    }
}
