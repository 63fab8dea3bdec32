//! A counting global allocator: the system allocator, plus the largest single
//! request seen since the last [`reset_exec_max`], and a hard cap above which
//! a request is refused (null is returned, so `Vec::try_reserve` reports an
//! error and an infallible allocation aborts the process: the fuzz loop runs
//! in a child process for that reason).
//!
//! Only Rust allocations are seen; libtorch allocates through its own C++
//! allocator, which this does not wrap.
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering::Relaxed};

/// Default hard cap on one allocation: 1 GiB.
pub const DEFAULT_CAP: usize = 1 << 30;
/// Default warning cap on one allocation: 256 MiB.
pub const DEFAULT_WARN: usize = 256 << 20;

static CAP: AtomicUsize = AtomicUsize::new(usize::MAX);
static EXEC_MAX: AtomicUsize = AtomicUsize::new(0);
static REFUSED_SLOT: AtomicPtr<AtomicU64> = AtomicPtr::new(std::ptr::null_mut());

/// The allocator; installed as `#[global_allocator]` by this crate, so every
/// binary and test that links it counts.
pub struct Counting;

#[inline]
fn admit(size: usize) -> bool {
    if size > EXEC_MAX.load(Relaxed) {
        EXEC_MAX.fetch_max(size, Relaxed);
    }
    if size > CAP.load(Relaxed) {
        let slot = REFUSED_SLOT.load(Relaxed);
        if !slot.is_null() {
            // SAFETY: the slot is set by `set_refused_slot` to an atomic in a
            // mapping that lives as long as the process.
            unsafe { (*slot).store(size as u64, Relaxed) };
        }
        return false;
    }
    true
}

// SAFETY: every call is forwarded to `System` unchanged, or refused with null,
// which `GlobalAlloc` allows.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !admit(layout.size()) {
            return std::ptr::null_mut();
        }
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !admit(layout.size()) {
            return std::ptr::null_mut();
        }
        System.alloc_zeroed(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !admit(new_size) {
            return std::ptr::null_mut();
        }
        System.realloc(ptr, layout, new_size)
    }
}

/// Refuses every later allocation above `bytes`.
pub fn set_cap(bytes: usize) {
    CAP.store(bytes, Relaxed);
}

/// Where a refused request's size is written (the shared state of a fuzz
/// child, so the parent can tell an allocation-cap abort from another one).
///
/// # Safety
/// `slot` must stay valid for the rest of the process.
pub unsafe fn set_refused_slot(slot: *const AtomicU64) {
    REFUSED_SLOT.store(slot as *mut AtomicU64, Relaxed);
}

/// Forgets the largest allocation seen so far.
pub fn reset_exec_max() {
    EXEC_MAX.store(0, Relaxed);
}

/// The largest single allocation since the last [`reset_exec_max`].
pub fn exec_max() -> usize {
    EXEC_MAX.load(Relaxed)
}
