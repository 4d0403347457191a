// The autograd engine: accumulation, retain_grad, hooks, no-grad, detach, retain_graph, deep
// graphs, DOT export and anomaly mode.
#include "gradcheck.hpp"

#include <map>

using mg::Tensor;
using mgtest::require_close;

namespace {
Tensor f64(const std::vector<double>& v, const mg::Shape& s) { return mg::from_vector(v, s, mg::kFloat64); }
}  // namespace

TEST_CASE("leaf gradients accumulate across backward calls", "[autograd]") {
  Tensor x = f64({1, 2}, {2}).requires_grad_();
  (x * x).sum().backward();
  require_close(x.grad(), f64({2, 4}, {2}));
  (x * 3.0).sum().backward();
  require_close(x.grad(), f64({5, 7}, {2}));
  x.mutable_grad_zero_();
  require_close(x.grad(), f64({0, 0}, {2}));
}

TEST_CASE("a value used twice receives both gradients", "[autograd]") {
  Tensor x = f64({3}, {1}).requires_grad_();
  Tensor y = x * 2.0;
  (y * y + y).sum().backward();  // d/dx (4x^2 + 2x) = 8x + 2
  require_close(x.grad(), f64({26}, {1}));
}

TEST_CASE("backward with an explicit gradient - non-scalar needs one", "[autograd]") {
  Tensor x = f64({1, 2, 3}, {3}).requires_grad_();
  Tensor y = x * x;
  CHECK_THROWS_WITH(y.backward(), Catch::Contains("scalar") && Catch::Contains("[3]"));
  y = x * x;
  y.backward(f64({1, 0, 2}, {3}));
  require_close(x.grad(), f64({2, 0, 12}, {3}));
  CHECK_THROWS_WITH(f64({1}, {1}).backward(), Catch::Contains("does not require grad"));
}

TEST_CASE("retain_grad keeps a non-leaf gradient - non-leaves have none by default", "[autograd]") {
  Tensor x = f64({1, 2}, {2}).requires_grad_();
  Tensor h = x * 3.0;
  Tensor k = h + 1.0;
  h.retain_grad();
  CHECK(h.retains_grad());
  (k * k).sum().backward();
  require_close(h.grad(), f64({8, 14}, {2}));
  CHECK_FALSE(k.grad().defined());
  CHECK_FALSE(h.is_leaf());
  CHECK(x.is_leaf());
}

TEST_CASE("hooks see and may replace gradients", "[autograd]") {
  Tensor x = f64({1, 2}, {2}).requires_grad_();
  Tensor seen;
  x.register_hook([&](const Tensor& g) { seen = g.clone(); return g * 10.0; });
  Tensor h = x * 2.0;
  h.register_hook([](const Tensor& g) { return g + 1.0; });
  h.sum().backward();
  require_close(seen, f64({4, 4}, {2}));   // (1 + 1) * 2
  require_close(x.grad(), f64({40, 40}, {2}));
}

TEST_CASE("no-grad guard and detach stop recording", "[autograd]") {
  Tensor x = f64({1, 2}, {2}).requires_grad_();
  {
    mg::NoGradGuard guard;
    Tensor y = x * 2.0;
    CHECK_FALSE(y.requires_grad());
    CHECK(y.grad_fn() == nullptr);
  }
  CHECK(mg::GradMode::is_enabled());
  Tensor d = x.detach();
  CHECK_FALSE(d.requires_grad());
  CHECK(d.shares_storage(x));
  Tensor z = (x * d).sum();  // d is a constant
  z.backward();
  require_close(x.grad(), f64({1, 2}, {2}));
}

TEST_CASE("a second backward without retain_graph is an error - with it, it works", "[autograd]") {
  Tensor x = f64({2}, {1}).requires_grad_();
  Tensor y = (x * x).sum();
  y.backward(Tensor(), /*retain_graph=*/true);
  y.backward();
  require_close(x.grad(), f64({8}, {1}));
  CHECK_THROWS_WITH(y.backward(), Catch::Contains("second time") && Catch::Contains("retain_graph"));
}

TEST_CASE("a 100k-op chain neither overflows the stack in backward nor when freed", "[autograd]") {
  Tensor x = mg::ones({1}, mg::kFloat64).requires_grad_();
  Tensor y = x;
  for (int i = 0; i < 100000; ++i) y = y * 1.0;
  y.sum().backward();
  require_close(x.grad(), f64({1}, {1}));
  y = Tensor();  // frees the chain
  SUCCEED();
}

TEST_CASE("multi-root backward", "[autograd]") {
  Tensor x = f64({1, 2}, {2}).requires_grad_();
  mg::autograd::backward({(x * 2.0).sum(), (x * x).sum()});
  require_close(x.grad(), f64({4, 6}, {2}));
}

TEST_CASE("graph export to DOT names the ops and leaves", "[autograd]") {
  Tensor w = f64({1, 2}, {2}).requires_grad_();
  Tensor y = mg::relu(w * 3.0).sum();
  const std::string dot = mg::autograd::to_dot(y);
  CHECK_THAT(dot, Catch::StartsWith("digraph"));
  CHECK_THAT(dot, Catch::Contains("mul") && Catch::Contains("relu") && Catch::Contains("sum") &&
                      Catch::Contains("leaf [2]"));
}

TEST_CASE("anomaly mode names the op that first made a NaN or Inf", "[autograd]") {
  mg::autograd::DetectAnomalyGuard anomaly;
  Tensor x = f64({-1, 4}, {2}).requires_grad_();
  CHECK_THROWS_WITH(mg::log(x), Catch::Contains("log") && Catch::Contains("forward"));
  // forward finite, backward infinite: d/dx sqrt(x) at 0
  Tensor z = f64({0, 4}, {2}).requires_grad_();
  Tensor y = mg::sqrt(z).sum();
  CHECK_THROWS_WITH(y.backward(), Catch::Contains("sqrt") && Catch::Contains("backward"));
}

TEST_CASE("in-place writes into tensors that require grad are refused", "[autograd]") {
  Tensor x = f64({1, 2}, {2}).requires_grad_();
  CHECK_THROWS_WITH(x.fill_(0), Catch::Contains("fill_") && Catch::Contains("NoGradGuard"));
  {
    mg::NoGradGuard guard;
    x.fill_(3);
  }
  require_close(x.detach(), f64({3, 3}, {2}));
  CHECK_THROWS_WITH(mg::zeros({2}, mg::kInt32).requires_grad_(), Catch::Contains("floating"));
}

TEST_CASE("the per-op profile counts calls and splits self from total time", "[autograd][profiler]") {
  mg::profiler::reset();
  mg::profiler::enable();
  Tensor x = mg::randn({64, 64}).requires_grad_();
  for (int i = 0; i < 3; ++i) {
    Tensor y = mg::layer_norm(mg::matmul(x, x), {64}).sum();
    y.backward();
  }
  mg::profiler::enable(false);
  mg::matmul(x, x);  // not counted once disabled
  std::map<std::string, mg::profiler::OpStats> by_name;
  for (const auto& s : mg::profiler::stats()) by_name[s.name] = s;
  REQUIRE(by_name.count("matmul"));
  CHECK(by_name["matmul"].calls == 3);
  CHECK(by_name["matmul (backward)"].calls == 3);
  CHECK(by_name["sum (backward)"].calls == 3);
  for (const auto& [name, s] : by_name) CHECK(s.self_seconds <= s.total_seconds + 1e-12);
  CHECK_THAT(mg::profiler::report(), Catch::Contains("matmul (backward)") && Catch::Contains("self ms"));
  mg::profiler::reset();
  CHECK(mg::profiler::stats().empty());
}
