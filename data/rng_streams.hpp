// The counter-based streams behind the loader's randomness (internal to data/): each purpose gets
// its own Philox key derived from (seed, epoch), so the shuffle and the augmentation never share
// numbers and neither depends on thread count or order.
#pragma once
#include <cstdint>

#include "engine/math/philox.hpp"

namespace mg::data {

enum class Stream : uint64_t { Shuffle = 1, Augmentation = 2 };
inline constexpr uint64_t kDrawsPerSample = uint64_t{1} << 16;  // counter space of one example

// A 64-bit Philox key for (seed, epoch, purpose): one Philox block of the epoch under a key mixed
// from the seed and the purpose (golden-ratio constant, as splitmix64).
inline uint64_t stream_key(uint64_t seed, uint64_t epoch, Stream stream) {
  const uint64_t base = seed ^ (static_cast<uint64_t>(stream) * 0x9E3779B97F4A7C15ull);
  const math::PhiloxBlock block = math::philox4x32(epoch, base);
  return uint64_t{block.x[0]} | uint64_t{block.x[1]} << 32;
}

}  // namespace mg::data
