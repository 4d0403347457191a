// CPU conv2d, after Caffe's im2col / col2im: per sample and group, the input is unfolded into a
// [C/groups * kh * kw, out_h * out_w] matrix and multiplied by the weight with Eigen.
//   forward          out[n]  = W @ cols(x[n]) (+ bias)
//   backward input   dx[n]   = col2im(W^T @ grad[n])
//   backward weight  dW      = sum_n grad[n] @ cols(x[n])^T
// A batch at least as large as the thread count is split over threads by samples, each thread with
// its own unfold buffer and single-threaded GEMMs, so memory stays at one sample's unfold per
// thread; a smaller batch runs sample after sample with Eigen's multi-threaded GEMM. A 1x1 kernel
// with stride 1 and no padding multiplies the input in place. The float32 'same' convs of CNNs take
// the kernels of conv_direct.hpp instead: Winograd for the 3x3 ones with enough channels, direct
// convolution for the others.

// GCC 12 reports false positives inside its own AVX-512 intrinsics when Eigen's GEMM is inlined
// (cpu_matmul.cpp gets the same flag from CMake).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include <Eigen/Core>
#include <algorithm>
#include <type_traits>
#include <vector>

#include "engine/cpu/conv_direct.hpp"
#include "engine/cpu/cpu_backend.hpp"
#include "engine/parallel.hpp"

namespace mg::cpu {
namespace {

template <class T>
using Matrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class T>
using MatrixMap = Eigen::Map<Matrix<T>>;
template <class T>
using ConstMatrixMap = Eigen::Map<const Matrix<T>>;

struct ConvDims {
  int64_t N, C, H, W, O, groups;
  int64_t C_group, O_group;
  int64_t K;  // rows of the unfolded input: C_group * kh * kw
  int64_t L;  // columns: out_h * out_w
  bool pointwise;

  ConvDims(const Shape& x_sizes, int64_t out_channels, const Window2d& win, int64_t groups_)
      : N(x_sizes[0]), C(x_sizes[1]), H(x_sizes[2]), W(x_sizes[3]), O(out_channels),
        groups(groups_), C_group(C / groups_), O_group(out_channels / groups_),
        K(C_group * win.kernel_h * win.kernel_w), L(win.out_h * win.out_w),
        pointwise(win.kernel_h == 1 && win.kernel_w == 1 && win.stride_h == 1 &&
                  win.stride_w == 1 && win.pad_h == 0 && win.pad_w == 0) {}
  int64_t flops() const { return N * O * K * L; }
};

// The float32 kernels are called from code instantiated for every floating type; only the float
// instantiation reaches them.
template <class T>
float* as_float(T* p) { return reinterpret_cast<float*>(p); }
template <class T>
const float* as_float(const T* p) { return reinterpret_cast<const float*>(p); }

// Output positions o whose input position o * stride + offset lies in [0, in): [lo, hi).
std::pair<int64_t, int64_t> valid_outputs(int64_t offset, int64_t stride, int64_t in, int64_t out) {
  const int64_t lo = std::min(out, offset >= 0 ? 0 : (-offset + stride - 1) / stride);
  const int64_t hi = in - offset <= 0 ? 0 : (in - offset + stride - 1) / stride;
  return {lo, std::clamp(hi, lo, out)};
}

// Calls fn(row, plane, in_base, oh, lo, hi) for every unfolded row (c, i, j) and output row oh
// whose input row is inside the image: row[oh * out_w + ow] pairs with
// plane[in_base + ow * stride_w] for ow in [lo, hi). Rows of padding get fn_pad(row, oh).
template <class F, class FPad>
void for_each_window_row(int64_t channels, int64_t H, int64_t W, const Window2d& win, int64_t L,
                         const F& fn, const FPad& fn_pad) {
  for (int64_t c = 0; c < channels; ++c)
    for (int64_t i = 0; i < win.kernel_h; ++i)
      for (int64_t j = 0; j < win.kernel_w; ++j) {
        const int64_t row = (c * win.kernel_h + i) * win.kernel_w + j;
        const int64_t offset_w = j * win.dilation_w - win.pad_w;
        const auto [lo, hi] = valid_outputs(offset_w, win.stride_w, W, win.out_w);
        for (int64_t oh = 0; oh < win.out_h; ++oh) {
          const int64_t ih = oh * win.stride_h + i * win.dilation_h - win.pad_h;
          if (ih < 0 || ih >= H)
            fn_pad(row * L, oh);
          else
            fn(row * L, c * H * W, ih * W + offset_w, oh, lo, hi);
        }
      }
}

// cols [K, L] <- the windows of x [channels, H, W], zero where they overlap the padding.
template <class T>
void im2col(const T* x, int64_t channels, int64_t H, int64_t W, const Window2d& win, T* cols) {
  const int64_t OW = win.out_w, L = win.out_h * OW, sw = win.stride_w;
  for_each_window_row(
      channels, H, W, win, L,
      [&](int64_t row, int64_t plane, int64_t base, int64_t oh, int64_t lo, int64_t hi) {
        T* dst = cols + row + oh * OW;
        const T* src = x + plane;
        std::fill(dst, dst + lo, T(0));
        for (int64_t ow = lo; ow < hi; ++ow) dst[ow] = src[base + ow * sw];
        std::fill(dst + hi, dst + OW, T(0));
      },
      [&](int64_t row, int64_t oh) { std::fill_n(cols + row + oh * OW, OW, T(0)); });
}

// x [channels, H, W] += the windows in cols [K, L] folded back (x must start zeroed).
template <class T>
void col2im(const T* cols, int64_t channels, int64_t H, int64_t W, const Window2d& win, T* x) {
  const int64_t OW = win.out_w, L = win.out_h * OW, sw = win.stride_w;
  for_each_window_row(
      channels, H, W, win, L,
      [&](int64_t row, int64_t plane, int64_t base, int64_t oh, int64_t lo, int64_t hi) {
        const T* src = cols + row + oh * OW;
        T* dst = x + plane;
        for (int64_t ow = lo; ow < hi; ++ow) dst[base + ow * sw] += src[ow];
      },
      [](int64_t, int64_t) {});
}

// fn(n0, n1) over samples: split over threads when every thread gets a sample, otherwise in one
// call so that Eigen may thread each GEMM instead.
template <class F>
void for_samples(const ConvDims& d, const F& fn) {
  if (d.N >= get_num_threads())
    parallel_for(d.N, d.flops(), fn);
  else if (d.N > 0)
    fn(int64_t{0}, d.N);
}

// The input of group g of sample n as an unfolded [K, L] matrix: in place for a pointwise conv,
// else unfolded into `buffer`.
template <class T>
const T* unfolded(const T* x, const ConvDims& d, const Window2d& win, int64_t n, int64_t g,
                  std::vector<T>& buffer) {
  const T* x_group = x + (n * d.C + g * d.C_group) * d.H * d.W;
  if (d.pointwise) return x_group;
  buffer.resize(d.K * d.L);
  im2col(x_group, d.C_group, d.H, d.W, win, buffer.data());
  return buffer.data();
}

}  // namespace

void CpuBackend::conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias,
                        const Window2d& win, int64_t groups, const Tensor& out) {
  const ConvDims d(x.sizes(), weight.size(0), win, groups);
  MG_DISPATCH_FLOATING_TYPES(x.dtype(), "conv2d", [&] {
    using T = scalar_t;
    const T* px = x.data_ptr<T>();
    const T* pw = weight.data_ptr<T>();
    const T* pb = bias.defined() ? bias.data_ptr<T>() : nullptr;
    T* po = out.data_ptr<T>();
    if (std::is_same_v<T, float> && winograd::applicable(win, groups, d.C, d.O, d.H, d.W))
      return winograd::forward(as_float(px), as_float(pw), as_float(pb), as_float(po), d.N, d.C,
                               d.O, d.H, d.W);
    if (std::is_same_v<T, float> && direct::applicable(win, groups, d.H, d.W))
      return direct::forward(as_float(px), as_float(pw), as_float(pb), as_float(po), d.N, d.C, d.O,
                             d.H, d.W, win);
    for_samples(d, [&](int64_t n0, int64_t n1) {
      std::vector<T> buffer;
      for (int64_t n = n0; n < n1; ++n)
        for (int64_t g = 0; g < d.groups; ++g) {
          ConstMatrixMap<T> cols(unfolded(px, d, win, n, g, buffer), d.K, d.L);
          ConstMatrixMap<T> w(pw + g * d.O_group * d.K, d.O_group, d.K);
          MatrixMap<T> y(po + (n * d.O + g * d.O_group) * d.L, d.O_group, d.L);
          y.noalias() = w * cols;
          if (pb)
            y.colwise() += Eigen::Map<const Eigen::Matrix<T, Eigen::Dynamic, 1>>(pb + g * d.O_group,
                                                                                d.O_group);
        }
    });
  });
}

void CpuBackend::conv2d_backward_input(const Tensor& grad, const Tensor& weight,
                                       const Window2d& win, int64_t groups, const Tensor& grad_x) {
  const ConvDims d(grad_x.sizes(), weight.size(0), win, groups);
  MG_DISPATCH_FLOATING_TYPES(grad.dtype(), "conv2d_backward_input", [&] {
    using T = scalar_t;
    const T* pg = grad.data_ptr<T>();
    const T* pw = weight.data_ptr<T>();
    T* pdx = grad_x.data_ptr<T>();
    if (std::is_same_v<T, float> && winograd::applicable(win, groups, d.C, d.O, d.H, d.W))
      return winograd::backward_input(as_float(pg), as_float(pw), as_float(pdx), d.N, d.C, d.O,
                                      d.H, d.W);
    if (std::is_same_v<T, float> && direct::applicable(win, groups, d.H, d.W))
      return direct::backward_input(as_float(pg), as_float(pw), as_float(pdx), d.N, d.C, d.O, d.H,
                                    d.W, win);
    for_samples(d, [&](int64_t n0, int64_t n1) {
      std::vector<T> buffer(d.pointwise ? 0 : d.K * d.L);
      for (int64_t n = n0; n < n1; ++n)
        for (int64_t g = 0; g < d.groups; ++g) {
          ConstMatrixMap<T> w(pw + g * d.O_group * d.K, d.O_group, d.K);
          ConstMatrixMap<T> gy(pg + (n * d.O + g * d.O_group) * d.L, d.O_group, d.L);
          T* dx_group = pdx + (n * d.C + g * d.C_group) * d.H * d.W;
          if (d.pointwise) {
            MatrixMap<T>(dx_group, d.K, d.L).noalias() = w.transpose() * gy;
            continue;
          }
          MatrixMap<T>(buffer.data(), d.K, d.L).noalias() = w.transpose() * gy;
          std::fill_n(dx_group, d.C_group * d.H * d.W, T(0));
          col2im(buffer.data(), d.C_group, d.H, d.W, win, dx_group);
        }
    });
  });
}

void CpuBackend::conv2d_backward_weight(const Tensor& x, const Tensor& grad, const Window2d& win,
                                        int64_t groups, const Tensor& grad_weight) {
  const ConvDims d(x.sizes(), grad.size(1), win, groups);
  MG_DISPATCH_FLOATING_TYPES(x.dtype(), "conv2d_backward_weight", [&] {
    using T = scalar_t;
    const T* px = x.data_ptr<T>();
    const T* pg = grad.data_ptr<T>();
    if (std::is_same_v<T, float> && winograd::applicable(win, groups, d.C, d.O, d.H, d.W) &&
        d.C % 16 == 0)
      return winograd::backward_weight(as_float(px), as_float(pg),
                                       as_float(grad_weight.data_ptr<T>()), d.N, d.C, d.O, d.H, d.W);
    if (std::is_same_v<T, float> && direct::applicable(win, groups, d.H, d.W))
      return direct::backward_weight(as_float(px), as_float(pg), as_float(grad_weight.data_ptr<T>()),
                                     d.N, d.C, d.O, d.H, d.W, win);
    // One partial sum per chunk of samples, keyed by the chunk's first sample and added in that
    // order: the result depends on the thread count, not on the threads' timing.
    std::vector<Matrix<T>> partial(std::max<int64_t>(d.N, 1));
    for_samples(d, [&](int64_t n0, int64_t n1) {
      Matrix<T>& acc = partial[n0];
      acc.setZero(d.O, d.K);
      std::vector<T> buffer;
      for (int64_t n = n0; n < n1; ++n)
        for (int64_t g = 0; g < d.groups; ++g) {
          ConstMatrixMap<T> cols(unfolded(px, d, win, n, g, buffer), d.K, d.L);
          ConstMatrixMap<T> gy(pg + (n * d.O + g * d.O_group) * d.L, d.O_group, d.L);
          acc.middleRows(g * d.O_group, d.O_group).noalias() += gy * cols.transpose();
        }
    });
    MatrixMap<T> dw(grad_weight.data_ptr<T>(), d.O, d.K);
    dw.setZero();
    for (const Matrix<T>& p : partial)
      if (p.size() > 0) dw += p;
  });
}

}  // namespace mg::cpu
