// Element-wise kernels: each op's scalar math is the functor of engine/math/elementwise_math.hpp
// (the very functions the CPU runs, compiled for the device); this file only supplies the
// strided grid-stride loops, after cpu_elementwise.cpp.
#include "engine/cuda/cuda_common.cuh"

namespace mg::cuda {
namespace {

using math::BinaryOp;
using math::UnaryOp;
using math::UnaryParams;
using math::with_binary_functor;
using math::with_unary_functor;

template <class T, class F>
__global__ void unary_kernel(F f, UnaryParams p, StridedGeometry<2> g, T* out, const T* x,
                             int64_t n) {
  MG_GRID_STRIDE(i, n) {
    int64_t off[2];
    g.offsets(i, off);
    out[off[0]] = f(x[off[1]], p);
  }
}

template <class T, class F>
__global__ void unary_backward_kernel(F f, UnaryParams p, StridedGeometry<4> g, T* out,
                                      const T* x, const T* y, const T* grad, int64_t n) {
  MG_GRID_STRIDE(i, n) {
    int64_t off[4];
    g.offsets(i, off);
    out[off[0]] = f.grad(x[off[1]], y[off[2]], grad[off[3]], p);
  }
}

template <class T, class F>
__global__ void binary_kernel(F f, StridedGeometry<3> g, T* out, const T* a, const T* b,
                              int64_t n) {
  MG_GRID_STRIDE(i, n) {
    int64_t off[3];
    g.offsets(i, off);
    out[off[0]] = f(a[off[1]], b[off[2]]);
  }
}

template <class T, class C>
__global__ void where_kernel(StridedGeometry<4> g, T* out, const C* cond, const T* a, const T* b,
                             int64_t n) {
  MG_GRID_STRIDE(i, n) {
    int64_t off[4];
    g.offsets(i, off);
    out[off[0]] = cond[off[1]] != C(0) ? a[off[2]] : b[off[3]];
  }
}

template <class T>
const T* in(const Tensor& t) { return static_cast<const T*>(t.raw_data()); }
template <class T>
T* out_of(const Tensor& t) { return static_cast<T*>(t.raw_data()); }

}  // namespace

void CudaBackend::unary(UnaryOp op, UnaryParams params, const Tensor& x, const Tensor& out) {
  DeviceGuard guard(device_);
  const int64_t n = out.numel();
  if (n == 0) return;
  const auto g = make_geometry<2>(out.sizes(), {&out, &x});
  MG_DISPATCH_ALL_TYPES(out.dtype(), "unary", [&] {
    with_unary_functor(op, [&](auto f) {
      unary_kernel<<<blocks_for(n), kThreads, 0, stream_for(device_)>>>(
          f, params, g, out_of<scalar_t>(out), in<scalar_t>(x), n);
    });
  });
  MG_CUDA_CHECK_LAUNCH("unary");
}

void CudaBackend::unary_backward(UnaryOp op, UnaryParams params, const Tensor& x, const Tensor& y,
                                 const Tensor& grad, const Tensor& out) {
  DeviceGuard guard(device_);
  const int64_t n = out.numel();
  if (n == 0) return;
  const auto g = make_geometry<4>(out.sizes(), {&out, &x, &y, &grad});
  MG_DISPATCH_ALL_TYPES(out.dtype(), "unary_backward", [&] {
    with_unary_functor(op, [&](auto f) {
      unary_backward_kernel<<<blocks_for(n), kThreads, 0, stream_for(device_)>>>(
          f, params, g, out_of<scalar_t>(out), in<scalar_t>(x), in<scalar_t>(y),
          in<scalar_t>(grad), n);
    });
  });
  MG_CUDA_CHECK_LAUNCH("unary_backward");
}

void CudaBackend::binary(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out) {
  DeviceGuard guard(device_);
  const int64_t n = out.numel();
  if (n == 0) return;
  const auto g = make_geometry<3>(out.sizes(), {&out, &a, &b});
  MG_DISPATCH_ALL_TYPES(out.dtype(), "binary", [&] {
    with_binary_functor(op, [&](auto f) {
      binary_kernel<<<blocks_for(n), kThreads, 0, stream_for(device_)>>>(
          f, g, out_of<scalar_t>(out), in<scalar_t>(a), in<scalar_t>(b), n);
    });
  });
  MG_CUDA_CHECK_LAUNCH("binary");
}

void CudaBackend::where(const Tensor& cond, const Tensor& a, const Tensor& b, const Tensor& out) {
  DeviceGuard guard(device_);
  const int64_t n = out.numel();
  if (n == 0) return;
  const auto g = make_geometry<4>(out.sizes(), {&out, &cond, &a, &b});
  MG_DISPATCH_ALL_TYPES(out.dtype(), "where", [&] {
    using T = scalar_t;
    MG_DISPATCH_ALL_TYPES(cond.dtype(), "where", [&] {
      where_kernel<<<blocks_for(n), kThreads, 0, stream_for(device_)>>>(
          g, out_of<T>(out), in<scalar_t>(cond), in<T>(a), in<T>(b), n);
    });
  });
  MG_CUDA_CHECK_LAUNCH("where");
}

}  // namespace mg::cuda
