// Row reductions and row softmax. Sums accumulate in double (int64 for int32) and, for a row too
// long for one thread, over fixed 16K-element blocks added in order: the result does not depend
// on the thread count. Float32 softmax rows use a vectorized exp where AVX-512 is available.
// GCC 12 warns about the deliberately undefined upper halves inside its own AVX-512 reduction
// intrinsics.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include <cmath>
#include <type_traits>
#include <limits>
#include <vector>

#include "engine/cpu/cpu_backend.hpp"
#include "engine/parallel.hpp"

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace mg::cpu {
namespace {

constexpr int64_t kSumBlock = 16384;

template <class T>
using acc_t = std::conditional_t<std::is_integral_v<T>, int64_t, double>;

template <class T>
acc_t<T> sum_span(const T* p, int64_t n) {
  acc_t<T> acc = 0;
#pragma omp simd reduction(+ : acc)
  for (int64_t i = 0; i < n; ++i) acc += static_cast<acc_t<T>>(p[i]);
  return acc;
}

template <class T>
void add_span(const T* p, int64_t n, acc_t<T>* acc) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) acc[i] += static_cast<acc_t<T>>(p[i]);
}

template <class T>
acc_t<T> sum_row(const T* p, int64_t n, bool parallel) {
  if (!parallel || n <= kSumBlock) return sum_span(p, n);
  const int64_t blocks = (n + kSumBlock - 1) / kSumBlock;
  std::vector<acc_t<T>> partial(blocks);
  parallel_for(blocks, n, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b)
      partial[b] = sum_span(p + b * kSumBlock, std::min(kSumBlock, n - b * kSumBlock));
  });
  acc_t<T> acc = 0;
  for (acc_t<T> v : partial) acc += v;
  return acc;
}

// NaN wins, as torch.max; ties keep the first index.
template <class T>
bool better(T candidate, T best, bool want_max) {
  if constexpr (std::is_floating_point_v<T>) {
    if (std::isnan(best)) return false;
    if (std::isnan(candidate)) return true;
  }
  return want_max ? candidate > best : candidate < best;
}

#if defined(__AVX512F__)
// exp of 16 floats, Cephes' expf: x = n ln2 + r, |r| <= ln2 / 2, a degree-7 polynomial for e^r,
// then scaling by 2^n (vscalefps, which also underflows to 0 and overflows to inf). About 1 ulp.
// NaN stays NaN; exp(-inf) = 0 and exp(0) = 1 exactly.
inline __m512 exp16(__m512 x) {
  x = _mm512_min_ps(_mm512_set1_ps(88.8f), _mm512_max_ps(_mm512_set1_ps(-104.0f), x));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  return _mm512_scalef_ps(p, n);
}

// Whole vectors take plain loads and stores: masked ones are slow on AMD Zen.
inline __m512 load_lanes(const float* p, __mmask16 k) {
  return k == __mmask16(0xFFFF) ? _mm512_loadu_ps(p) : _mm512_maskz_loadu_ps(k, p);
}
inline void store_lanes(float* p, __mmask16 k, __m512 v) {
  if (k == __mmask16(0xFFFF)) _mm512_storeu_ps(p, v);
  else _mm512_mask_storeu_ps(p, k, v);
}

// One float row of softmax_rows with exp16: the same steps as the scalar loop (max, shifted
// exponentials summed in double, scale or log), 16 columns at a time.
void softmax_row_f32(const float* row, float* out, int64_t cols, bool log) {
  __m512 vmax = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  for (int64_t c = 0; c < cols; c += 16) {
    const __mmask16 k = cols - c >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (cols - c)) - 1);
    vmax = _mm512_mask_max_ps(vmax, k, vmax, load_lanes(row + c, k));
  }
  float max = _mm512_reduce_max_ps(vmax);
  if (!std::isfinite(max)) max = 0;
  const __m512 shift = _mm512_set1_ps(max);
  __m512d sum_lo = _mm512_setzero_pd(), sum_hi = _mm512_setzero_pd();
  for (int64_t c = 0; c < cols; c += 16) {
    const __mmask16 k = cols - c >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (cols - c)) - 1);
    const __m512 e = _mm512_maskz_mov_ps(k, exp16(_mm512_sub_ps(load_lanes(row + c, k), shift)));
    sum_lo = _mm512_add_pd(sum_lo, _mm512_cvtps_pd(_mm512_castps512_ps256(e)));
    sum_hi = _mm512_add_pd(sum_hi, _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(e), 1))));
    if (!log) store_lanes(out + c, k, e);
  }
  const double sum = _mm512_reduce_add_pd(_mm512_add_pd(sum_lo, sum_hi));
  if (log) {
    const __m512 log_sum = _mm512_set1_ps(static_cast<float>(std::log(sum)));
    for (int64_t c = 0; c < cols; c += 16) {
      const __mmask16 k = cols - c >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (cols - c)) - 1);
      store_lanes(out + c, k, _mm512_sub_ps(_mm512_sub_ps(load_lanes(row + c, k), shift), log_sum));
    }
  } else {
    const __m512 inv = _mm512_set1_ps(static_cast<float>(1.0 / sum));
    for (int64_t c = 0; c < cols; c += 16) {
      const __mmask16 k = cols - c >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (cols - c)) - 1);
      store_lanes(out + c, k, _mm512_mul_ps(load_lanes(out + c, k), inv));
    }
  }
}
#endif

// The vectorized row where there is one (float32 with AVX-512); false: use the scalar loop.
template <class T>
bool softmax_row_fast(const T* row, T* out, int64_t cols, bool log) {
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<T, float>) {
    softmax_row_f32(row, out, cols, log);
    return true;
  }
#endif
  return false;
}

}  // namespace

void CpuBackend::reduce_rows(ReduceOp op, const Tensor& x, const Tensor& values,
                             const Tensor& indices) {
  const int64_t rows = x.size(0), cols = x.size(1);
  MG_DISPATCH_ALL_TYPES(x.dtype(), "reduce", [&] {
    using T = scalar_t;
    const T* in = x.data_ptr<T>();
    T* out = values.data_ptr<T>();
    int32_t* idx = indices.defined() ? indices.data_ptr<int32_t>() : nullptr;
    if (op == ReduceOp::Sum && !x.is_contiguous()) {
      // adjacent rows: walk memory in order, each thread owning a range of rows (so the order of
      // every sum does not depend on the thread count)
      const int64_t step = x.stride(1);
      parallel_for(rows, rows * cols, [&](int64_t r0, int64_t r1) {
        std::vector<acc_t<T>> acc(r1 - r0, acc_t<T>(0));
        for (int64_t c = 0; c < cols; ++c) add_span(in + c * step + r0, r1 - r0, acc.data());
        for (int64_t r = r0; r < r1; ++r) out[r] = static_cast<T>(acc[r - r0]);
      });
      return;
    }
    if (op == ReduceOp::Sum) {
      const bool split_rows = rows >= get_num_threads();
      parallel_for(rows, split_rows ? rows * cols : 0, [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r)
          out[r] = static_cast<T>(sum_row(in + r * cols, cols, !split_rows));
      });
      return;
    }
    const bool want_max = op == ReduceOp::Max;
    parallel_for(rows, rows * cols, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const T* row = in + r * cols;
        int64_t best = 0;
        for (int64_t c = 1; c < cols; ++c)
          if (better(row[c], row[best], want_max)) best = c;
        out[r] = row[best];
        if (idx) idx[r] = static_cast<int32_t>(best);
      }
    });
  });
}

void CpuBackend::softmax_rows(const Tensor& x, const Tensor& out, bool log) {
  const int64_t rows = x.size(0), cols = x.size(1);
  MG_DISPATCH_FLOATING_TYPES(x.dtype(), "softmax", [&] {
    using T = scalar_t;
    const T* in = x.data_ptr<T>();
    T* o = out.data_ptr<T>();
    parallel_for(rows, rows * cols * 8, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const T* row = in + r * cols;
        T* orow = o + r * cols;
        if (softmax_row_fast(row, orow, cols, log)) continue;
        T max = -std::numeric_limits<T>::infinity();
        for (int64_t c = 0; c < cols; ++c) max = std::max(max, row[c]);
        if (!std::isfinite(max)) max = 0;  // all -inf rows give NaN like torch, not a shift by inf
        double sum = 0;
        for (int64_t c = 0; c < cols; ++c) {
          const T e = std::exp(row[c] - max);
          sum += e;
          if (!log) orow[c] = e;
        }
        if (log) {
          // (x - max) - log(sum), as torch: x - (max + log(sum)) would round log(sum) to the
          // spacing of max, losing digits for large logits (0.2% of exp(logp) at 3e4 in float32).
          const T log_sum = static_cast<T>(std::log(sum));
          for (int64_t c = 0; c < cols; ++c) orow[c] = (row[c] - max) - log_sum;
        } else {
          const T inv = static_cast<T>(1.0 / sum);
          for (int64_t c = 0; c < cols; ++c) orow[c] *= inv;
        }
      }
    });
  });
}

void CpuBackend::softmax_rows_backward(const Tensor& y, const Tensor& grad, const Tensor& out,
                                       bool log) {
  const int64_t rows = y.size(0), cols = y.size(1);
  MG_DISPATCH_FLOATING_TYPES(y.dtype(), "softmax_backward", [&] {
    using T = scalar_t;
    const T* yp = y.data_ptr<T>();
    const T* gp = grad.data_ptr<T>();
    T* o = out.data_ptr<T>();
    parallel_for(rows, rows * cols * 4, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const T* yr = yp + r * cols;
        const T* gr = gp + r * cols;
        T* orow = o + r * cols;
        double acc = 0;
        if (log) {
          for (int64_t c = 0; c < cols; ++c) acc += gr[c];
          for (int64_t c = 0; c < cols; ++c) orow[c] = gr[c] - std::exp(yr[c]) * static_cast<T>(acc);
        } else {
          for (int64_t c = 0; c < cols; ++c) acc += static_cast<double>(gr[c]) * yr[c];
          for (int64_t c = 0; c < cols; ++c) orow[c] = yr[c] * (gr[c] - static_cast<T>(acc));
        }
      }
    });
  });
}

}  // namespace mg::cpu
