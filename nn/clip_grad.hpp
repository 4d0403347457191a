// Gradient clipping, after torch.nn.utils.clip_grad_norm_ / clip_grad_value_: the norm is taken
// over all gradients together, as if concatenated into one vector, and they are scaled in place.
//   total = || (||g_1||_p, ..., ||g_k||_p) ||_p          (max |g| for p = infinity)
//   every g *= max_norm / (total + 1e-6)                 only when that factor is below 1
// Parameters without a gradient, and frozen ones (requires_grad false, which may still hold a
// stale gradient), take no part, as in Optimizer::step.
#pragma once
#include <vector>

#include "engine/tensor.hpp"

namespace mg::nn {

// Returns the total norm of the gradients before clipping (0 when there are none). norm_type may
// be INFINITY. error_if_nonfinite: throw instead of scaling by a NaN or infinite norm.
double clip_grad_norm_(const std::vector<Tensor>& parameters, double max_norm, double norm_type = 2.0,
                       bool error_if_nonfinite = false);

// Clamps every gradient element into [-clip_value, clip_value].
void clip_grad_value_(const std::vector<Tensor>& parameters, double clip_value);

}  // namespace mg::nn
