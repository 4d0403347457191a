// Reductions. Every reduction moves the reduced dims last, makes the tensor contiguous and hands
// [outer, inner] rows to the backend's reduce_rows; backward broadcasts the gradient back.
#include "engine/ops/reduce.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

#include "engine/autograd.hpp"
#include "engine/profiler.hpp"
#include "engine/backend.hpp"
#include "engine/ops/elementwise.hpp"
#include "engine/ops/index.hpp"

namespace mg {
namespace {

struct ReducePlan {
  Shape dims;       // sorted, unique, wrapped
  Shape kept;       // output shape with keepdim=true
  Shape out_shape;  // output shape as requested
  int64_t inner = 1;
};

ReducePlan plan_reduce(const char* op, const Tensor& x, const Shape& dims, bool keepdim) {
  ReducePlan p;
  if (dims.empty()) {
    for (int64_t d = 0; d < x.dim(); ++d) p.dims.push_back(d);
  } else {
    for (int64_t d : dims) p.dims.push_back(wrap_dim(op, d, x.dim()));
    std::sort(p.dims.begin(), p.dims.end());
    MG_CHECK(std::adjacent_find(p.dims.begin(), p.dims.end()) == p.dims.end(), op,
             ": repeated dim in ", shape_str(dims));
  }
  p.kept = x.sizes();
  for (int64_t d : p.dims) {
    if (x.dim() == 0) break;
    p.inner *= x.size(d);
    p.kept[d] = 1;
  }
  if (keepdim) {
    p.out_shape = p.kept;
  } else {
    for (int64_t d = 0; d < x.dim(); ++d)
      if (!std::binary_search(p.dims.begin(), p.dims.end(), d)) p.out_shape.push_back(x.size(d));
  }
  return p;
}

// [outer, inner] rows with the reduced dims last (a copy only when they are not already last).
// A sum over the leading dims of a contiguous tensor (a bias gradient) keeps its memory order: its
// rows are then adjacent columns, which the backend sums in place (backend.hpp).
Tensor rows_for(const Tensor& x, const ReducePlan& p, ReduceOp op) {
  Shape order;
  for (int64_t d = 0; d < x.dim(); ++d)
    if (!std::binary_search(p.dims.begin(), p.dims.end(), d)) order.push_back(d);
  order.insert(order.end(), p.dims.begin(), p.dims.end());
  NoGradGuard no_grad;
  Tensor moved = x.dim() == 0 ? x : x.permute(order);
  const Shape shape{numel_of(p.kept), p.inner};  // kept: outer dims, reduced ones 1
  if (op == ReduceOp::Sum && x.is_contiguous() && shape[0] > 1 && shape[1] > 1) {
    Tensor columns = moved.reshape(shape);
    if (columns.stride(0) == 1) return columns;
  }
  return moved.contiguous().reshape(shape);
}

// Raw reduction (no autograd); values in x's dtype with shape p.out_shape.
std::tuple<Tensor, Tensor> reduce_raw(const char* name, ReduceOp op, const Tensor& x,
                                      const ReducePlan& p, bool with_indices) {
  MG_PROFILE(name);
  MG_CHECK(op == ReduceOp::Sum || p.inner > 0, name, ": reduction over an empty dim of input shape ",
           shape_str(x.sizes()), " has no identity");
  Tensor rows = rows_for(x, p, op);
  Tensor values = Tensor::empty({rows.size(0)}, x.options());
  Tensor indices = with_indices ? Tensor::empty({rows.size(0)}, x.options().dtype(kInt32)) : Tensor();
  if (p.inner == 0) values.zero_();
  else backend_of(x).reduce_rows(op, rows, values, indices);
  NoGradGuard no_grad;
  return {values.reshape(p.out_shape), with_indices ? indices.reshape(p.out_shape) : Tensor()};
}

std::tuple<Tensor, Tensor> max_min(const char* name, ReduceOp op, const Tensor& x, int64_t dim,
                                   bool keepdim) {
  const int64_t d = wrap_dim(name, dim, x.dim());
  ReducePlan p = plan_reduce(name, x, {d}, keepdim);
  auto [values, indices] = reduce_raw(name, op, x, p, true);
  values = record(name, values, {x}, [sizes = x.sizes(), kept = p.kept, d,
                                      idx = indices.detach()](const TensorList& g) {
    NoGradGuard no_grad;
    Tensor grad = zeros(sizes, g[0].options());
    if (sizes.empty()) return TensorList{g[0].reshape({})};
    return TensorList{grad.scatter_add(d, idx.reshape(kept), g[0].reshape(kept))};
  });
  return {values, indices};
}

// amax/amin: the gradient is shared evenly among tied extrema, as torch.amax.
Tensor extremum(const char* name, ReduceOp op, const Tensor& x, const Shape& dims, bool keepdim) {
  ReducePlan p = plan_reduce(name, x, dims, keepdim);
  Tensor values = std::get<0>(reduce_raw(name, op, x, p, false));
  if (!any_requires_grad({&x})) return values;
  return record(name, values, {x}, [xd = x.detach(), vd = values.detach(), kept = p.kept,
                                    dims = p.dims](const TensorList& g) {
    Tensor hit = eq(xd, vd.reshape(kept));
    Tensor count = sum(hit, dims, true);
    return TensorList{g[0].reshape(kept) * hit / count};
  });
}

}  // namespace

Tensor sum(const Tensor& x, const Shape& dims, bool keepdim) {
  ReducePlan p = plan_reduce("sum", x, dims, keepdim);
  Tensor out = std::get<0>(reduce_raw("sum", ReduceOp::Sum, x, p, false));
  return record("sum", out, {x}, [sizes = x.sizes(), kept = p.kept](const TensorList& g) {
    return TensorList{g[0].reshape(kept).expand(sizes).contiguous()};
  });
}

Tensor mean(const Tensor& x, const Shape& dims, bool keepdim) {
  MG_PROFILE("mean");
  MG_CHECK(x.is_floating_point(), "mean: expected a floating-point tensor, got ", dtype_name(x.dtype()));
  ReducePlan p = plan_reduce("mean", x, dims, keepdim);
  return sum(x, dims, keepdim) / static_cast<double>(p.inner);
}

Tensor var(const Tensor& x, const Shape& dims, bool unbiased, bool keepdim) {
  MG_PROFILE("var");
  MG_CHECK(x.is_floating_point(), "var: expected a floating-point tensor, got ", dtype_name(x.dtype()));
  ReducePlan p = plan_reduce("var", x, dims, keepdim);
  Tensor centered = x - mean(x, dims, true);
  const double n = static_cast<double>(p.inner) - (unbiased ? 1.0 : 0.0);
  return sum(centered * centered, dims, keepdim) / n;
}

Tensor std(const Tensor& x, const Shape& dims, bool unbiased, bool keepdim) {
  return sqrt(var(x, dims, unbiased, keepdim));
}

std::tuple<Tensor, Tensor> max(const Tensor& x, int64_t dim, bool keepdim) {
  return max_min("max", ReduceOp::Max, x, dim, keepdim);
}
std::tuple<Tensor, Tensor> min(const Tensor& x, int64_t dim, bool keepdim) {
  return max_min("min", ReduceOp::Min, x, dim, keepdim);
}
Tensor amax(const Tensor& x, const Shape& dims, bool keepdim) {
  return extremum("amax", ReduceOp::Max, x, dims, keepdim);
}
Tensor amin(const Tensor& x, const Shape& dims, bool keepdim) {
  return extremum("amin", ReduceOp::Min, x, dims, keepdim);
}

namespace {
Tensor arg_extremum(const char* name, ReduceOp op, const Tensor& x, std::optional<int64_t> dim,
                    bool keepdim) {
  if (!dim) {
    NoGradGuard no_grad;
    Tensor idx = std::get<1>(reduce_raw(name, op, x.reshape({-1}), plan_reduce(name, x.reshape({-1}), {0}, false), true));
    return keepdim ? idx.reshape(Shape(x.dim(), 1)) : idx;
  }
  const int64_t d = wrap_dim(name, *dim, x.dim());
  return std::get<1>(reduce_raw(name, op, x, plan_reduce(name, x, {d}, keepdim), true));
}
}  // namespace

Tensor argmax(const Tensor& x, std::optional<int64_t> dim, bool keepdim) {
  return arg_extremum("argmax", ReduceOp::Max, x, dim, keepdim);
}
Tensor argmin(const Tensor& x, std::optional<int64_t> dim, bool keepdim) {
  return arg_extremum("argmin", ReduceOp::Min, x, dim, keepdim);
}

// Stable for any magnitude: max + log(sum(exp(x - max))); an all -inf slice gives -inf.
Tensor logsumexp(const Tensor& x, const Shape& dims, bool keepdim) {
  MG_PROFILE("logsumexp");
  MG_CHECK(x.is_floating_point(), "logsumexp: expected a floating-point tensor, got ",
           dtype_name(x.dtype()));
  ReducePlan p = plan_reduce("logsumexp", x, dims, keepdim);
  Tensor out;
  {
    NoGradGuard no_grad;
    Tensor m = std::get<0>(reduce_raw("logsumexp", ReduceOp::Max, x, plan_reduce("logsumexp", x, dims, true), false));
    Tensor finite_m = where(eq(abs(m), full_like(m, INFINITY)), zeros_like(m), m);
    out = (log(sum(exp(x - finite_m), dims, true)) + finite_m).reshape(p.out_shape);
  }
  return record("logsumexp", out, {x}, [xd = x.detach(), od = out.detach(), kept = p.kept](const TensorList& g) {
    return TensorList{g[0].reshape(kept) * exp(xd - od.reshape(kept))};
  });
}

Tensor norm(const Tensor& x, double p, const Shape& dims, bool keepdim) {
  MG_PROFILE("norm");
  MG_CHECK(x.is_floating_point(), "norm: expected a floating-point tensor, got ", dtype_name(x.dtype()));
  MG_CHECK(p > 0, "norm: p must be positive, got ", p);
  if (p == 1.0) return sum(abs(x), dims, keepdim);
  if (p == 2.0) {
    Tensor out;
    {
      NoGradGuard no_grad;
      out = sqrt(sum(x * x, dims, keepdim));
    }
    const Shape kept = plan_reduce("norm", x, dims, true).kept;
    return record("norm", out, {x}, [xd = x.detach(), od = out.detach(), kept](const TensorList& g) {
      Tensor n = od.reshape(kept);
      Tensor safe = where(eq(n, zeros_like(n)), ones_like(n), n);  // subgradient 0 at x = 0
      return TensorList{g[0].reshape(kept) * xd / safe};
    });
  }
  return pow(sum(pow(abs(x), p), dims, keepdim), 1.0 / p);
}

// ---- Tensor method forwards
Tensor Tensor::sum() const { return mg::sum(*this); }
Tensor Tensor::sum(const Shape& dims, bool keepdim) const { return mg::sum(*this, dims, keepdim); }
Tensor Tensor::mean() const { return mg::mean(*this); }
Tensor Tensor::mean(const Shape& dims, bool keepdim) const { return mg::mean(*this, dims, keepdim); }
Tensor Tensor::var(const Shape& dims, bool unbiased, bool keepdim) const { return mg::var(*this, dims, unbiased, keepdim); }
Tensor Tensor::std(const Shape& dims, bool unbiased, bool keepdim) const { return mg::std(*this, dims, unbiased, keepdim); }
Tensor Tensor::max() const { return mg::amax(*this); }
Tensor Tensor::min() const { return mg::amin(*this); }
std::tuple<Tensor, Tensor> Tensor::max(int64_t dim, bool keepdim) const { return mg::max(*this, dim, keepdim); }
std::tuple<Tensor, Tensor> Tensor::min(int64_t dim, bool keepdim) const { return mg::min(*this, dim, keepdim); }
Tensor Tensor::argmax(std::optional<int64_t> dim, bool keepdim) const { return mg::argmax(*this, dim, keepdim); }
Tensor Tensor::logsumexp(const Shape& dims, bool keepdim) const { return mg::logsumexp(*this, dims, keepdim); }
Tensor Tensor::norm(double p) const { return mg::norm(*this, p); }

}  // namespace mg
