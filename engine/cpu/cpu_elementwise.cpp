// Element-wise kernels: each op's scalar math comes from engine/math/elementwise_math.hpp; this
// file only supplies the loops (a tight one for contiguous rows, a strided one otherwise).
#include "engine/cpu/cpu_backend.hpp"
#include "engine/cpu/strided_loop.hpp"

namespace mg::cpu {
namespace {

using math::BinaryOp;
using math::UnaryOp;
using math::UnaryParams;
using math::with_binary_functor;
using math::with_unary_functor;

template <class T>
T& at(char* p, int64_t stride, int64_t i) {
  return *reinterpret_cast<T*>(p + i * stride);
}

}  // namespace

void CpuBackend::unary(UnaryOp op, UnaryParams params, const Tensor& x, const Tensor& out) {
  MG_DISPATCH_ALL_TYPES(out.dtype(), "unary", [&] {
    using T = scalar_t;
    with_unary_functor(op, [&](auto f) {
      Operands<2> ops{{static_cast<char*>(out.raw_data()), static_cast<char*>(x.raw_data())},
                      {&out.strides(), &x.strides()},
                      {sizeof(T), sizeof(T)}};
      for_each_strided(out.sizes(), ops, [&](const std::array<char*, 2>& p,
                                             const std::array<int64_t, 2>& s, int64_t n) {
        if (s[0] == sizeof(T) && s[1] == sizeof(T)) {
          T* __restrict o = reinterpret_cast<T*>(p[0]);
          const T* __restrict a = reinterpret_cast<const T*>(p[1]);
          for (int64_t i = 0; i < n; ++i) o[i] = f(a[i], params);
        } else {
          for (int64_t i = 0; i < n; ++i) at<T>(p[0], s[0], i) = f(at<T>(p[1], s[1], i), params);
        }
      });
    });
  });
}

void CpuBackend::unary_backward(UnaryOp op, UnaryParams params, const Tensor& x, const Tensor& y,
                                const Tensor& grad, const Tensor& out) {
  MG_DISPATCH_ALL_TYPES(out.dtype(), "unary_backward", [&] {
    using T = scalar_t;
    with_unary_functor(op, [&](auto f) {
      Operands<4> ops{{static_cast<char*>(out.raw_data()), static_cast<char*>(x.raw_data()),
                       static_cast<char*>(y.raw_data()), static_cast<char*>(grad.raw_data())},
                      {&out.strides(), &x.strides(), &y.strides(), &grad.strides()},
                      {sizeof(T), sizeof(T), sizeof(T), sizeof(T)}};
      for_each_strided(out.sizes(), ops, [&](const std::array<char*, 4>& p,
                                             const std::array<int64_t, 4>& s, int64_t n) {
        if (s[0] == sizeof(T) && s[1] == sizeof(T) && s[2] == sizeof(T) && s[3] == sizeof(T)) {
          T* __restrict o = reinterpret_cast<T*>(p[0]);
          const T* __restrict xs = reinterpret_cast<const T*>(p[1]);
          const T* __restrict ys = reinterpret_cast<const T*>(p[2]);
          const T* __restrict gs = reinterpret_cast<const T*>(p[3]);
          for (int64_t i = 0; i < n; ++i) o[i] = f.grad(xs[i], ys[i], gs[i], params);
          return;
        }
        for (int64_t i = 0; i < n; ++i)
          at<T>(p[0], s[0], i) =
              f.grad(at<T>(p[1], s[1], i), at<T>(p[2], s[2], i), at<T>(p[3], s[3], i), params);
      });
    });
  });
}

void CpuBackend::binary(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out) {
  MG_DISPATCH_ALL_TYPES(out.dtype(), "binary", [&] {
    using T = scalar_t;
    with_binary_functor(op, [&](auto f) {
      Operands<3> ops{{static_cast<char*>(out.raw_data()), static_cast<char*>(a.raw_data()),
                       static_cast<char*>(b.raw_data())},
                      {&out.strides(), &a.strides(), &b.strides()},
                      {sizeof(T), sizeof(T), sizeof(T)}};
      for_each_strided(out.sizes(), ops, [&](const std::array<char*, 3>& p,
                                             const std::array<int64_t, 3>& s, int64_t n) {
        T* __restrict o = reinterpret_cast<T*>(p[0]);
        const T* __restrict x = reinterpret_cast<const T*>(p[1]);
        const T* __restrict y = reinterpret_cast<const T*>(p[2]);
        constexpr int64_t e = sizeof(T);
        if (s[0] == e && s[1] == e && s[2] == e) {
          for (int64_t i = 0; i < n; ++i) o[i] = f(x[i], y[i]);
        } else if (s[0] == e && s[1] == e && s[2] == 0) {
          const T yv = *y;
          for (int64_t i = 0; i < n; ++i) o[i] = f(x[i], yv);
        } else if (s[0] == e && s[1] == 0 && s[2] == e) {
          const T xv = *x;
          for (int64_t i = 0; i < n; ++i) o[i] = f(xv, y[i]);
        } else {
          for (int64_t i = 0; i < n; ++i)
            at<T>(p[0], s[0], i) = f(at<T>(p[1], s[1], i), at<T>(p[2], s[2], i));
        }
      });
    });
  });
}

void CpuBackend::where(const Tensor& cond, const Tensor& a, const Tensor& b, const Tensor& out) {
  MG_DISPATCH_ALL_TYPES(out.dtype(), "where", [&] {
    using T = scalar_t;
    MG_DISPATCH_ALL_TYPES(cond.dtype(), "where", [&] {
      using C = scalar_t;
      Operands<4> ops{{static_cast<char*>(out.raw_data()), static_cast<char*>(cond.raw_data()),
                       static_cast<char*>(a.raw_data()), static_cast<char*>(b.raw_data())},
                      {&out.strides(), &cond.strides(), &a.strides(), &b.strides()},
                      {sizeof(T), sizeof(C), sizeof(T), sizeof(T)}};
      for_each_strided(out.sizes(), ops, [&](const std::array<char*, 4>& p,
                                             const std::array<int64_t, 4>& s, int64_t n) {
        for (int64_t i = 0; i < n; ++i)
          at<T>(p[0], s[0], i) =
              at<C>(p[1], s[1], i) != C(0) ? at<T>(p[2], s[2], i) : at<T>(p[3], s[3], i);
      });
    });
  });
}

}  // namespace mg::cpu
