// Batch normalization kernels with torch's formulas (backend.hpp). Work is split by channel and
// every channel sums its (sample, channel) planes in sample order, so results do not depend on
// the thread count. Within a plane the sums run in the tensor's dtype over SIMD lanes (as torch's
// vectorized reductions); planes are combined in double.
//
// Statistics take one pass over memory where torch's two-pass mean/variance takes two: each plane
// is summed and then, while it is still in L1, its squared deviations from its own mean are
// summed; the planes' (count, mean, M2) are merged with Chan et al.'s pairwise formula, which is
// as exact as two passes over the whole channel.
// GCC 12 warns about the deliberately undefined upper halves inside its own AVX-512 reduction
// intrinsics.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include <algorithm>
#include <cmath>

#include "engine/cpu/cpu_backend.hpp"
#include "engine/parallel.hpp"

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace mg::cpu {
namespace {

struct Planes {
  int64_t N, C, S;  // x viewed as [N, C, S]
  Planes(const Tensor& x)  // NOLINT: implicit, only here
      : N(x.size(0)), C(x.size(1)), S(N * C == 0 ? 0 : x.numel() / (N * C)) {}
  int64_t at(int64_t n, int64_t c) const { return (n * C + c) * S; }
};

template <class T>
T plane_sum(const T* p, int64_t n) {
  T s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; ++i) s += p[i];
  return s;
}

template <class T>
T plane_squared_deviation(const T* p, int64_t n, T m) {
  T s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; ++i) s += (p[i] - m) * (p[i] - m);
  return s;
}

template <class T>
T plane_centered_dot(const T* x, const T* g, int64_t n, T m) {
  T s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; ++i) s += (x[i] - m) * g[i];
  return s;
}

#if defined(__AVX512F__)
// Float planes with four independent vector accumulators: one accumulator (what `omp simd` makes
// of the loops above) waits on the latency of every add and reads at a third of the memory's
// pace. The lane and accumulator of each element are fixed, so the sums are repeatable.
struct Acc4 {
  __m512 a[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
  float total() const {
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a[0], a[1]), _mm512_add_ps(a[2], a[3])));
  }
};

// Full vectors take plain loads: on AMD Zen a masked load that misses the cache stalls what
// follows it until memory answers (the planes here come from memory).
inline __m512 load(const float* p, __mmask16 m) {
  return m == __mmask16(0xFFFF) ? _mm512_loadu_ps(p) : _mm512_maskz_loadu_ps(m, p);
}

// Calls f(acc, offset, mask) for the 16-lane vectors of [0, n), four accumulators in turn.
template <class F>
inline void for_vectors(int64_t n, const F& f) {
  int64_t i = 0;
  for (; i + 64 <= n; i += 64)
    for (int k = 0; k < 4; ++k) f(k, i + 16 * k, __mmask16(0xFFFF));
  int k = 0;
  for (; i < n; i += 16, k = (k + 1) % 4)
    f(k, i, n - i >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (n - i)) - 1));
}

template <>
float plane_sum<float>(const float* p, int64_t n) {
  Acc4 s;
  for_vectors(n, [&](int k, int64_t i, __mmask16 m) {
    s.a[k] = _mm512_add_ps(s.a[k], load(p + i, m));
  });
  return s.total();
}

template <>
float plane_squared_deviation<float>(const float* p, int64_t n, float mean) {
  const __m512 vm = _mm512_set1_ps(mean);
  Acc4 s;
  for_vectors(n, [&](int k, int64_t i, __mmask16 m) {
    const __m512 d = _mm512_maskz_sub_ps(m, load(p + i, m), vm);
    s.a[k] = _mm512_fmadd_ps(d, d, s.a[k]);
  });
  return s.total();
}

template <>
float plane_centered_dot<float>(const float* x, const float* g, int64_t n, float mean) {
  const __m512 vm = _mm512_set1_ps(mean);
  Acc4 s;
  for_vectors(n, [&](int k, int64_t i, __mmask16 m) {
    const __m512 d = _mm512_maskz_sub_ps(m, load(x + i, m), vm);
    s.a[k] = _mm512_fmadd_ps(d, load(g + i, m), s.a[k]);
  });
  return s.total();
}
#endif

// (The SIMD loops live in these helpers: a pragma inside the dispatch macro's argument is lost.)
template <class T>
void plane_affine(const T* x, int64_t n, T alpha, T beta, T* out) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) out[i] = x[i] * alpha + beta;
}

template <class T>
void plane_grad_input(const T* g, const T* x, int64_t n, T m, T grad_mean, T k, T scale, T* dx) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) dx[i] = (g[i] - grad_mean - (x[i] - m) * k) * scale;
}

}  // namespace

void CpuBackend::batch_norm_stats(const Tensor& x, double eps, const Tensor& mean, const Tensor& var,
                                  const Tensor& invstd) {
  const Planes d(x);
  MG_DISPATCH_FLOATING_TYPES(x.dtype(), "batch_norm_stats", [&] {
    using T = scalar_t;
    const T* px = x.data_ptr<T>();
    T* pm = mean.data_ptr<T>();
    T* pv = var.data_ptr<T>();
    T* pi = invstd.data_ptr<T>();
    parallel_for(d.C, 2 * d.N * d.C * d.S, [&](int64_t c0, int64_t c1) {
      for (int64_t c = c0; c < c1; ++c) {
        double count = 0, m = 0, m2 = 0;
        for (int64_t n = 0; n < d.N; ++n) {
          const T* p = px + d.at(n, c);
          const double plane_mean = static_cast<double>(plane_sum(p, d.S)) / static_cast<double>(d.S);
          const T centre = static_cast<T>(plane_mean);
          // deviations were taken from the rounded mean: move M2 to the exact one
          const double shift = plane_mean - static_cast<double>(centre);
          const double plane_m2 = static_cast<double>(plane_squared_deviation(p, d.S, centre)) -
                                  static_cast<double>(d.S) * shift * shift;
          const double before = count, delta = plane_mean - m;
          count += static_cast<double>(d.S);
          m += delta * static_cast<double>(d.S) / count;
          m2 += plane_m2 + delta * delta * before * static_cast<double>(d.S) / count;
        }
        const double v = count > 0 ? std::max(m2, 0.0) / count : 0.0;
        pm[c] = static_cast<T>(m);
        pv[c] = static_cast<T>(v);
        pi[c] = static_cast<T>(1.0 / std::sqrt(v + eps));
      }
    });
  });
}

void CpuBackend::batch_norm_forward(const Tensor& x, const Tensor& mean, const Tensor& invstd,
                                    const Tensor& weight, const Tensor& bias, const Tensor& out) {
  const Planes d(x);
  MG_DISPATCH_FLOATING_TYPES(x.dtype(), "batch_norm_forward", [&] {
    using T = scalar_t;
    const T* px = x.data_ptr<T>();
    const T* pm = mean.data_ptr<T>();
    const T* pi = invstd.data_ptr<T>();
    const T* pw = weight.defined() ? weight.data_ptr<T>() : nullptr;
    const T* pb = bias.defined() ? bias.data_ptr<T>() : nullptr;
    T* po = out.data_ptr<T>();
    parallel_for(d.N * d.C, d.N * d.C * d.S, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        const int64_t c = i % d.C;
        // torch's batch_norm_cpu_collect_linear_and_constant_terms, in the parameters' dtype
        const T alpha = pi[c] * (pw ? pw[c] : T(1));
        const T beta = (pb ? pb[c] : T(0)) - pm[c] * alpha;
        plane_affine(px + i * d.S, d.S, alpha, beta, po + i * d.S);
      }
    });
  });
}

void CpuBackend::batch_norm_backward(const Tensor& grad, const Tensor& x, const Tensor& mean,
                                     const Tensor& invstd, const Tensor& weight, bool batch_stats,
                                     const Tensor& grad_x, const Tensor& grad_weight,
                                     const Tensor& grad_bias) {
  const Planes d(x);
  const double M = static_cast<double>(d.N * d.S);
  MG_DISPATCH_FLOATING_TYPES(x.dtype(), "batch_norm_backward", [&] {
    using T = scalar_t;
    const T* pg = grad.data_ptr<T>();
    const T* px = x.data_ptr<T>();
    const T* pm = mean.data_ptr<T>();
    const T* pi = invstd.data_ptr<T>();
    const T* pw = weight.defined() ? weight.data_ptr<T>() : nullptr;
    T* pdx = grad_x.defined() ? grad_x.data_ptr<T>() : nullptr;
    T* pdw = grad_weight.defined() ? grad_weight.data_ptr<T>() : nullptr;
    T* pdb = grad_bias.defined() ? grad_bias.data_ptr<T>() : nullptr;
    const bool need_sums = pdw || pdb || (pdx && batch_stats);
    parallel_for(d.C, 3 * d.N * d.C * d.S, [&](int64_t c0, int64_t c1) {
      for (int64_t c = c0; c < c1; ++c) {
        const T m = pm[c];
        double sum = 0, dotp = 0;
        for (int64_t n = 0; need_sums && n < d.N; ++n) {
          sum += static_cast<double>(plane_sum(pg + d.at(n, c), d.S));
          dotp += static_cast<double>(plane_centered_dot(px + d.at(n, c), pg + d.at(n, c), d.S, m));
        }
        const double inv = static_cast<double>(pi[c]);
        if (pdw) pdw[c] = static_cast<T>(dotp * inv);
        if (pdb) pdb[c] = static_cast<T>(sum);
        if (!pdx) continue;
        const T scale = static_cast<T>(inv * (pw ? static_cast<double>(pw[c]) : 1.0));
        const T k = batch_stats ? static_cast<T>(dotp * inv * inv / M) : T(0);
        const T grad_mean = batch_stats ? static_cast<T>(sum / M) : T(0);
        for (int64_t n = 0; n < d.N; ++n)
          plane_grad_input(pg + d.at(n, c), px + d.at(n, c), d.S, m, grad_mean, k, scale, pdx + d.at(n, c));
      }
    });
  });
}

}  // namespace mg::cpu
