// conv2d and the 2-d pools: values and gradients against PyTorch 1.13 (tests/reference/
// make_conv_reference.py), finite-difference gradients for every option on contiguous and strided
// inputs, a naive loop reference for a batch large enough to run multi-threaded, errors, and the
// nn modules.
#include <cmath>
#include <limits>

#include "gradcheck.hpp"
#include "nn/containers.hpp"
#include "nn/conv.hpp"
#include "nn/layers.hpp"
#include "nn/normalization.hpp"
#include "reference/conv_reference.hpp"

using mg::Tensor;
using mg::TensorList;
using mgtest::gradcheck;
using mgtest::require_close;
namespace nn = mg::nn;

namespace {

Tensor f64(const std::vector<double>& v, const mg::Shape& s) { return mg::from_vector(v, s, mg::kFloat64); }
Tensor leaf(const std::vector<double>& v, const mg::Shape& s) { return f64(v, s).requires_grad_(); }

// Direct loops over the definition of torch's conv2d, forward and backward.
struct NaiveConv {
  Tensor y, dx, dw, db;
};
NaiveConv naive_conv2d(const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& dy,
                       mg::Size2 s, mg::Size2 p, mg::Size2 d, int64_t groups) {
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t O = w.size(0), Cg = w.size(1), kh = w.size(2), kw = w.size(3);
  const int64_t OH = dy.size(2), OW = dy.size(3), Og = O / groups;
  const auto xv = x.to_vector<double>(), wv = w.to_vector<double>(), bv = b.to_vector<double>();
  const auto gv = dy.to_vector<double>();
  std::vector<double> y(N * O * OH * OW), dx(xv.size(), 0.0), dw(wv.size(), 0.0), db(O, 0.0);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t o = 0; o < O; ++o)
      for (int64_t oh = 0; oh < OH; ++oh)
        for (int64_t ow = 0; ow < OW; ++ow) {
          const int64_t yi = ((n * O + o) * OH + oh) * OW + ow;
          double acc = bv[o];
          for (int64_t c = 0; c < Cg; ++c)
            for (int64_t i = 0; i < kh; ++i)
              for (int64_t j = 0; j < kw; ++j) {
                const int64_t ih = oh * s.h - p.h + i * d.h, iw = ow * s.w - p.w + j * d.w;
                if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                const int64_t xi = ((n * C + (o / Og) * Cg + c) * H + ih) * W + iw;
                const int64_t wi = ((o * Cg + c) * kh + i) * kw + j;
                acc += xv[xi] * wv[wi];
                dx[xi] += gv[yi] * wv[wi];
                dw[wi] += gv[yi] * xv[xi];
              }
          y[yi] = acc;
          db[o] += gv[yi];
        }
  return {f64(y, dy.sizes()), f64(dx, x.sizes()), f64(dw, w.sizes()), f64(db, {O})};
}

void require_exact(const Tensor& actual, const std::vector<double>& expected, const mg::Shape& shape) {
  require_close(actual, f64(expected, shape), 1e-10, 0.0);
}

}  // namespace

TEST_CASE("conv2d matches PyTorch", "[conv]") {
  using namespace convref;
  SECTION("grouped, stride 2, padding 1") {
    Tensor x = leaf(grouped_x, grouped_x_shape), w = leaf(grouped_w, grouped_w_shape);
    Tensor b = leaf(grouped_b, grouped_b_shape);
    Tensor y = mg::conv2d(x, w, b, 2, 1, 1, 2);
    require_exact(y, grouped_y, grouped_y_shape);
    y.backward(f64(grouped_dy, grouped_dy_shape));
    require_exact(x.grad(), grouped_dx, grouped_dx_shape);
    require_exact(w.grad(), grouped_dw, grouped_dw_shape);
    require_exact(b.grad(), grouped_db, grouped_db_shape);
  }
  SECTION("depthwise, channel multiplier 2, dilation 2") {
    Tensor x = leaf(depthwise_x, depthwise_x_shape), w = leaf(depthwise_w, depthwise_w_shape);
    Tensor b = leaf(depthwise_b, depthwise_b_shape);
    Tensor y = mg::conv2d(x, w, b, 1, 2, 2, 2);
    require_exact(y, depthwise_y, depthwise_y_shape);
    y.backward(f64(depthwise_dy, depthwise_dy_shape));
    require_exact(x.grad(), depthwise_dx, depthwise_dx_shape);
    require_exact(w.grad(), depthwise_dw, depthwise_dw_shape);
    require_exact(b.grad(), depthwise_db, depthwise_db_shape);
  }
}

TEST_CASE("pools match PyTorch", "[conv]") {
  using namespace convref;
  auto check = [](const std::function<Tensor(const Tensor&)>& pool, const std::vector<double>& x0,
                  const mg::Shape& xs, const std::vector<double>& dy, const mg::Shape& dys,
                  const std::vector<double>& y, const mg::Shape& ys, const std::vector<double>& dx) {
    Tensor x = leaf(x0, xs);
    Tensor out = pool(x);
    require_exact(out, y, ys);
    out.backward(f64(dy, dys));
    require_exact(x.grad(), dx, xs);
  };
  SECTION("max_pool2d with ties") {
    check([](const Tensor& x) { return mg::max_pool2d(x, 3, 2, 1); }, maxpool_x, maxpool_x_shape,
          maxpool_dy, maxpool_dy_shape, maxpool_y, maxpool_y_shape, maxpool_dx);
  }
  SECTION("max_pool2d dilated, ceil_mode") {
    check([](const Tensor& x) { return mg::max_pool2d(x, {2, 3}, mg::Size2{1, 2}, {1, 1}, {2, 1}, true); },
          maxpool_dilated_x, maxpool_dilated_x_shape, maxpool_dilated_dy, maxpool_dilated_dy_shape,
          maxpool_dilated_y, maxpool_dilated_y_shape, maxpool_dilated_dx);
  }
  SECTION("avg_pool2d counting padding") {
    check([](const Tensor& x) { return mg::avg_pool2d(x, 3, 2, 1); }, avgpool_x, avgpool_x_shape,
          avgpool_dy, avgpool_dy_shape, avgpool_y, avgpool_y_shape, avgpool_dx);
  }
  SECTION("avg_pool2d excluding padding, ceil_mode") {
    check([](const Tensor& x) { return mg::avg_pool2d(x, {3, 2}, 2, 1, true, false); }, avgpool_exclude_x,
          avgpool_exclude_x_shape, avgpool_exclude_dy, avgpool_exclude_dy_shape, avgpool_exclude_y,
          avgpool_exclude_y_shape, avgpool_exclude_dx);
  }
  SECTION("avg_pool2d counting padding, ceil_mode") {
    check([](const Tensor& x) { return mg::avg_pool2d(x, 3, 2, 1, true); }, avgpool_ceil_x,
          avgpool_ceil_x_shape, avgpool_ceil_dy, avgpool_ceil_dy_shape, avgpool_ceil_y,
          avgpool_ceil_y_shape, avgpool_ceil_dx);
  }
  SECTION("adaptive_avg_pool2d, overlapping windows") {
    check([](const Tensor& x) { return mg::adaptive_avg_pool2d(x, {3, 2}); }, adaptive_x, adaptive_x_shape,
          adaptive_dy, adaptive_dy_shape, adaptive_y, adaptive_y_shape, adaptive_dx);
  }
  SECTION("adaptive_avg_pool2d, output larger than input") {
    check([](const Tensor& x) { return mg::adaptive_avg_pool2d(x, {4, 7}); }, adaptive_up_x,
          adaptive_up_x_shape, adaptive_up_dy, adaptive_up_dy_shape, adaptive_up_y, adaptive_up_y_shape,
          adaptive_up_dx);
  }
}

TEST_CASE("conv2d gradients", "[conv]") {
  mg::Generator g(21);
  auto r = [&](const mg::Shape& s) { return mg::randn(s, mg::kFloat64, &g); };
  using L = const TensorList&;
  gradcheck("plain", [](L t) { return mg::conv2d(t[0], t[1], t[2]); }, {r({2, 3, 5, 5}), r({4, 3, 3, 3}), r({4})});
  gradcheck("stride 2, padding 1", [](L t) { return mg::conv2d(t[0], t[1], t[2], 2, 1); },
            {r({2, 3, 6, 5}), r({4, 3, 3, 3}), r({4})});
  gradcheck("rectangular kernel, stride, padding, dilation",
            [](L t) { return mg::conv2d(t[0], t[1], t[2], {1, 2}, {2, 1}, {2, 1}); },
            {r({1, 2, 5, 6}), r({3, 2, 2, 3}), r({3})});
  gradcheck("groups 2", [](L t) { return mg::conv2d(t[0], t[1], t[2], 1, 1, 1, 2); },
            {r({2, 4, 4, 4}), r({6, 2, 3, 3}), r({6})});
  gradcheck("depthwise", [](L t) { return mg::conv2d(t[0], t[1], t[2], 2, 1, 1, 3); },
            {r({2, 3, 5, 5}), r({3, 1, 3, 3}), r({3})});
  gradcheck("no bias", [](L t) { return mg::conv2d(t[0], t[1], {}, 1, 1); }, {r({2, 3, 4, 4}), r({2, 3, 3, 3})});
  gradcheck("pointwise 1x1", [](L t) { return mg::conv2d(t[0], t[1], t[2]); }, {r({2, 4, 3, 3}), r({5, 4, 1, 1}), r({5})});
  gradcheck("1x1 with stride", [](L t) { return mg::conv2d(t[0], t[1], t[2], 2); }, {r({1, 4, 5, 5}), r({3, 4, 1, 1}), r({3})});
  // Strided inputs: an NHWC leaf seen as NCHW, a transposed image, a transposed weight.
  gradcheck("channels-last input", [](L t) { return mg::conv2d(t[0].permute({0, 3, 1, 2}), t[1], t[2], 1, 1); },
            {r({2, 5, 4, 3}), r({4, 3, 3, 3}), r({4})});
  gradcheck("transposed input and weight",
            [](L t) { return mg::conv2d(t[0].transpose(2, 3), t[1].transpose(2, 3), t[2], 2, 1, 1, 2); },
            {r({1, 4, 6, 5}), r({2, 2, 3, 2}), r({2})});
  gradcheck("unbatched input", [](L t) { return mg::conv2d(t[0], t[1], t[2], 1, 1); }, {r({3, 4, 4}), r({2, 3, 3, 3}), r({2})});
}

TEST_CASE("conv2d on a multi-threaded batch matches direct loops", "[conv]") {
  mg::Generator g(22);
  struct Config {
    int64_t N, C, H, W, O, k, groups;
    mg::Size2 stride, padding, dilation;
  };
  const Config configs[] = {{8, 6, 12, 11, 8, 3, 1, 1, 1, 1}, {5, 6, 10, 10, 4, 3, 2, 2, 1, 1},
                            {8, 4, 9, 9, 8, 3, 4, {1, 2}, 2, 2}, {1, 6, 12, 12, 8, 3, 1, 1, 1, 1},
                            {6, 8, 7, 7, 4, 1, 1, 1, 0, 1}};
  const int saved_threads = mg::get_num_threads();
  for (int threads : {1, 3}) {
    mg::set_num_threads(threads);
    for (const Config& c : configs) {
      INFO("threads " << threads << ", N " << c.N << ", C " << c.C << ", groups " << c.groups);
      Tensor x = mg::randn({c.N, c.C, c.H, c.W}, mg::kFloat64, &g).requires_grad_();
      Tensor w = mg::randn({c.O, c.C / c.groups, c.k, c.k}, mg::kFloat64, &g).requires_grad_();
      Tensor b = mg::randn({c.O}, mg::kFloat64, &g).requires_grad_();
      Tensor y = mg::conv2d(x, w, b, c.stride, c.padding, c.dilation, c.groups);
      Tensor dy = mg::randn(y.sizes(), mg::kFloat64, &g);
      y.backward(dy);
      const NaiveConv ref = naive_conv2d(x, w, b, dy, c.stride, c.padding, c.dilation, c.groups);
      require_close(y, ref.y, 1e-10);
      require_close(x.grad(), ref.dx, 1e-10);
      require_close(w.grad(), ref.dw, 1e-10);
      require_close(b.grad(), ref.db, 1e-10);
      // float32 runs the same kernels with float GEMMs
      Tensor y32 = mg::conv2d(x.detach().to(mg::kFloat32), w.detach().to(mg::kFloat32),
                              b.detach().to(mg::kFloat32), c.stride, c.padding, c.dilation, c.groups);
      require_close(y32, ref.y, 1e-4, 1e-4);
    }
  }
  mg::set_num_threads(saved_threads);
}

TEST_CASE("pool gradients", "[conv]") {
  mg::Generator g(23);
  auto r = [&](const mg::Shape& s) { return mg::randn(s, mg::kFloat64, &g); };
  using L = const TensorList&;
  gradcheck("max_pool2d 2x2", [](L t) { return mg::max_pool2d(t[0], 2); }, {r({2, 3, 4, 6})});
  gradcheck("max_pool2d overlapping, padded", [](L t) { return mg::max_pool2d(t[0], 3, 2, 1); }, {r({1, 2, 7, 6})});
  gradcheck("max_pool2d dilated, ceil_mode",
            [](L t) { return mg::max_pool2d(t[0], {3, 2}, mg::Size2{2, 1}, {1, 1}, {2, 1}, true); }, {r({1, 2, 8, 5})});
  gradcheck("max_pool2d strided input", [](L t) { return mg::max_pool2d(t[0].permute({0, 3, 1, 2}), 2); },
            {r({2, 4, 6, 3})});
  gradcheck("max_pool2d unbatched", [](L t) { return mg::max_pool2d(t[0], 2, 1); }, {r({2, 4, 4})});
  gradcheck("avg_pool2d", [](L t) { return mg::avg_pool2d(t[0], 2); }, {r({2, 3, 4, 6})});
  gradcheck("avg_pool2d padded", [](L t) { return mg::avg_pool2d(t[0], 3, 2, 1); }, {r({1, 2, 7, 6})});
  gradcheck("avg_pool2d padding excluded, ceil_mode",
            [](L t) { return mg::avg_pool2d(t[0], {3, 2}, mg::Size2{2, 1}, 1, true, false); }, {r({1, 2, 6, 5})});
  gradcheck("avg_pool2d strided input", [](L t) { return mg::avg_pool2d(t[0].transpose(2, 3), 3, 1, 1); },
            {r({1, 2, 5, 4})});
  gradcheck("adaptive_avg_pool2d divisible", [](L t) { return mg::adaptive_avg_pool2d(t[0], 2); }, {r({2, 3, 4, 6})});
  gradcheck("adaptive_avg_pool2d non-divisible", [](L t) { return mg::adaptive_avg_pool2d(t[0], {3, 4}); },
            {r({1, 2, 7, 5})});
  gradcheck("adaptive_avg_pool2d global", [](L t) { return mg::adaptive_avg_pool2d(t[0], 1); }, {r({2, 3, 5, 4})});
  gradcheck("adaptive_avg_pool2d strided input",
            [](L t) { return mg::adaptive_avg_pool2d(t[0].permute({0, 3, 1, 2}), {2, 3}); }, {r({1, 5, 7, 2})});
}

TEST_CASE("max_pool2d ties and NaN", "[conv]") {
  // Every window of a constant image ties: the gradient goes to each window's first element.
  Tensor x = mg::ones({1, 1, 3, 4}, mg::kFloat64).requires_grad_();
  mg::max_pool2d(x, 2, 1).sum().backward();
  require_close(x.grad(), f64({1, 1, 1, 0, 1, 1, 1, 0, 0, 0, 0, 0}, {1, 1, 3, 4}), 0.0);
  // A NaN wins its window, as in torch.
  const double nan = std::numeric_limits<double>::quiet_NaN();
  Tensor y = mg::max_pool2d(f64({1, nan, 3, 4}, {1, 1, 2, 2}), 2);
  CHECK(std::isnan(y.item()));
}

TEST_CASE("conv and pool bad input", "[conv]") {
  using Catch::Contains;
  const Tensor x = mg::zeros({1, 3, 5, 5});
  CHECK_THROWS_WITH(mg::conv2d(x, mg::zeros({4, 2, 3, 3})),
                    Contains("conv2d") && Contains("[1, 3, 5, 5]") && Contains("[4, 2, 3, 3]") && Contains("channels"));
  CHECK_THROWS_WITH(mg::conv2d(mg::zeros({3, 5}), mg::zeros({4, 3, 3, 3})),
                    Contains("conv2d") && Contains("[3, 5]"));
  CHECK_THROWS_WITH(mg::conv2d(x, mg::zeros({4, 3, 3})), Contains("conv2d") && Contains("[4, 3, 3]"));
  CHECK_THROWS_WITH(mg::conv2d(mg::zeros({1, 3, 2, 2}), mg::zeros({4, 3, 3, 3})),
                    Contains("conv2d") && Contains("larger than the padded input") && Contains("[1, 3, 2, 2]") &&
                        Contains("[4, 3, 3, 3]"));
  CHECK_NOTHROW(mg::conv2d(mg::zeros({1, 3, 2, 2}), mg::zeros({4, 3, 3, 3}), {}, 1, 1));
  CHECK_THROWS_WITH(mg::conv2d(x, mg::zeros({4, 3, 3, 3}), {}, 1, 0, 3),
                    Contains("conv2d") && Contains("larger than the padded input"));
  CHECK_THROWS_WITH(mg::conv2d(x, mg::zeros({3, 1, 3, 3}), {}, 1, 0, 1, 2),
                    Contains("conv2d") && Contains("not divisible by groups=2"));
  CHECK_THROWS_WITH(mg::conv2d(x, mg::zeros({4, 3, 3, 3}), mg::zeros({3})),
                    Contains("conv2d") && Contains("bias of shape [3]"));
  CHECK_THROWS_WITH(mg::conv2d(x, mg::zeros({4, 3, 3, 3}, mg::kFloat64)), Contains("conv2d") && Contains("dtype"));
  CHECK_THROWS_WITH(mg::conv2d(x, mg::zeros({4, 3, 3, 3}), {}, 0), Contains("conv2d") && Contains("stride"));

  CHECK_THROWS_WITH(mg::max_pool2d(mg::zeros({5, 5}), 2), Contains("max_pool2d") && Contains("[5, 5]"));
  CHECK_THROWS_WITH(mg::max_pool2d(mg::zeros({1, 1, 2, 2}), 3),
                    Contains("max_pool2d") && Contains("larger than the padded input") && Contains("[1, 1, 2, 2]"));
  CHECK_THROWS_WITH(mg::max_pool2d(x, 2, 2, 2), Contains("max_pool2d") && Contains("at most half"));
  CHECK_THROWS_WITH(mg::avg_pool2d(mg::zeros({2, 1, 3, 3, 3}), 2), Contains("avg_pool2d") && Contains("[2, 1, 3, 3, 3]"));
  CHECK_THROWS_WITH(mg::avg_pool2d(mg::zeros({1, 1, 2, 2}), 3, 1), Contains("avg_pool2d") && Contains("larger"));
  CHECK_THROWS_WITH(mg::adaptive_avg_pool2d(x, {0, 2}), Contains("adaptive_avg_pool2d") && Contains("(0, 2)"));
  CHECK_THROWS_WITH(mg::adaptive_avg_pool2d(mg::zeros({4}), 2), Contains("adaptive_avg_pool2d") && Contains("[4]"));
}

TEST_CASE("nn Conv2d and pooling modules", "[conv]") {
  mg::manual_seed(5);
  auto conv = std::make_shared<nn::Conv2d>(4, 6, 3, 1, 1, 1, 2);
  CHECK(conv->weight.sizes() == mg::Shape{6, 2, 3, 3});
  CHECK(conv->bias.sizes() == mg::Shape{6});
  // torch's default init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with fan_in = 2 * 3 * 3 for both
  const double bound = 1.0 / std::sqrt(18.0);
  CHECK(conv->weight.abs().max().item() <= bound);
  CHECK(conv->weight.abs().max().item() > 0.8 * bound);
  CHECK(conv->bias.abs().max().item() <= bound);
  CHECK(conv->to_string() == "Conv2d(4, 6, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1), groups=2)");
  CHECK(nn::Conv2d(3, 8, {1, 3}, 2, 0, 1, 1, false).to_string() ==
        "Conv2d(3, 8, kernel_size=(1, 3), stride=(2, 2), bias=False)");
  CHECK(nn::MaxPool2d(2).to_string() == "MaxPool2d(kernel_size=2, stride=2, padding=0, dilation=1, ceil_mode=False)");
  CHECK(nn::AvgPool2d(3, 2, 1).to_string() == "AvgPool2d(kernel_size=3, stride=2, padding=1)");
  CHECK(nn::AdaptiveAvgPool2d({1, 2}).to_string() == "AdaptiveAvgPool2d(output_size=(1, 2))");

  Tensor x = mg::randn({2, 4, 8, 8});
  require_close((*conv)(x), mg::conv2d(x, conv->weight, conv->bias, 1, 1, 1, 2), 0.0);
  CHECK((*conv)(x[0]).sizes() == mg::Shape{6, 8, 8});  // unbatched
  CHECK_THROWS_WITH((*conv)(mg::zeros({1, 3, 8, 8})), Catch::Contains("Conv2d") && Catch::Contains("[1, 3, 8, 8]"));
  CHECK_THROWS_WITH(nn::Conv2d(4, 6, 3, 1, 0, 1, 4), Catch::Contains("Conv2d") && Catch::Contains("groups=4"));
  require_close(nn::MaxPool2d(3, 2, 1)(x), mg::max_pool2d(x, 3, 2, 1), 0.0);
  require_close(nn::AvgPool2d(2)(x), mg::avg_pool2d(x, 2), 0.0);
  require_close(nn::AdaptiveAvgPool2d(1)(x), x.mean({2, 3}, true), 1e-6);

  // A small CNN in the shape of the benchmark trains end to end.
  auto net = std::make_shared<nn::Sequential>(std::initializer_list<nn::ModulePtr>{
      std::make_shared<nn::Conv2d>(3, 8, 3, 1, 1, 1, 1, false), std::make_shared<nn::BatchNorm2d>(8),
      std::make_shared<nn::ReLU>(), std::make_shared<nn::MaxPool2d>(2),
      std::make_shared<nn::Conv2d>(8, 8, 3, 1, 1), std::make_shared<nn::AdaptiveAvgPool2d>(1),
      std::make_shared<nn::Flatten>(), std::make_shared<nn::Linear>(8, 5)});
  Tensor out = (*net)(mg::randn({4, 3, 8, 8}));
  CHECK(out.sizes() == mg::Shape{4, 5});
  out.pow(2.0).mean().backward();
  for (const auto& [name, p] : net->named_parameters()) {
    INFO(name);
    REQUIRE(p.grad().defined());
    CHECK(p.grad().abs().sum().item() > 0);
  }
}
