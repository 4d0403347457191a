// What every cuda_*.cu file shares: error checks that throw mg::Error, the device's stream (all
// work of a device is ordered on it, which is what lets the caching allocator hand a freed block
// to the next op without a synchronization), launch sizes, the strided-operand geometry of the
// element-wise kernels and the row-major GEMM on cuBLAS.
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <array>
#include <cstdint>

#include "engine/cuda/cuda_backend.hpp"

namespace mg::cuda {

// Throws mg::Error "cuda: <what> failed: <CUDA's error string>" unless status is cudaSuccess.
void check(cudaError_t status, const char* what);
#define MG_CUDA_CHECK(call) ::mg::cuda::check((call), #call)
// After a kernel launch: reports a bad launch configuration at the op that caused it.
#define MG_CUDA_CHECK_LAUNCH(kernel) ::mg::cuda::check(cudaGetLastError(), kernel)

// Makes `device` current for the scope (kernels and allocations go to the right GPU).
class DeviceGuard {
 public:
  explicit DeviceGuard(int device);
  ~DeviceGuard();
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = 0;
};

// The one stream of `device` (created on first use, never destroyed).
cudaStream_t stream_for(int device);

// The positions 0 .. n-1 of int32 `keys` (device memory) stably sorted by key, and the keys in that
// order, with no host round trip (cuda_bucket_sort.cu); keys outside [0, bound) come last, in
// position order, each read as `bound`. Queued on the device's stream.
struct SortedKeys {
  Tensor keys, position;  // int32 [n]
};
SortedKeys sort_by_key(int device, const int32_t* keys, int64_t n, int64_t bound);

// Returns the caching allocator's idle blocks of `device` to the driver (for allocations made
// outside it, such as cuBLAS's).
void release_cached_blocks(int device);

// Throws the error of the first failed device-side index check of `device` (cuda_index_check.cu),
// after waiting for its stream. Called where the host waits for the device anyway.
void report_index_errors(int device);

inline constexpr int kThreads = 256;
// for (int64_t i = ...; i < n; ...) over a 1-d grid of any size: each thread takes every
// (grid size)-th element.
#define MG_GRID_STRIDE(i, n)                                                 \
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < (n); \
       i += int64_t(blockDim.x) * gridDim.x)

// Blocks for n elements with grid-stride loops (the grid is capped; the loops cover the rest).
inline unsigned blocks_for(int64_t n) {
  return static_cast<unsigned>(std::clamp<int64_t>((n + kThreads - 1) / kThreads, 1, 1 << 20));
}

// Operands that share a shape with arbitrary element strides (0 for broadcast dims), seen with
// size-1 dims dropped and dims that are contiguous in every operand merged, as the CPU's
// for_each_strided does; a thread maps its linear index to one offset per operand.
inline constexpr int kMaxDims = 10;
template <int N>
struct StridedGeometry {
  int ndim = 0;
  // every operand dense in the same order, so an offset is the linear index: no 64-bit division
  // per element (dozens of instructions on a GPU) for the common contiguous case
  bool dense = false;
  int64_t sizes[kMaxDims] = {};
  int64_t strides[N][kMaxDims] = {};
  MG_HOST_DEVICE void offsets(int64_t linear, int64_t (&out)[N]) const {
    if (dense) {
      for (int k = 0; k < N; ++k) out[k] = linear;
      return;
    }
    for (int k = 0; k < N; ++k) out[k] = 0;
    for (int d = ndim - 1; d >= 0; --d) {
      const int64_t coord = linear % sizes[d];
      linear /= sizes[d];
      for (int k = 0; k < N; ++k) out[k] += coord * strides[k][d];
    }
  }
};

template <int N>
StridedGeometry<N> make_geometry(const Shape& sizes, const std::array<const Tensor*, N>& operands) {
  StridedGeometry<N> g;
  for (size_t d = 0; d < sizes.size(); ++d) {
    if (sizes[d] == 1) continue;
    if (g.ndim > 0) {
      bool merge = true;
      for (int k = 0; k < N; ++k)
        merge &= g.strides[k][g.ndim - 1] == operands[k]->stride(d) * sizes[d];
      if (merge) {
        g.sizes[g.ndim - 1] *= sizes[d];
        for (int k = 0; k < N; ++k) g.strides[k][g.ndim - 1] = operands[k]->stride(d);
        continue;
      }
    }
    MG_CHECK(g.ndim < kMaxDims, "cuda: a strided operand with more than ", kMaxDims,
             " non-mergeable dims is not supported");
    g.sizes[g.ndim] = sizes[d];
    for (int k = 0; k < N; ++k) g.strides[k][g.ndim] = operands[k]->stride(d);
    ++g.ndim;
  }
  g.dense = g.ndim == 0;  // one element: offset 0
  if (g.ndim == 1) {
    g.dense = true;
    for (int k = 0; k < N; ++k) g.dense &= g.strides[k][0] == 1;
  }
  return g;
}

// C [M, N] (row stride ldc) = alpha * op(A) @ op(B) + beta * C, all row-major, repeated `batch`
// times with the given element strides between the matrices; op(X) = X^T when trans_x. T is
// float or double; float takes TF32 only when mg::cuda::set_allow_tf32(true).
template <class T>
void gemm(int device, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha,
          const T* A, int64_t lda, int64_t stride_a, const T* B, int64_t ldb, int64_t stride_b,
          T beta, T* C, int64_t ldc, int64_t stride_c, int64_t batch = 1);

// A fresh contiguous tensor on the backend's device (scratch for kernels).
inline Tensor scratch(const Shape& sizes, ScalarType dtype, int device) {
  return Tensor::empty(sizes, TensorOptions(dtype).device(Device::cuda(device)));
}

}  // namespace mg::cuda
