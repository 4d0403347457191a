// Seedable random generators. A Generator is (seed, offset): each random tensor of n elements
// takes counters [offset, offset + n) of the Philox stream and advances offset by n. Copying the
// two numbers saves and restores the generator exactly (checkpoints store them).
#pragma once
#include <cstdint>
#include <mutex>

#include "engine/tensor.hpp"

namespace mg {

class Generator {
 public:
  explicit Generator(uint64_t seed = 0) : seed_(seed) {}
  void manual_seed(uint64_t seed);
  uint64_t seed() const { return seed_; }
  uint64_t offset() const { return offset_; }
  void set_state(uint64_t seed, uint64_t offset);
  // Reserves n counters and returns the first.
  uint64_t advance(uint64_t n);
  // A single uniform draw in [0, 1) (reserves one counter).
  double uniform();

 private:
  std::mutex mutex_;
  uint64_t seed_;
  uint64_t offset_ = 0;
};

Generator& default_generator();
// Seeds the default generator, like torch::manual_seed.
void manual_seed(uint64_t seed);

// gen == nullptr means the default generator.
Tensor rand(const Shape& sizes, TensorOptions options = {}, Generator* gen = nullptr);
Tensor randn(const Shape& sizes, TensorOptions options = {}, Generator* gen = nullptr);
// Uniform integers in [low, high).
Tensor randint(int64_t low, int64_t high, const Shape& sizes, TensorOptions options = kInt32,
               Generator* gen = nullptr);
// A random permutation of 0..n-1 (int32).
Tensor randperm(int64_t n, Generator* gen = nullptr);
Tensor rand_like(const Tensor& t, Generator* gen = nullptr);
Tensor randn_like(const Tensor& t, Generator* gen = nullptr);

}  // namespace mg
