// matmul: values against a naive triple loop, torch.matmul's shape rules, gradients on
// contiguous, transposed and broadcast operands, errors.
#include "gradcheck.hpp"

using mg::Tensor;
using mg::TensorList;
using mgtest::gradcheck;
using mgtest::require_close;

namespace {
Tensor naive_mm(const Tensor& a, const Tensor& b) {
  const int64_t M = a.size(0), K = a.size(1), N = b.size(1);
  auto av = a.to_vector<double>(), bv = b.to_vector<double>();
  std::vector<double> out(M * N, 0.0);
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j)
      for (int64_t k = 0; k < K; ++k) out[i * N + j] += av[i * K + k] * bv[k * N + j];
  return mg::from_vector(out, {M, N}, mg::kFloat64);
}
}  // namespace

TEST_CASE("matmul values", "[matmul]") {
  mg::Generator g(9);
  Tensor a = mg::randn({5, 7}, mg::kFloat64, &g), b = mg::randn({7, 3}, mg::kFloat64, &g);
  require_close(mg::matmul(a, b), naive_mm(a, b), 1e-12);
  require_close(mg::matmul(b.t(), a.t()), naive_mm(a, b).t(), 1e-12);  // transposed operands
  Tensor a32 = a.to(mg::kFloat32), b32 = b.to(mg::kFloat32);
  require_close(mg::matmul(a32, b32), naive_mm(a, b), 1e-5, 1e-5);
  // batched with broadcast batch dims: [2, 1, 5, 7] @ [3, 7, 3] -> [2, 3, 5, 3]
  Tensor ba = mg::randn({2, 1, 5, 7}, mg::kFloat64, &g), bb = mg::randn({3, 7, 3}, mg::kFloat64, &g);
  Tensor out = mg::matmul(ba, bb);
  REQUIRE(out.sizes() == mg::Shape{2, 3, 5, 3});
  require_close(out.select(0, 1).select(0, 2), naive_mm(ba.select(0, 1).select(0, 0), bb.select(0, 2)), 1e-12);
  // [B, M, K] @ [K, N] folds into one GEMM
  Tensor c = mg::randn({4, 5, 7}, mg::kFloat64, &g);
  require_close(mg::matmul(c, b).select(0, 3), naive_mm(c.select(0, 3), b), 1e-12);
  // 1-d operands
  Tensor v = mg::randn({7}, mg::kFloat64, &g);
  CHECK(mg::matmul(a, v).sizes() == mg::Shape{5});
  CHECK(mg::matmul(v, b).sizes() == mg::Shape{3});
  CHECK(mg::matmul(v, v).sizes() == mg::Shape{});
  require_close(mg::matmul(v, v), (v * v).sum(), 1e-12);
  // empty inner dim gives zeros
  require_close(mg::matmul(mg::zeros({2, 0}, mg::kFloat64), mg::zeros({0, 3}, mg::kFloat64)), mg::zeros({2, 3}, mg::kFloat64));
  // linear
  Tensor w = mg::randn({3, 7}, mg::kFloat64, &g), bias = mg::randn({3}, mg::kFloat64, &g);
  require_close(mg::linear(a, w, bias), naive_mm(a, w.t()) + bias, 1e-12);
}

TEST_CASE("matmul gradients", "[matmul]") {
  mg::Generator g(10);
  auto r = [&](const mg::Shape& s) { return mg::randn(s, mg::kFloat64, &g); };
  gradcheck("2d", [](const TensorList& x) { return mg::matmul(x[0], x[1]); }, {r({3, 4}), r({4, 2})});
  gradcheck("2d transposed", [](const TensorList& x) { return mg::matmul(x[0].t(), x[1].t()); }, {r({4, 3}), r({2, 4})});
  gradcheck("batched", [](const TensorList& x) { return mg::matmul(x[0], x[1]); }, {r({2, 3, 4}), r({2, 4, 2})});
  gradcheck("broadcast batch", [](const TensorList& x) { return mg::matmul(x[0], x[1]); }, {r({2, 1, 3, 4}), r({3, 4, 2})});
  gradcheck("batched @ 2d", [](const TensorList& x) { return mg::matmul(x[0], x[1]); }, {r({2, 3, 4}), r({4, 2})});
  gradcheck("2d @ batched", [](const TensorList& x) { return mg::matmul(x[0], x[1]); }, {r({3, 4}), r({2, 4, 2})});
  gradcheck("matrix-vector", [](const TensorList& x) { return mg::matmul(x[0], x[1]); }, {r({3, 4}), r({4})});
  gradcheck("vector-matrix", [](const TensorList& x) { return mg::matmul(x[0], x[1]); }, {r({4}), r({4, 2})});
  gradcheck("dot", [](const TensorList& x) { return mg::matmul(x[0], x[1]); }, {r({4}), r({4})});
  gradcheck("sliced operand", [](const TensorList& x) { return mg::matmul(x[0].slice(1, 0, 4, 2), x[1]); }, {r({3, 4}), r({2, 2})});
  gradcheck("expanded operand", [](const TensorList& x) { return mg::matmul(x[0].expand({3, 4}), x[1]); }, {r({1, 4}), r({4, 2})});
  gradcheck("linear", [](const TensorList& x) { return mg::linear(x[0], x[1], x[2]); }, {r({2, 5, 3}), r({4, 3}), r({4})});
}

TEST_CASE("matmul bad input", "[matmul]") {
  CHECK_THROWS_WITH(mg::matmul(mg::zeros({2, 3}), mg::zeros({4, 5})),
                    Catch::Contains("matmul") && Catch::Contains("[2, 3]") && Catch::Contains("[4, 5]"));
  CHECK_THROWS_WITH(mg::matmul(mg::zeros({2, 3}), mg::zeros({3, 2}, mg::kFloat64)), Catch::Contains("dtype"));
  CHECK_THROWS_WITH(mg::matmul(mg::zeros({2, 2, 3}), mg::zeros({3, 3, 2})), Catch::Contains("broadcast"));
  CHECK_THROWS_WITH(mg::matmul(mg::zeros({2, 2}, mg::kInt32), mg::zeros({2, 2}, mg::kInt32)), Catch::Contains("floating"));
}
