// Float32 GEMM with AVX-512, internal to the CPU backend (cpu_matmul.cpp). Why not Eigen for
// float32: on this project's AVX-512 machine Eigen 3.4 reaches 50-60% of the FMA peak on the
// shapes of attention and linear layers (K = 64..600), this kernel 80-90%.
#pragma once
#include <cstdint>

namespace mg::cpu {

// Whether this build has the kernel (AVX-512).
bool gemm_f32_available();

// C [M, N] (rows ldc apart, unit column stride) = A [M, K] @ B [K, N] (or C += with
// `accumulate`), A and B with any element strides. Each element of C is one thread's sum over k in
// a fixed order, so the result does not depend on the thread count. `parallel`: split the work
// over the engine's threads.
void gemm_f32(int64_t M, int64_t N, int64_t K, const float* A, int64_t a_row, int64_t a_col,
              const float* B, int64_t b_row, int64_t b_col, float* C, int64_t ldc, bool parallel,
              bool accumulate = false);

}  // namespace mg::cpu
