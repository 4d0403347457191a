// The float32 fast paths of the CNN and attention steps against float64 loops: the direct and
// Winograd 'same' convolution kernels (odd sizes that leave partial register blocks and partial
// vectors), 2x2 max pooling, fused batch_norm, column sums and unbind, and the repeatability of
// them for a fixed thread count.
#include <algorithm>
#include <cmath>
#include <limits>

#include "gradcheck.hpp"

using mg::Tensor;
using mgtest::require_close;

namespace {

struct Conv64 {
  std::vector<double> y, dx, dw;
};

Conv64 naive_same_conv(const Tensor& x, const Tensor& w, const Tensor& dy) {
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t O = w.size(0), kh = w.size(2), kw = w.size(3), ph = (kh - 1) / 2, pw = (kw - 1) / 2;
  const auto xv = x.to_vector<double>(), wv = w.to_vector<double>(), gv = dy.to_vector<double>();
  Conv64 r{std::vector<double>(N * O * H * W), std::vector<double>(xv.size()), std::vector<double>(wv.size())};
  for (int64_t n = 0; n < N; ++n)
    for (int64_t o = 0; o < O; ++o)
      for (int64_t oh = 0; oh < H; ++oh)
        for (int64_t ow = 0; ow < W; ++ow) {
          const int64_t yi = ((n * O + o) * H + oh) * W + ow;
          double acc = 0;
          for (int64_t c = 0; c < C; ++c)
            for (int64_t i = 0; i < kh; ++i)
              for (int64_t j = 0; j < kw; ++j) {
                const int64_t ih = oh + i - ph, iw = ow + j - pw;
                if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                const int64_t xi = ((n * C + c) * H + ih) * W + iw, wi = ((o * C + c) * kh + i) * kw + j;
                acc += xv[xi] * wv[wi];
                r.dx[xi] += gv[yi] * wv[wi];
                r.dw[wi] += gv[yi] * xv[xi];
              }
          r.y[yi] = acc;
        }
  return r;
}

Tensor f64(const std::vector<double>& v, const mg::Shape& s) { return mg::from_vector(v, s, mg::kFloat64); }

// float32 against float64 with an absolute tolerance scaled by the tensor's largest value: a
// weight gradient sums thousands of products, and a small entry left by cancellation carries the
// rounding of the large partial sums.
void require_close_scaled(const Tensor& actual, const Tensor& expected, double rel) {
  double scale = 0;
  for (double v : expected.to_vector<double>()) scale = std::max(scale, std::abs(v));
  require_close(actual, expected, rel * scale, rel);
}

}  // namespace

TEST_CASE("float32 'same' convolutions match float64 loops", "[conv][fast]") {
  mg::Generator g(31);
  struct Config {
    int64_t N, C, H, W, O, k;
  };
  // partial channel blocks (11 = 8 + 2 + 1), partial vectors (7 x 9), one row, 5x5 taps (25 =
  // 9 + 9 + 7), the CNN's plane sizes
  // ... and the Winograd path (3x3, even planes up to 32 wide, >= 16 channels): partial GEMM blocks
  // (O = 17, 24), chunks of several samples, a 2-row plane, a 32-wide one
  const Config configs[] = {{3, 5, 7, 9, 11, 3},   {2, 3, 1, 13, 4, 3},  {2, 4, 6, 6, 3, 5},
                            {4, 8, 32, 32, 8, 3},  {5, 16, 8, 8, 16, 3}, {1, 2, 16, 16, 1, 3},
                            {3, 16, 32, 32, 24, 3}, {7, 20, 6, 10, 17, 3}, {2, 32, 2, 32, 16, 3}};
  const int saved_threads = mg::get_num_threads();
  for (int threads : {1, 2, 3}) {
    mg::set_num_threads(threads);
    for (const Config& c : configs) {
      INFO("threads " << threads << ", N " << c.N << ", C " << c.C << ", H " << c.H << ", W " << c.W
                      << ", O " << c.O << ", k " << c.k);
      const Tensor x64 = mg::randn({c.N, c.C, c.H, c.W}, mg::kFloat64, &g);
      const Tensor w64 = mg::randn({c.O, c.C, c.k, c.k}, mg::kFloat64, &g);
      const Tensor dy64 = mg::randn({c.N, c.O, c.H, c.W}, mg::kFloat64, &g);
      const Conv64 ref = naive_same_conv(x64, w64, dy64);
      auto run = [&] {
        Tensor x = x64.to(mg::kFloat32).requires_grad_(), w = w64.to(mg::kFloat32).requires_grad_();
        Tensor y = mg::conv2d(x, w, {}, 1, c.k / 2);
        y.backward(dy64.to(mg::kFloat32));
        return std::vector<Tensor>{y.detach(), x.grad(), w.grad()};
      };
      const auto a = run();
      require_close_scaled(a[0], f64(ref.y, dy64.sizes()), 1e-5);
      require_close_scaled(a[1], f64(ref.dx, x64.sizes()), 1e-5);
      require_close_scaled(a[2], f64(ref.dw, w64.sizes()), 1e-5);
      const auto b = run();
      for (int i = 0; i < 3; ++i) CHECK(a[i].to_vector<float>() == b[i].to_vector<float>());
    }
  }
  mg::set_num_threads(saved_threads);
}

TEST_CASE("float32 2x2 max_pool2d matches the general scan", "[conv][fast]") {
  mg::Generator g(32);
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  // widths that fill, half fill and overflow a 16-lane vector; odd sizes leave a row and column out
  for (const mg::Shape& shape : {mg::Shape{2, 3, 32, 32}, mg::Shape{1, 2, 16, 16}, mg::Shape{1, 1, 7, 41}}) {
    Tensor x = mg::randn(shape, mg::kFloat32, &g);
    // ties (rounded values), NaNs, -inf windows
    std::vector<float> v = x.to_vector<float>();
    for (size_t i = 0; i < v.size(); ++i) {
      v[i] = std::round(v[i]);
      if (i % 37 == 5) v[i] = nan;
      if (i % 53 == 7) v[i] = -inf;
    }
    Tensor x32 = mg::from_vector(v, shape, mg::kFloat32).requires_grad_();
    Tensor x64 = x32.detach().to(mg::kFloat64).requires_grad_();
    Tensor y32 = mg::max_pool2d(x32, 2), y64 = mg::max_pool2d(x64, 2);
    const auto a = y32.to_vector<double>(), b = y64.to_vector<double>();
    REQUIRE(a.size() == b.size());
    for (size_t i = 0; i < a.size(); ++i) CHECK((a[i] == b[i] || (std::isnan(a[i]) && std::isnan(b[i]))));
    // the same winners receive the gradient
    Tensor dy = mg::randn(y64.sizes(), mg::kFloat64, &g);
    y32.backward(dy.to(mg::kFloat32));
    y64.backward(dy);
    require_close(x32.grad(), x64.grad(), 1e-6, 1e-6);
  }
}

TEST_CASE("float32 batch_norm kernels match float64", "[nn][norm][fast]") {
  mg::Generator g(33);
  const int saved_threads = mg::get_num_threads();
  for (const mg::Shape& shape : {mg::Shape{16, 5, 9, 7}, mg::Shape{64, 6}, mg::Shape{3, 4, 33}}) {
    const int64_t C = shape[1];
    // an offset mean tests the variance's numerics, not just its formula
    const Tensor x64 = mg::randn(shape, mg::kFloat64, &g) * 3.0 + 100.0;
    const Tensor w64 = mg::randn({C}, mg::kFloat64, &g), b64 = mg::randn({C}, mg::kFloat64, &g);
    const Tensor dy64 = mg::randn(shape, mg::kFloat64, &g);
    auto run = [&](mg::ScalarType dt, bool train) {
      Tensor x = x64.to(dt).clone().requires_grad_(), w = w64.to(dt).clone().requires_grad_();
      Tensor b = b64.to(dt).clone().requires_grad_();
      Tensor rm = mg::zeros({C}, dt), rv = mg::ones({C}, dt) * 2.0;
      Tensor y = mg::batch_norm(x, rm, rv, w, b, train, train);
      y.backward(dy64.to(dt));
      return std::vector<Tensor>{y.detach(), x.grad(), w.grad(), b.grad(), rm, rv};
    };
    for (bool train : {true, false}) {
      INFO("shape " << mg::shape_str(shape) << ", train " << train);
      mg::set_num_threads(1);
      const auto ref = run(mg::kFloat64, train);
      for (int threads : {1, 3}) {
        mg::set_num_threads(threads);
        const auto a = run(mg::kFloat32, train), b = run(mg::kFloat32, train);
        const double tol[] = {1e-4, 2e-3, 2e-3, 1e-4, 1e-4, 1e-4};
        for (int i = 0; i < 6; ++i) {
          require_close(a[i], ref[i], tol[i], 1e-4);
          CHECK(a[i].to_vector<float>() == b[i].to_vector<float>());
        }
      }
    }
  }
  mg::set_num_threads(saved_threads);
}

TEST_CASE("sums over leading dims (column sums) and unbind", "[reduce][fast]") {
  mg::Generator g(34);
  const int saved_threads = mg::get_num_threads();
  for (int threads : {1, 3}) {
    mg::set_num_threads(threads);
    const Tensor x = mg::randn({5, 7, 9}, mg::kFloat64, &g);
    // against the same sum over a copy whose reduced dims are last (the row path)
    const Tensor rows = x.permute({2, 0, 1}).contiguous();
    require_close(x.sum({0, 1}), rows.sum({1, 2}), 1e-12, 1e-12);
    require_close(x.sum({0}), x.permute({1, 2, 0}).contiguous().sum({2}), 1e-12, 1e-12);
    const Tensor xi = mg::randint(-100, 100, {6, 11});
    CHECK(xi.sum({0}).to_vector<int32_t>() == xi.t().contiguous().sum({1}).to_vector<int32_t>());
    // the gradient of a sum over leading dims (a bias gradient) is unchanged
    mgtest::gradcheck("sum over leading dims", [](const mg::TensorList& t) { return t[0].sum({0, 1}); },
                      {mg::randn({3, 4, 5}, mg::kFloat64, &g)});
  }
  mg::set_num_threads(saved_threads);
  const auto parts = mg::unbind(mg::arange(6.0).reshape({2, 3}), 1);
  REQUIRE(parts.size() == 3);
  CHECK(parts[2].to_vector<double>() == std::vector<double>{2.0, 5.0});
  mgtest::gradcheck("unbind, slices used unevenly", [](const mg::TensorList& t) {
    const auto p = mg::unbind(t[0], 1);
    return p[0] * 2.0 + p[2] * p[0];
  }, {mg::randn({4, 3, 2}, mg::kFloat64, &g)});
}
