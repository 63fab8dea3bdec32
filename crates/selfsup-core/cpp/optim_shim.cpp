// Multi-tensor optimiser kernels of ATen for selfsup-core's optimisers: one
// fused AdamW / SGD update, one gradient norm and one zeroing for a whole list
// of parameters, instead of a dozen kernel launches per parameter. Every entry
// point catches C++ exceptions and returns them as a malloc'ed message in *err
// (freed by the caller with free()); 0 means success.
#include <ATen/ATen.h>
#include <cstdlib>
#include <cstring>
#include <vector>

namespace {

std::vector<at::Tensor> list(at::Tensor** ts, size_t n) {
  std::vector<at::Tensor> out;
  out.reserve(n);
  for (size_t i = 0; i < n; ++i) out.push_back(*ts[i]);
  return out;
}

int fail(char** err, const char* what) {
  if (err) {
    *err = static_cast<char*>(std::malloc(std::strlen(what) + 1));
    if (*err) std::strcpy(*err, what);
  }
  return 1;
}

}  // namespace

extern "C" {

// AdamW over n parameters; `steps` are float32 step counts, one per parameter,
// already incremented for this step (torch.optim.AdamW(fused=True) semantics).
int selfsup_fused_adamw(at::Tensor** params, at::Tensor** grads, at::Tensor** exp_avgs,
                        at::Tensor** exp_avg_sqs, at::Tensor** steps, size_t n, double lr,
                        double beta1, double beta2, double weight_decay, double eps,
                        char** err) {
  try {
    if (n == 0) return 0;
    auto p = list(params, n);
    auto g = list(grads, n);
    auto m = list(exp_avgs, n);
    auto v = list(exp_avg_sqs, n);
    auto s = list(steps, n);
    at::_fused_adamw_(p, g, m, v, {}, s, lr, beta1, beta2, weight_decay, eps,
                      /*amsgrad=*/false, /*maximize=*/false);
    return 0;
  } catch (const std::exception& e) {
    return fail(err, e.what());
  }
}

// SGD with heavy-ball momentum (dampening 0, no Nesterov) over n parameters,
// momentum buffers zero-initialised by the caller.
int selfsup_fused_sgd(at::Tensor** params, at::Tensor** grads, at::Tensor** momentum_bufs,
                      size_t n, double weight_decay, double momentum, double lr,
                      char** err) {
  try {
    if (n == 0) return 0;
    auto p = list(params, n);
    auto g = list(grads, n);
    auto b = list(momentum_bufs, n);
    at::_fused_sgd_(p, g, b, weight_decay, momentum, lr, /*dampening=*/0.0,
                    /*nesterov=*/false, /*maximize=*/false, /*is_first_step=*/false);
    return 0;
  } catch (const std::exception& e) {
    return fail(err, e.what());
  }
}

// Adds `value` to every tensor of the list, in place.
int selfsup_foreach_add_scalar(at::Tensor** ts, size_t n, double value, char** err) {
  try {
    if (n == 0) return 0;
    at::_foreach_add_(list(ts, n), value);
    return 0;
  } catch (const std::exception& e) {
    return fail(err, e.what());
  }
}

// Zeroes every tensor of the list, in place.
int selfsup_foreach_zero(at::Tensor** ts, size_t n, char** err) {
  try {
    if (n == 0) return 0;
    at::_foreach_zero_(list(ts, n));
    return 0;
  } catch (const std::exception& e) {
    return fail(err, e.what());
  }
}

// The l2 norm of all n tensors together, as a new float32 scalar tensor on
// their device (*out); nothing is read back to the host.
int selfsup_foreach_total_norm(at::Tensor** ts, size_t n, at::Tensor** out, char** err) {
  try {
    if (n == 0) return fail(err, "no tensors");
    auto norms = at::_foreach_norm(list(ts, n), 2, at::kFloat);
    auto total = at::linalg_vector_norm(at::stack(norms), 2);
    *out = new at::Tensor(std::move(total));
    return 0;
  } catch (const std::exception& e) {
    return fail(err, e.what());
  }
}

// Multiplies every tensor of the list by the scalar tensor `factor`, in place.
int selfsup_foreach_mul_tensor(at::Tensor** ts, size_t n, at::Tensor* factor, char** err) {
  try {
    if (n == 0) return 0;
    at::_foreach_mul_(list(ts, n), *factor);
    return 0;
  } catch (const std::exception& e) {
    return fail(err, e.what());
  }
}

}  // extern "C"
