// Batched GEMM through Eigen on mapped memory: an operand whose rows or columns are contiguous
// (plain or transposed) is used in place; only a fully strided operand is copied first. Float32
// goes to the AVX-512 kernel of gemm_f32.cpp where the build has it (any strides, in place).
#include <Eigen/Core>

#include <type_traits>

#include "engine/cpu/cpu_backend.hpp"
#include "engine/cpu/gemm_f32.hpp"
#include "engine/parallel.hpp"

namespace mg::cpu {
namespace {

template <class T>
using RowMajor = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class T>
using ColMajor = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::ColMajor>;
using Stride = Eigen::OuterStride<>;

// Calls f with an Eigen expression of the [rows, cols] matrix at p with element strides (sr, sc).
template <class T, class F>
void with_matrix(const T* p, int64_t rows, int64_t cols, int64_t sr, int64_t sc, const F& f) {
  if (sc == 1 || cols == 1) {
    f(Eigen::Map<const RowMajor<T>, 0, Stride>(p, rows, cols, Stride(cols == 1 ? std::max<int64_t>(sr, 1) : sr)));
  } else if (sr == 1 || rows == 1) {
    f(Eigen::Map<const ColMajor<T>, 0, Stride>(p, rows, cols, Stride(rows == 1 ? std::max<int64_t>(sc, 1) : sc)));
  } else {
    RowMajor<T> copy(rows, cols);
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t j = 0; j < cols; ++j) copy(i, j) = p[i * sr + j * sc];
    f(copy);
  }
}

}  // namespace

void CpuBackend::matmul(const Tensor& a, const Tensor& b, const Tensor& out) {
  const int64_t batch = a.size(0), M = a.size(1), K = a.size(2), N = b.size(2);
  MG_DISPATCH_FLOATING_TYPES(a.dtype(), "matmul", [&] {
    using T = scalar_t;
    const T* pa = static_cast<const T*>(a.raw_data());
    const T* pb = static_cast<const T*>(b.raw_data());
    T* po = out.data_ptr<T>();
    const bool own_f32 = std::is_same_v<T, float> && gemm_f32_available();
    auto one = [&](int64_t i, bool parallel) {
      if (own_f32) {
        gemm_f32(M, N, K, reinterpret_cast<const float*>(pa + i * a.stride(0)), a.stride(1), a.stride(2),
                 reinterpret_cast<const float*>(pb + i * b.stride(0)), b.stride(1), b.stride(2),
                 reinterpret_cast<float*>(po + i * M * N), N, parallel);
        return;
      }
      Eigen::Map<RowMajor<T>> c(po + i * M * N, M, N);
      if (K == 0) {
        c.setZero();
        return;
      }
      with_matrix(pa + i * a.stride(0), M, K, a.stride(1), a.stride(2), [&](const auto& A) {
        with_matrix(pb + i * b.stride(0), K, N, b.stride(1), b.stride(2),
                    [&](const auto& B) { c.noalias() = A * B; });
      });
    };
    // Many small products: one per thread (Eigen runs single-threaded inside a parallel region).
    // Few large ones: one after another, each using the whole pool.
    const int64_t flops_each = M * N * K;
    if (batch > 1 && flops_each < (int64_t{1} << 21)) {
      parallel_for(batch, batch * flops_each, [&](int64_t b0, int64_t b1) {
        for (int64_t i = b0; i < b1; ++i) one(i, false);
      });
    } else {
      for (int64_t i = 0; i < batch; ++i) one(i, true);
    }
  });
}

}  // namespace mg::cpu
