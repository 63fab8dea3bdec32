// The c10d shim: PyTorch's TCPStore, ProcessGroupGloo and ProcessGroupNCCL
// behind the C ABI of c10d_shim.h. It implements no collective itself.
#include "c10d_shim.h"

#include <torch/csrc/autograd/custom_function.h>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <dlfcn.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

// `selfsup_c10d_nccl_make` of libselfsup_c10d_nccl.so (c10d_nccl.cpp), once
// selfsup_c10d_load_nccl has loaded it: this object never references
// libtorch_cuda, so binaries start where NCCL or CUDA is missing.
using nccl_make_fn = int (*)(const c10::intrusive_ptr<c10d::Store>*, int, int, int64_t,
                             c10::intrusive_ptr<c10d::Backend>*, char**);
std::atomic<nccl_make_fn> nccl_make{nullptr};

struct selfsup_pg {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> backend;
  int rank;
  int size;
  // NCCL's Work::wait() returns at once (it only orders the CUDA streams):
  // the shim polls it against this deadline instead (see wait()).
  bool poll_work = false;
  std::chrono::milliseconds timeout{0};
  std::mutex deferred_mutex;
  std::string deferred;  // first failure inside a backward pass
};

namespace {

char* dup_message(const char* msg) {
  size_t n = std::strlen(msg);
  char* out = static_cast<char*>(std::malloc(n + 1));
  if (out != nullptr) {
    std::memcpy(out, msg, n + 1);
  }
  return out;
}

// Runs `f`, turning any C++ exception into a message for Rust.
template <typename F>
int guarded(char** err, F&& f) {
  try {
    f();
    return 0;
  } catch (const c10::Error& e) {
    *err = dup_message(e.what_without_backtrace());
  } catch (const std::exception& e) {
    *err = dup_message(e.what());
  } catch (...) {
    *err = dup_message("unknown C++ exception in c10d");
  }
  return 1;
}

// Waits for `work`. Gloo's wait() blocks and fails on its own timeout. NCCL's
// returns at once: a dead rank would then be found by NCCL's watchdog, which
// tears the process down without a word for Rust. So NCCL work is polled until
// it completes or `pg->timeout` passes (the watchdog is set later, see
// c10d_nccl.cpp), then aborted with the same message as a dead Gloo peer's.
void wait(selfsup_pg* pg, const c10::intrusive_ptr<c10d::Work>& work) {
  if (pg->poll_work) {
    const auto deadline = std::chrono::steady_clock::now() + pg->timeout;
    while (!work->isCompleted()) {
      if (std::chrono::steady_clock::now() >= deadline) {
        work->abort();
        throw std::runtime_error(
            "NCCL collective did not complete within " +
            std::to_string(pg->timeout.count() / 1000) +
            " s: another rank has probably exited or stopped (see its log); --dist-timeout "
            "sets this limit");
      }
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
  }
  work->wait();
}

at::Tensor all_gather(selfsup_pg* pg, const at::Tensor& input) {
  std::vector<at::Tensor> in{input.contiguous()};
  std::vector<std::vector<at::Tensor>> out(1);
  for (int r = 0; r < pg->size; ++r) {
    out[0].push_back(at::empty_like(in[0]));
  }
  wait(pg, pg->backend->allgather(out, in));
  return at::cat(out[0], 0);
}

at::Tensor all_reduce_sum(selfsup_pg* pg, const at::Tensor& input) {
  std::vector<at::Tensor> t{input.contiguous().clone()};
  wait(pg, pg->backend->allreduce(t));
  return t[0];
}

// The backward of both autograd functions: the gradient summed over ranks,
// or zeros and a deferred error when a rank has gone.
at::Tensor backward_sum(selfsup_pg* pg, const at::Tensor& grad) {
  {
    std::lock_guard<std::mutex> lock(pg->deferred_mutex);
    if (!pg->deferred.empty()) {
      return at::zeros_like(grad);
    }
  }
  try {
    return all_reduce_sum(pg, grad);
  } catch (const c10::Error& e) {
    std::lock_guard<std::mutex> lock(pg->deferred_mutex);
    pg->deferred = e.what_without_backtrace();
  } catch (const std::exception& e) {
    std::lock_guard<std::mutex> lock(pg->deferred_mutex);
    pg->deferred = e.what();
  }
  return at::zeros_like(grad);
}

}  // namespace

// Gather with grad: forward concatenates every rank's rows, backward sums the
// gradient of the whole gathered tensor over ranks (each rank's loss used
// every rank's rows) and returns this rank's slice.
struct GatherWithGrad : public torch::autograd::Function<GatherWithGrad> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& input,
                            int64_t pg_addr) {
    auto* pg = reinterpret_cast<selfsup_pg*>(pg_addr);
    ctx->saved_data["pg"] = pg_addr;
    ctx->saved_data["rows"] = input.size(0);
    return all_gather(pg, input.detach());
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto* pg = reinterpret_cast<selfsup_pg*>(ctx->saved_data["pg"].toInt());
    int64_t rows = ctx->saved_data["rows"].toInt();
    at::Tensor total = backward_sum(pg, grads[0]);
    return {total.narrow(0, pg->rank * rows, rows), at::Tensor()};
  }
};

// Sum over ranks whose gradient is the sum of the ranks' gradients.
struct AllReduceSumWithGrad : public torch::autograd::Function<AllReduceSumWithGrad> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& input,
                            int64_t pg_addr) {
    ctx->saved_data["pg"] = pg_addr;
    return all_reduce_sum(reinterpret_cast<selfsup_pg*>(pg_addr), input.detach());
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto* pg = reinterpret_cast<selfsup_pg*>(ctx->saved_data["pg"].toInt());
    return {backward_sum(pg, grads[0]), at::Tensor()};
  }
};

extern "C" {

selfsup_pg* selfsup_c10d_new(const char* backend, const char* master_addr, uint16_t port,
                             int rank, int world_size, int64_t timeout_ms, char** err) {
  selfsup_pg* result = nullptr;
  guarded(err, [&] {
    std::chrono::milliseconds timeout(timeout_ms);
    c10d::TCPStoreOptions opts;
    opts.port = port;
    opts.isServer = rank == 0;
    opts.numWorkers = static_cast<size_t>(world_size);
    opts.waitWorkers = true;
    opts.timeout = timeout;
    auto store = c10::make_intrusive<c10d::TCPStore>(std::string(master_addr), opts);
    std::string name(backend);
    c10::intrusive_ptr<c10d::Backend> pg;
    if (name == "gloo") {
      auto options = c10d::ProcessGroupGloo::Options::create(timeout);
      const char* iface = std::getenv("GLOO_SOCKET_IFNAME");
      if (iface != nullptr && *iface != '\0') {
        options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(iface));
      } else {
        options->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
      }
      pg = c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, world_size, options);
    } else if (name == "nccl") {
      nccl_make_fn make = nccl_make.load();
      if (make == nullptr) {
        throw std::runtime_error("NCCL is not loaded (selfsup_c10d_load_nccl was not called)");
      }
      c10::intrusive_ptr<c10d::Store> base = store;
      char* make_err = nullptr;
      if (make(&base, rank, world_size, timeout_ms, &pg, &make_err) != 0) {
        std::string msg = make_err != nullptr ? make_err : "unknown error";
        std::free(make_err);
        throw std::runtime_error(msg);
      }
    } else {
      throw std::invalid_argument("unknown c10d backend '" + name + "' (gloo or nccl)");
    }
    result = new selfsup_pg();
    result->store = store;
    result->backend = pg;
    result->rank = rank;
    result->size = world_size;
    result->poll_work = name == "nccl";
    result->timeout = timeout;
  });
  return result;
}

void selfsup_c10d_free(selfsup_pg* pg) {
  delete pg;
}

void selfsup_c10d_free_error(char* err) {
  std::free(err);
}

int selfsup_c10d_has_nccl(void) {
  return nccl_make.load() != nullptr ? 1 : 0;
}

int selfsup_c10d_load_nccl(const char* path, char** err) {
  if (nccl_make.load() != nullptr) {
    return 0;
  }
  void* handle = dlopen(path, RTLD_NOW | RTLD_GLOBAL);
  if (handle == nullptr) {
    const char* why = dlerror();
    *err = dup_message(why != nullptr ? why : "dlopen failed");
    return 1;
  }
  void* sym = dlsym(handle, "selfsup_c10d_nccl_make");
  if (sym == nullptr) {
    *err = dup_message("libselfsup_c10d_nccl.so lacks selfsup_c10d_nccl_make (a stale build?)");
    return 1;
  }
  // The handle stays open for the life of the process on purpose.
  nccl_make.store(reinterpret_cast<nccl_make_fn>(sym));
  return 0;
}

int selfsup_c10d_deferred_error(selfsup_pg* pg, char** err) {
  std::lock_guard<std::mutex> lock(pg->deferred_mutex);
  if (pg->deferred.empty()) {
    return 0;
  }
  *err = dup_message(pg->deferred.c_str());
  return 1;
}

int selfsup_c10d_all_reduce_sum(selfsup_pg* pg, void* tensor, char** err) {
  return guarded(err, [&] {
    auto* t = static_cast<at::Tensor*>(tensor);
    TORCH_CHECK(t->is_contiguous(), "all_reduce needs a contiguous tensor");
    std::vector<at::Tensor> ts{*t};
    wait(pg, pg->backend->allreduce(ts));
  });
}

int selfsup_c10d_broadcast(selfsup_pg* pg, void* tensor, int root, char** err) {
  return guarded(err, [&] {
    auto* t = static_cast<at::Tensor*>(tensor);
    TORCH_CHECK(t->is_contiguous(), "broadcast needs a contiguous tensor");
    std::vector<at::Tensor> ts{*t};
    c10d::BroadcastOptions opts;
    opts.rootRank = root;
    wait(pg, pg->backend->broadcast(ts, opts));
  });
}

int selfsup_c10d_barrier(selfsup_pg* pg, char** err) {
  return guarded(err, [&] { wait(pg, pg->backend->barrier()); });
}

int selfsup_c10d_all_gather_with_grad(selfsup_pg* pg, void* input, void** out, char** err) {
  return guarded(err, [&] {
    auto* t = static_cast<at::Tensor*>(input);
    at::Tensor r = GatherWithGrad::apply(*t, reinterpret_cast<int64_t>(pg));
    *out = new at::Tensor(std::move(r));
  });
}

int selfsup_c10d_all_reduce_sum_with_grad(selfsup_pg* pg, void* input, void** out, char** err) {
  return guarded(err, [&] {
    auto* t = static_cast<at::Tensor*>(input);
    at::Tensor r = AllReduceSumWithGrad::apply(*t, reinterpret_cast<int64_t>(pg));
    *out = new at::Tensor(std::move(r));
  });
}

}  // extern "C"
