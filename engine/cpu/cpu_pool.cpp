// CPU pooling kernels, one (n, c) plane per task. max_pool2d scans each window like torch's
// cpu_max_pool (first maximum wins, a NaN replaces any number); the average kernels just sum the
// windows the op computed, accumulating in double.
#include <cmath>
#include <limits>

#include "engine/cpu/cpu_backend.hpp"
#include "engine/parallel.hpp"

namespace mg::cpu {

void CpuBackend::max_pool2d(const Tensor& x, const Window2d& win, const Tensor& out,
                            const Tensor& indices) {
  const int64_t planes = x.size(0) * x.size(1), H = x.size(2), W = x.size(3);
  const int64_t OH = win.out_h, OW = win.out_w;
  MG_DISPATCH_FLOATING_TYPES(x.dtype(), "max_pool2d", [&] {
    using T = scalar_t;
    const T* px = x.data_ptr<T>();
    T* po = out.data_ptr<T>();
    int32_t* pi = indices.data_ptr<int32_t>();
    const int64_t work = planes * OH * OW * win.kernel_h * win.kernel_w;
    parallel_for(planes, work, [&](int64_t p0, int64_t p1) {
      for (int64_t p = p0; p < p1; ++p) {
        const T* plane = px + p * H * W;
        for (int64_t oh = 0; oh < OH; ++oh)
          for (int64_t ow = 0; ow < OW; ++ow) {
            const int64_t h0 = oh * win.stride_h - win.pad_h, w0 = ow * win.stride_w - win.pad_w;
            T best = -std::numeric_limits<T>::infinity();
            int64_t best_index = -1;  // stays -1 only for a window entirely in the padding
            for (int64_t i = 0; i < win.kernel_h; ++i) {
              const int64_t ih = h0 + i * win.dilation_h;
              if (ih < 0 || ih >= H) continue;
              for (int64_t j = 0; j < win.kernel_w; ++j) {
                const int64_t iw = w0 + j * win.dilation_w;
                if (iw < 0 || iw >= W) continue;
                const T v = plane[ih * W + iw];
                // Like torch, the index starts at the first in-bounds element (an all -inf
                // window points there).
                if (best_index < 0) best_index = ih * W + iw;
                if (v > best || std::isnan(v)) {
                  best = v;
                  best_index = ih * W + iw;
                }
              }
            }
            po[(p * OH + oh) * OW + ow] = best;
            pi[(p * OH + oh) * OW + ow] = static_cast<int32_t>(best_index);
          }
      }
    });
  });
}

void CpuBackend::max_pool2d_backward(const Tensor& grad, const Tensor& indices,
                                     const Tensor& grad_x) {
  const int64_t planes = grad_x.size(0) * grad_x.size(1);
  const int64_t in_plane = grad_x.size(2) * grad_x.size(3);
  const int64_t out_plane = grad.size(2) * grad.size(3);
  MG_DISPATCH_FLOATING_TYPES(grad.dtype(), "max_pool2d_backward", [&] {
    using T = scalar_t;
    const T* pg = grad.data_ptr<T>();
    const int32_t* pi = indices.data_ptr<int32_t>();
    T* pdx = grad_x.data_ptr<T>();
    parallel_for(planes, planes * (in_plane + out_plane), [&](int64_t p0, int64_t p1) {
      for (int64_t p = p0; p < p1; ++p) {
        T* dx = pdx + p * in_plane;
        std::fill_n(dx, in_plane, T(0));
        for (int64_t o = 0; o < out_plane; ++o) {
          const int32_t index = pi[p * out_plane + o];
          if (index >= 0) dx[index] += pg[p * out_plane + o];
        }
      }
    });
  });
}

void CpuBackend::avg_pool2d(const Tensor& x, const AvgWindows& win, const Tensor& out) {
  const int64_t planes = x.size(0) * x.size(1), H = x.size(2), W = x.size(3);
  const int64_t OH = static_cast<int64_t>(win.row_begin.size());
  const int64_t OW = static_cast<int64_t>(win.col_begin.size());
  MG_DISPATCH_FLOATING_TYPES(x.dtype(), "avg_pool2d", [&] {
    using T = scalar_t;
    const T* px = x.data_ptr<T>();
    T* po = out.data_ptr<T>();
    parallel_for(planes, planes * std::max(H * W, OH * OW), [&](int64_t p0, int64_t p1) {
      for (int64_t p = p0; p < p1; ++p) {
        const T* plane = px + p * H * W;
        for (int64_t oh = 0; oh < OH; ++oh)
          for (int64_t ow = 0; ow < OW; ++ow) {
            double sum = 0;
            for (int64_t ih = win.row_begin[oh]; ih < win.row_end[oh]; ++ih)
              for (int64_t iw = win.col_begin[ow]; iw < win.col_end[ow]; ++iw) sum += plane[ih * W + iw];
            po[(p * OH + oh) * OW + ow] = static_cast<T>(sum / (win.row_div[oh] * win.col_div[ow]));
          }
      }
    });
  });
}

void CpuBackend::avg_pool2d_backward(const Tensor& grad, const AvgWindows& win,
                                     const Tensor& grad_x) {
  const int64_t planes = grad_x.size(0) * grad_x.size(1), H = grad_x.size(2), W = grad_x.size(3);
  const int64_t OH = static_cast<int64_t>(win.row_begin.size());
  const int64_t OW = static_cast<int64_t>(win.col_begin.size());
  MG_DISPATCH_FLOATING_TYPES(grad.dtype(), "avg_pool2d_backward", [&] {
    using T = scalar_t;
    const T* pg = grad.data_ptr<T>();
    T* pdx = grad_x.data_ptr<T>();
    parallel_for(planes, planes * std::max(H * W, OH * OW), [&](int64_t p0, int64_t p1) {
      for (int64_t p = p0; p < p1; ++p) {
        T* dx = pdx + p * H * W;
        std::fill_n(dx, H * W, T(0));
        for (int64_t oh = 0; oh < OH; ++oh)
          for (int64_t ow = 0; ow < OW; ++ow) {
            const T share = static_cast<T>(pg[(p * OH + oh) * OW + ow] /
                                           (win.row_div[oh] * win.col_div[ow]));
            for (int64_t ih = win.row_begin[oh]; ih < win.row_end[oh]; ++ih)
              for (int64_t iw = win.col_begin[ow]; iw < win.col_end[ow]; ++iw) dx[ih * W + iw] += share;
          }
      }
    });
  });
}

}  // namespace mg::cpu
