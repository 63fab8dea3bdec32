//! A c10d process group (TCPStore rendezvous + Gloo or NCCL) as a selfsup
//! [`Collective`].
use std::ffi::{c_char, c_void, CStr, CString};
use std::sync::Mutex;
use std::time::Duration;

use selfsup_core::distributed::Collective;
use tch::Tensor;

use crate::error::{Error, Result};
use crate::ffi;
use crate::launch::Launch;

/// Which c10d backend carries the collectives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// ProcessGroupGloo: CPU tensors (and CUDA tensors, through host copies).
    Gloo,
    /// ProcessGroupNCCL: CUDA tensors.
    Nccl,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Gloo => "gloo",
            Backend::Nccl => "nccl",
        }
    }

    /// Whether this build has NCCL support (libtorch with CUDA and the NCCL
    /// headers were found when it was compiled), loaded or not.
    pub fn nccl_built() -> bool {
        cfg!(selfsup_nccl)
    }

    /// Whether NCCL groups can be created here: the build has NCCL and its
    /// library (with libtorch_cuda, NCCL and the CUDA runtime) loads.
    pub fn nccl_available() -> bool {
        load_nccl().is_ok()
    }
}

/// Where `libselfsup_c10d_nccl.so` may be: where the build wrote it, then
/// beside the running binary.
fn nccl_library_paths() -> Vec<std::path::PathBuf> {
    const NAME: &str = "libselfsup_c10d_nccl.so";
    let mut paths = Vec::new();
    if let Some(built) = option_env!("SELFSUP_C10D_NCCL_LIB") {
        paths.push(std::path::PathBuf::from(built));
    }
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.to_path_buf()))
    {
        paths.push(dir.join(NAME));
    }
    paths
}

/// Loads the NCCL part of the shim, once; the error says why it cannot be.
/// Nothing of NCCL or CUDA is linked into the binaries: only this load
/// brings them in, so CPU runs start on machines without them.
fn load_nccl() -> std::result::Result<(), String> {
    static LOADED: std::sync::OnceLock<std::result::Result<(), String>> =
        std::sync::OnceLock::new();
    LOADED
        .get_or_init(|| {
            if !cfg!(selfsup_nccl) {
                return Err("this selfsup was built without NCCL (build.rs found no \
                            libtorch_cuda or no NCCL/CUDA headers); use --backend gloo"
                    .into());
            }
            // libtorch_cuda first, as every CUDA use of selfsup.
            selfsup_core::device::load_cuda_library();
            let mut why = Vec::new();
            for path in nccl_library_paths() {
                if !path.exists() {
                    continue;
                }
                let Ok(c) = CString::new(path.to_string_lossy().as_bytes()) else {
                    continue;
                };
                let mut err: *mut c_char = std::ptr::null_mut();
                // SAFETY: a valid C string; err receives a message on failure.
                if unsafe { ffi::selfsup_c10d_load_nccl(c.as_ptr(), &mut err) } == 0 {
                    return Ok(());
                }
                why.push(format!("{}: {}", path.display(), take_message(err)));
            }
            if why.is_empty() {
                why.push(format!(
                    "libselfsup_c10d_nccl.so not found (looked at {:?})",
                    nccl_library_paths()
                ));
            }
            Err(format!(
                "NCCL cannot be loaded ({}); is libnccl.so.2 installed beside libtorch \
                 (pip's nvidia-nccl)? Or use --backend gloo",
                why.join("; ")
            ))
        })
        .clone()
}

/// Gradients are averaged in flat buckets of at most this many bytes (as
/// PyTorch's DDP, whose default is 25 MiB).
pub const DEFAULT_BUCKET_BYTES: usize = 25 << 20;

/// The process group of one run, shared by every rank.
pub struct ProcessGroup {
    raw: *mut ffi::SelfsupPg,
    rank: usize,
    world_size: usize,
}

// SAFETY: c10d process groups are used from several threads in PyTorch; the
// shim adds a mutex around its own state.
unsafe impl Send for ProcessGroup {}
unsafe impl Sync for ProcessGroup {}

fn take_message(err: *mut c_char) -> String {
    if err.is_null() {
        return "unknown error (no message)".into();
    }
    // SAFETY: the shim returns a NUL-terminated malloc'd string.
    let msg = unsafe { CStr::from_ptr(err) }
        .to_string_lossy()
        .into_owned();
    unsafe { ffi::selfsup_c10d_free_error(err) };
    msg
}

impl ProcessGroup {
    /// Joins the run: rank 0 hosts a TCPStore at `master_addr:master_port`, every
    /// rank connects and builds the `backend` group. Collectives that do not
    /// complete within `timeout` fail instead of hanging.
    pub fn join(launch: &Launch, backend: Backend, timeout: Duration) -> Result<Self> {
        let join_err = |message: String| Error::Join {
            rank: launch.rank,
            world_size: launch.world_size,
            master: format!("{}:{}", launch.master_addr, launch.master_port),
            message,
        };
        let addr = CString::new(launch.master_addr.as_str())
            .map_err(|_| join_err("MASTER_ADDR contains a NUL byte".into()))?;
        if backend == Backend::Nccl {
            load_nccl().map_err(join_err)?;
        }
        let name = CString::new(backend.name()).expect("backend names have no NUL");
        let mut err: *mut c_char = std::ptr::null_mut();
        // SAFETY: valid C strings; err receives a message on failure.
        let raw = unsafe {
            ffi::selfsup_c10d_new(
                name.as_ptr(),
                addr.as_ptr(),
                launch.master_port,
                launch.rank as i32,
                launch.world_size as i32,
                timeout.as_millis().min(i64::MAX as u128) as i64,
                &mut err,
            )
        };
        if raw.is_null() {
            return Err(join_err(take_message(err)));
        }
        Ok(Self {
            raw,
            rank: launch.rank,
            world_size: launch.world_size,
        })
    }

    /// This process's rank.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// Number of ranks.
    pub fn world_size(&self) -> usize {
        self.world_size
    }

    fn check(&self, op: &'static str, rc: i32, err: *mut c_char) -> Result<()> {
        if rc == 0 {
            return Ok(());
        }
        Err(Error::Collective {
            rank: self.rank,
            world_size: self.world_size,
            op,
            message: take_message(err),
        })
    }

    /// In place: `t` (contiguous) becomes its sum over ranks.
    pub fn all_reduce_sum(&self, t: &mut Tensor) -> Result<()> {
        let mut err = std::ptr::null_mut();
        // SAFETY: t is a live tensor; the shim checks contiguity.
        let rc = unsafe {
            ffi::selfsup_c10d_all_reduce_sum(self.raw, t.as_mut_ptr() as *mut c_void, &mut err)
        };
        self.check("all_reduce", rc, err)
    }

    /// In place: `t` (contiguous) becomes rank `root`'s `t`.
    pub fn broadcast(&self, t: &mut Tensor, root: usize) -> Result<()> {
        let mut err = std::ptr::null_mut();
        // SAFETY: as above.
        let rc = unsafe {
            ffi::selfsup_c10d_broadcast(
                self.raw,
                t.as_mut_ptr() as *mut c_void,
                root as i32,
                &mut err,
            )
        };
        self.check("broadcast", rc, err)
    }

    /// Returns when every rank has called it.
    pub fn barrier(&self) -> Result<()> {
        let mut err = std::ptr::null_mut();
        // SAFETY: a live group.
        let rc = unsafe { ffi::selfsup_c10d_barrier(self.raw, &mut err) };
        self.check("barrier", rc, err)
    }

    fn autograd_op(
        &self,
        op: &'static str,
        t: &Tensor,
        f: unsafe extern "C" fn(
            *mut ffi::SelfsupPg,
            *mut c_void,
            *mut *mut c_void,
            *mut *mut c_char,
        ) -> i32,
    ) -> Result<Tensor> {
        let mut input = t.shallow_clone();
        let mut out: *mut c_void = std::ptr::null_mut();
        let mut err = std::ptr::null_mut();
        // SAFETY: the shim writes a new heap `at::Tensor*` to `out` on success,
        // which `Tensor::from_ptr` takes ownership of.
        let rc = unsafe {
            f(
                self.raw,
                input.as_mut_ptr() as *mut c_void,
                &mut out,
                &mut err,
            )
        };
        self.check(op, rc, err)?;
        Ok(unsafe { Tensor::from_ptr(out as *mut torch_sys::C_tensor) })
    }

    /// Every rank's `t` concatenated along dim 0 in rank order; backward sums
    /// the gradient over ranks and keeps this rank's slice, so a loss over the
    /// global batch gets the gradient one process with that batch would.
    pub fn all_gather_with_grad(&self, t: &Tensor) -> Result<Tensor> {
        self.autograd_op("all_gather", t, ffi::selfsup_c10d_all_gather_with_grad)
    }

    /// The sum over ranks of `t`, differentiable (synchronised batch norm).
    pub fn all_reduce_sum_with_grad(&self, t: &Tensor) -> Result<Tensor> {
        self.autograd_op(
            "all_reduce (autograd)",
            t,
            ffi::selfsup_c10d_all_reduce_sum_with_grad,
        )
    }

    /// The first collective that failed inside a backward pass, if any.
    pub fn deferred_error(&self) -> Result<()> {
        let mut err = std::ptr::null_mut();
        // SAFETY: a live group.
        let rc = unsafe { ffi::selfsup_c10d_deferred_error(self.raw, &mut err) };
        self.check("backward collective", rc, err)
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        // SAFETY: created by selfsup_c10d_new, freed once.
        unsafe { ffi::selfsup_c10d_free(self.raw) }
    }
}

/// A [`ProcessGroup`] as the trainer's and the losses' [`Collective`].
///
/// The trait's operations cannot return errors (losses call them in the
/// middle of their arithmetic), so the first failure is kept and every later
/// operation becomes a shape-preserving no-op; the trainer asks
/// [`Collective::check`] after each step and stops with that error.
pub struct C10dCollective {
    pg: ProcessGroup,
    bucket_bytes: usize,
    failed: Mutex<Option<String>>,
}

impl C10dCollective {
    /// Wraps `pg`, averaging gradients in buckets of `bucket_bytes`.
    pub fn new(pg: ProcessGroup, bucket_bytes: usize) -> Self {
        Self {
            pg,
            bucket_bytes: bucket_bytes.max(1),
            failed: Mutex::new(None),
        }
    }

    /// The process group.
    pub fn process_group(&self) -> &ProcessGroup {
        &self.pg
    }

    fn failed(&self) -> bool {
        self.failed.lock().map(|f| f.is_some()).unwrap_or(true)
    }

    fn record(&self, e: Error) {
        if let Ok(mut f) = self.failed.lock() {
            if f.is_none() {
                tracing::debug!("{e}");
                *f = Some(e.to_string());
            }
        }
    }

    /// `[t of rank 0 | ... | t | ... ]` with zeros for the other ranks: the
    /// shape of a gather, after a failure.
    fn gather_placeholder(&self, t: &Tensor) -> Tensor {
        let mut parts = Vec::with_capacity(self.pg.world_size);
        for r in 0..self.pg.world_size {
            parts.push(if r == self.pg.rank {
                t.shallow_clone()
            } else {
                t.detach().zeros_like()
            });
        }
        Tensor::cat(&parts, 0)
    }

    /// Averages `tensors` over ranks, one flat all-reduce per bucket of
    /// tensors of the same kind and device.
    fn reduce_buckets(&self, tensors: &mut [Tensor]) -> Result<()> {
        let world = self.pg.world_size as f64;
        let mut start = 0;
        while start < tensors.len() {
            let kind = tensors[start].kind();
            let device = tensors[start].device();
            let mut end = start;
            let mut bytes = 0usize;
            while end < tensors.len()
                && tensors[end].kind() == kind
                && tensors[end].device() == device
                && (end == start || bytes + byte_size(&tensors[end]) <= self.bucket_bytes)
            {
                bytes += byte_size(&tensors[end]);
                end += 1;
            }
            let flat: Vec<Tensor> = tensors[start..end]
                .iter()
                .map(|t| t.detach().reshape([-1]))
                .collect();
            let mut bucket = Tensor::cat(&flat, 0);
            self.pg.all_reduce_sum(&mut bucket)?;
            let _ = bucket.g_div_scalar_(world);
            let mut offset = 0i64;
            tch::no_grad(|| {
                for t in &mut tensors[start..end] {
                    let n = t.numel() as i64;
                    let part = bucket.narrow(0, offset, n).view_as(t);
                    t.copy_(&part);
                    offset += n;
                }
            });
            start = end;
        }
        Ok(())
    }
}

fn byte_size(t: &Tensor) -> usize {
    t.numel() * t.kind().elt_size_in_bytes()
}

impl Collective for C10dCollective {
    fn rank(&self) -> usize {
        self.pg.rank
    }

    fn world_size(&self) -> usize {
        self.pg.world_size
    }

    fn all_gather_with_grad(&self, t: &Tensor) -> Tensor {
        if self.failed() {
            return self.gather_placeholder(t);
        }
        match self.pg.all_gather_with_grad(t) {
            Ok(g) => g,
            Err(e) => {
                self.record(e);
                self.gather_placeholder(t)
            }
        }
    }

    fn all_reduce_sum_with_grad(&self, t: &Tensor) -> Tensor {
        if self.failed() {
            return t.shallow_clone();
        }
        match self.pg.all_reduce_sum_with_grad(t) {
            Ok(s) => s,
            Err(e) => {
                self.record(e);
                t.shallow_clone()
            }
        }
    }

    fn all_reduce_mean_(&self, tensors: &mut [Tensor]) {
        if self.failed() || tensors.is_empty() {
            return;
        }
        if let Err(e) = self.reduce_buckets(tensors) {
            self.record(e);
        }
    }

    fn broadcast_(&self, tensors: &mut [Tensor], root: usize) {
        for t in tensors.iter_mut() {
            if self.failed() {
                return;
            }
            let mut buf = if t.is_contiguous() {
                t.detach()
            } else {
                t.detach().contiguous()
            };
            if let Err(e) = self.pg.broadcast(&mut buf, root) {
                self.record(e);
                return;
            }
            if !t.is_contiguous() {
                tch::no_grad(|| t.copy_(&buf));
            }
        }
    }

    fn barrier(&self) {
        if self.failed() {
            return;
        }
        if let Err(e) = self.pg.barrier() {
            self.record(e);
        }
    }

    fn check(&self) -> selfsup_core::Result<()> {
        if let Err(e) = self.pg.deferred_error() {
            self.record(e);
        }
        match self.failed.lock() {
            Ok(f) => match f.as_ref() {
                None => Ok(()),
                Some(msg) => Err(selfsup_core::Error::Distributed(msg.clone())),
            },
            Err(_) => Err(selfsup_core::Error::Distributed(
                "a thread panicked while holding the collective's state".into(),
            )),
        }
    }
}
