//! The state file parent and child share (`MAP_SHARED`): counters and the
//! input about to run; scratch files for targets that read paths.
use super::MAX_INPUT;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

pub(super) const MAGIC: u64 = 0x7365_6c66_7375_7046; // "selfsupF"
const HEADER: usize = 128;

/// The counters at the start of the state file.
#[repr(C)]
pub(super) struct Shared {
    pub(super) magic: AtomicU64,
    pub(super) execs: AtomicU64,
    pub(super) panics: AtomicU64,
    pub(super) max_alloc: AtomicU64,
    pub(super) over_warn: AtomicU64,
    pub(super) refused: AtomicU64,
    pub(super) in_exec: AtomicU64,
    pub(super) input_len: AtomicU64,
    pub(super) accepted: AtomicU64,
    pub(super) done: AtomicU64,
    pub(super) seeds: AtomicU64,
    pub(super) cap_hits: AtomicU64,
}

/// A `MAP_SHARED` mapping of the state file.
pub(super) struct Region {
    ptr: *mut u8,
    len: usize,
}

impl Region {
    pub(super) fn map(path: &Path, create: bool) -> std::io::Result<Self> {
        let len = HEADER + MAX_INPUT;
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(create)
            .open(path)?;
        f.set_len(len as u64)?;
        use std::os::fd::AsRawFd;
        // SAFETY: a fresh shared read-write mapping of a file we just sized to
        // `len`; checked for MAP_FAILED below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Self {
            ptr: ptr as *mut u8,
            len,
        })
    }

    /// Anonymous memory of the same layout (for [`run_in_process`]).
    pub(super) fn anon() -> Self {
        let len = HEADER + MAX_INPUT;
        // SAFETY: a fresh private anonymous mapping; on failure (MAP_FAILED)
        // we abort, as an allocation failure would.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            std::process::abort();
        }
        Self {
            ptr: ptr as *mut u8,
            len,
        }
    }

    pub(super) fn shared(&self) -> &Shared {
        // SAFETY: the mapping is page-aligned, at least HEADER bytes long, and
        // `Shared` is only atomics (valid for any bit pattern).
        unsafe { &*(self.ptr as *const Shared) }
    }

    pub(super) fn set_input(&self, data: &[u8]) {
        let n = data.len().min(MAX_INPUT);
        let s = self.shared();
        s.input_len.store(0, Relaxed);
        // SAFETY: HEADER + n <= len; the parent only reads this area after
        // the child has stopped.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr.add(HEADER), n) };
        s.input_len.store(n as u64, Relaxed);
    }

    pub(super) fn input(&self) -> Vec<u8> {
        let n = (self.shared().input_len.load(Relaxed) as usize).min(MAX_INPUT);
        // SAFETY: HEADER + n <= len, and the child that wrote it has stopped.
        unsafe { std::slice::from_raw_parts(self.ptr.add(HEADER), n) }.to_vec()
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what `map` mapped.
        unsafe { libc::munmap(self.ptr as *mut libc::c_void, self.len) };
    }
}

/// A folder of this process's own in /dev/shm (or the temporary folder) for
/// targets whose reader only takes a path.
pub fn scratch_dir() -> &'static Path {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let d = scratch_for(std::process::id());
        let _ = std::fs::create_dir_all(&d);
        d
    })
}

pub(super) fn scratch_for(pid: u32) -> PathBuf {
    let base = Path::new("/dev/shm");
    let base = if base.is_dir() {
        base.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    base.join(format!("selfsup-fuzz-{pid}"))
}

/// Writes `data` to `name` in [`scratch_dir`] and returns its path.
pub fn scratch_file(name: &str, data: &[u8]) -> Result<PathBuf, String> {
    let p = scratch_dir().join(name);
    if std::fs::write(&p, data).is_err() {
        // Removed after an earlier in-process run: make it again.
        let _ = std::fs::create_dir_all(scratch_dir());
        std::fs::write(&p, data).map_err(|e| format!("scratch file {}: {e}", p.display()))?;
    }
    Ok(p)
}
