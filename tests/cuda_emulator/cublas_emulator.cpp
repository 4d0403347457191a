// The GEMMs of cuBLAS for the CUDA emulator, with cuBLAS's contract (column-major, op(A) m x k,
// op(B) k x n, C m x n; C is not read when beta is 0) and its argument checks: a leading
// dimension smaller than its matrix's rows is CUBLAS_STATUS_INVALID_VALUE, as on a GPU. The
// products run in the handle's stream, in order with the emulated kernels.
#include <cublas_v2.h>

#include <cstdio>
#include <algorithm>

namespace {

struct Handle {
  cudaStream_t stream = nullptr;
};

template <class T>
cublasStatus_t gemm(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb,
                    int m, int n, int k, const T* alpha, const T* A, int lda, long long stride_a,
                    const T* B, int ldb, long long stride_b, const T* beta, T* C, int ldc,
                    long long stride_c, int batch) {
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  const int a_rows = transa == CUBLAS_OP_N ? m : k, b_rows = transb == CUBLAS_OP_N ? k : n;
  if (m < 0 || n < 0 || k < 0 || batch < 0 || lda < std::max(1, a_rows) ||
      ldb < std::max(1, b_rows) || ldc < std::max(1, m)) {
    std::fprintf(stderr, "cublas emulator: invalid gemm m=%d n=%d k=%d lda=%d ldb=%d ldc=%d (op %d %d)\n",
                 m, n, k, lda, ldb, ldc, static_cast<int>(transa), static_cast<int>(transb));
    return CUBLAS_STATUS_INVALID_VALUE;
  }
  const T a = *alpha, b = *beta;
  mg_cuda_emulator::Launch(dim3(1), dim3(1), 0, reinterpret_cast<Handle*>(handle)->stream)(
      [=] {
        for (int p = 0; p < batch; ++p) {
          const T* Ap = A + p * stride_a;
          const T* Bp = B + p * stride_b;
          T* Cp = C + p * stride_c;
          for (int j = 0; j < n; ++j)
            for (int i = 0; i < m; ++i) {
              T sum = 0;
              for (int l = 0; l < k; ++l) {
                const T x = transa == CUBLAS_OP_N ? Ap[i + static_cast<long long>(l) * lda]
                                                  : Ap[l + static_cast<long long>(i) * lda];
                const T y = transb == CUBLAS_OP_N ? Bp[l + static_cast<long long>(j) * ldb]
                                                  : Bp[j + static_cast<long long>(l) * ldb];
                sum += x * y;
              }
              T& out = Cp[i + static_cast<long long>(j) * ldc];
              out = b == T(0) ? a * sum : a * sum + b * out;
            }
        }
      });
  return CUBLAS_STATUS_SUCCESS;
}

}  // namespace

extern "C" {

cublasStatus_t cublasCreate_v2(cublasHandle_t* handle) {
  *handle = reinterpret_cast<cublasHandle_t>(new Handle);
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetStream_v2(cublasHandle_t handle, cudaStream_t stream) {
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  reinterpret_cast<Handle*>(handle)->stream = stream;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetMathMode(cublasHandle_t handle, cublasMath_t) {
  return handle == nullptr ? CUBLAS_STATUS_NOT_INITIALIZED : CUBLAS_STATUS_SUCCESS;
}
const char* cublasGetStatusString(cublasStatus_t status) {
  switch (status) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
  }
  return "CUBLAS_STATUS_UNKNOWN";
}
cublasStatus_t cublasSgemmStridedBatched(cublasHandle_t handle, cublasOperation_t transa,
                                         cublasOperation_t transb, int m, int n, int k,
                                         const float* alpha, const float* A, int lda,
                                         long long stride_a, const float* B, int ldb,
                                         long long stride_b, const float* beta, float* C, int ldc,
                                         long long stride_c, int batch_count) {
  return gemm(handle, transa, transb, m, n, k, alpha, A, lda, stride_a, B, ldb, stride_b, beta, C,
              ldc, stride_c, batch_count);
}
cublasStatus_t cublasDgemmStridedBatched(cublasHandle_t handle, cublasOperation_t transa,
                                         cublasOperation_t transb, int m, int n, int k,
                                         const double* alpha, const double* A, int lda,
                                         long long stride_a, const double* B, int ldb,
                                         long long stride_b, const double* beta, double* C,
                                         int ldc, long long stride_c, int batch_count) {
  return gemm(handle, transa, transb, m, n, k, alpha, A, lda, stride_a, B, ldb, stride_b, beta, C,
              ldc, stride_c, batch_count);
}

}  // extern "C"
