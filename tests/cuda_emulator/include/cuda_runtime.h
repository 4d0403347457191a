// The CUDA runtime as the CUDA emulator provides it (tests/cuda_emulator/README.md): the part of
// the runtime API and of the kernel language that engine/cuda uses, implemented on the CPU, so a
// machine without a GPU can run every kernel of the CUDA backend. A build with
// -DMOEGRAD_CUDA=EMULATE compiles engine/cuda/*.cu as C++ against this header instead of
// nvcc + the real runtime; kernel launches `k<<<grid, block, shmem, stream>>>(args)` are rewritten
// to `mg_cuda_emulator::Launch(grid, block, shmem, stream)(<calls k>, args)` by
// rewrite_launches.cmake.
//
// Semantics kept from the real runtime because they catch real bugs: launches are checked
// (grid, block and shared-memory limits, zero-sized grids) and report through
// cudaGetLastError; work runs in stream order but only when the stream is synchronized (or the
// runtime must wait, as for a copy into pageable host memory), so a missing synchronization shows;
// copies check that their pointers are device or host memory as their kind says; threads of a
// block run as fibers that really wait at __syncthreads and warp shuffles, and a barrier that not
// every thread reaches is reported as a failed launch instead of hanging.
#pragma once
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <tuple>
#include <type_traits>
#include <utility>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
// One instance per kernel (per template instantiation) serves every block: the emulator runs the
// blocks of a launch one after another, so this is exactly a block's shared memory.
#define __shared__ static

// The device math library overloads the functions for float in the global namespace, as these
// using-declarations do (::exp alone would compute a float's exponential in double).
using std::ceil, std::cos, std::erf, std::exp, std::expm1, std::fabs, std::floor, std::isfinite,
    std::isinf, std::isnan, std::log, std::log1p, std::pow, std::sin, std::sqrt, std::tanh;

enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorInvalidDevicePointer = 17,
  cudaErrorInvalidMemcpyDirection = 21,
  cudaErrorNoDevice = 100,
  cudaErrorInvalidDevice = 101,
  cudaErrorLaunchFailure = 719,
};
enum cudaMemcpyKind {
  cudaMemcpyHostToHost = 0,
  cudaMemcpyHostToDevice = 1,
  cudaMemcpyDeviceToHost = 2,
  cudaMemcpyDeviceToDevice = 3,
  cudaMemcpyDefault = 4,
};
struct CUstream_st;
using cudaStream_t = CUstream_st*;
inline constexpr unsigned cudaStreamNonBlocking = 1;

struct uint3 {
  unsigned x = 0, y = 0, z = 0;
};
struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

cudaError_t cudaGetDeviceCount(int* count);
cudaError_t cudaGetDevice(int* device);
cudaError_t cudaSetDevice(int device);
cudaError_t cudaMalloc(void** ptr, size_t nbytes);
template <class T>
cudaError_t cudaMalloc(T** ptr, size_t nbytes) {
  return cudaMalloc(reinterpret_cast<void**>(ptr), nbytes);
}
cudaError_t cudaFree(void* ptr);
cudaError_t cudaMemcpy(void* dst, const void* src, size_t nbytes, cudaMemcpyKind kind);
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t nbytes, cudaMemcpyKind kind,
                            cudaStream_t stream = nullptr);
cudaError_t cudaMemcpyPeerAsync(void* dst, int dst_device, const void* src, int src_device,
                                size_t nbytes, cudaStream_t stream = nullptr);
cudaError_t cudaMemsetAsync(void* ptr, int value, size_t nbytes, cudaStream_t stream = nullptr);
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned flags);
cudaError_t cudaStreamSynchronize(cudaStream_t stream);
cudaError_t cudaDeviceSynchronize();
cudaError_t cudaGetLastError();
cudaError_t cudaPeekAtLastError();
const char* cudaGetErrorString(cudaError_t error);

namespace mg_cuda_emulator {

// The coordinates of the thread (fiber) that runs now.
struct ThreadCoordinates {
  uint3 thread_idx, block_idx;
  dim3 block_dim, grid_dim;
};
extern ThreadCoordinates current;

// Queues `kernel` (called once per thread) on `stream` after checking the launch configuration
// as the real runtime does; a bad one sets the error cudaGetLastError returns.
void launch(dim3 grid, dim3 block, size_t shared_bytes, cudaStream_t stream,
            std::function<void()> kernel);

// The blocking points of a thread: the block barrier, and a warp shuffle, which waits until every
// live lane of the warp has published its value and returns lane `source`'s (own value when
// `source` is outside the warp or the block).
void sync_threads();
uint64_t shuffle(uint64_t bits, int source_lane);

// What `kernel<<<grid, block, shared, stream>>>(args...)` becomes: the arguments are copied once,
// as the real launch copies them into the kernel's parameter buffer.
class Launch {
 public:
  Launch(dim3 grid, dim3 block, size_t shared_bytes = 0, cudaStream_t stream = nullptr)
      : grid_(grid), block_(block), shared_bytes_(shared_bytes), stream_(stream) {}
  template <class Kernel, class... Args>
  void operator()(Kernel kernel, Args&&... args) const {
    launch(grid_, block_, shared_bytes_, stream_,
           [kernel, params = std::make_tuple(std::decay_t<Args>(std::forward<Args>(args))...)] {
             std::apply(kernel, params);
           });
  }

 private:
  dim3 grid_, block_;
  size_t shared_bytes_;
  cudaStream_t stream_;
};

}  // namespace mg_cuda_emulator

#define threadIdx (::mg_cuda_emulator::current.thread_idx)
#define blockIdx (::mg_cuda_emulator::current.block_idx)
#define blockDim (::mg_cuda_emulator::current.block_dim)
#define gridDim (::mg_cuda_emulator::current.grid_dim)

inline void __syncthreads() { ::mg_cuda_emulator::sync_threads(); }

template <class T>
T __shfl_down_sync(unsigned /*mask*/, T value, unsigned delta, int width = 32) {
  static_assert(sizeof(T) <= sizeof(uint64_t) && std::is_trivially_copyable_v<T>);
  const int lane = static_cast<int>(threadIdx.x % 32);
  const int source = lane % width + static_cast<int>(delta) < width ? lane + static_cast<int>(delta) : lane;
  uint64_t bits = 0;
  std::memcpy(&bits, &value, sizeof(T));
  bits = ::mg_cuda_emulator::shuffle(bits, source);
  std::memcpy(&value, &bits, sizeof(T));
  return value;
}

// Fibers switch only at the blocking points above, so a read-modify-write is already atomic.
template <class T>
T atomicAdd(T* address, T value) {
  const T old = *address;
  *address = old + value;
  return old;
}
template <class T>
T atomicMin(T* address, T value) {
  const T old = *address;
  if (value < old) *address = value;
  return old;
}
template <class T>
T atomicMax(T* address, T value) {
  const T old = *address;
  if (old < value) *address = value;
  return old;
}
template <class T>
T atomicCAS(T* address, T compare, T value) {
  const T old = *address;
  if (old == compare) *address = value;
  return old;
}
template <class T>
T atomicExch(T* address, T value) {
  const T old = *address;
  *address = value;
  return old;
}
