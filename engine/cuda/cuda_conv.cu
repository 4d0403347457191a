// conv2d after Caffe's im2col / col2im, like cpu_conv.cpp, with the GEMMs on cuBLAS:
//   forward          out[n]  = W @ cols(x[n]) (+ bias)
//   backward input   dx[n]   = col2im(W^T @ grad[n])
//   backward weight  dW      = sum_n grad[n] @ cols(x[n])^T   (samples added in order)
// Samples are unfolded a chunk at a time (at most kColumnBytes of columns, never the whole batch)
// and each group's GEMM runs batched over the chunk's samples. col2im gives a thread to each input
// element, which gathers its (kernel row, kernel column) contributions in order: no atomics.
#include <algorithm>

#include "engine/cuda/cuda_common.cuh"

namespace mg::cuda {
namespace {

constexpr int64_t kColumnBytes = int64_t{64} << 20;

struct ConvShape {
  int64_t C, H, W, O, groups, Cg, Og, kernel_rows, L;  // kernel_rows = Cg * kh * kw
  ConvShape(const Shape& x, const Shape& w, const Window2d& win, int64_t g)
      : C(x[1]), H(x[2]), W(x[3]), O(w[0]), groups(g), Cg(C / g), Og(w[0] / g),
        kernel_rows(Cg * win.kernel_h * win.kernel_w), L(win.out_h * win.out_w) {}
  int64_t col_rows() const { return groups * kernel_rows; }  // C * kh * kw
};

// cols [samples, C * kh * kw, L] of x[first .. first + samples)
template <class T>
__global__ void im2col_kernel(const T* x, T* cols, Window2d w, int64_t C, int64_t H, int64_t W,
                              int64_t total) {
  const int64_t L = w.out_h * w.out_w, kk = w.kernel_h * w.kernel_w;
  MG_GRID_STRIDE(i, total) {
    const int64_t l = i % L, row = (i / L) % (C * kk), s = i / (L * C * kk);
    const int64_t c = row / kk, ki = (row % kk) / w.kernel_w, kj = row % w.kernel_w;
    const int64_t ih = (l / w.out_w) * w.stride_h - w.pad_h + ki * w.dilation_h;
    const int64_t iw = (l % w.out_w) * w.stride_w - w.pad_w + kj * w.dilation_w;
    cols[i] = ih >= 0 && ih < H && iw >= 0 && iw < W ? x[((s * C + c) * H + ih) * W + iw] : T(0);
  }
}

template <class T>
__global__ void col2im_kernel(const T* cols, T* dx, Window2d w, int64_t C, int64_t H, int64_t W,
                              int64_t total) {
  const int64_t L = w.out_h * w.out_w, kk = w.kernel_h * w.kernel_w;
  MG_GRID_STRIDE(i, total) {
    const int64_t iw = i % W, ih = (i / W) % H, c = (i / (H * W)) % C, s = i / (C * H * W);
    T acc = T(0);
    for (int64_t ki = 0; ki < w.kernel_h; ++ki) {
      const int64_t h = ih + w.pad_h - ki * w.dilation_h;
      if (h < 0 || h % w.stride_h != 0 || h / w.stride_h >= w.out_h) continue;
      for (int64_t kj = 0; kj < w.kernel_w; ++kj) {
        const int64_t v = iw + w.pad_w - kj * w.dilation_w;
        if (v < 0 || v % w.stride_w != 0 || v / w.stride_w >= w.out_w) continue;
        const int64_t row = c * kk + ki * w.kernel_w + kj;
        acc += cols[(s * C * kk + row) * L + (h / w.stride_h) * w.out_w + v / w.stride_w];
      }
    }
    dx[i] = acc;
  }
}

template <class T>
__global__ void add_bias_kernel(T* out, const T* bias, int64_t O, int64_t L, int64_t total) {
  MG_GRID_STRIDE(i, total) { out[i] += bias[(i / L) % O]; }
}

int64_t chunk_samples(const ConvShape& s, int64_t N, size_t element) {
  const int64_t per_sample =
      std::max<int64_t>(s.col_rows() * s.L * static_cast<int64_t>(element), 1);
  return std::clamp<int64_t>(kColumnBytes / per_sample, 1, std::max<int64_t>(N, 1));
}

template <class T>
void unfold(int device, const T* x, T* cols, const Window2d& win, const ConvShape& s, int64_t n) {
  const int64_t total = n * s.col_rows() * s.L;
  im2col_kernel<<<blocks_for(total), kThreads, 0, stream_for(device)>>>(x, cols, win, s.C, s.H, s.W,
                                                                        total);
  MG_CUDA_CHECK_LAUNCH("conv2d im2col");
}

}  // namespace

void CudaBackend::conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias,
                         const Window2d& window, int64_t groups, const Tensor& out) {
  DeviceGuard guard(device_);
  const ConvShape s(x.sizes(), weight.sizes(), window, groups);
  const int64_t N = x.size(0);
  if (out.numel() == 0) return;
  const int64_t chunk = chunk_samples(s, N, x.element_size());
  const Tensor cols = scratch({chunk * s.col_rows() * s.L}, x.dtype(), device_);
  MG_DISPATCH_FLOATING_TYPES(x.dtype(), "conv2d", [&] {
    using T = scalar_t;
    const T* px = static_cast<const T*>(x.raw_data());
    const T* pw = static_cast<const T*>(weight.raw_data());
    T* po = static_cast<T*>(out.raw_data());
    T* pc = static_cast<T*>(cols.raw_data());
    for (int64_t n0 = 0; n0 < N; n0 += chunk) {
      const int64_t n = std::min(chunk, N - n0);
      unfold(device_, px + n0 * s.C * s.H * s.W, pc, window, s, n);
      for (int64_t g = 0; g < groups; ++g)
        gemm<T>(device_, false, false, s.Og, s.L, s.kernel_rows, T(1),
                pw + g * s.Og * s.kernel_rows, s.kernel_rows, 0, pc + g * s.kernel_rows * s.L, s.L,
                s.col_rows() * s.L, T(0), po + (n0 * s.O + g * s.Og) * s.L, s.L, s.O * s.L, n);
    }
    if (bias.defined()) {
      const int64_t total = out.numel();
      add_bias_kernel<<<blocks_for(total), kThreads, 0, stream_for(device_)>>>(
          po, static_cast<const T*>(bias.raw_data()), s.O, s.L, total);
      MG_CUDA_CHECK_LAUNCH("conv2d bias");
    }
  });
}

void CudaBackend::conv2d_backward_input(const Tensor& grad, const Tensor& weight,
                                        const Window2d& window, int64_t groups,
                                        const Tensor& grad_x) {
  DeviceGuard guard(device_);
  const ConvShape s(grad_x.sizes(), weight.sizes(), window, groups);
  const int64_t N = grad_x.size(0);
  if (grad_x.numel() == 0) return;
  const int64_t chunk = chunk_samples(s, N, grad.element_size());
  const Tensor cols = scratch({chunk * s.col_rows() * s.L}, grad.dtype(), device_);
  MG_DISPATCH_FLOATING_TYPES(grad.dtype(), "conv2d_backward_input", [&] {
    using T = scalar_t;
    const T* pg = static_cast<const T*>(grad.raw_data());
    const T* pw = static_cast<const T*>(weight.raw_data());
    T* pdx = static_cast<T*>(grad_x.raw_data());
    T* pc = static_cast<T*>(cols.raw_data());
    for (int64_t n0 = 0; n0 < N; n0 += chunk) {
      const int64_t n = std::min(chunk, N - n0);
      for (int64_t g = 0; g < groups; ++g)
        gemm<T>(device_, true, false, s.kernel_rows, s.L, s.Og, T(1), pw + g * s.Og * s.kernel_rows,
                s.kernel_rows, 0, pg + (n0 * s.O + g * s.Og) * s.L, s.L, s.O * s.L, T(0),
                pc + g * s.kernel_rows * s.L, s.L, s.col_rows() * s.L, n);
      const int64_t total = n * s.C * s.H * s.W;
      col2im_kernel<<<blocks_for(total), kThreads, 0, stream_for(device_)>>>(
          pc, pdx + n0 * s.C * s.H * s.W, window, s.C, s.H, s.W, total);
      MG_CUDA_CHECK_LAUNCH("conv2d col2im");
    }
  });
}

void CudaBackend::conv2d_backward_weight(const Tensor& x, const Tensor& grad,
                                         const Window2d& window, int64_t groups,
                                         const Tensor& grad_weight) {
  DeviceGuard guard(device_);
  const ConvShape s(x.sizes(), grad_weight.sizes(), window, groups);
  const int64_t N = x.size(0);
  if (grad_weight.numel() == 0) return;
  if (N == 0 || s.L == 0) return fill(grad_weight, 0.0);
  const int64_t chunk = chunk_samples(s, N, x.element_size());
  const Tensor cols = scratch({chunk * s.col_rows() * s.L}, x.dtype(), device_);
  MG_DISPATCH_FLOATING_TYPES(x.dtype(), "conv2d_backward_weight", [&] {
    using T = scalar_t;
    const T* px = static_cast<const T*>(x.raw_data());
    const T* pg = static_cast<const T*>(grad.raw_data());
    T* pdw = static_cast<T*>(grad_weight.raw_data());
    T* pc = static_cast<T*>(cols.raw_data());
    for (int64_t n0 = 0; n0 < N; n0 += chunk) {
      const int64_t n = std::min(chunk, N - n0);
      unfold(device_, px + n0 * s.C * s.H * s.W, pc, window, s, n);
      // one GEMM per sample and all groups at once, accumulating into dW in sample order
      for (int64_t i = 0; i < n; ++i)
        gemm<T>(device_, false, true, s.Og, s.kernel_rows, s.L, T(1), pg + (n0 + i) * s.O * s.L,
                s.L, s.Og * s.L, pc + i * s.col_rows() * s.L, s.L, s.kernel_rows * s.L,
                n0 + i == 0 ? T(0) : T(1), pdw, s.kernel_rows, s.Og * s.kernel_rows, groups);
    }
  });
}

}  // namespace mg::cuda
