// The Philox random fill, after cpu_memory.cpp's fill_random: element i draws from counter
// offset + i of the seed through the same engine/math/philox.hpp functions, so a seed gives the
// same numbers on the CPU and on the GPU (normal draws up to the last ulp of the device's log,
// sqrt and cos, which CUDA documents within 1-2 ulp of the host's).
#include "engine/cuda/cuda_common.cuh"
#include "engine/math/philox.hpp"

namespace mg::cuda {
namespace {

template <class T>
__global__ void random_kernel(T* out, int64_t n, bool normal, uint64_t seed, uint64_t offset,
                              double a, double b) {
  MG_GRID_STRIDE(i, n) {
    const uint64_t counter = offset + static_cast<uint64_t>(i);
    if constexpr (std::is_same_v<T, int32_t>) {
      const double u = math::philox_uniform<double>(seed, counter);
      out[i] = static_cast<int32_t>(a + floor(u * (b - a)));
    } else if (!normal) {
      out[i] = static_cast<T>(math::affine(a, b - a, math::philox_uniform<T>(seed, counter)));
    } else {
      out[i] = static_cast<T>(math::affine(a, b, math::philox_normal<double>(seed, counter)));
    }
  }
}

}  // namespace

void CudaBackend::fill_random(const Tensor& out, RandomDist dist, uint64_t seed, uint64_t offset,
                              double a, double b) {
  DeviceGuard guard(device_);
  const int64_t n = out.numel();
  if (n == 0) return;
  MG_DISPATCH_ALL_TYPES(out.dtype(), "fill_random", [&] {
    random_kernel<<<blocks_for(n), kThreads, 0, stream_for(device_)>>>(
        static_cast<scalar_t*>(out.raw_data()), n, dist == RandomDist::Normal, seed, offset, a, b);
  });
  MG_CUDA_CHECK_LAUNCH("fill_random");
}

}  // namespace mg::cuda
