// Element-wise ops: forward through the backend's unary/binary kernels, backward beside each.
#include "engine/ops/elementwise.hpp"

#include <limits>

#include "engine/autograd.hpp"
#include "engine/profiler.hpp"
#include "engine/backend.hpp"
#include "engine/ops/reduce.hpp"

namespace mg {
namespace {

using math::BinaryOp;
using math::UnaryOp;
using math::UnaryParams;

void check_same_dtype(const char* op, const Tensor& a, const Tensor& b) {
  MG_CHECK(a.dtype() == b.dtype(), op, ": dtype mismatch, ", dtype_name(a.dtype()), " ",
           shape_str(a.sizes()), " vs ", dtype_name(b.dtype()), " ", shape_str(b.sizes()));
  MG_CHECK(a.device() == b.device(), op, ": device mismatch, ", a.device().str(), " vs ",
           b.device().str());
}

Tensor binary_forward(const char* op_name, BinaryOp op, const Tensor& a, const Tensor& b) {
  MG_PROFILE(op_name);
  check_same_dtype(op_name, a, b);
  const Shape shape = broadcast_shapes(op_name, a.sizes(), b.sizes());
  Tensor out = Tensor::empty(shape, a.options());
  NoGradGuard no_grad;  // the expand views are internal
  backend_of(a).binary(op, a.expand(shape), b.expand(shape), out);
  return out;
}

Tensor unary_forward(UnaryOp op, UnaryParams params, const Tensor& x) {
  Tensor out = Tensor::empty(x.sizes(), x.options());
  backend_of(x).unary(op, params, x, out);
  return out;
}

// y = f(x) with the fused derivative kernel for backward; saves x and y as detached views.
Tensor unary_op(const char* name, UnaryOp op, const Tensor& x, UnaryParams params = {},
                bool floating_only = true) {
  MG_PROFILE(name);
  if (floating_only)
    MG_CHECK(x.is_floating_point(), name, ": expected a floating-point tensor, got ",
             dtype_name(x.dtype()), " ", shape_str(x.sizes()));
  Tensor y = unary_forward(op, params, x);
  if (!any_requires_grad({&x})) return record(name, y, {x}, nullptr);
  if (op == UnaryOp::Relu) {
    // relu's derivative reads the same from y as from x (y > 0 exactly where x > 0): keeping only
    // y lets the input's memory go, as torch's in-place ReLU does in a CNN.
    return record(name, y, {x}, [op, params, ys = y.detach()](const TensorList& g) {
      Tensor dx = Tensor::empty(ys.sizes(), ys.options());
      backend_of(ys).unary_backward(op, params, ys, ys, g[0], dx);
      return TensorList{dx};
    });
  }
  return record(name, y, {x}, [op, params, xs = x.detach(), ys = y.detach()](const TensorList& g) {
    Tensor dx = Tensor::empty(xs.sizes(), xs.options());
    backend_of(xs).unary_backward(op, params, xs, ys, g[0], dx);
    return TensorList{dx};
  });
}

Tensor scalar_like(double v, const Tensor& t) { return scalar_tensor(v, t.options()); }

}  // namespace

Tensor sum_to(const Tensor& grad, const Shape& shape) {
  if (grad.sizes() == shape) return grad;
  const int64_t lead = grad.dim() - static_cast<int64_t>(shape.size());
  MG_CHECK(lead >= 0, "sum_to: cannot reduce shape ", shape_str(grad.sizes()), " to ", shape_str(shape));
  Shape dims;
  for (int64_t d = 0; d < grad.dim(); ++d)
    if (d < lead || (shape[d - lead] == 1 && grad.size(d) != 1)) dims.push_back(d);
  Tensor r = dims.empty() ? grad : grad.sum(dims, /*keepdim=*/true);
  return r.reshape(shape);
}

Tensor add(const Tensor& a, const Tensor& b) {
  Tensor out = binary_forward("add", BinaryOp::Add, a, b);
  return record("add", out, {a, b}, [sa = a.sizes(), sb = b.sizes()](const TensorList& g) {
    return TensorList{sum_to(g[0], sa), sum_to(g[0], sb)};
  });
}

Tensor sub(const Tensor& a, const Tensor& b) {
  Tensor out = binary_forward("sub", BinaryOp::Sub, a, b);
  return record("sub", out, {a, b}, [sa = a.sizes(), sb = b.sizes()](const TensorList& g) {
    return TensorList{sum_to(g[0], sa), sum_to(neg(g[0]), sb)};
  });
}

Tensor mul(const Tensor& a, const Tensor& b) {
  Tensor out = binary_forward("mul", BinaryOp::Mul, a, b);
  if (!any_requires_grad({&a, &b})) return out;
  const bool ga = a.requires_grad(), gb = b.requires_grad();
  return record("mul", out, {a, b}, [ga, gb, ad = a.detach(), bd = b.detach()](const TensorList& g) {
    return TensorList{ga ? sum_to(g[0] * bd, ad.sizes()) : Tensor(),
                      gb ? sum_to(g[0] * ad, bd.sizes()) : Tensor()};
  });
}

Tensor div(const Tensor& a, const Tensor& b) {
  Tensor out = binary_forward("div", BinaryOp::Div, a, b);
  if (!any_requires_grad({&a, &b})) return out;
  const bool gb = b.requires_grad();
  return record("div", out, {a, b},
                [gb, ad = a.detach(), bd = b.detach(), od = out.detach()](const TensorList& g) {
                  Tensor ga = g[0] / bd;
                  return TensorList{sum_to(ga, ad.sizes()),
                                    gb ? sum_to(neg(ga * od), bd.sizes()) : Tensor()};
                });
}

Tensor pow(const Tensor& base, const Tensor& exponent) {
  MG_CHECK(base.is_floating_point(), "pow: expected a floating-point tensor, got ",
           dtype_name(base.dtype()));
  Tensor out = binary_forward("pow", BinaryOp::Pow, base, exponent);
  if (!any_requires_grad({&base, &exponent})) return out;
  const bool ge = exponent.requires_grad();
  return record("pow", out, {base, exponent},
                [ge, bd = base.detach(), ed = exponent.detach(), od = out.detach()](const TensorList& g) {
                  Tensor gbase = g[0] * ed * pow(bd, ed - 1.0);
                  // d/de b^e = b^e ln b; defined as 0 where b == 0 (PyTorch's convention)
                  Tensor gexp = ge ? where(eq(bd, zeros_like(bd)), zeros_like(od), g[0] * od * log(bd))
                                   : Tensor();
                  return TensorList{sum_to(gbase, bd.sizes()), ge ? sum_to(gexp, ed.sizes()) : Tensor()};
                });
}

Tensor pow(const Tensor& base, double exponent) {
  return unary_op("pow", UnaryOp::PowScalar, base, {exponent, 0});
}

namespace {
// maximum/minimum: the gradient goes to the selected operand; on ties it is split evenly, as torch.
Tensor select_binary(const char* name, BinaryOp op, const Tensor& a, const Tensor& b) {
  Tensor out = binary_forward(name, op, a, b);
  if (!any_requires_grad({&a, &b})) return out;
  const bool is_max = op == BinaryOp::Maximum;
  return record(name, out, {a, b}, [is_max, ad = a.detach(), bd = b.detach()](const TensorList& g) {
    Tensor a_wins = is_max ? gt(ad, bd) : lt(ad, bd);
    Tensor tie = eq(ad, bd) * 0.5;
    return TensorList{sum_to(g[0] * (a_wins + tie), ad.sizes()),
                      sum_to(g[0] * (1.0 - a_wins - tie), bd.sizes())};
  });
}
}  // namespace

Tensor maximum(const Tensor& a, const Tensor& b) { return select_binary("maximum", BinaryOp::Maximum, a, b); }
Tensor minimum(const Tensor& a, const Tensor& b) { return select_binary("minimum", BinaryOp::Minimum, a, b); }
Tensor eq(const Tensor& a, const Tensor& b) { return binary_forward("eq", BinaryOp::Eq, a, b); }
Tensor ne(const Tensor& a, const Tensor& b) { return binary_forward("ne", BinaryOp::Ne, a, b); }
Tensor lt(const Tensor& a, const Tensor& b) { return binary_forward("lt", BinaryOp::Lt, a, b); }
Tensor le(const Tensor& a, const Tensor& b) { return binary_forward("le", BinaryOp::Le, a, b); }
Tensor gt(const Tensor& a, const Tensor& b) { return binary_forward("gt", BinaryOp::Gt, a, b); }
Tensor ge(const Tensor& a, const Tensor& b) { return binary_forward("ge", BinaryOp::Ge, a, b); }

Tensor neg(const Tensor& x) { return unary_op("neg", UnaryOp::Neg, x, {}, false); }
Tensor exp(const Tensor& x) { return unary_op("exp", UnaryOp::Exp, x); }
Tensor log(const Tensor& x) { return unary_op("log", UnaryOp::Log, x); }
Tensor sqrt(const Tensor& x) { return unary_op("sqrt", UnaryOp::Sqrt, x); }
Tensor rsqrt(const Tensor& x) { return unary_op("rsqrt", UnaryOp::Rsqrt, x); }
Tensor abs(const Tensor& x) { return unary_op("abs", UnaryOp::Abs, x, {}, false); }
Tensor relu(const Tensor& x) { return unary_op("relu", UnaryOp::Relu, x, {}, false); }
Tensor leaky_relu(const Tensor& x, double slope) {
  return unary_op("leaky_relu", UnaryOp::LeakyRelu, x, {slope, 0});
}
Tensor gelu(const Tensor& x, const std::string& approximate) {
  MG_CHECK(approximate == "none" || approximate == "tanh", "gelu: approximate must be 'none' or "
           "'tanh', got '", approximate, "'");
  return approximate == "tanh" ? unary_op("gelu", UnaryOp::GeluTanh, x)
                               : unary_op("gelu", UnaryOp::GeluErf, x);
}
Tensor silu(const Tensor& x) { return unary_op("silu", UnaryOp::Silu, x); }
Tensor sigmoid(const Tensor& x) { return unary_op("sigmoid", UnaryOp::Sigmoid, x); }
Tensor tanh(const Tensor& x) { return unary_op("tanh", UnaryOp::Tanh, x); }
Tensor softplus(const Tensor& x, double beta, double threshold) {
  MG_CHECK(beta > 0, "softplus: beta must be positive, got ", beta);
  return unary_op("softplus", UnaryOp::Softplus, x, {beta, threshold});
}
Tensor clamp(const Tensor& x, std::optional<double> min, std::optional<double> max) {
  const double inf = std::numeric_limits<double>::infinity();
  return unary_op("clamp", UnaryOp::Clamp, x, {min.value_or(-inf), max.value_or(inf)}, false);
}

Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b) {
  MG_PROFILE("where");
  check_same_dtype("where", a, b);
  const Shape shape = broadcast_shapes("where", broadcast_shapes("where", cond.sizes(), a.sizes()), b.sizes());
  Tensor out = Tensor::empty(shape, a.options());
  {
    NoGradGuard no_grad;
    backend_of(a).where(cond.expand(shape), a.expand(shape), b.expand(shape), out);
  }
  if (!any_requires_grad({&a, &b})) return out;
  return record("where", out, {a, b}, [c = cond.detach(), sa = a.sizes(), sb = b.sizes()](const TensorList& g) {
    Tensor zero = zeros_like(g[0]);
    return TensorList{sum_to(where(c, g[0], zero), sa), sum_to(where(c, zero, g[0]), sb)};
  });
}

Tensor operator+(const Tensor& a, const Tensor& b) { return add(a, b); }
Tensor operator-(const Tensor& a, const Tensor& b) { return sub(a, b); }
Tensor operator*(const Tensor& a, const Tensor& b) { return mul(a, b); }
Tensor operator/(const Tensor& a, const Tensor& b) { return div(a, b); }
Tensor operator-(const Tensor& x) { return neg(x); }
Tensor operator+(const Tensor& a, double b) { return add(a, scalar_like(b, a)); }
Tensor operator-(const Tensor& a, double b) { return sub(a, scalar_like(b, a)); }
Tensor operator*(const Tensor& a, double b) { return mul(a, scalar_like(b, a)); }
Tensor operator/(const Tensor& a, double b) { return div(a, scalar_like(b, a)); }
Tensor operator+(double a, const Tensor& b) { return add(scalar_like(a, b), b); }
Tensor operator-(double a, const Tensor& b) { return sub(scalar_like(a, b), b); }
Tensor operator*(double a, const Tensor& b) { return mul(scalar_like(a, b), b); }
Tensor operator/(double a, const Tensor& b) { return div(scalar_like(a, b), b); }

// ---- Tensor method forwards
Tensor Tensor::neg() const { return mg::neg(*this); }
Tensor Tensor::exp() const { return mg::exp(*this); }
Tensor Tensor::log() const { return mg::log(*this); }
Tensor Tensor::sqrt() const { return mg::sqrt(*this); }
Tensor Tensor::rsqrt() const { return mg::rsqrt(*this); }
Tensor Tensor::abs() const { return mg::abs(*this); }
Tensor Tensor::relu() const { return mg::relu(*this); }
Tensor Tensor::sigmoid() const { return mg::sigmoid(*this); }
Tensor Tensor::tanh() const { return mg::tanh(*this); }
Tensor Tensor::pow(double e) const { return mg::pow(*this, e); }
Tensor Tensor::pow(const Tensor& e) const { return mg::pow(*this, e); }
Tensor Tensor::clamp(std::optional<double> lo, std::optional<double> hi) const { return mg::clamp(*this, lo, hi); }
Tensor Tensor::add(const Tensor& o) const { return mg::add(*this, o); }
Tensor Tensor::sub(const Tensor& o) const { return mg::sub(*this, o); }
Tensor Tensor::mul(const Tensor& o) const { return mg::mul(*this, o); }
Tensor Tensor::div(const Tensor& o) const { return mg::div(*this, o); }

}  // namespace mg
