// CUDA memory, copies (host <-> device, device <-> device, strided and with dtype casts) and
// fills, after the CPU's cpu_memory.cpp.
//
// The caching allocator: cudaMalloc and cudaFree synchronize the device and cost tens of
// microseconds, more than most kernels, so freed blocks are kept in size-bucketed free lists per
// device and handed to the next request of the same size class (8 classes per power of two, at
// most 12.5% larger than asked; training steps allocate the same sizes every step). Every kernel
// of a device runs on its one stream, so a block freed on the host can be reused at once: the
// next user's kernels are queued after the last reader's. When cudaMalloc fails, the cached blocks
// are released and the allocation retried once before reporting out of memory.
#include <bit>
#include <cstring>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "engine/cuda/cuda_common.cuh"
#include "engine/cuda_device.hpp"

namespace mg::cuda {
namespace {

constexpr size_t kMinBlock = 512;  // cudaMalloc aligns to 256; small tensors share few classes

size_t size_class(size_t nbytes) {
  const size_t n = std::max(nbytes, kMinBlock);
  const size_t step = std::max<size_t>((size_t{1} << (std::bit_width(n) - 1)) / 8, kMinBlock);
  return (n + step - 1) / step * step;
}

class CachingAllocator {
 public:
  explicit CachingAllocator(int device) : device_(device) {}

  void* allocate(size_t nbytes) {
    const size_t size = size_class(nbytes);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto it = free_.find(size);
      if (it != free_.end() && !it->second.empty()) {
        void* p = it->second.back();
        it->second.pop_back();
        live_[p] = size;
        return p;
      }
    }
    DeviceGuard guard(device_);
    void* p = nullptr;
    if (const cudaError_t first = cudaMalloc(&p, size); first != cudaSuccess) {
      (void)cudaGetLastError();
      // only an allocation failure is helped by freeing the cache; anything else (a kernel's
      // fault, sticky on the context) is reported as it is
      if (first != cudaErrorMemoryAllocation) check(first, "cudaMalloc");
      release_cached();
      const cudaError_t status = cudaMalloc(&p, size);
      MG_CHECK(status == cudaSuccess, "cuda:", device_, ": out of memory allocating ", nbytes,
               " bytes (", cudaGetErrorString(status), ")");
    }
    std::lock_guard<std::mutex> lock(mutex_);
    live_[p] = size;
    return p;
  }

  void release_cached() {
    std::lock_guard<std::mutex> lock(mutex_);
    // the stream may still be using a cached block's last contents
    MG_CUDA_CHECK(cudaStreamSynchronize(stream_for(device_)));
    for (auto& [size, blocks] : free_)
      for (void* p : blocks) (void)cudaFree(p);
    free_.clear();
  }

  void deallocate(void* p) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = live_.find(p);
    if (it == live_.end()) return;
    free_[it->second].push_back(p);
    live_.erase(it);
  }

 private:
  int device_;
  std::mutex mutex_;
  std::unordered_map<size_t, std::vector<void*>> free_;  // size class -> free blocks
  std::unordered_map<void*, size_t> live_;               // block -> its size class
};

// Never destroyed, like the backends: storage may be freed during static destruction.
CachingAllocator& allocator_for(int device) {
  static std::vector<CachingAllocator*>* allocators = [] {
    auto* list = new std::vector<CachingAllocator*>();
    for (int d = 0; d < device_count(); ++d) list->push_back(new CachingAllocator(d));
    return list;
  }();
  return *allocators->at(static_cast<size_t>(device));
}

template <class Dst, class Src>
__global__ void copy_kernel(StridedGeometry<2> g, Dst* dst, const Src* src, int64_t n) {
  MG_GRID_STRIDE(i, n) {
    int64_t off[2];
    g.offsets(i, off);
    dst[off[0]] = static_cast<Dst>(src[off[1]]);
  }
}

template <class T>
__global__ void fill_kernel(StridedGeometry<1> g, T* dst, T value, int64_t n) {
  MG_GRID_STRIDE(i, n) {
    int64_t off[1];
    g.offsets(i, off);
    dst[off[0]] = value;
  }
}

// Both on this backend's device, any strides and dtypes.
void copy_on_device(int device, const Tensor& src, const Tensor& dst) {
  const int64_t n = dst.numel();
  if (n == 0) return;
  cudaStream_t stream = stream_for(device);
  if (src.dtype() == dst.dtype() && src.is_contiguous() && dst.is_contiguous()) {
    MG_CUDA_CHECK(cudaMemcpyAsync(dst.raw_data(), src.raw_data(), n * dst.element_size(),
                                  cudaMemcpyDeviceToDevice, stream));
    return;
  }
  const auto g = make_geometry<2>(dst.sizes(), {&dst, &src});
  MG_DISPATCH_ALL_TYPES(dst.dtype(), "copy", [&] {
    using dst_t = scalar_t;
    MG_DISPATCH_ALL_TYPES(src.dtype(), "copy", [&] {
      copy_kernel<<<blocks_for(n), kThreads, 0, stream>>>(
          g, static_cast<dst_t*>(dst.raw_data()), static_cast<const scalar_t*>(src.raw_data()), n);
    });
  });
  MG_CUDA_CHECK_LAUNCH("copy");
}

}  // namespace

void release_cached_blocks(int device) { allocator_for(device).release_cached(); }

void* CudaBackend::allocate(size_t nbytes) { return allocator_for(device_).allocate(nbytes); }
void CudaBackend::deallocate(void* ptr) {
  if (ptr != nullptr) allocator_for(device_).deallocate(ptr);
}

// Host <-> device goes through contiguous buffers of the destination's dtype: casts and strides
// are handled on whichever side the data is, then one cudaMemcpy moves the bytes.
void CudaBackend::copy(const Tensor& src, const Tensor& dst) {
  DeviceGuard guard(device_);
  const int64_t n = dst.numel();
  if (n == 0) return;
  cudaStream_t stream = stream_for(device_);
  const size_t nbytes = static_cast<size_t>(n) * dst.element_size();
  if (src.device() == dst.device()) return copy_on_device(device_, src, dst);
  if (src.device().is_cpu()) {
    const Tensor host = src.detach().to(dst.dtype()).contiguous();
    const Tensor staged = dst.is_contiguous() ? dst : scratch(dst.sizes(), dst.dtype(), device_);
    MG_CUDA_CHECK(cudaMemcpyAsync(staged.raw_data(), host.raw_data(), nbytes,
                                  cudaMemcpyHostToDevice, stream));
    // the host buffer may be freed as soon as we return
    MG_CUDA_CHECK(cudaStreamSynchronize(stream));
    if (!staged.is_same(dst)) copy_on_device(device_, staged, dst);
    return;
  }
  Tensor on_device = src;
  if (src.dtype() != dst.dtype() || !src.is_contiguous()) {
    on_device = scratch(src.sizes(), dst.dtype(), src.device().index);
    backend_for_device(src.device().index).copy(src, on_device);
  }
  if (dst.device().is_cpu()) {
    const Tensor host = dst.is_contiguous() ? dst : Tensor::empty(dst.sizes(), dst.dtype());
    MG_CUDA_CHECK(cudaMemcpyAsync(host.raw_data(), on_device.raw_data(), nbytes,
                                  cudaMemcpyDeviceToHost, stream_for(on_device.device().index)));
    MG_CUDA_CHECK(cudaStreamSynchronize(stream_for(on_device.device().index)));
    if (!host.is_same(dst)) backend_for(Device::cpu()).copy(host, dst);
    // the copy is complete either way; a bad index in the work it waited for is reported here
    report_index_errors(on_device.device().index);
    return;
  }
  // device to device across GPUs: the source's stream must be done before the peer copy
  MG_CUDA_CHECK(cudaStreamSynchronize(stream_for(on_device.device().index)));
  const Tensor staged = dst.is_contiguous() ? dst : scratch(dst.sizes(), dst.dtype(), device_);
  MG_CUDA_CHECK(cudaMemcpyPeerAsync(staged.raw_data(), device_, on_device.raw_data(),
                                    on_device.device().index, nbytes, stream));
  // the source's block may be reused by its device's stream, which is not ordered with ours
  MG_CUDA_CHECK(cudaStreamSynchronize(stream));
  if (!staged.is_same(dst)) copy_on_device(device_, staged, dst);
}

void CudaBackend::fill(const Tensor& dst, double value) {
  DeviceGuard guard(device_);
  const int64_t n = dst.numel();
  if (n == 0) return;
  const auto g = make_geometry<1>(dst.sizes(), {&dst});
  MG_DISPATCH_ALL_TYPES(dst.dtype(), "fill", [&] {
    fill_kernel<<<blocks_for(n), kThreads, 0, stream_for(device_)>>>(
        g, static_cast<scalar_t*>(dst.raw_data()), static_cast<scalar_t>(value), n);
  });
  MG_CUDA_CHECK_LAUNCH("fill");
}

}  // namespace mg::cuda
