// CPU memory, copies with dtype casts, fills and the Philox random fill.
#include <bit>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "engine/cpu/cpu_backend.hpp"
#include "engine/parallel.hpp"
#include "engine/cpu/strided_loop.hpp"
#include "engine/math/philox.hpp"

namespace mg::cpu {

// ---- memory: aligned blocks, with a bounded cache of freed large blocks.
//
// Why a cache: first-touching fresh memory costs ~6 us per 4 KiB page here (a KVM guest), ~100 ms
// per 64 MiB: more than an element-wise op over those 64 MiB takes. glibc hands large blocks
// (mmap'ed) back to the OS on free, so without the cache every op on a large tensor would pay the
// page faults of its output again. Freed blocks of at least kCacheMinBytes are kept per size
// class and handed to the next allocation of the same class; training loops allocate the same
// sizes every step, so those hit. The cache holds at most MG_CPU_CACHE_MB MiB (default 1024, 0
// turns it off); an allocation that misses first releases cached blocks until the cache and the
// new block fit that bound, so idle cached memory never exceeds it. Sanitizer builds do not cache,
// so that AddressSanitizer still sees every use after free.
namespace {

constexpr size_t kAlign = 64;                  // a cache line, and what AVX-512 loads like
constexpr size_t kHeader = kAlign;             // holds the block's size, keeps the data aligned
constexpr size_t kCacheMinBytes = 128 << 10;   // glibc's default mmap threshold: smaller blocks
                                               // come from its heap, already faulted in

// The size a request is served with. Large requests round up to one of 8 classes per power of two
// (at most 12.5% more), so nearby sizes (varying batch or expert token counts) share blocks.
size_t size_class(size_t nbytes) {
  const size_t n = std::max<size_t>(nbytes, 1);
  if (n < kCacheMinBytes) return (n + kAlign - 1) / kAlign * kAlign;
  const size_t step = (size_t{1} << (std::bit_width(n) - 1)) / 8;
  return (n + step - 1) / step * step;
}

class BlockCache {
 public:
  BlockCache() {
#if defined(__SANITIZE_ADDRESS__)
    limit_ = 0;
#else
    limit_ = size_t{1024} << 20;
    if (const char* env = std::getenv("MG_CPU_CACHE_MB")) limit_ = size_t(std::atoll(env)) << 20;
#endif
  }

  // A cached block of exactly `size` bytes (a size class), or null. When there is none, cached
  // blocks are released until `size` more bytes stay within the limit.
  void* take(size_t size) {
    if (size < kCacheMinBytes || limit_ == 0) return nullptr;
    std::vector<void*> release;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto it = blocks_.find(size);
      if (it != blocks_.end() && !it->second.empty()) {
        void* p = it->second.back();
        it->second.pop_back();
        cached_bytes_ -= size;
        return p;
      }
      for (auto& [bucket_size, list] : blocks_) {
        while (!list.empty() && cached_bytes_ + size > limit_) {
          release.push_back(list.back());
          list.pop_back();
          cached_bytes_ -= bucket_size;
        }
      }
    }
    for (void* p : release) std::free(p);
    return nullptr;
  }

  // Keeps a freed block of `size` bytes when it fits; false when the caller must free it.
  bool put(void* raw, size_t size) {
    if (size < kCacheMinBytes || limit_ == 0) return false;
    std::lock_guard<std::mutex> lock(mutex_);
    if (cached_bytes_ + size > limit_) return false;
    blocks_[size].push_back(raw);
    cached_bytes_ += size;
    return true;
  }

 private:
  std::mutex mutex_;
  std::unordered_map<size_t, std::vector<void*>> blocks_;  // size class -> raw blocks
  size_t cached_bytes_ = 0;
  size_t limit_ = 0;
};

// Never destroyed: tensors in static storage may be freed after any static cache would be gone.
BlockCache& block_cache() {
  static BlockCache* cache = new BlockCache();
  return *cache;
}

}  // namespace

// Every block carries a 64-byte header with its size class in front of the data.
void* CpuBackend::allocate(size_t nbytes) {
  const size_t size = size_class(nbytes);
  void* raw = block_cache().take(size);
  if (raw == nullptr) raw = std::aligned_alloc(kAlign, size + kHeader);
  MG_CHECK(raw != nullptr, "cpu: out of memory allocating ", nbytes, " bytes");
  *static_cast<size_t*>(raw) = size;
  return static_cast<char*>(raw) + kHeader;
}

void CpuBackend::deallocate(void* ptr) {
  if (ptr == nullptr) return;
  void* raw = static_cast<char*>(ptr) - kHeader;
  if (!block_cache().put(raw, *static_cast<const size_t*>(raw))) std::free(raw);
}

void CpuBackend::copy(const Tensor& src, const Tensor& dst) {
  MG_DISPATCH_ALL_TYPES(dst.dtype(), "copy", [&] {
    using dst_t = scalar_t;
    MG_DISPATCH_ALL_TYPES(src.dtype(), "copy", [&] {
      using src_t = scalar_t;
      Operands<2> ops{{static_cast<char*>(dst.raw_data()), static_cast<char*>(src.raw_data())},
                      {&dst.strides(), &src.strides()},
                      {sizeof(dst_t), sizeof(src_t)}};
      for_each_strided(dst.sizes(), ops, [](const std::array<char*, 2>& p,
                                            const std::array<int64_t, 2>& s, int64_t n) {
        if constexpr (std::is_same_v<dst_t, src_t>) {
          if (s[0] == sizeof(dst_t) && s[1] == sizeof(src_t)) {
            std::memcpy(p[0], p[1], n * sizeof(dst_t));
            return;
          }
        }
        for (int64_t i = 0; i < n; ++i)
          *reinterpret_cast<dst_t*>(p[0] + i * s[0]) =
              static_cast<dst_t>(*reinterpret_cast<const src_t*>(p[1] + i * s[1]));
      });
    });
  });
}

void CpuBackend::fill(const Tensor& dst, double value) {
  MG_DISPATCH_ALL_TYPES(dst.dtype(), "fill", [&] {
    const auto v = static_cast<scalar_t>(value);
    Operands<1> ops{{static_cast<char*>(dst.raw_data())}, {&dst.strides()}, {sizeof(scalar_t)}};
    for_each_strided(dst.sizes(), ops,
                     [v](const std::array<char*, 1>& p, const std::array<int64_t, 1>& s, int64_t n) {
                       if (s[0] == sizeof(scalar_t)) {
                         auto* out = reinterpret_cast<scalar_t*>(p[0]);
                         for (int64_t i = 0; i < n; ++i) out[i] = v;
                       } else {
                         for (int64_t i = 0; i < n; ++i)
                           *reinterpret_cast<scalar_t*>(p[0] + i * s[0]) = v;
                       }
                     });
  });
}

void CpuBackend::fill_random(const Tensor& out, RandomDist dist, uint64_t seed, uint64_t offset,
                             double a, double b) {
  const int64_t n = out.numel();
  MG_DISPATCH_ALL_TYPES(out.dtype(), "fill_random", [&] {
    scalar_t* p = out.data_ptr<scalar_t>();
    parallel_for(n, n * 16, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        if constexpr (std::is_same_v<scalar_t, int32_t>) {
          // integers in [a, b): floor of a uniform double, exact for ranges below 2^31
          const double u = math::philox_uniform<double>(seed, offset + i);
          p[i] = static_cast<int32_t>(a + std::floor(u * (b - a)));
        } else if (dist == RandomDist::Uniform) {
          p[i] = static_cast<scalar_t>(math::affine(a, b - a, math::philox_uniform<scalar_t>(seed, offset + i)));
        } else {
          p[i] = static_cast<scalar_t>(math::affine(a, b, math::philox_normal<double>(seed, offset + i)));
        }
      }
    });
  });
}

}  // namespace mg::cpu
