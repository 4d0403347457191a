// CPU pooling kernels, one (n, c) plane per task. max_pool2d scans each window like torch's
// cpu_max_pool (first maximum wins, a NaN replaces any number), with an unrolled 2x2 / stride 2
// case; the average kernels just sum the windows the op computed, accumulating in double.
#include <algorithm>
#include <cmath>
#include <limits>

#include "engine/cpu/cpu_backend.hpp"
#include "engine/parallel.hpp"

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace mg::cpu {
namespace {

// The scan rule of the general kernel below, for one candidate.
template <class T>
inline void take_if_better(T v, int32_t index, T& best, int32_t& best_index) {
  const bool better = v > best || v != v;  // v != v: NaN
  best = better ? v : best;
  best_index = better ? index : best_index;
}

// The common 2x2 window with stride 2 (no padding or dilation): the same scan, unrolled, so the
// compiler can vectorize across output columns.
template <class T>
void max_pool_2x2_plane(const T* plane, int64_t W, int64_t OH, int64_t OW, T* out, int32_t* idx) {
  for (int64_t oh = 0; oh < OH; ++oh) {
    const T* r0 = plane + 2 * oh * W;
    const T* r1 = r0 + W;
    const int32_t base0 = static_cast<int32_t>(2 * oh * W), base1 = static_cast<int32_t>(base0 + W);
    T* o = out + oh * OW;
    int32_t* ix = idx + oh * OW;
    for (int64_t ow = 0; ow < OW; ++ow) {
      const int32_t c = static_cast<int32_t>(2 * ow);
      T best = r0[c];  // the first in-bounds element starts the scan, whatever its value
      int32_t best_index = base0 + c;
      take_if_better(r0[c + 1], base0 + c + 1, best, best_index);
      take_if_better(r1[c], base1 + c, best, best_index);
      take_if_better(r1[c + 1], base1 + c + 1, best, best_index);
      o[ow] = best;
      ix[ow] = best_index;
    }
  }
}

#if defined(__AVX512F__)
// The float case 16 output columns at a time: the even and odd columns of two input rows are
// split out with permutes, and the scan's comparisons become lane masks.
void max_pool_2x2_plane(const float* plane, int64_t W, int64_t OH, int64_t OW, float* out,
                        int32_t* idx) {
  const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
  const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
  for (int64_t oh = 0; oh < OH; ++oh) {
    const float* r0 = plane + 2 * oh * W;
    const float* r1 = r0 + W;
    for (int64_t ow0 = 0; ow0 < OW; ow0 += 16) {
      const int64_t n = std::min<int64_t>(16, OW - ow0), inputs = 2 * n;
      const __mmask16 k_out = __mmask16((1u << n) - 1);
      const __mmask16 k_lo = inputs >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << inputs) - 1);
      const __mmask16 k_hi = inputs > 16 ? __mmask16((1u << (inputs - 16)) - 1) : __mmask16(0);
      __m512 v[4];
      for (int r = 0; r < 2; ++r) {
        const float* src = (r == 0 ? r0 : r1) + 2 * ow0;
        // plain loads and stores for whole vectors: masked ones are slow on AMD Zen (a masked
        // load that misses the cache stalls until memory answers)
        const __m512 lo = k_lo == 0xFFFF ? _mm512_loadu_ps(src) : _mm512_maskz_loadu_ps(k_lo, src);
        const __m512 hi = k_hi == 0xFFFF ? _mm512_loadu_ps(src + 16)
                                         : k_hi ? _mm512_maskz_loadu_ps(k_hi, src + 16) : _mm512_setzero_ps();
        v[2 * r] = _mm512_permutex2var_ps(lo, even, hi);
        v[2 * r + 1] = _mm512_permutex2var_ps(lo, odd, hi);
      }
      const __m512i col = _mm512_add_epi32(_mm512_set1_epi32(static_cast<int32_t>(2 * oh * W + 2 * ow0)), even);
      const int32_t offset[4] = {0, 1, static_cast<int32_t>(W), static_cast<int32_t>(W + 1)};
      __m512 best = v[0];
      __m512i best_index = col;
      for (int k = 1; k < 4; ++k) {
        const __mmask16 better = _mm512_cmp_ps_mask(v[k], best, _CMP_GT_OQ) |
                                 _mm512_cmp_ps_mask(v[k], v[k], _CMP_UNORD_Q);
        best = _mm512_mask_mov_ps(best, better, v[k]);
        best_index = _mm512_mask_mov_epi32(best_index, better, _mm512_add_epi32(col, _mm512_set1_epi32(offset[k])));
      }
      if (k_out == 0xFFFF) {
        _mm512_storeu_ps(out + oh * OW + ow0, best);
        _mm512_storeu_si512(idx + oh * OW + ow0, best_index);
      } else {
        _mm512_mask_storeu_ps(out + oh * OW + ow0, k_out, best);
        _mm512_mask_storeu_epi32(idx + oh * OW + ow0, k_out, best_index);
      }
    }
  }
}
#endif

}  // namespace

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
    const bool two_by_two = win.kernel_h == 2 && win.kernel_w == 2 && win.stride_h == 2 &&
                            win.stride_w == 2 && win.pad_h == 0 && win.pad_w == 0 &&
                            win.dilation_h == 1 && win.dilation_w == 1 && 2 * OH <= H && 2 * OW <= W;
    parallel_for(planes, work, [&](int64_t p0, int64_t p1) {
      for (int64_t p = p0; p < p1; ++p) {
        const T* plane = px + p * H * W;
        if (two_by_two) {
          max_pool_2x2_plane(plane, W, OH, OW, po + p * OH * OW, pi + p * OH * OW);
          continue;
        }
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
