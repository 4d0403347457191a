// The CUDA emulator's own tests: the semantics the CUDA backend's tests rely on. Written as CUDA
// (launches included) and compiled like engine/cuda/*.cu in an emulated build.
#include <catch2/catch.hpp>
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <vector>

namespace {

__global__ void block_sum_kernel(const int* in, int* out) {
  __shared__ int partial[64];
  partial[threadIdx.x] = in[blockIdx.x * blockDim.x + threadIdx.x];
  __syncthreads();
  for (unsigned half = blockDim.x / 2; half > 0; half /= 2) {
    if (threadIdx.x < half) partial[threadIdx.x] += partial[threadIdx.x + half];
    __syncthreads();
  }
  if (threadIdx.x == 0) out[blockIdx.x] = partial[0];
}

__global__ void shuffle_kernel(int* out) {
  int v = static_cast<int>(threadIdx.x);
  v += __shfl_down_sync(0xffffffffu, v, 1);  // lane 31 keeps its own value: v = 2 * 31
  out[threadIdx.x] = v;
}

// Half the warp waits at the block barrier, the other half at a shuffle that needs the first half.
__global__ void mixed_wait_kernel(int* out) {
  int v = 1;
  if (threadIdx.x < 16) {
    __syncthreads();
  } else {
    v = __shfl_down_sync(0xffffffffu, v, 1);
  }
  out[threadIdx.x] = v;
}

__global__ void late_barrier_kernel(int* out) {
  if (threadIdx.x > 0) __syncthreads();  // thread 0 finishes without it
  out[threadIdx.x] = 1;
}

__global__ void fill_kernel(int* out, int value) { out[threadIdx.x] = value; }

template <class T>
std::vector<T> to_host(const T* device, size_t n) {
  std::vector<T> host(n);
  REQUIRE(cudaMemcpy(host.data(), device, n * sizeof(T), cudaMemcpyDeviceToHost) == cudaSuccess);
  return host;
}

}  // namespace

TEST_CASE("cuda emulator: barriers, shared memory and shuffles", "[cuda]") {
  int *in = nullptr, *out = nullptr;
  REQUIRE(cudaMalloc(&in, 128 * sizeof(int)) == cudaSuccess);
  REQUIRE(cudaMalloc(&out, 64 * sizeof(int)) == cudaSuccess);
  std::vector<int> values(128);
  for (int i = 0; i < 128; ++i) values[i] = i;
  REQUIRE(cudaMemcpy(in, values.data(), sizeof(int) * 128, cudaMemcpyHostToDevice) == cudaSuccess);
  block_sum_kernel<<<2, 64>>>(in, out);
  REQUIRE(cudaGetLastError() == cudaSuccess);
  CHECK(to_host(out, 2) == std::vector<int>{2016, 6112});
  shuffle_kernel<<<1, 32>>>(out);
  const std::vector<int> shuffled = to_host(out, 32);
  CHECK(shuffled[0] == 1);
  CHECK(shuffled[30] == 61);
  CHECK(shuffled[31] == 62);
  cudaFree(in);
  cudaFree(out);
}

TEST_CASE("cuda emulator: bad launches, deadlocks and copies fail as on a GPU", "[cuda]") {
  int* out = nullptr;
  REQUIRE(cudaMalloc(&out, 64 * sizeof(int)) == cudaSuccess);
  fill_kernel<<<0, 32>>>(out, 1);  // an empty grid is an error, not a no-op
  CHECK(cudaGetLastError() == cudaErrorInvalidConfiguration);
  fill_kernel<<<1, 2048>>>(out, 1);
  CHECK(cudaGetLastError() == cudaErrorInvalidConfiguration);
  mixed_wait_kernel<<<1, 32>>>(out);
  CHECK(cudaDeviceSynchronize() == cudaErrorLaunchFailure);
  (void)cudaGetLastError();
  late_barrier_kernel<<<1, 32>>>(out);
  CHECK(cudaDeviceSynchronize() == cudaErrorLaunchFailure);
  (void)cudaGetLastError();
  std::vector<int> host(64);
  CHECK(cudaMemcpy(out, host.data(), 64 * sizeof(int), cudaMemcpyDeviceToHost) == cudaErrorInvalidMemcpyDirection);
  (void)cudaGetLastError();
  cudaFree(out);
}

TEST_CASE("cuda emulator: work waits in its stream until the host synchronizes", "[cuda]") {
  int* out = nullptr;
  REQUIRE(cudaMalloc(&out, 32 * sizeof(int)) == cudaSuccess);
  cudaStream_t stream = nullptr;
  REQUIRE(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking) == cudaSuccess);
  fill_kernel<<<1, 32, 0, stream>>>(out, 7);
  CHECK(out[5] != 7);  // queued, not run: a read without synchronizing sees the old contents
  REQUIRE(cudaStreamSynchronize(stream) == cudaSuccess);
  CHECK(out[5] == 7);
  cudaFree(out);
}

TEST_CASE("cuda emulator: cuBLAS GEMM is column-major with checked leading dimensions", "[cuda]") {
  // A = [[1, 2], [3, 4]] column-major is {1, 3, 2, 4}; C = A^T B with B = I
  std::vector<float> a{1, 3, 2, 4}, b{1, 0, 0, 1};
  float *A = nullptr, *B = nullptr, *C = nullptr;
  cudaMalloc(&A, 16);
  cudaMalloc(&B, 16);
  cudaMalloc(&C, 16);
  cudaMemcpy(A, a.data(), 16, cudaMemcpyHostToDevice);
  cudaMemcpy(B, b.data(), 16, cudaMemcpyHostToDevice);
  cublasHandle_t handle = nullptr;
  REQUIRE(cublasCreate(&handle) == CUBLAS_STATUS_SUCCESS);
  const float one = 1, zero = 0;
  REQUIRE(cublasSgemmStridedBatched(handle, CUBLAS_OP_T, CUBLAS_OP_N, 2, 2, 2, &one, A, 2, 0, B, 2, 0,
                                    &zero, C, 2, 0, 1) == CUBLAS_STATUS_SUCCESS);
  CHECK(to_host(C, 4) == std::vector<float>{1, 2, 3, 4});
  CHECK(cublasSgemmStridedBatched(handle, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 2, &one, A, 1, 0, B, 2, 0,
                                  &zero, C, 2, 0, 1) == CUBLAS_STATUS_INVALID_VALUE);
  cudaFree(A);
  cudaFree(B);
  cudaFree(C);
}
