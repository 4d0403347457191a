// Generators and the random factories.
#include "engine/generator.hpp"

#include <cmath>
#include <vector>

#include "engine/backend.hpp"
#include "engine/math/philox.hpp"
#include "engine/ops/index.hpp"

namespace mg {

void Generator::manual_seed(uint64_t seed) { set_state(seed, 0); }

void Generator::set_state(uint64_t seed, uint64_t offset) {
  std::lock_guard<std::mutex> lock(mutex_);
  seed_ = seed;
  offset_ = offset;
}

uint64_t Generator::advance(uint64_t n) {
  std::lock_guard<std::mutex> lock(mutex_);
  const uint64_t first = offset_;
  offset_ += n;
  return first;
}

double Generator::uniform() {
  const uint64_t counter = advance(1);
  return math::philox_uniform<double>(seed_, counter);
}

Generator& default_generator() {
  static Generator gen(0);
  return gen;
}

void manual_seed(uint64_t seed) { default_generator().manual_seed(seed); }

namespace {

Tensor random_tensor(const Shape& sizes, TensorOptions options, Generator* gen, RandomDist dist,
                     double a, double b) {
  Generator& g = gen ? *gen : default_generator();
  const bool wants_grad = options.requires_grad_;
  Tensor out = Tensor::empty(sizes, options.requires_grad(false));
  const uint64_t offset = g.advance(static_cast<uint64_t>(out.numel()));
  backend_of(out).fill_random(out, dist, g.seed(), offset, a, b);
  if (wants_grad) out.requires_grad_(true);
  return out;
}

}  // namespace

Tensor rand(const Shape& sizes, TensorOptions options, Generator* gen) {
  MG_CHECK(is_floating_point(options.dtype_), "rand: expected a floating dtype, got ", dtype_name(options.dtype_));
  return random_tensor(sizes, options, gen, RandomDist::Uniform, 0.0, 1.0);
}

Tensor randn(const Shape& sizes, TensorOptions options, Generator* gen) {
  MG_CHECK(is_floating_point(options.dtype_), "randn: expected a floating dtype, got ", dtype_name(options.dtype_));
  return random_tensor(sizes, options, gen, RandomDist::Normal, 0.0, 1.0);
}

Tensor randint(int64_t low, int64_t high, const Shape& sizes, TensorOptions options, Generator* gen) {
  MG_CHECK(low < high, "randint: empty range [", low, ", ", high, ")");
  Tensor ints = random_tensor(sizes, options.dtype(kInt32), gen, RandomDist::Uniform,
                              static_cast<double>(low), static_cast<double>(high));
  return ints.to(options.dtype_);
}

// Sorting uniform keys gives a uniform permutation that depends only on the generator state.
Tensor randperm(int64_t n, Generator* gen) {
  Tensor keys = rand({n}, kFloat64, gen);
  return argsort(keys);
}

Tensor rand_like(const Tensor& t, Generator* gen) { return rand(t.sizes(), t.options(), gen); }
Tensor randn_like(const Tensor& t, Generator* gen) { return randn(t.sizes(), t.options(), gen); }

}  // namespace mg
