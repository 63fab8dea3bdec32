//! The C ABI of `cpp/c10d_shim.h`.
use std::ffi::{c_char, c_int, c_void};

#[repr(C)]
pub struct SelfsupPg {
    _private: [u8; 0],
}

extern "C" {
    pub fn selfsup_c10d_new(
        backend: *const c_char,
        master_addr: *const c_char,
        port: u16,
        rank: c_int,
        world_size: c_int,
        timeout_ms: i64,
        err: *mut *mut c_char,
    ) -> *mut SelfsupPg;
    pub fn selfsup_c10d_free(pg: *mut SelfsupPg);
    pub fn selfsup_c10d_free_error(err: *mut c_char);
    pub fn selfsup_c10d_load_nccl(path: *const c_char, err: *mut *mut c_char) -> c_int;
    pub fn selfsup_c10d_deferred_error(pg: *mut SelfsupPg, err: *mut *mut c_char) -> c_int;
    pub fn selfsup_c10d_all_reduce_sum(
        pg: *mut SelfsupPg,
        tensor: *mut c_void,
        err: *mut *mut c_char,
    ) -> c_int;
    pub fn selfsup_c10d_broadcast(
        pg: *mut SelfsupPg,
        tensor: *mut c_void,
        root: c_int,
        err: *mut *mut c_char,
    ) -> c_int;
    pub fn selfsup_c10d_barrier(pg: *mut SelfsupPg, err: *mut *mut c_char) -> c_int;
    pub fn selfsup_c10d_all_gather_with_grad(
        pg: *mut SelfsupPg,
        input: *mut c_void,
        out: *mut *mut c_void,
        err: *mut *mut c_char,
    ) -> c_int;
    pub fn selfsup_c10d_all_reduce_sum_with_grad(
        pg: *mut SelfsupPg,
        input: *mut c_void,
        out: *mut *mut c_void,
        err: *mut *mut c_char,
    ) -> c_int;
}
