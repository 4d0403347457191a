// Block-wide reductions for kernels that give one block of kThreads threads to each row or
// channel: every thread folds its own strided share of the elements, then the warps fold their
// lanes with shuffles and thread 0 folds the warps in order. The order of every operation depends
// only on the row length and kThreads, so a result is the same on every run (though not the
// CPU's left-to-right order: sums differ from the CPU's in the last bits, see cuda_reduce.cu).
#pragma once
#include "engine/cuda/cuda_common.cuh"

namespace mg::cuda {

// Every thread of the block gets op-folded `value` of all threads. T: a type __shfl_down_sync
// takes (int, long long, float, double).
template <class T, class Op>
__device__ T block_reduce(T value, Op op) {
  __shared__ T warp_results[kThreads / 32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  for (int offset = 16; offset > 0; offset /= 2) {
    const T other = __shfl_down_sync(0xffffffffu, value, offset);
    if (lane + offset < 32) value = op(value, other);
  }
  __syncthreads();  // a previous call may still be reading warp_results
  if (lane == 0) warp_results[warp] = value;
  __syncthreads();
  if (threadIdx.x == 0) {
    T total = warp_results[0];
    for (int w = 1; w < kThreads / 32; ++w) total = op(total, warp_results[w]);
    warp_results[0] = total;
  }
  __syncthreads();
  return warp_results[0];
}

struct SumOp {
  template <class T> __device__ T operator()(T a, T b) const { return a + b; }
};

}  // namespace mg::cuda
