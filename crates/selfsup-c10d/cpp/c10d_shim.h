// C ABI of the c10d shim: what the Rust side of selfsup-c10d calls.
// Tensors cross as `at::Tensor*` (what tch's `Tensor::as_ptr` holds).
// Every call that can fail returns 0 on success and 1 on failure, with a
// heap-allocated message in `*err` that the caller frees with
// `selfsup_c10d_free_error`.
#pragma once
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct selfsup_pg selfsup_pg;

// Rendezvous through a TCPStore at master_addr:port (rank 0 hosts it), then a
// process group of `backend` ("gloo" or "nccl"). Returns NULL on failure.
selfsup_pg* selfsup_c10d_new(const char* backend, const char* master_addr, uint16_t port,
                             int rank, int world_size, int64_t timeout_ms, char** err);
void selfsup_c10d_free(selfsup_pg* pg);
void selfsup_c10d_free_error(char* err);
// 1 when NCCL process groups can be created (selfsup_c10d_load_nccl succeeded).
int selfsup_c10d_has_nccl(void);
// Loads libselfsup_c10d_nccl.so from `path` (dlopen; it brings libtorch_cuda,
// NCCL and the CUDA runtime); 0 on success, 1 and dlerror's text on failure.
int selfsup_c10d_load_nccl(const char* path, char** err);
// 1 (and the message) when a collective inside autograd's backward failed:
// backward cannot return an error, so the shim keeps the first one here and
// hands back zero gradients until the caller stops.
int selfsup_c10d_deferred_error(selfsup_pg* pg, char** err);

// In place: `tensor` becomes the sum over ranks.
int selfsup_c10d_all_reduce_sum(selfsup_pg* pg, void* tensor, char** err);
// In place: every rank's `tensor` becomes rank `root`'s.
int selfsup_c10d_broadcast(selfsup_pg* pg, void* tensor, int root, char** err);
int selfsup_c10d_barrier(selfsup_pg* pg, char** err);
// `*out` = the `input` of every rank concatenated along dim 0 in rank order.
// The result is differentiable: backward sums the gradient over ranks and
// hands each rank the slice of its own input.
int selfsup_c10d_all_gather_with_grad(selfsup_pg* pg, void* input, void** out, char** err);
// `*out` = sum over ranks of `input`, differentiable (backward all-reduces
// the gradient): what synchronised batch norm needs.
int selfsup_c10d_all_reduce_sum_with_grad(selfsup_pg* pg, void* input, void** out, char** err);

#ifdef __cplusplus
}
#endif
