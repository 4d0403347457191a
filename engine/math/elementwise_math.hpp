// The scalar math of every element-wise op and of its derivative, defined once and used by every
// backend (MG_HOST_DEVICE lets the CUDA backend compile the very same functions).
//
// A unary op's `grad(x, y, g)` returns g * dy/dx given the input x and the output y = f(x), so
// each backward can use whichever of the two is cheaper and numerically better.
#pragma once
#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define MG_HOST_DEVICE __host__ __device__
#else
#define MG_HOST_DEVICE
#endif

namespace mg::math {

// Params of the parametric unary ops (leaky_relu slope, clamp bounds, pow exponent, softplus beta).
struct UnaryParams {
  double a = 0.0;
  double b = 0.0;
};

// X-macro list: every unary op, its enum name and its functor.
#define MG_FOR_EACH_UNARY_OP(_) \
  _(Neg, NegOp)                 \
  _(Exp, ExpOp)                 \
  _(Log, LogOp)                 \
  _(Sqrt, SqrtOp)               \
  _(Rsqrt, RsqrtOp)             \
  _(Abs, AbsOp)                 \
  _(Relu, ReluOp)               \
  _(LeakyRelu, LeakyReluOp)     \
  _(GeluErf, GeluErfOp)         \
  _(GeluTanh, GeluTanhOp)       \
  _(Silu, SiluOp)               \
  _(Sigmoid, SigmoidOp)         \
  _(Tanh, TanhOp)               \
  _(Softplus, SoftplusOp)       \
  _(PowScalar, PowScalarOp)     \
  _(Clamp, ClampOp)

enum class UnaryOp {
#define MG_ENUM_ENTRY(name, functor) name,
  MG_FOR_EACH_UNARY_OP(MG_ENUM_ENTRY)
#undef MG_ENUM_ENTRY
};

struct NegOp {
  template <class T> MG_HOST_DEVICE T operator()(T x, UnaryParams) const { return -x; }
  template <class T> MG_HOST_DEVICE T grad(T, T, T g, UnaryParams) const { return -g; }
};
struct ExpOp {
  template <class T> MG_HOST_DEVICE T operator()(T x, UnaryParams) const { return std::exp(x); }
  template <class T> MG_HOST_DEVICE T grad(T, T y, T g, UnaryParams) const { return g * y; }
};
struct LogOp {
  template <class T> MG_HOST_DEVICE T operator()(T x, UnaryParams) const { return std::log(x); }
  template <class T> MG_HOST_DEVICE T grad(T x, T, T g, UnaryParams) const { return g / x; }
};
struct SqrtOp {
  template <class T> MG_HOST_DEVICE T operator()(T x, UnaryParams) const { return std::sqrt(x); }
  template <class T> MG_HOST_DEVICE T grad(T, T y, T g, UnaryParams) const { return g / (T(2) * y); }
};
struct RsqrtOp {
  template <class T> MG_HOST_DEVICE T operator()(T x, UnaryParams) const { return T(1) / std::sqrt(x); }
  template <class T> MG_HOST_DEVICE T grad(T x, T y, T g, UnaryParams) const { return g * T(-0.5) * y / x; }
};
struct AbsOp {
  template <class T> MG_HOST_DEVICE T operator()(T x, UnaryParams) const { return x < T(0) ? -x : x; }
  // sign(0) = 0, as PyTorch
  template <class T> MG_HOST_DEVICE T grad(T x, T, T g, UnaryParams) const {
    return x > T(0) ? g : (x < T(0) ? -g : T(0));
  }
};
struct ReluOp {
  template <class T> MG_HOST_DEVICE T operator()(T x, UnaryParams) const { return x > T(0) ? x : T(0); }
  template <class T> MG_HOST_DEVICE T grad(T x, T, T g, UnaryParams) const { return x > T(0) ? g : T(0); }
};
struct LeakyReluOp {  // a = negative slope
  template <class T> MG_HOST_DEVICE T operator()(T x, UnaryParams p) const { return x > T(0) ? x : T(p.a) * x; }
  template <class T> MG_HOST_DEVICE T grad(T x, T, T g, UnaryParams p) const { return x > T(0) ? g : T(p.a) * g; }
};
struct GeluErfOp {  // x * Phi(x)
  template <class T> MG_HOST_DEVICE T operator()(T x, UnaryParams) const {
    return T(0.5) * x * (T(1) + std::erf(x * T(0.70710678118654752440)));
  }
  template <class T> MG_HOST_DEVICE T grad(T x, T, T g, UnaryParams) const {
    const T cdf = T(0.5) * (T(1) + std::erf(x * T(0.70710678118654752440)));
    const T pdf = std::exp(T(-0.5) * x * x) * T(0.39894228040143267794);
    return g * (cdf + x * pdf);
  }
};
struct GeluTanhOp {  // PyTorch's approximate='tanh'
  template <class T> MG_HOST_DEVICE T operator()(T x, UnaryParams) const {
    const T k = T(0.79788456080286535588);  // sqrt(2/pi)
    return T(0.5) * x * (T(1) + std::tanh(k * (x + T(0.044715) * x * x * x)));
  }
  template <class T> MG_HOST_DEVICE T grad(T x, T, T g, UnaryParams) const {
    const T k = T(0.79788456080286535588);
    const T inner = k * (x + T(0.044715) * x * x * x);
    const T th = std::tanh(inner);
    const T dinner = k * (T(1) + T(3 * 0.044715) * x * x);
    return g * (T(0.5) * (T(1) + th) + T(0.5) * x * (T(1) - th * th) * dinner);
  }
};
struct SigmoidOp {
  // Written so that neither branch overflows for large |x|.
  template <class T> MG_HOST_DEVICE T operator()(T x, UnaryParams) const {
    if (x >= T(0)) return T(1) / (T(1) + std::exp(-x));
    const T e = std::exp(x);
    return e / (T(1) + e);
  }
  template <class T> MG_HOST_DEVICE T grad(T, T y, T g, UnaryParams) const { return g * y * (T(1) - y); }
};
struct SiluOp {
  template <class T> MG_HOST_DEVICE T operator()(T x, UnaryParams p) const { return x * SigmoidOp{}(x, p); }
  template <class T> MG_HOST_DEVICE T grad(T x, T, T g, UnaryParams p) const {
    const T s = SigmoidOp{}(x, p);
    return g * s * (T(1) + x * (T(1) - s));
  }
};
struct TanhOp {
  template <class T> MG_HOST_DEVICE T operator()(T x, UnaryParams) const { return std::tanh(x); }
  template <class T> MG_HOST_DEVICE T grad(T, T y, T g, UnaryParams) const { return g * (T(1) - y * y); }
};
struct SoftplusOp {  // a = beta, b = threshold: linear above threshold, as PyTorch
  template <class T> MG_HOST_DEVICE T operator()(T x, UnaryParams p) const {
    const T bx = T(p.a) * x;
    return bx > T(p.b) ? x : std::log1p(std::exp(bx)) / T(p.a);
  }
  template <class T> MG_HOST_DEVICE T grad(T x, T, T g, UnaryParams p) const {
    const T bx = T(p.a) * x;
    return bx > T(p.b) ? g : g * SigmoidOp{}(bx, p);
  }
};
struct PowScalarOp {  // a = exponent
  template <class T> MG_HOST_DEVICE T operator()(T x, UnaryParams p) const {
    if (p.a == 2.0) return x * x;
    return static_cast<T>(std::pow(x, static_cast<T>(p.a)));
  }
  template <class T> MG_HOST_DEVICE T grad(T x, T, T g, UnaryParams p) const {
    if (p.a == 0.0) return T(0);
    if (p.a == 2.0) return g * T(2) * x;
    return g * T(p.a) * static_cast<T>(std::pow(x, static_cast<T>(p.a - 1.0)));
  }
};
struct ClampOp {  // a = min, b = max (use +-inf for an open side); gradient passes inside [a, b]
  template <class T> MG_HOST_DEVICE T operator()(T x, UnaryParams p) const {
    const T lo = static_cast<T>(p.a), hi = static_cast<T>(p.b);
    return x < lo ? lo : (x > hi ? hi : x);
  }
  template <class T> MG_HOST_DEVICE T grad(T x, T, T g, UnaryParams p) const {
    return (x >= static_cast<T>(p.a) && x <= static_cast<T>(p.b)) ? g : T(0);
  }
};

// Binary ops on broadcast operands. Comparisons return 1 or 0 in the operands' dtype.
#define MG_FOR_EACH_BINARY_OP(_) \
  _(Add, AddOp)                  \
  _(Sub, SubOp)                  \
  _(Mul, MulOp)                  \
  _(Div, DivOp)                  \
  _(Pow, PowOp)                  \
  _(Maximum, MaximumOp)          \
  _(Minimum, MinimumOp)          \
  _(Eq, EqOp)                    \
  _(Ne, NeOp)                    \
  _(Lt, LtOp)                    \
  _(Le, LeOp)                    \
  _(Gt, GtOp)                    \
  _(Ge, GeOp)

enum class BinaryOp {
#define MG_ENUM_ENTRY(name, functor) name,
  MG_FOR_EACH_BINARY_OP(MG_ENUM_ENTRY)
#undef MG_ENUM_ENTRY
};

struct AddOp { template <class T> MG_HOST_DEVICE T operator()(T a, T b) const { return a + b; } };
struct SubOp { template <class T> MG_HOST_DEVICE T operator()(T a, T b) const { return a - b; } };
struct MulOp { template <class T> MG_HOST_DEVICE T operator()(T a, T b) const { return a * b; } };
struct DivOp { template <class T> MG_HOST_DEVICE T operator()(T a, T b) const { return a / b; } };
struct PowOp {
  template <class T> MG_HOST_DEVICE T operator()(T a, T b) const {
    return static_cast<T>(std::pow(static_cast<double>(a), static_cast<double>(b)));
  }
};
// NaN propagates, as torch.maximum
struct MaximumOp {
  template <class T> MG_HOST_DEVICE T operator()(T a, T b) const { return (a != a || a > b) ? a : b; }
};
struct MinimumOp {
  template <class T> MG_HOST_DEVICE T operator()(T a, T b) const { return (a != a || a < b) ? a : b; }
};
struct EqOp { template <class T> MG_HOST_DEVICE T operator()(T a, T b) const { return T(a == b); } };
struct NeOp { template <class T> MG_HOST_DEVICE T operator()(T a, T b) const { return T(a != b); } };
struct LtOp { template <class T> MG_HOST_DEVICE T operator()(T a, T b) const { return T(a < b); } };
struct LeOp { template <class T> MG_HOST_DEVICE T operator()(T a, T b) const { return T(a <= b); } };
struct GtOp { template <class T> MG_HOST_DEVICE T operator()(T a, T b) const { return T(a > b); } };
struct GeOp { template <class T> MG_HOST_DEVICE T operator()(T a, T b) const { return T(a >= b); } };

// Calls f with the functor of `op` (host side: a backend picks the functor once, then runs its
// loop or kernel with it), so every backend maps ops to functors the same way.
template <class F>
void with_unary_functor(UnaryOp op, const F& f) {
  switch (op) {
#define MG_CASE(name, functor) \
  case UnaryOp::name:          \
    return f(functor{});
    MG_FOR_EACH_UNARY_OP(MG_CASE)
#undef MG_CASE
  }
}

template <class F>
void with_binary_functor(BinaryOp op, const F& f) {
  switch (op) {
#define MG_CASE(name, functor) \
  case BinaryOp::name:         \
    return f(functor{});
    MG_FOR_EACH_BINARY_OP(MG_CASE)
#undef MG_CASE
  }
}

}  // namespace mg::math
