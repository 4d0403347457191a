// CPU memory, copies with dtype casts, fills and the Philox random fill.
#include <cstdlib>
#include <cstring>

#include "engine/cpu/cpu_backend.hpp"
#include "engine/parallel.hpp"
#include "engine/cpu/strided_loop.hpp"
#include "engine/math/philox.hpp"

namespace mg::cpu {

// 64-byte alignment: a cache line, and what AVX-512 loads like.
void* CpuBackend::allocate(size_t nbytes) {
  const size_t rounded = (std::max<size_t>(nbytes, 1) + 63) / 64 * 64;
  void* p = std::aligned_alloc(64, rounded);
  MG_CHECK(p != nullptr, "cpu: out of memory allocating ", nbytes, " bytes");
  return p;
}

void CpuBackend::deallocate(void* ptr) { std::free(ptr); }

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
          p[i] = static_cast<scalar_t>(a + (b - a) * math::philox_uniform<scalar_t>(seed, offset + i));
        } else {
          p[i] = static_cast<scalar_t>(a + b * math::philox_normal<double>(seed, offset + i));
        }
      }
    });
  });
}

}  // namespace mg::cpu
