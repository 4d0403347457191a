// Element-wise ops: gradient checks (contiguous, transposed, sliced, broadcast inputs), values
// against hand computation, and bad-input errors.
#include "gradcheck.hpp"

using mg::Tensor;
using mg::TensorList;
using mgtest::gradcheck;
using mgtest::require_close;

namespace {
Tensor f64(const std::vector<double>& v, const mg::Shape& s) { return mg::from_vector(v, s, mg::kFloat64); }
// Values away from the kinks of relu/abs/clamp and inside the domains of log/sqrt.
Tensor positive(const mg::Shape& s, uint64_t seed) {
  mg::Generator g(seed);
  return mg::rand(s, mg::kFloat64, &g) + 0.5;
}
Tensor signed_away_from_zero(const mg::Shape& s, uint64_t seed) {
  mg::Generator g(seed);
  Tensor u = mg::rand(s, mg::kFloat64, &g);
  return mg::where(mg::gt(u, mg::full_like(u, 0.5)), u + 0.1, u - 1.1);
}
}  // namespace

TEST_CASE("unary ops: gradients on contiguous and strided inputs", "[elementwise]") {
  struct Case {
    const char* name;
    std::function<Tensor(const Tensor&)> f;
    bool positive_only;
  };
  const std::vector<Case> cases = {
      {"neg", [](const Tensor& x) { return -x; }, false},
      {"exp", [](const Tensor& x) { return mg::exp(x); }, false},
      {"log", [](const Tensor& x) { return mg::log(x); }, true},
      {"sqrt", [](const Tensor& x) { return mg::sqrt(x); }, true},
      {"rsqrt", [](const Tensor& x) { return mg::rsqrt(x); }, true},
      {"abs", [](const Tensor& x) { return mg::abs(x); }, false},
      {"relu", [](const Tensor& x) { return mg::relu(x); }, false},
      {"leaky_relu", [](const Tensor& x) { return mg::leaky_relu(x, 0.1); }, false},
      {"gelu", [](const Tensor& x) { return mg::gelu(x); }, false},
      {"gelu_tanh", [](const Tensor& x) { return mg::gelu(x, "tanh"); }, false},
      {"silu", [](const Tensor& x) { return mg::silu(x); }, false},
      {"sigmoid", [](const Tensor& x) { return mg::sigmoid(x); }, false},
      {"tanh", [](const Tensor& x) { return mg::tanh(x); }, false},
      {"softplus", [](const Tensor& x) { return mg::softplus(x, 2.0, 1.0); }, false},
      {"pow_scalar", [](const Tensor& x) { return mg::pow(x, 3.0); }, false},
      {"pow_frac", [](const Tensor& x) { return mg::pow(x, 0.7); }, true},
      {"clamp", [](const Tensor& x) { return mg::clamp(x, -0.5, 0.8); }, false},
  };
  for (const auto& c : cases) {
    Tensor x = c.positive_only ? positive({3, 4}, 7) : signed_away_from_zero({3, 4}, 7);
    gradcheck(c.name, [&](const TensorList& in) { return c.f(in[0]); }, {x});
    gradcheck(std::string(c.name) + " transposed", [&](const TensorList& in) { return c.f(in[0].t()); }, {x});
    gradcheck(std::string(c.name) + " sliced",
              [&](const TensorList& in) { return c.f(in[0].slice(1, 0, 4, 2)); }, {x});
  }
}

TEST_CASE("unary ops: values", "[elementwise]") {
  Tensor x = f64({-2.0, -0.5, 0.0, 0.5, 3.0}, {5});
  require_close(mg::relu(x), f64({0, 0, 0, 0.5, 3}, {5}));
  require_close(mg::leaky_relu(x, 0.1), f64({-0.2, -0.05, 0, 0.5, 3}, {5}));
  require_close(mg::abs(x), f64({2, 0.5, 0, 0.5, 3}, {5}));
  require_close(mg::clamp(x, -1.0, 1.0), f64({-1, -0.5, 0, 0.5, 1}, {5}));
  require_close(mg::clamp(x, std::nullopt, 0.0), f64({-2, -0.5, 0, 0, 0}, {5}));
  // torch.nn.functional.gelu / silu on the same float64 tensor
  require_close(mg::gelu(x), f64({-0.04550026389635842, -0.15426876936299344, 0.0, 0.34573123063700656,
                                  2.99595030590511}, {5}), 1e-14);
  require_close(mg::gelu(x, "tanh"), f64({-0.04540230591222494, -0.15428599017485606, 0.0,
                                          0.34571400982514394, 2.996362607918227}, {5}), 1e-14);
  require_close(mg::silu(x), f64({-0.2384058440442351, -0.1887703343990727, 0.0, 0.3112296656009273,
                                  2.8577223804672998}, {5}), 1e-14);
  // softplus is linear past its threshold and never overflows
  require_close(mg::softplus(f64({1000.0, -1000.0}, {2})), f64({1000.0, 0.0}, {2}));
  // sigmoid saturates without NaN for huge logits
  require_close(mg::sigmoid(f64({1e4, -1e4}, {2})), f64({1.0, 0.0}, {2}));
  // integer tensors keep their dtype where the op makes sense
  Tensor i = mg::from_vector(std::vector<int32_t>{-3, 4}, {2}, mg::kInt32);
  CHECK(mg::abs(i).to_vector<int32_t>() == std::vector<int32_t>{3, 4});
  CHECK(mg::relu(i).dtype() == mg::kInt32);
}

TEST_CASE("binary ops: broadcasting values", "[elementwise]") {
  Tensor a = f64({1, 2, 3, 4, 5, 6}, {2, 3});
  Tensor row = f64({10, 20, 30}, {3});
  Tensor col = f64({100, 200}, {2, 1});
  require_close(a + row, f64({11, 22, 33, 14, 25, 36}, {2, 3}));
  require_close(a + col, f64({101, 102, 103, 204, 205, 206}, {2, 3}));
  require_close(row * col, f64({1000, 2000, 3000, 2000, 4000, 6000}, {2, 3}));
  require_close(a - 1.0, f64({0, 1, 2, 3, 4, 5}, {2, 3}));
  require_close(1.0 - a, f64({0, -1, -2, -3, -4, -5}, {2, 3}));
  require_close(a / 2.0, f64({0.5, 1, 1.5, 2, 2.5, 3}, {2, 3}));
  require_close(12.0 / a, f64({12, 6, 4, 3, 2.4, 2}, {2, 3}));
  require_close(mg::pow(a, f64({2}, {1})), f64({1, 4, 9, 16, 25, 36}, {2, 3}));
  require_close(mg::maximum(a, f64({3}, {})), f64({3, 3, 3, 4, 5, 6}, {2, 3}));
  require_close(mg::minimum(a, f64({3}, {})), f64({1, 2, 3, 3, 3, 3}, {2, 3}));
  require_close(mg::gt(a, f64({3}, {})), f64({0, 0, 0, 1, 1, 1}, {2, 3}));
  require_close(mg::eq(a, f64({2}, {})), f64({0, 1, 0, 0, 0, 0}, {2, 3}));
  require_close(mg::where(mg::le(a, f64({2}, {})), a, -a), f64({1, 2, -3, -4, -5, -6}, {2, 3}));
  // [2, 1, 3] + [4, 1] -> [2, 4, 3]
  CHECK((mg::zeros({2, 1, 3}) + mg::zeros({4, 1})).sizes() == mg::Shape{2, 4, 3});
}

TEST_CASE("binary ops: gradients with broadcasting and strides", "[elementwise]") {
  Tensor a = signed_away_from_zero({3, 4}, 1);
  Tensor b = signed_away_from_zero({4}, 2);
  Tensor c = positive({3, 1}, 3);
  gradcheck("add", [](const TensorList& x) { return x[0] + x[1]; }, {a, b});
  gradcheck("sub", [](const TensorList& x) { return x[1] - x[0]; }, {a, c});
  gradcheck("mul", [](const TensorList& x) { return x[0] * x[1]; }, {a, b});
  gradcheck("div", [](const TensorList& x) { return x[0] / x[1]; }, {a, c});
  gradcheck("pow tensor", [](const TensorList& x) { return mg::pow(x[1], x[0]); }, {a, c});
  gradcheck("maximum", [](const TensorList& x) { return mg::maximum(x[0], x[1]); }, {a, b});
  gradcheck("minimum", [](const TensorList& x) { return mg::minimum(x[0], x[1]); }, {a, b});
  gradcheck("where", [](const TensorList& x) { return mg::where(mg::gt(x[0], x[1]), x[0], x[1] * 2.0); }, {a, b});
  gradcheck("mul transposed", [](const TensorList& x) { return x[0].t() * x[1].t(); },
            {a, signed_away_from_zero({3, 4}, 4)});
  gradcheck("add expanded", [](const TensorList& x) { return x[0].expand({3, 4}) + x[1]; }, {c, a});
  gradcheck("scalar ops", [](const TensorList& x) { return (2.0 - x[0]) * 3.0 / (x[0] * x[0] + 1.0); }, {a});
  gradcheck("same tensor twice", [](const TensorList& x) { return x[0] * x[0]; }, {a});
}

TEST_CASE("maximum splits the gradient on ties, as torch", "[elementwise]") {
  Tensor a = f64({1.0, 2.0}, {2}).requires_grad_();
  Tensor b = f64({1.0, 1.0}, {2}).requires_grad_();
  mg::maximum(a, b).sum().backward();
  require_close(a.grad(), f64({0.5, 1.0}, {2}));
  require_close(b.grad(), f64({0.5, 0.0}, {2}));
}

TEST_CASE("element-wise bad input", "[elementwise]") {
  Tensor a = mg::zeros({2, 3});
  CHECK_THROWS_WITH(a + mg::zeros({4}), Catch::Contains("add") && Catch::Contains("[2, 3]") && Catch::Contains("[4]"));
  CHECK_THROWS_WITH(a * mg::zeros({2, 3}, mg::kFloat64),
                    Catch::Contains("mul") && Catch::Contains("dtype") && Catch::Contains("float64"));
  CHECK_THROWS_WITH(mg::exp(mg::zeros({2}, mg::kInt32)), Catch::Contains("exp") && Catch::Contains("int32"));
  CHECK_THROWS_WITH(mg::gelu(a, "fast"), Catch::Contains("gelu"));
}
