// Reductions: values, keepdim shapes, gradients on strided inputs, stability, errors.
#include "gradcheck.hpp"

using mg::Tensor;
using mg::TensorList;
using mgtest::gradcheck;
using mgtest::require_close;

namespace {
Tensor f64(const std::vector<double>& v, const mg::Shape& s) { return mg::from_vector(v, s, mg::kFloat64); }
Tensor distinct(const mg::Shape& s, uint64_t seed) {  // no ties, so max/min are differentiable
  mg::Generator g(seed);
  return mg::randn(s, mg::kFloat64, &g);
}
}  // namespace

TEST_CASE("reductions: values and shapes", "[reduce]") {
  Tensor a = f64({1, 2, 3, 4, 5, 6}, {2, 3});
  require_close(a.sum(), f64({21}, {}));
  require_close(a.sum({0}), f64({5, 7, 9}, {3}));
  require_close(a.sum({1}, true), f64({6, 15}, {2, 1}));
  require_close(a.sum({-1, 0}), f64({21}, {}));
  require_close(a.mean({1}), f64({2, 5}, {2}));
  require_close(a.var({1}), f64({1, 1}, {2}));
  require_close(a.var({1}, false), f64({2.0 / 3, 2.0 / 3}, {2}));
  require_close(a.std({0}), f64({2.1213203435596424, 2.1213203435596424, 2.1213203435596424}, {3}));
  auto [mx, imx] = a.max(1);
  require_close(mx, f64({3, 6}, {2}));
  CHECK(imx.to_vector<int32_t>() == std::vector<int32_t>{2, 2});
  auto [mn, imn] = a.min(0, true);
  CHECK(mn.sizes() == mg::Shape{1, 3});
  CHECK(imn.to_vector<int32_t>() == std::vector<int32_t>{0, 0, 0});
  CHECK(a.argmax().item<int32_t>() == 5);
  CHECK(a.argmax(0).to_vector<int32_t>() == std::vector<int32_t>{1, 1, 1});
  require_close(a.norm(), f64({std::sqrt(91.0)}, {}));
  require_close(mg::norm(a, 1.0, {1}), f64({6, 15}, {2}));
  require_close(mg::norm(a, 3.0, {1}), f64({std::cbrt(36.0), std::cbrt(405.0)}, {2}));
  // ties: the first index wins
  CHECK(f64({1, 3, 3, 0}, {4}).argmax().item<int32_t>() == 1);
  // int32 sums stay exact
  Tensor i = mg::from_vector(std::vector<int32_t>{1 << 30, 1 << 30, -(1 << 30)}, {3}, mg::kInt32);
  CHECK(i.sum().item<int32_t>() == (1 << 30));
}

TEST_CASE("logsumexp is stable for large magnitudes", "[reduce]") {
  require_close(f64({1e4, 1e4}, {2}).logsumexp({0}), f64({1e4 + std::log(2.0)}, {}), 1e-9);
  require_close(f64({-1e4, -1e4 - 1}, {2}).logsumexp({0}), f64({-1e4 + std::log1p(std::exp(-1.0))}, {}), 1e-9);
  const double inf = INFINITY;
  require_close(f64({-inf, -inf}, {2}).logsumexp({0}), f64({-inf}, {}));
}

TEST_CASE("sum of many float32 values is accurate and thread-count independent", "[reduce]") {
  const int64_t n = 1 << 22;
  Tensor x = mg::full({n}, 0.1f);
  const double expected = static_cast<double>(0.1f) * n;
  mg::set_num_threads(1);
  const float one = x.sum().item<float>();
  mg::set_num_threads(2);
  const float two = x.sum().item<float>();
  CHECK(one == two);
  CHECK(std::abs(one - expected) / expected < 1e-6);
}

TEST_CASE("reductions: gradients", "[reduce]") {
  Tensor x = distinct({3, 4}, 11);
  Tensor y = distinct({2, 3, 4}, 12);
  gradcheck("sum all", [](const TensorList& in) { return in[0].sum(); }, {x});
  gradcheck("sum dim", [](const TensorList& in) { return in[0].sum({0}); }, {x});
  gradcheck("sum dims keepdim", [](const TensorList& in) { return in[0].sum({0, 2}, true); }, {y});
  gradcheck("sum transposed", [](const TensorList& in) { return in[0].t().sum({1}); }, {x});
  gradcheck("sum expanded", [](const TensorList& in) { return in[0].expand({5, 4}).sum({0}); }, {distinct({1, 4}, 3)});
  gradcheck("mean", [](const TensorList& in) { return in[0].mean({1}); }, {y});
  gradcheck("var unbiased", [](const TensorList& in) { return in[0].var({1}); }, {x});
  gradcheck("var biased keepdim", [](const TensorList& in) { return in[0].var({0, 1}, false, true); }, {y});
  gradcheck("std", [](const TensorList& in) { return in[0].std({1}); }, {x});
  gradcheck("max dim", [](const TensorList& in) { return std::get<0>(in[0].max(1)); }, {x});
  gradcheck("min dim keepdim", [](const TensorList& in) { return std::get<0>(in[0].min(0, true)); }, {y});
  gradcheck("max sliced", [](const TensorList& in) { return std::get<0>(in[0].slice(1, 1, 4).max(-1)); }, {x});
  gradcheck("amax", [](const TensorList& in) { return mg::amax(in[0], {0, 2}); }, {y});
  gradcheck("amax all", [](const TensorList& in) { return in[0].max(); }, {x});
  gradcheck("logsumexp", [](const TensorList& in) { return in[0].logsumexp({1}); }, {x});
  gradcheck("logsumexp transposed", [](const TensorList& in) { return in[0].t().logsumexp({0}, true); }, {x});
  gradcheck("norm 2", [](const TensorList& in) { return in[0].norm(); }, {x});
  gradcheck("norm 2 dim", [](const TensorList& in) { return mg::norm(in[0], 2.0, {1}); }, {x});
  gradcheck("norm 1", [](const TensorList& in) { return mg::norm(in[0], 1.0); }, {x});
  gradcheck("norm 3", [](const TensorList& in) { return mg::norm(in[0], 3.0, {0}); }, {x});
}

TEST_CASE("amax shares the gradient among ties", "[reduce]") {
  Tensor x = f64({2, 5, 5, 1}, {4}).requires_grad_();
  x.max().backward();
  require_close(x.grad(), f64({0, 0.5, 0.5, 0}, {4}));
}

TEST_CASE("reductions: bad input", "[reduce]") {
  Tensor x = mg::zeros({2, 3});
  CHECK_THROWS_WITH(x.sum({2}), Catch::Contains("sum") && Catch::Contains("dim 2"));
  CHECK_THROWS_WITH(x.sum({0, -2}), Catch::Contains("sum") && Catch::Contains("repeated"));
  CHECK_THROWS_WITH(mg::zeros({0, 3}).max(0), Catch::Contains("empty"));
  CHECK_THROWS_WITH(mg::zeros({2}, mg::kInt32).mean(), Catch::Contains("mean") && Catch::Contains("int32"));
}
