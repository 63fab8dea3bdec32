// ProcessGroupNCCL, compiled with USE_C10D_NCCL when build.rs finds NCCL's and
// CUDA's headers and libtorch_cuda; otherwise a build without NCCL that says so.
#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>

#include <chrono>
#include <stdexcept>

#ifdef USE_C10D_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>

c10::intrusive_ptr<c10d::Backend> selfsup_make_nccl(const c10::intrusive_ptr<c10d::Store>& store,
                                                    int rank, int size,
                                                    std::chrono::milliseconds timeout) {
  auto options = c10d::ProcessGroupNCCL::Options::create();
  options->timeout = timeout;
  return c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, size, options);
}

bool selfsup_nccl_built() {
  return true;
}
#else
c10::intrusive_ptr<c10d::Backend> selfsup_make_nccl(const c10::intrusive_ptr<c10d::Store>&, int,
                                                    int, std::chrono::milliseconds) {
  throw std::runtime_error(
      "this selfsup was built without NCCL (build.rs found no libtorch_cuda or no NCCL/CUDA "
      "headers); use backend = \"gloo\"");
}

bool selfsup_nccl_built() {
  return false;
}
#endif
