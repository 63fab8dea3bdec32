// ProcessGroupNCCL, compiled into its own shared library
// (libselfsup_c10d_nccl.so) when build.rs finds NCCL's and CUDA's headers and
// libtorch_cuda. Only that library links libtorch_cuda (and through it
// libnccl.so.2 and the CUDA runtime); the shim dlopens it when a run asks for
// NCCL, so a machine without NCCL still starts every selfsup binary.
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <exception>

namespace {

char* dup_message(const char* msg) {
  size_t n = std::strlen(msg);
  char* out = static_cast<char*>(std::malloc(n + 1));
  if (out != nullptr) {
    std::memcpy(out, msg, n + 1);
  }
  return out;
}

}  // namespace

// `*out` = an NCCL process group of `size` ranks over `store`; 0 on success,
// 1 and a malloc'd message in `*err` on failure. Looked up by name (dlsym)
// from the shim, hence extern "C" (the arguments are C++ objects of the same
// libtorch on both sides).
extern "C" int selfsup_c10d_nccl_make(const c10::intrusive_ptr<c10d::Store>* store, int rank,
                                      int size, int64_t timeout_ms,
                                      c10::intrusive_ptr<c10d::Backend>* out, char** err) {
  try {
    std::chrono::milliseconds timeout(timeout_ms);
    auto options = c10d::ProcessGroupNCCL::Options::create();
    // The shim's wait() polls every collective against `timeout` and fails with
    // a message; NCCL's watchdog, which kills the process, only backs it up.
    options->timeout = timeout + std::max(std::chrono::milliseconds(60000), timeout / 10);
    *out = c10::make_intrusive<c10d::ProcessGroupNCCL>(*store, rank, size, options);
    return 0;
  } catch (const c10::Error& e) {
    *err = dup_message(e.what_without_backtrace());
  } catch (const std::exception& e) {
    *err = dup_message(e.what());
  } catch (...) {
    *err = dup_message("unknown C++ exception creating the NCCL process group");
  }
  return 1;
}
