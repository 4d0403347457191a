// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011), the
// counter-based generator behind curand and PyTorch's CUDA RNG. Each output block is a pure
// function of (key, counter), so element i of a random tensor is the same whichever thread or
// device computes it.
#pragma once
#include <cstdint>

#include "engine/math/elementwise_math.hpp"

namespace mg::math {

struct PhiloxBlock {
  uint32_t x[4];
};

MG_HOST_DEVICE inline uint32_t mulhilo32(uint32_t a, uint32_t b, uint32_t* hi) {
  const uint64_t p = static_cast<uint64_t>(a) * b;
  *hi = static_cast<uint32_t>(p >> 32);
  return static_cast<uint32_t>(p);
}

MG_HOST_DEVICE inline PhiloxBlock philox4x32(uint64_t counter, uint64_t key) {
  uint32_t c0 = static_cast<uint32_t>(counter), c1 = static_cast<uint32_t>(counter >> 32);
  uint32_t c2 = 0, c3 = 0;
  uint32_t k0 = static_cast<uint32_t>(key), k1 = static_cast<uint32_t>(key >> 32);
  for (int round = 0; round < 10; ++round) {
    uint32_t hi0, hi1;
    const uint32_t lo0 = mulhilo32(0xD2511F53u, c0, &hi0);
    const uint32_t lo1 = mulhilo32(0xCD9E8D57u, c2, &hi1);
    const uint32_t n0 = hi1 ^ c1 ^ k0, n2 = hi0 ^ c3 ^ k1;
    c0 = n0; c1 = lo1; c2 = n2; c3 = lo0;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return PhiloxBlock{{c0, c1, c2, c3}};
}

// Uniform in [0, 1) with 24 (float) or 53 (double) random bits.
MG_HOST_DEVICE inline float uniform_float(uint32_t bits) { return (bits >> 8) * (1.0f / 16777216.0f); }
MG_HOST_DEVICE inline double uniform_double(uint32_t lo, uint32_t hi) {
  const uint64_t v = (static_cast<uint64_t>(hi) << 32 | lo) >> 11;
  return static_cast<double>(v) * (1.0 / 9007199254740992.0);
}

// Element i's draws: uniform uses words 0-1, normal uses Box-Muller on words 0-3.
template <class T>
MG_HOST_DEVICE inline T philox_uniform(uint64_t key, uint64_t counter) {
  const PhiloxBlock b = philox4x32(counter, key);
  if constexpr (sizeof(T) == 4) return static_cast<T>(uniform_float(b.x[0]));
  return static_cast<T>(uniform_double(b.x[0], b.x[1]));
}

template <class T>
MG_HOST_DEVICE inline T philox_normal(uint64_t key, uint64_t counter) {
  const PhiloxBlock b = philox4x32(counter, key);
  const double u1 = 1.0 - uniform_double(b.x[0], b.x[1]);  // (0, 1]: log stays finite
  const double u2 = uniform_double(b.x[2], b.x[3]);
  return static_cast<T>(std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586476925 * u2));
}

// a + scale * u rounded once on every backend: nvcc contracts the plain expression into an FMA by
// default and a host compiler may or may not, which would change the last bit of a float64 draw.
MG_HOST_DEVICE inline double affine(double a, double scale, double u) { return std::fma(scale, u, a); }

}  // namespace mg::math
