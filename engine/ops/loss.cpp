// softmax / log_softmax with the backend's fused row kernels, and the losses. cross_entropy and
// nll_loss are fused: one log-softmax pass forward, and a hand-written backward
// ((softmax - smoothed one-hot) * weight per row for cross_entropy), so nothing is saved but the
// log-probabilities, and logits of any magnitude stay finite.
#include "engine/ops/loss.hpp"

#include <limits>
#include <optional>

#include "engine/autograd.hpp"
#include "engine/profiler.hpp"
#include "engine/backend.hpp"
#include "engine/ops/elementwise.hpp"
#include "engine/ops/index.hpp"
#include "engine/ops/reduce.hpp"

namespace mg {
namespace {

// ---- softmax / log_softmax along any dim: the dim is moved last (a transpose, which is its own
// inverse) so that the backend sees contiguous [rows, cols].

Tensor softmax_impl(const char* name, const Tensor& x, int64_t dim, bool log) {
  MG_PROFILE(name);
  MG_CHECK(x.is_floating_point(), name, ": expected a floating-point tensor, got ",
           dtype_name(x.dtype()), " ", shape_str(x.sizes()));
  const int64_t d = wrap_dim(name, dim, x.dim());
  const bool last = x.dim() == 0 || d == x.dim() - 1;
  const int64_t cols = x.dim() == 0 ? 1 : x.size(d);
  const int64_t rows = cols == 0 ? 0 : x.numel() / cols;
  Tensor y;
  {
    NoGradGuard no_grad;  // the layout shuffles are internal
    Tensor moved = last ? x : x.transpose(d, -1);
    Tensor out = Tensor::empty(moved.sizes(), x.options());
    if (x.numel() > 0)
      backend_of(x).softmax_rows(moved.contiguous().reshape({rows, cols}), out.reshape({rows, cols}), log);
    y = last ? out : out.transpose(d, -1).contiguous();
  }
  if (!any_requires_grad({&x})) return record(name, y, {x}, nullptr);
  return record(name, y, {x}, [d, last, rows, cols, log, yd = y.detach()](const TensorList& g) {
    Tensor ym = last ? yd : yd.transpose(d, -1).contiguous();
    Tensor gm = (last ? g[0] : g[0].transpose(d, -1)).contiguous();
    Tensor dx = Tensor::empty(ym.sizes(), ym.options());
    if (ym.numel() > 0)
      backend_of(ym).softmax_rows_backward(ym.reshape({rows, cols}), gm.reshape({rows, cols}),
                                           dx.reshape({rows, cols}), log);
    return TensorList{last ? dx : dx.transpose(d, -1).contiguous()};
  });
}

// ---- class-index losses: input [N, C, d1, ...] (or unbatched [C]) with int32 targets
// [N, d1, ...] (or 0-d). The class dim is moved last so that row i of [M, C] pairs with target i.

struct ClassRows {
  Tensor rows;          // [M, C] contiguous, no history
  Shape input_sizes;
  Shape moved_sizes;    // input sizes with the class dim last
  Shape inverse;        // permutation from moved_sizes back to the input's layout; empty: none
  Shape target_sizes;
  int64_t M = 0, C = 0;
  Tensor index;         // [M, 1] int32 on the input's device; ignored targets replaced by 0
  Tensor valid;         // [M] in the input's dtype: 1 for a counted target, 0 for an ignored one
  Tensor count;         // 0-d, input's dtype and device: counted targets (the mean's denominator)
};

ClassRows class_rows(const char* op, const char* input_name, const Tensor& input,
                     const Tensor& target, int64_t ignore_index) {
  MG_CHECK(input.is_floating_point(), op, ": expected floating-point ", input_name, ", got ",
           dtype_name(input.dtype()), " ", shape_str(input.sizes()), " (target ",
           dtype_name(target.dtype()), " ", shape_str(target.sizes()), ")");
  MG_CHECK(input.dim() >= 1, op, ": expected ", input_name, " of shape [N, C], [N, C, d1, ...] or [C], "
           "got ", shape_str(input.sizes()), " (target shape ", shape_str(target.sizes()), ")");
  MG_CHECK(target.dtype() == kInt32, op, ": target must hold int32 class indices, got ",
           dtype_name(target.dtype()), " target of shape ", shape_str(target.sizes()), " for ",
           input_name, " of shape ", shape_str(input.sizes()));
  MG_CHECK(target.device() == input.device(), op, ": target on ", target.device().str(), " but ",
           input_name, " on ", input.device().str());

  ClassRows p;
  p.input_sizes = input.sizes();
  const int64_t class_dim = input.dim() == 1 ? 0 : 1;
  p.C = input.size(class_dim);
  p.target_sizes = input.sizes();
  p.target_sizes.erase(p.target_sizes.begin() + class_dim);
  if (target.sizes() != p.target_sizes) {
    const bool batch_mismatch = input.dim() >= 2 && target.dim() == input.dim() - 1 &&
                                target.dim() >= 1 && target.size(0) != input.size(0);
    if (batch_mismatch)
      throw Error(detail::concat(op, ": target batch size ", target.size(0), " does not match ",
                                 input_name, " batch size ", input.size(0), " (target shape ",
                                 shape_str(target.sizes()), ", ", input_name, " shape ",
                                 shape_str(input.sizes()), ")"));
    throw Error(detail::concat(op, ": target of shape ", shape_str(target.sizes()),
                               " does not match ", input_name, " of shape ",
                               shape_str(input.sizes()), "; expected target shape ",
                               shape_str(p.target_sizes)));
  }
  p.M = numel_of(p.target_sizes);

  // Labels never leave the input's device: the backend validates them (on a GPU without waiting
  // for it), and the gather index, mask and count are tensor ops. An ignore_index outside int32
  // matches no label.
  const bool ignorable = ignore_index >= std::numeric_limits<int32_t>::min() &&
                         ignore_index <= std::numeric_limits<int32_t>::max();
  const std::optional<int32_t> ignore =
      ignorable ? std::optional<int32_t>(static_cast<int32_t>(ignore_index)) : std::nullopt;
  backend_of(target).check_index_range(
      target.contiguous(), p.C, ignore,
      [op, input_name, C = p.C, sizes = input.sizes(), ignore_index](int32_t t) {
        return detail::concat(op, ": target label ", t, " is out of range [0, ", C, ") for ", C,
                              " classes (", input_name, " shape ", shape_str(sizes),
                              ", ignore_index ", ignore_index, ")");
      });
  NoGradGuard no_grad;
  const Tensor labels = target.reshape({p.M});
  const Tensor counted = ignore ? ne(labels, scalar_tensor(*ignore, labels.options()))
                                : ones({p.M}, labels.options());
  p.index = where(counted, labels, zeros({}, labels.options())).reshape({p.M, 1});
  p.valid = counted.to(input.dtype());
  p.count = p.valid.sum();

  if (input.dim() <= 2) {
    p.moved_sizes = input.sizes();
    p.rows = input.contiguous().reshape({p.M, p.C});
  } else {
    Shape order{0};
    for (int64_t d = 2; d < input.dim(); ++d) order.push_back(d);
    order.push_back(1);
    p.inverse = Shape{0, input.dim() - 1};
    for (int64_t d = 1; d < input.dim() - 1; ++d) p.inverse.push_back(d);
    Tensor moved = input.permute(order);
    p.moved_sizes = moved.sizes();
    p.rows = moved.contiguous().reshape({p.M, p.C});
  }
  return p;
}

// A [M, C] gradient back to the input's shape and layout.
Tensor rows_to_input(const Tensor& rows, const ClassRows& p) {
  Tensor moved = rows.reshape(p.moved_sizes);
  return p.inverse.empty() ? moved : moved.permute(p.inverse).contiguous();
}

// The per-row losses [M], ignored rows set to exactly 0, reduced.
Tensor reduce_class_loss(const Tensor& per_row, const ClassRows& p, Reduction reduction) {
  Tensor loss = where(p.valid, per_row, zeros_like(per_row));
  switch (reduction) {
    case Reduction::None: return loss.reshape(p.target_sizes);
    case Reduction::Sum: return loss.sum();
    case Reduction::Mean: break;
  }
  return loss.sum() / p.count;  // no counted target: 0/0 = NaN, as torch
}

// d loss / d per_row[i] for each row: the incoming gradient, spread by the reduction, zero for an
// ignored row. [M]
Tensor row_coefficients(const Tensor& grad, const ClassRows& p, Reduction reduction) {
  Tensor g = grad;  // a 0-d gradient for sum and mean broadcasts in `where`
  if (reduction == Reduction::None) g = grad.reshape({p.M});
  if (reduction == Reduction::Mean) g = grad / p.count;
  return where(p.valid, g, zeros({p.M}, grad.options()));
}

// Shapes must be equal (no broadcasting, as torch's bce_with_logits; mse_loss is stricter than
// torch, which only warns).
void check_pair(const char* op, const char* a_name, const Tensor& a, const char* b_name,
                const Tensor& b) {
  MG_CHECK(a.is_floating_point() && b.is_floating_point(), op, ": expected floating-point ",
           a_name, " and ", b_name, ", got ", dtype_name(a.dtype()), " ", shape_str(a.sizes()),
           " and ", dtype_name(b.dtype()), " ", shape_str(b.sizes()));
  MG_CHECK(a.dtype() == b.dtype(), op, ": dtype mismatch, ", a_name, " ", dtype_name(a.dtype()), " ",
           shape_str(a.sizes()), " vs ", b_name, " ", dtype_name(b.dtype()), " ", shape_str(b.sizes()));
  MG_CHECK(a.sizes() == b.sizes(), op, ": ", b_name, " of shape ", shape_str(b.sizes()),
           " does not match ", a_name, " of shape ", shape_str(a.sizes()));
  MG_CHECK(a.device() == b.device(), op, ": device mismatch, ", a.device().str(), " vs ",
           b.device().str());
}

Tensor reduce_elementwise(const Tensor& loss, Reduction reduction) {
  switch (reduction) {
    case Reduction::None: return loss;
    case Reduction::Sum: return loss.sum();
    case Reduction::Mean: break;
  }
  return loss.sum() / static_cast<double>(loss.numel());  // empty: NaN, as torch
}

// The gradient of an element-wise loss's reduction w.r.t. each element, times the incoming one.
Tensor elementwise_scale(const Tensor& grad, Reduction reduction, int64_t numel) {
  return reduction == Reduction::Mean ? grad / static_cast<double>(numel) : grad;
}

}  // namespace

Tensor softmax(const Tensor& x, int64_t dim) { return softmax_impl("softmax", x, dim, false); }
Tensor log_softmax(const Tensor& x, int64_t dim) { return softmax_impl("log_softmax", x, dim, true); }

Tensor cross_entropy(const Tensor& logits, const Tensor& target, CrossEntropyOptions options) {
  MG_PROFILE("cross_entropy");
  const double s = options.label_smoothing_;
  MG_CHECK(s >= 0.0 && s <= 1.0, "cross_entropy: label_smoothing must be in [0, 1], got ", s);
  ClassRows p = class_rows("cross_entropy", "logits", logits, target, options.ignore_index_);
  const Reduction reduction = options.reduction_;
  Tensor logp = Tensor::empty({p.M, p.C}, logits.options());
  Tensor out;
  {
    NoGradGuard no_grad;
    if (logp.numel() > 0) backend_of(logits).softmax_rows(p.rows, logp, /*log=*/true);
    Tensor per_row = p.M > 0 ? -gather(logp, 1, p.index).reshape({p.M}) : zeros({0}, logits.options());
    // (1 - s) * nll + s * mean over classes of -log_softmax (torch's label smoothing)
    if (s > 0.0 && p.M > 0)
      per_row = per_row * (1.0 - s) - logp.sum({1}) * (s / static_cast<double>(p.C));
    out = reduce_class_loss(per_row, p, reduction);
  }
  p.rows = Tensor();  // not needed by backward
  if (!any_requires_grad({&logits})) return record("cross_entropy", out, {logits}, nullptr);
  return record("cross_entropy", out, {logits}, [p, s, reduction, logp](const TensorList& g) {
    // d/dlogits of (1-s) * -logp[t] + s/C * -sum(logp) is softmax - ((1-s) onehot(t) + s/C).
    Tensor coef = row_coefficients(g[0], p, reduction);
    Tensor dx = exp(logp);
    if (s > 0.0) dx = dx - s / static_cast<double>(p.C);
    dx = dx * coef.reshape({p.M, 1});
    if (p.M > 0) dx = scatter_add(dx, 1, p.index, (coef * -(1.0 - s)).reshape({p.M, 1}));
    return TensorList{rows_to_input(dx, p)};
  });
}

Tensor nll_loss(const Tensor& log_probs, const Tensor& target, Reduction reduction,
                int64_t ignore_index) {
  MG_PROFILE("nll_loss");
  ClassRows p = class_rows("nll_loss", "log_probs", log_probs, target, ignore_index);
  Tensor out;
  {
    NoGradGuard no_grad;
    Tensor per_row = p.M > 0 ? -gather(p.rows, 1, p.index).reshape({p.M}) : zeros({0}, log_probs.options());
    out = reduce_class_loss(per_row, p, reduction);
  }
  p.rows = Tensor();  // backward needs only the targets
  if (!any_requires_grad({&log_probs})) return record("nll_loss", out, {log_probs}, nullptr);
  return record("nll_loss", out, {log_probs}, [p, reduction](const TensorList& g) {
    Tensor coef = row_coefficients(g[0], p, reduction);
    Tensor dx = zeros({p.M, p.C}, g[0].options());
    if (p.M > 0) dx = scatter_add(dx, 1, p.index, (-coef).reshape({p.M, 1}));
    return TensorList{rows_to_input(dx, p)};
  });
}

Tensor mse_loss(const Tensor& input, const Tensor& target, Reduction reduction) {
  MG_PROFILE("mse_loss");
  check_pair("mse_loss", "input", input, "target", target);
  Tensor diff, out;
  {
    NoGradGuard no_grad;
    diff = input - target;
    out = reduce_elementwise(diff * diff, reduction);
  }
  if (!any_requires_grad({&input, &target})) return record("mse_loss", out, {input, target}, nullptr);
  return record("mse_loss", out, {input, target},
                [diff, reduction, gi = input.requires_grad(),
                 gt = target.requires_grad()](const TensorList& g) {
                  Tensor dx = diff * elementwise_scale(g[0], reduction, diff.numel()) * 2.0;
                  return TensorList{gi ? dx : Tensor(), gt ? -dx : Tensor()};
                });
}

Tensor binary_cross_entropy_with_logits(const Tensor& logits, const Tensor& target,
                                        Reduction reduction) {
  MG_PROFILE("binary_cross_entropy_with_logits");
  check_pair("binary_cross_entropy_with_logits", "logits", logits, "target", target);
  Tensor out;
  {
    NoGradGuard no_grad;
    // max(x, 0) - x*y + log1p(exp(-|x|)): no exp of a positive number, so no overflow.
    Tensor loss = relu(logits) - logits * target + softplus(-abs(logits));
    out = reduce_elementwise(loss, reduction);
  }
  if (!any_requires_grad({&logits, &target}))
    return record("binary_cross_entropy_with_logits", out, {logits, target}, nullptr);
  return record("binary_cross_entropy_with_logits", out, {logits, target},
                [reduction, x = logits.detach(), y = target.detach(), gi = logits.requires_grad(),
                 gt = target.requires_grad()](const TensorList& g) {
                  Tensor scale = elementwise_scale(g[0], reduction, x.numel());
                  return TensorList{gi ? (sigmoid(x) - y) * scale : Tensor(),
                                    gt ? -x * scale : Tensor()};
                });
}

// ---- Tensor method forwards
Tensor Tensor::softmax(int64_t dim) const { return mg::softmax(*this, dim); }
Tensor Tensor::log_softmax(int64_t dim) const { return mg::log_softmax(*this, dim); }

}  // namespace mg
