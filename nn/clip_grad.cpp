// Gradient clipping; see clip_grad.hpp for the formula (torch.nn.utils.clip_grad, PyTorch 1.13).
#include "nn/clip_grad.hpp"

#include <algorithm>
#include <cmath>

#include "engine/autograd.hpp"
#include "engine/ops/elementwise.hpp"
#include "engine/ops/reduce.hpp"

namespace mg::nn {

namespace {
std::vector<Tensor> trained_grads(const std::vector<Tensor>& parameters) {
  std::vector<Tensor> grads;
  for (const auto& p : parameters)
    if (p.defined() && p.requires_grad() && p.grad().defined()) grads.push_back(p.grad());
  return grads;
}
}  // namespace

double clip_grad_norm_(const std::vector<Tensor>& parameters, double max_norm, double norm_type,
                       bool error_if_nonfinite) {
  MG_CHECK(norm_type > 0, "clip_grad_norm_: norm_type must be positive, got ", norm_type);
  NoGradGuard no_grad;
  const std::vector<Tensor> grads = trained_grads(parameters);
  if (grads.empty()) return 0.0;
  double total = 0.0;
  if (std::isinf(norm_type)) {
    for (const auto& g : grads) total = std::max(total, amax(abs(g)).item());
  } else {
    // The p-norm of the per-gradient norms, as torch stacks them; gradients may differ in dtype.
    for (const auto& g : grads) total += std::pow(norm(g, norm_type).item(), norm_type);
    total = std::pow(total, 1.0 / norm_type);
  }
  MG_CHECK(!error_if_nonfinite || std::isfinite(total), "clip_grad_norm_: the total norm of order ",
           norm_type, " of the gradients is non-finite (", total, "), so it cannot be clipped");
  const double clip_coef = max_norm / (total + 1e-6);
  if (clip_coef < 1.0)
    for (Tensor g : grads) g.copy_(g * clip_coef);
  return total;
}

void clip_grad_value_(const std::vector<Tensor>& parameters, double clip_value) {
  NoGradGuard no_grad;
  for (Tensor g : trained_grads(parameters)) g.copy_(clamp(g, -clip_value, clip_value));
}

}  // namespace mg::nn
