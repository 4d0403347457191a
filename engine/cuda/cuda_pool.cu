// Pooling kernels, after cpu_pool.cpp, with the same results bit for bit: max_pool2d scans each
// window in the CPU's order (first maximum wins, a NaN replaces any number); its backward gives a
// thread to each (n, c) plane, which adds the plane's gradients in output order like the CPU
// (overlapping windows then sum in the same order, so no atomics). The average kernels use the
// windows the op computed (uploaded to the device) and sum in double: the forward one thread per
// output, the backward one thread per input element, visiting the windows that cover it in the
// CPU's (oh, ow) order.
#include <cstring>
#include <limits>
#include <vector>

#include "engine/cuda/cuda_common.cuh"

namespace mg::cuda {
namespace {

template <class T>
__global__ void max_pool_kernel(const T* x, T* out, int32_t* indices, Window2d w, int64_t H,
                                int64_t W, int64_t n) {
  MG_GRID_STRIDE(o, n) {
    const int64_t ow = o % w.out_w, oh = (o / w.out_w) % w.out_h, plane = o / (w.out_w * w.out_h);
    const T* p = x + plane * H * W;
    const int64_t h0 = oh * w.stride_h - w.pad_h, w0 = ow * w.stride_w - w.pad_w;
    T best = -std::numeric_limits<T>::infinity();
    int64_t best_index = -1;  // stays -1 only for a window entirely in the padding
    for (int64_t i = 0; i < w.kernel_h; ++i) {
      const int64_t ih = h0 + i * w.dilation_h;
      if (ih < 0 || ih >= H) continue;
      for (int64_t j = 0; j < w.kernel_w; ++j) {
        const int64_t iw = w0 + j * w.dilation_w;
        if (iw < 0 || iw >= W) continue;
        const T v = p[ih * W + iw];
        if (best_index < 0) best_index = ih * W + iw;
        if (v > best || v != v) {
          best = v;
          best_index = ih * W + iw;
        }
      }
    }
    out[o] = best;
    indices[o] = static_cast<int32_t>(best_index);
  }
}

template <class T>
__global__ void max_pool_backward_kernel(const T* grad, const int32_t* indices, T* grad_x,
                                         int64_t in_plane, int64_t out_plane, int64_t planes) {
  MG_GRID_STRIDE(p, planes) {
    T* dx = grad_x + p * in_plane;
    for (int64_t i = 0; i < in_plane; ++i) dx[i] = T(0);
    for (int64_t o = 0; o < out_plane; ++o) {
      const int32_t index = indices[p * out_plane + o];
      if (index >= 0) dx[index] += grad[p * out_plane + o];
    }
  }
}

// The windows on the device: begins and ends as int64, divisors as double.
struct DeviceWindows {
  const int64_t *row_begin, *row_end, *col_begin, *col_end;
  const double *row_div, *col_div;
  int64_t OH, OW;
};

template <class T>
__global__ void avg_pool_kernel(const T* x, T* out, DeviceWindows w, int64_t H, int64_t W,
                                int64_t n) {
  MG_GRID_STRIDE(o, n) {
    const int64_t ow = o % w.OW, oh = (o / w.OW) % w.OH, plane = o / (w.OW * w.OH);
    const T* p = x + plane * H * W;
    double sum = 0;
    for (int64_t ih = w.row_begin[oh]; ih < w.row_end[oh]; ++ih)
      for (int64_t iw = w.col_begin[ow]; iw < w.col_end[ow]; ++iw) sum += p[ih * W + iw];
    out[o] = static_cast<T>(sum / (w.row_div[oh] * w.col_div[ow]));
  }
}

template <class T>
__global__ void avg_pool_backward_kernel(const T* grad, T* grad_x, DeviceWindows w, int64_t H,
                                         int64_t W, int64_t n) {
  MG_GRID_STRIDE(i, n) {
    const int64_t iw = i % W, ih = (i / W) % H, plane = i / (H * W);
    const T* g = grad + plane * w.OH * w.OW;
    T acc = T(0);
    for (int64_t oh = 0; oh < w.OH; ++oh) {
      if (ih < w.row_begin[oh] || ih >= w.row_end[oh]) continue;
      for (int64_t ow = 0; ow < w.OW; ++ow) {
        if (iw < w.col_begin[ow] || iw >= w.col_end[ow]) continue;
        acc += static_cast<T>(g[oh * w.OW + ow] / (w.row_div[oh] * w.col_div[ow]));
      }
    }
    grad_x[i] = acc;
  }
}

// The windows in one device buffer of 8-byte words: row_begin, row_end [OH], col_begin,
// col_end [OW] (int64), then row_div [OH] and col_div [OW] (double). The returned tensor keeps
// the buffer alive while the kernels are queued (the allocator hands a block on only to work
// queued after it on the same stream).
Tensor upload(const AvgWindows& win, int device, DeviceWindows& view) {
  const auto OH = static_cast<int64_t>(win.row_begin.size());
  const auto OW = static_cast<int64_t>(win.col_begin.size());
  std::vector<int64_t> words;
  for (const auto* v : {&win.row_begin, &win.row_end, &win.col_begin, &win.col_end})
    words.insert(words.end(), v->begin(), v->end());
  const size_t div_at = words.size();
  words.resize(div_at + OH + OW);
  std::memcpy(words.data() + div_at, win.row_div.data(), OH * sizeof(double));
  std::memcpy(words.data() + div_at + OH, win.col_div.data(), OW * sizeof(double));
  Tensor buffer = scratch({static_cast<int64_t>(words.size())}, kFloat64, device);
  cudaStream_t stream = stream_for(device);
  MG_CUDA_CHECK(cudaMemcpyAsync(buffer.raw_data(), words.data(), words.size() * sizeof(int64_t),
                                cudaMemcpyHostToDevice, stream));
  MG_CUDA_CHECK(cudaStreamSynchronize(stream));  // `words` goes away on return
  const auto* base = static_cast<const int64_t*>(buffer.raw_data());
  view = {base, base + OH, base + 2 * OH, base + 2 * OH + OW,
          reinterpret_cast<const double*>(base + div_at),
          reinterpret_cast<const double*>(base + div_at + OH), OH, OW};
  return buffer;
}

}  // namespace

void CudaBackend::max_pool2d(const Tensor& x, const Window2d& window, const Tensor& out,
                             const Tensor& indices) {
  DeviceGuard guard(device_);
  const int64_t n = out.numel();
  if (n == 0) return;
  MG_DISPATCH_FLOATING_TYPES(x.dtype(), "max_pool2d", [&] {
    using T = scalar_t;
    max_pool_kernel<<<blocks_for(n), kThreads, 0, stream_for(device_)>>>(
        static_cast<const T*>(x.raw_data()), static_cast<T*>(out.raw_data()),
        static_cast<int32_t*>(indices.raw_data()), window, x.size(2), x.size(3), n);
  });
  MG_CUDA_CHECK_LAUNCH("max_pool2d");
}

void CudaBackend::max_pool2d_backward(const Tensor& grad, const Tensor& indices,
                                      const Tensor& grad_x) {
  DeviceGuard guard(device_);
  const int64_t planes = grad_x.size(0) * grad_x.size(1);
  if (planes == 0) return;
  MG_DISPATCH_FLOATING_TYPES(grad.dtype(), "max_pool2d_backward", [&] {
    using T = scalar_t;
    max_pool_backward_kernel<<<blocks_for(planes), kThreads, 0, stream_for(device_)>>>(
        static_cast<const T*>(grad.raw_data()), static_cast<const int32_t*>(indices.raw_data()),
        static_cast<T*>(grad_x.raw_data()), grad_x.size(2) * grad_x.size(3),
        grad.size(2) * grad.size(3), planes);
  });
  MG_CUDA_CHECK_LAUNCH("max_pool2d_backward");
}

void CudaBackend::avg_pool2d(const Tensor& x, const AvgWindows& windows, const Tensor& out) {
  DeviceGuard guard(device_);
  const int64_t n = out.numel();
  if (n == 0) return;
  DeviceWindows view{};
  const Tensor buffer = upload(windows, device_, view);
  MG_DISPATCH_FLOATING_TYPES(x.dtype(), "avg_pool2d", [&] {
    using T = scalar_t;
    avg_pool_kernel<<<blocks_for(n), kThreads, 0, stream_for(device_)>>>(
        static_cast<const T*>(x.raw_data()), static_cast<T*>(out.raw_data()), view, x.size(2),
        x.size(3), n);
  });
  MG_CUDA_CHECK_LAUNCH("avg_pool2d");
}

void CudaBackend::avg_pool2d_backward(const Tensor& grad, const AvgWindows& windows,
                                      const Tensor& grad_x) {
  DeviceGuard guard(device_);
  const int64_t n = grad_x.numel();
  if (n == 0) return;
  DeviceWindows view{};
  const Tensor buffer = upload(windows, device_, view);
  MG_DISPATCH_FLOATING_TYPES(grad.dtype(), "avg_pool2d_backward", [&] {
    using T = scalar_t;
    avg_pool_backward_kernel<<<blocks_for(n), kThreads, 0, stream_for(device_)>>>(
        static_cast<const T*>(grad.raw_data()), static_cast<T*>(grad_x.raw_data()), view,
        grad_x.size(2), grad_x.size(3), n);
  });
  MG_CUDA_CHECK_LAUNCH("avg_pool2d_backward");
}

}  // namespace mg::cuda
