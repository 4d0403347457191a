// batch_norm (backend kernels: per-channel statistics, normalize, backward) and layer_norm (composed,
// with a hand-written backward), dropout and embedding.
#include "engine/ops/norm.hpp"

#include "engine/autograd.hpp"
#include "engine/backend.hpp"
#include "engine/ops/elementwise.hpp"
#include "engine/ops/index.hpp"
#include "engine/ops/reduce.hpp"
#include "engine/profiler.hpp"

namespace mg {

Tensor batch_norm(const Tensor& x, const Tensor& running_mean, const Tensor& running_var,
                  const Tensor& weight, const Tensor& bias, bool use_batch_stats,
                  bool update_running_stats, double momentum, double eps) {
  MG_CHECK(x.dim() >= 2, "batch_norm: expected input [N, C, *], got shape ", shape_str(x.sizes()));
  MG_CHECK(x.is_floating_point(), "batch_norm: expected a floating-point input, got ", dtype_name(x.dtype()));
  MG_PROFILE("batch_norm");
  const int64_t C = x.size(1);
  for (const Tensor* t : {&running_mean, &running_var, &weight, &bias})
    MG_CHECK(!t->defined() || t->sizes() == Shape{C}, "batch_norm: per-channel tensor of shape ",
             shape_str(t->sizes()), " does not match ", C, " channels of input shape ", shape_str(x.sizes()));
  for (const Tensor* t : {&running_mean, &running_var, &weight, &bias})
    MG_CHECK(!t->defined() || (t->dtype() == x.dtype() && t->device() == x.device()),
             "batch_norm: per-channel tensors must have the input's dtype and device (",
             dtype_name(x.dtype()), ", ", x.device().str(), ")");
  MG_CHECK(use_batch_stats || (running_mean.defined() && running_var.defined()),
           "batch_norm: normalizing with running statistics needs running_mean and running_var");
  const int64_t count = x.numel() / std::max<int64_t>(C, 1);

  // The input, the per-channel mean and invstd, and the affine parameters are all the backward
  // needs: x_hat is recomputed there instead of being kept (a tensor the size of the input).
  Tensor xc, mean, invstd, w, b, out;
  {
    NoGradGuard no_grad;
    xc = x.detach().contiguous();
    w = weight.defined() ? weight.detach().contiguous() : Tensor();
    b = bias.defined() ? bias.detach().contiguous() : Tensor();
    Backend& backend = backend_of(x);
    if (use_batch_stats) {
      MG_CHECK(count > 1, "batch_norm: expected more than 1 value per channel in training, got input "
               "shape ", shape_str(x.sizes()));
      mean = Tensor::empty({C}, x.options());
      invstd = Tensor::empty({C}, x.options());
      Tensor var = Tensor::empty({C}, x.options());
      backend.batch_norm_stats(xc, eps, mean, var, invstd);
      if (update_running_stats && running_mean.defined()) {
        Tensor unbiased = var * (static_cast<double>(count) / (count - 1));
        Tensor rm = running_mean, rv = running_var;  // handles: the update is in place
        rm.copy_(rm * (1.0 - momentum) + mean * momentum);
        rv.copy_(rv * (1.0 - momentum) + unbiased * momentum);
      }
    } else {
      mean = running_mean.detach().contiguous().clone();
      invstd = rsqrt(running_var + eps).contiguous();
    }
    out = Tensor::empty(x.sizes(), x.options());
    backend.batch_norm_forward(xc, mean, invstd, w, b, out);
  }
  if (!any_requires_grad({&x, &weight, &bias})) return out;
  const bool need_x = x.requires_grad();
  const bool need_w = weight.defined() && weight.requires_grad();
  const bool need_b = bias.defined() && bias.requires_grad();
  return record("batch_norm", out, {x, weight, bias},
                [=](const TensorList& g) {
                  const Tensor dy = g[0].contiguous();
                  Tensor dx = need_x ? Tensor::empty(xc.sizes(), dy.options()) : Tensor();
                  Tensor dw = need_w ? Tensor::empty({C}, dy.options()) : Tensor();
                  Tensor db = need_b ? Tensor::empty({C}, dy.options()) : Tensor();
                  backend_of(dy).batch_norm_backward(dy, xc, mean, invstd, w, use_batch_stats, dx, dw, db);
                  return TensorList{dx, dw, db};
                });
}

Tensor layer_norm(const Tensor& x, const Shape& normalized_shape, const Tensor& weight,
                  const Tensor& bias, double eps) {
  const int64_t k = static_cast<int64_t>(normalized_shape.size());
  MG_CHECK(k >= 1 && x.dim() >= k &&
               Shape(x.sizes().end() - k, x.sizes().end()) == normalized_shape,
           "layer_norm: normalized_shape ", shape_str(normalized_shape),
           " does not match the trailing dims of input shape ", shape_str(x.sizes()));
  for (const Tensor* t : {&weight, &bias})
    MG_CHECK(!t->defined() || t->sizes() == normalized_shape, "layer_norm: weight/bias of shape ",
             shape_str(t->sizes()), " for normalized_shape ", shape_str(normalized_shape));
  Shape dims;
  for (int64_t d = x.dim() - k; d < x.dim(); ++d) dims.push_back(d);
  Tensor x_hat, invstd, out;
  {
    NoGradGuard no_grad;
    Tensor mean = x.mean(dims, true);
    invstd = rsqrt(x.var(dims, false, true) + eps);
    x_hat = (x - mean) * invstd;
    out = x_hat;
    if (weight.defined()) out = out * weight;
    if (bias.defined()) out = out + bias;
  }
  if (!any_requires_grad({&x, &weight, &bias})) return out;
  const Shape lead_dims = [&] {
    Shape d;
    for (int64_t i = 0; i < x.dim() - k; ++i) d.push_back(i);
    return d;
  }();
  return record("layer_norm", out, {x, weight, bias},
                [=, xh = x_hat, w = weight.defined() ? weight.detach() : Tensor(),
                 need_w = weight.defined(), need_b = bias.defined()](const TensorList& g) {
                  const Tensor& dy = g[0];
                  Tensor dy_w = w.defined() ? dy * w : dy;
                  Tensor dx = (dy_w - dy_w.mean(dims, true) - xh * (dy_w * xh).mean(dims, true)) * invstd;
                  auto reduce_lead = [&](const Tensor& t) { return lead_dims.empty() ? t : t.sum(lead_dims); };
                  return TensorList{dx, need_w ? reduce_lead(dy * xh) : Tensor(),
                                    need_b ? reduce_lead(dy) : Tensor()};
                });
}

Tensor dropout(const Tensor& x, double p, bool training, Generator* gen) {
  MG_CHECK(p >= 0.0 && p <= 1.0, "dropout: probability must be in [0, 1], got ", p);
  if (!training || p == 0.0) return x;
  if (p == 1.0) return x * 0.0;
  Tensor keep_scaled;
  {
    NoGradGuard no_grad;
    Tensor u = rand(x.sizes(), x.options(), gen);
    keep_scaled = gt(u, full_like(u, p)) * (1.0 / (1.0 - p));
  }
  return x * keep_scaled;
}

Tensor embedding(const Tensor& weight, const Tensor& indices) {
  MG_CHECK(weight.dim() == 2, "embedding: weight must be [num_embeddings, dim], got shape ",
           shape_str(weight.sizes()));
  MG_CHECK(indices.dtype() == kInt32, "embedding: indices must be int32, got ", dtype_name(indices.dtype()));
  Shape out_shape = indices.sizes();
  out_shape.push_back(weight.size(1));
  return index_select(weight, 0, indices.reshape({-1})).reshape(out_shape);
}

}  // namespace mg
