// grouped_mlp: values against the per-group composition linear(relu(linear(x_g))), gradients by
// float64 central differences (with an empty group, a group without biases and a frozen group),
// float32 against float64, thread-count independence, and the argument errors.
#include "gradcheck.hpp"

#include "engine/ops.hpp"
#include "engine/parallel.hpp"

using Catch::Matchers::Contains;
using mg::GroupedMlpWeights;
using mg::Tensor;
using mg::TensorList;

namespace {

Tensor randn(const mg::Shape& s, uint64_t seed, mg::ScalarType dtype = mg::kFloat64) {
  mg::Generator g(seed);
  return mg::randn(s, dtype, &g);
}

// Three groups: 5 rows with H = 4, none with H = 3, 7 rows with H = 6 and no biases.
struct Problem {
  Tensor x;
  std::vector<int64_t> offsets{0, 5, 5, 12};
  std::vector<GroupedMlpWeights> w;
  explicit Problem(mg::ScalarType dtype = mg::kFloat64) {
    const int64_t D = 3, D_out = 2;
    x = randn({12, D}, 1, dtype);
    w.push_back({randn({4, D}, 2, dtype), randn({4}, 3, dtype), randn({D_out, 4}, 4, dtype), randn({D_out}, 5, dtype)});
    w.push_back({randn({3, D}, 6, dtype), randn({3}, 7, dtype), randn({D_out, 3}, 8, dtype), randn({D_out}, 9, dtype)});
    w.push_back({randn({6, D}, 10, dtype), Tensor(), randn({D_out, 6}, 11, dtype), Tensor()});
  }
  Tensor composed(const Tensor& input, const std::vector<GroupedMlpWeights>& weights) const {
    TensorList parts;
    for (size_t g = 0; g < weights.size(); ++g) {
      const int64_t n = offsets[g + 1] - offsets[g];
      if (n == 0) continue;
      const Tensor h = mg::relu(mg::linear(input.narrow(0, offsets[g], n), weights[g].w1, weights[g].b1));
      parts.push_back(mg::linear(h, weights[g].w2, weights[g].b2));
    }
    return mg::cat(parts, 0);
  }
};

}  // namespace

TEST_CASE("grouped_mlp: equals the per-group composition", "[grouped_mlp]") {
  Problem p;
  mgtest::require_close(mg::grouped_mlp(p.x, p.offsets, p.w), p.composed(p.x, p.w), 1e-12, 1e-12);
}

TEST_CASE("grouped_mlp: gradients of x and every group's weights", "[grouped_mlp]") {
  Problem p;
  TensorList inputs{p.x};
  for (const GroupedMlpWeights& w : p.w)
    for (const Tensor& t : {w.w1, w.b1, w.w2, w.b2})
      if (t.defined()) inputs.push_back(t);
  // inputs: x, group 0 (w1 b1 w2 b2), group 1 (w1 b1 w2 b2), group 2 (w1 w2)
  auto unpack = [](const TensorList& in) {
    return std::vector<GroupedMlpWeights>{{in[1], in[2], in[3], in[4]}, {in[5], in[6], in[7], in[8]},
                                          {in[9], Tensor(), in[10], Tensor()}};
  };
  mgtest::gradcheck("grouped_mlp", [&](const TensorList& in) { return mg::grouped_mlp(in[0], p.offsets, unpack(in)); },
                    inputs);
  // the empty group takes no part: no gradient reaches its weights
  for (Tensor& t : inputs) t.set_requires_grad(true);
  mg::grouped_mlp(inputs[0], p.offsets, unpack(inputs)).sum().backward();
  for (int i = 5; i <= 8; ++i) CHECK_FALSE(inputs[i].grad().defined());
  CHECK(inputs[9].grad().defined());
}

TEST_CASE("grouped_mlp: a frozen group gets no gradient, the others the same as unfrozen", "[grouped_mlp]") {
  Problem p;
  std::vector<GroupedMlpWeights> w = p.w;
  for (GroupedMlpWeights& g : w)
    for (Tensor* t : {&g.w1, &g.b1, &g.w2, &g.b2})
      if (t->defined()) t->set_requires_grad(true);
  {
    const Tensor y = mg::grouped_mlp(p.x, p.offsets, w);
    (y * y).sum().backward();
  }
  const Tensor reference = w[2].w1.grad().clone();
  for (GroupedMlpWeights& g : w)
    for (Tensor* t : {&g.w1, &g.b1, &g.w2, &g.b2})
      if (t->defined()) t->set_grad(Tensor());
  w[0].w1.set_requires_grad(false);
  w[0].b1.set_requires_grad(false);
  {
    const Tensor y = mg::grouped_mlp(p.x, p.offsets, w);
    (y * y).sum().backward();
  }
  CHECK_FALSE(w[0].w1.grad().defined());
  CHECK(w[0].w2.grad().defined());
  mgtest::require_close(w[2].w1.grad(), reference, 0, 0);
}

TEST_CASE("grouped_mlp: float32 matches float64 and does not depend on the thread count", "[grouped_mlp]") {
  const int before = mg::get_num_threads();
  // Large enough that the work is split into several tasks.
  const int64_t D = 32, D_out = 16, P = 1500;
  std::vector<int64_t> offsets{0, 700, 710, 1500};
  std::vector<GroupedMlpWeights> w;
  for (int64_t g = 0; g < 3; ++g)
    w.push_back({randn({24 + 8 * g, D}, 20 + g, mg::kFloat32), randn({24 + 8 * g}, 30 + g, mg::kFloat32),
                 randn({D_out, 24 + 8 * g}, 40 + g, mg::kFloat32), randn({D_out}, 50 + g, mg::kFloat32)});
  Tensor x = randn({P, D}, 60, mg::kFloat32);
  std::vector<GroupedMlpWeights> w64;
  for (const GroupedMlpWeights& g : w)
    w64.push_back({g.w1.to(mg::kFloat64), g.b1.to(mg::kFloat64), g.w2.to(mg::kFloat64), g.b2.to(mg::kFloat64)});
  const Tensor y64 = mg::grouped_mlp(x.to(mg::kFloat64), offsets, w64);
  std::vector<Tensor> per_threads;
  for (int threads : {1, 2, 3}) {
    mg::set_num_threads(threads);
    Tensor xg = x.detach().requires_grad_(true);
    const Tensor y = mg::grouped_mlp(xg, offsets, w);
    mgtest::require_close(y.to(mg::kFloat64), y64, 1e-3, 1e-4);
    (y * y).sum().backward();
    per_threads.push_back(mg::cat({y.flatten(), xg.grad().flatten()}, 0));
  }
  mg::set_num_threads(before);
  mgtest::require_close(per_threads[1], per_threads[0], 0, 0);
  mgtest::require_close(per_threads[2], per_threads[0], 0, 0);
}

TEST_CASE("grouped_mlp: argument errors name the op and the shapes", "[grouped_mlp]") {
  Problem p;
  CHECK_THROWS_WITH(mg::grouped_mlp(p.x, {0, 5, 12}, p.w), Contains("grouped_mlp") && Contains("offsets"));
  CHECK_THROWS_WITH(mg::grouped_mlp(p.x, {0, 5, 5, 11}, p.w), Contains("grouped_mlp") && Contains("P = 12"));
  std::vector<GroupedMlpWeights> bad = p.w;
  bad[1].w1 = randn({3, 4}, 1);
  CHECK_THROWS_WITH(mg::grouped_mlp(p.x, p.offsets, bad),
                    Contains("grouped_mlp") && Contains("group 1") && Contains("[3, 4]") && Contains("[12, 3]"));
  bad = p.w;
  bad[0].b2 = randn({5}, 1);
  CHECK_THROWS_WITH(mg::grouped_mlp(p.x, p.offsets, bad), Contains("group 0") && Contains("b2"));
}
