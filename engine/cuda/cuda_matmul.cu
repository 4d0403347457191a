// GEMM on cuBLAS, after cpu_matmul.cpp: one handle per device, bound to the device's stream.
// cuBLAS is column-major; a row-major C = op(A) op(B) is the column-major C^T = op(B)^T op(A)^T,
// so the operands are passed swapped and nothing is transposed in memory. A batched matmul operand
// whose rows or columns are contiguous (plain or transposed) is used in place; any other layout
// is first copied to a contiguous scratch tensor. Float32 uses TF32 tensor cores only when
// mg::cuda::set_allow_tf32(true) (off by default, as torch).
//
// cuBLAS is loaded with dlopen on the first GEMM, not linked: mapping and relocating libcublas and
// libcublasLt costs ~150 MB of resident memory at process start, which every program of a
// CUDA-enabled build would pay even when it never touches a GPU.
#include <cublas_v2.h>
#include <dlfcn.h>

#include <limits>
#include <mutex>
#include <string>
#include <vector>

#include "engine/cuda/cuda_common.cuh"
#include "engine/cuda_device.hpp"

namespace mg::cuda {
namespace {

// cublas_v2.h maps the names to versioned symbols (cublasCreate -> cublasCreate_v2); stringify
// after expansion to look up the symbol the header declares.
#define MG_CUBLAS_NAME(fn) MG_CUBLAS_STR(fn)
#define MG_CUBLAS_STR(fn) #fn

struct Cublas {
  decltype(&cublasCreate) create = nullptr;
  decltype(&cublasSetStream) set_stream = nullptr;
  decltype(&cublasSetMathMode) set_math_mode = nullptr;
  decltype(&cublasGetStatusString) status_string = nullptr;
  decltype(&cublasSgemmStridedBatched) sgemm_strided_batched = nullptr;
  decltype(&cublasDgemmStridedBatched) dgemm_strided_batched = nullptr;
};

// The library of the toolkit this was built with: by soname (the loader's search path), else at
// the toolkit's own location. Never unloaded: handles live until exit.
const Cublas& cublas() {
  static const Cublas api = [] {
    std::string tried;
    void* lib = nullptr;
    for (const char* path : {MG_CUBLAS_SONAME, MG_CUBLAS_PATH}) {
      lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
      if (lib != nullptr) break;
      tried += detail::concat("\n  ", path, ": ", dlerror());
    }
    MG_CHECK(lib != nullptr, "cuda: cannot load cuBLAS, which every GEMM on the GPU needs:", tried);
    Cublas a;
    auto bind = [&](auto& entry, const char* name) {
      entry = reinterpret_cast<std::remove_reference_t<decltype(entry)>>(dlsym(lib, name));
      MG_CHECK(entry != nullptr, "cuda: ", MG_CUBLAS_SONAME, " has no symbol ", name);
    };
    bind(a.create, MG_CUBLAS_NAME(cublasCreate));
    bind(a.set_stream, MG_CUBLAS_NAME(cublasSetStream));
    bind(a.set_math_mode, MG_CUBLAS_NAME(cublasSetMathMode));
    bind(a.status_string, MG_CUBLAS_NAME(cublasGetStatusString));
    bind(a.sgemm_strided_batched, MG_CUBLAS_NAME(cublasSgemmStridedBatched));
    bind(a.dgemm_strided_batched, MG_CUBLAS_NAME(cublasDgemmStridedBatched));
    return a;
  }();
  return api;
}

void check_cublas(cublasStatus_t status, const char* what) {
  MG_CHECK(status == CUBLAS_STATUS_SUCCESS, "cuda: ", what, " failed: ",
           cublas().status_string(status));
}

// A device's handle, held under its lock for the whole GEMM: cuBLAS does not support one handle
// used by two host threads at once.
struct LockedHandle {
  std::unique_lock<std::mutex> lock;
  cublasHandle_t handle = nullptr;
};

LockedHandle handle_for(int device) {
  static std::vector<std::mutex> mutexes(static_cast<size_t>(device_count()));
  static std::vector<cublasHandle_t> handles(static_cast<size_t>(device_count()), nullptr);
  LockedHandle locked{std::unique_lock<std::mutex>(mutexes.at(static_cast<size_t>(device))), nullptr};
  cublasHandle_t& h = handles.at(static_cast<size_t>(device));
  if (h == nullptr) {
    DeviceGuard guard(device);  // a handle belongs to the device current at its creation
    cublasStatus_t status = cublas().create(&h);
    if (status == CUBLAS_STATUS_ALLOC_FAILED) {
      // cuBLAS allocates outside the caching allocator: give it the cached blocks and retry
      release_cached_blocks(device);
      status = cublas().create(&h);
    }
    check_cublas(status, "cublasCreate");
    check_cublas(cublas().set_stream(h, stream_for(device)), "cublasSetStream");
  }
  const cublasMath_t mode = allow_tf32() ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH;
  check_cublas(cublas().set_math_mode(h, mode), "cublasSetMathMode");
  locked.handle = h;
  return locked;
}

cublasOperation_t op(bool trans) { return trans ? CUBLAS_OP_T : CUBLAS_OP_N; }

// A [rows, cols] operand of the batch as cuBLAS can read it: row-major with leading dimension
// ld (trans = false) or column-major, i.e. the row-major transpose (trans = true).
struct MatrixView {
  bool trans = false;
  int64_t ld = 0;
};

// The view of a matrix with element strides (sr, sc), or false when it needs a copy. A size-1
// dim's stride is free, so the leading dimension is only required to cover the other dim.
bool view_of(int64_t rows, int64_t cols, int64_t sr, int64_t sc, MatrixView& v) {
  if (sc == 1 || cols == 1) {
    v = {false, rows == 1 ? std::max<int64_t>(cols, 1) : sr};
    return v.ld >= std::max<int64_t>(cols, 1);
  }
  if (sr == 1 || rows == 1) {
    v = {true, cols == 1 ? std::max<int64_t>(rows, 1) : sc};
    return v.ld >= std::max<int64_t>(rows, 1);
  }
  return false;
}

// `t` [batch, rows, cols] itself when cuBLAS can read its matrices in place, else a contiguous
// copy (which always can); `v` says how.
Tensor readable(const Tensor& t, int64_t rows, int64_t cols, MatrixView& v) {
  if (view_of(rows, cols, t.stride(1), t.stride(2), v)) return t;
  const Tensor copy = t.detach().contiguous();
  view_of(rows, cols, copy.stride(1), copy.stride(2), v);
  return copy;
}

}  // namespace

template <class T>
void gemm(int device, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha,
          const T* A, int64_t lda, int64_t stride_a, const T* B, int64_t ldb, int64_t stride_b,
          T beta, T* C, int64_t ldc, int64_t stride_c, int64_t batch) {
  if (M == 0 || N == 0 || batch == 0) return;
  constexpr int64_t kMaxInt = std::numeric_limits<int>::max();
  MG_CHECK(M <= kMaxInt && N <= kMaxInt && K <= kMaxInt && lda <= kMaxInt && ldb <= kMaxInt &&
               ldc <= kMaxInt && batch <= kMaxInt,
           "cuda: GEMM [", M, ", ", K, "] x [", K, ", ", N, "] (batch ", batch, ", leading dims ",
           lda, " / ", ldb, " / ", ldc, ") exceeds cuBLAS's 32-bit sizes");
  const LockedHandle locked = handle_for(device);
  cublasHandle_t h = locked.handle;
  const auto m = static_cast<int>(N), n = static_cast<int>(M), k = static_cast<int>(K);
  const auto ld_first = static_cast<int>(std::max<int64_t>(ldb, 1));
  const auto ld_second = static_cast<int>(std::max<int64_t>(lda, 1));
  const auto ld_out = static_cast<int>(std::max<int64_t>(ldc, 1));
  if constexpr (std::is_same_v<T, float>) {
    check_cublas(cublas().sgemm_strided_batched(h, op(trans_b), op(trans_a), m, n, k, &alpha, B,
                                           ld_first, stride_b, A, ld_second, stride_a, &beta, C,
                                           ld_out, stride_c, static_cast<int>(batch)),
                 "cublasSgemmStridedBatched");
  } else {
    check_cublas(cublas().dgemm_strided_batched(h, op(trans_b), op(trans_a), m, n, k, &alpha, B,
                                           ld_first, stride_b, A, ld_second, stride_a, &beta, C,
                                           ld_out, stride_c, static_cast<int>(batch)),
                 "cublasDgemmStridedBatched");
  }
}
template void gemm<float>(int, bool, bool, int64_t, int64_t, int64_t, float, const float*, int64_t,
                          int64_t, const float*, int64_t, int64_t, float, float*, int64_t, int64_t,
                          int64_t);
template void gemm<double>(int, bool, bool, int64_t, int64_t, int64_t, double, const double*,
                           int64_t, int64_t, const double*, int64_t, int64_t, double, double*,
                           int64_t, int64_t, int64_t);

void CudaBackend::matmul(const Tensor& a_in, const Tensor& b_in, const Tensor& out) {
  DeviceGuard guard(device_);
  const int64_t batch = a_in.size(0), M = a_in.size(1), K = a_in.size(2), N = b_in.size(2);
  if (out.numel() == 0) return;
  if (K == 0) return fill(out, 0.0);
  MatrixView va, vb;
  const Tensor a = readable(a_in, M, K, va), b = readable(b_in, K, N, vb);
  MG_DISPATCH_FLOATING_TYPES(a.dtype(), "matmul", [&] {
    using T = scalar_t;
    gemm<T>(device_, va.trans, vb.trans, M, N, K, T(1), static_cast<const T*>(a.raw_data()), va.ld,
            a.stride(0), static_cast<const T*>(b.raw_data()), vb.ld, b.stride(0), T(0),
            static_cast<T*>(out.raw_data()), N, M * N, batch);
  });
}

}  // namespace mg::cuda
