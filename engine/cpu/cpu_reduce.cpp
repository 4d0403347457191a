// Row reductions and row softmax. Sums accumulate in double (int64 for int32) and, for a row too
// long for one thread, over fixed 16K-element blocks added in order: the result does not depend
// on the thread count.
#include <cmath>
#include <limits>
#include <vector>

#include "engine/cpu/cpu_backend.hpp"
#include "engine/parallel.hpp"

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

}  // namespace

void CpuBackend::reduce_rows(ReduceOp op, const Tensor& x, const Tensor& values,
                             const Tensor& indices) {
  const int64_t rows = x.size(0), cols = x.size(1);
  MG_DISPATCH_ALL_TYPES(x.dtype(), "reduce", [&] {
    using T = scalar_t;
    const T* in = x.data_ptr<T>();
    T* out = values.data_ptr<T>();
    int32_t* idx = indices.defined() ? indices.data_ptr<int32_t>() : nullptr;
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
