// Row reductions and row softmax, after cpu_reduce.cpp: one block per row (a thread per row for
// the column sums of a matrix). Sums accumulate in double (int64 for int32) like the CPU's, but
// in the block order of cuda_block_reduce.cuh rather than left to right: a float32 sum equals the
// CPU's up to the rounding of the double partial sums, far below float32's own rounding, so
// results agree to 1 ulp of the output type. Max/min and their indices are exact (first
// occurrence, NaN wins, as torch).
#include <limits>

#include "engine/cuda/cuda_block_reduce.cuh"

namespace mg::cuda {
namespace {

template <class T>
using acc_t = std::conditional_t<std::is_integral_v<T>, long long, double>;

template <class T>
__global__ void sum_rows_kernel(const T* in, T* out, int64_t rows, int64_t cols) {
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    acc_t<T> acc = 0;
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x)
      acc += static_cast<acc_t<T>>(in[r * cols + c]);
    acc = block_reduce(acc, SumOp{});
    if (threadIdx.x == 0) out[r] = static_cast<T>(acc);
  }
}

// Rows adjacent in memory (stride(0) == 1), the column sums of a matrix (every Linear's bias
// gradient: [N, D] summed over N). A thread per row alone would leave D threads walking N columns
// each, so the columns are cut into spans of kSpan: a thread sums one row's span (neighbouring
// threads read neighbouring addresses), then a second kernel adds each row's spans in order. The
// spans are fixed, so the result does not depend on the grid.
constexpr int64_t kSpan = 1024;

template <class T>
__global__ void sum_adjacent_spans_kernel(const T* in, acc_t<T>* partial, int64_t rows,
                                          int64_t cols, int64_t col_stride, int64_t spans) {
  MG_GRID_STRIDE(i, rows * spans) {
    const int64_t r = i % rows, span = i / rows;
    const int64_t end = (span + 1) * kSpan < cols ? (span + 1) * kSpan : cols;
    acc_t<T> acc = 0;
    for (int64_t c = span * kSpan; c < end; ++c) acc += static_cast<acc_t<T>>(in[c * col_stride + r]);
    partial[span * rows + r] = acc;
  }
}

template <class T>
__global__ void sum_spans_kernel(const acc_t<T>* partial, T* out, int64_t rows, int64_t spans) {
  MG_GRID_STRIDE(r, rows) {
    acc_t<T> acc = 0;
    for (int64_t span = 0; span < spans; ++span) acc += partial[span * rows + r];
    out[r] = static_cast<T>(acc);
  }
}

template <class T>
__device__ bool is_nan(T v) {
  if constexpr (std::is_floating_point_v<T>) return v != v;
  return false;
}

// The better of two (value, index) candidates: NaN first, then the larger (smaller), then the
// lower index: whatever order the candidates meet in, the first extreme element wins.
template <class T>
__device__ bool prefer(T v, int64_t i, T best, int64_t best_i, bool want_max) {
  const bool nv = is_nan(v), nb = is_nan(best);
  if (nv || nb) return nv && nb ? i < best_i : nv;
  if (v != best) return want_max ? v > best : v < best;
  return i < best_i;
}

template <class T>
__global__ void extreme_rows_kernel(const T* in, T* out, int32_t* indices, int64_t rows,
                                    int64_t cols, bool want_max) {
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    T best = in[r * cols];
    long long best_i = 0;
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x)
      if (prefer(in[r * cols + c], c, best, best_i, want_max)) {
        best = in[r * cols + c];
        best_i = c;
      }
    // fold (index) with the value looked up again: one shuffle type for every T
    const long long winner = block_reduce(best_i, [&](long long a, long long b) {
      return prefer(in[r * cols + b], b, in[r * cols + a], a, want_max) ? b : a;
    });
    if (threadIdx.x == 0) {
      out[r] = in[r * cols + winner];
      if (indices) indices[r] = static_cast<int32_t>(winner);
    }
  }
}

template <class T>
__global__ void softmax_kernel(const T* in, T* out, int64_t rows, int64_t cols, bool log) {
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* row = in + r * cols;
    T* orow = out + r * cols;
    T max = -std::numeric_limits<T>::infinity();
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) max = max < row[c] ? row[c] : max;
    max = block_reduce(max, [](T a, T b) { return a < b ? b : a; });
    if (!isfinite(max)) max = 0;  // all -inf rows give NaN like torch, not a shift by inf
    double sum = 0;
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
      const T e = exp(row[c] - max);
      sum += e;
      if (!log) orow[c] = e;
    }
    sum = block_reduce(sum, SumOp{});
    if (log) {
      const T log_sum = static_cast<T>(::log(sum));
      for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) orow[c] = (row[c] - max) - log_sum;
    } else {
      const T inv = static_cast<T>(1.0 / sum);
      for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) orow[c] *= inv;
    }
  }
}

template <class T>
__global__ void softmax_backward_kernel(const T* y, const T* grad, T* out, int64_t rows,
                                        int64_t cols, bool log) {
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* yr = y + r * cols;
    const T* gr = grad + r * cols;
    T* orow = out + r * cols;
    double acc = 0;
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x)
      acc += log ? static_cast<double>(gr[c]) : static_cast<double>(gr[c]) * yr[c];
    const T total = static_cast<T>(block_reduce(acc, SumOp{}));
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x)
      orow[c] = log ? gr[c] - exp(yr[c]) * total : yr[c] * (gr[c] - total);
  }
}

unsigned row_blocks(int64_t rows) {
  return static_cast<unsigned>(std::clamp<int64_t>(rows, 1, 1 << 20));
}

}  // namespace

void CudaBackend::reduce_rows(ReduceOp op, const Tensor& x, const Tensor& values,
                              const Tensor& indices) {
  DeviceGuard guard(device_);
  const int64_t rows = x.size(0), cols = x.size(1);
  if (rows == 0) return;
  cudaStream_t stream = stream_for(device_);
  MG_DISPATCH_ALL_TYPES(x.dtype(), "reduce", [&] {
    using T = scalar_t;
    const T* in = static_cast<const T*>(x.raw_data());
    T* out = static_cast<T*>(values.raw_data());
    if (op == ReduceOp::Sum && !x.is_contiguous()) {
      const int64_t spans = std::max<int64_t>((cols + kSpan - 1) / kSpan, 1);
      // 8-byte partials (double, or int64 for int32 data) in a float64 scratch tensor
      static_assert(sizeof(acc_t<T>) == sizeof(double));
      const Tensor partial = scratch({spans * rows}, kFloat64, device_);
      auto* partial_data = static_cast<acc_t<T>*>(partial.raw_data());
      sum_adjacent_spans_kernel<<<blocks_for(rows * spans), kThreads, 0, stream>>>(
          in, partial_data, rows, cols, x.stride(1), spans);
      sum_spans_kernel<<<blocks_for(rows), kThreads, 0, stream>>>(partial_data, out, rows, spans);
    } else if (op == ReduceOp::Sum) {
      sum_rows_kernel<<<row_blocks(rows), kThreads, 0, stream>>>(in, out, rows, cols);
    } else {
      int32_t* idx = indices.defined() ? static_cast<int32_t*>(indices.raw_data()) : nullptr;
      extreme_rows_kernel<<<row_blocks(rows), kThreads, 0, stream>>>(in, out, idx, rows, cols,
                                                                      op == ReduceOp::Max);
    }
  });
  MG_CUDA_CHECK_LAUNCH("reduce_rows");
}

void CudaBackend::softmax_rows(const Tensor& x, const Tensor& out, bool log) {
  DeviceGuard guard(device_);
  const int64_t rows = x.size(0), cols = x.size(1);
  if (rows == 0 || cols == 0) return;
  MG_DISPATCH_FLOATING_TYPES(x.dtype(), "softmax", [&] {
    softmax_kernel<<<row_blocks(rows), kThreads, 0, stream_for(device_)>>>(
        static_cast<const scalar_t*>(x.raw_data()), static_cast<scalar_t*>(out.raw_data()), rows,
        cols, log);
  });
  MG_CUDA_CHECK_LAUNCH("softmax_rows");
}

void CudaBackend::softmax_rows_backward(const Tensor& y, const Tensor& grad, const Tensor& out,
                                        bool log) {
  DeviceGuard guard(device_);
  const int64_t rows = y.size(0), cols = y.size(1);
  if (rows == 0 || cols == 0) return;
  MG_DISPATCH_FLOATING_TYPES(y.dtype(), "softmax_backward", [&] {
    softmax_backward_kernel<<<row_blocks(rows), kThreads, 0, stream_for(device_)>>>(
        static_cast<const scalar_t*>(y.raw_data()), static_cast<const scalar_t*>(grad.raw_data()),
        static_cast<scalar_t*>(out.raw_data()), rows, cols, log);
  });
  MG_CUDA_CHECK_LAUNCH("softmax_rows_backward");
}

}  // namespace mg::cuda
