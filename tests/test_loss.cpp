// softmax, log_softmax and the losses: PyTorch reference values and gradients, gradcheck,
// stability for large logits, ignore_index and label smoothing, and error messages.
#include <cmath>

#include "gradcheck.hpp"
#include "reference/loss_reference.hpp"

using mg::Tensor;
using mg::TensorList;
using mgtest::gradcheck;
using mgtest::require_close;

namespace {

Tensor f64(const std::vector<double>& v, const mg::Shape& s) { return mg::from_vector(v, s, mg::kFloat64); }
Tensor f32(const std::vector<double>& v, const mg::Shape& s) { return mg::from_vector(v, s, mg::kFloat32); }
Tensor i32(const std::vector<int32_t>& v, const mg::Shape& s) { return mg::from_vector(v, s, mg::kInt32); }
Tensor randn(const mg::Shape& s, uint64_t seed, double scale = 1.0) {
  mg::Generator g(seed);
  return mg::randn(s, mg::kFloat64, &g) * scale;
}

// Value of f(inputs) and the gradients of sum(f * dy) (dy = 1 for a scalar) w.r.t. each input.
struct Run {
  Tensor y;
  TensorList grads;
};
Run run(const std::function<Tensor(const TensorList&)>& f, TensorList inputs,
        const std::vector<double>& dy = {}) {
  for (Tensor& t : inputs) t.requires_grad_(true);
  Tensor y = f(inputs);
  if (dy.empty()) y.backward();
  else y.backward(mg::from_vector(dy, y.sizes(), y.dtype()));
  Run r{y, {}};
  for (const Tensor& t : inputs) r.grads.push_back(t.grad());
  return r;
}

constexpr double kTol = 1e-10;  // float64 against PyTorch's float64

void close64(const Tensor& actual, const std::vector<double>& expected, const mg::Shape& shape) {
  REQUIRE(actual.dtype() == mg::kFloat64);
  require_close(actual, f64(expected, shape), kTol, kTol);
}
void close32(const Tensor& actual, const std::vector<double>& expected, const mg::Shape& shape) {
  REQUIRE(actual.dtype() == mg::kFloat32);
  require_close(actual, f64(expected, shape).to(mg::kFloat32), 1e-6, 1e-5);
}

const mg::Shape kSm{2, 3, 2}, kCe{3, 4}, kCe4{2, 3, 2, 2};

}  // namespace

// ---------------------------------------------------------------- softmax / log_softmax

TEST_CASE("softmax and log_softmax match PyTorch (float64 and float32)", "[loss]") {
  using namespace lossref;
  auto sm = [](const TensorList& in) { return mg::softmax(in[0], 1); };
  auto lsm = [](const TensorList& in) { return in[0].log_softmax(-1); };
  Run r = run(sm, {f64(sm_x, kSm)}, sm_dy);
  close64(r.y, softmax_dim1_y, kSm);
  close64(r.grads[0], softmax_dim1_grad, kSm);
  r = run(lsm, {f64(sm_x, kSm)}, sm_dy);
  close64(r.y, log_softmax_last_y, kSm);
  close64(r.grads[0], log_softmax_last_grad, kSm);

  r = run(sm, {f32(sm_x, kSm)}, sm_dy);
  close32(r.y, softmax_dim1_y, kSm);
  close32(r.grads[0], softmax_dim1_grad, kSm);
  r = run(lsm, {f32(sm_x, kSm)}, sm_dy);
  close32(r.y, log_softmax_last_y, kSm);
  close32(r.grads[0], log_softmax_last_grad, kSm);

  // the method forwards, a contiguous output, and slices that sum to 1 along the softmax dim
  Tensor x = f64(sm_x, kSm);
  Tensor y = x.softmax(1);
  CHECK(y.is_contiguous());
  require_close(y, mg::softmax(x, -2), 0, 0);
  require_close(y.sum({1}), mg::ones({2, 2}, mg::kFloat64), 1e-15, 0);
  require_close(x.log_softmax(0).exp(), x.softmax(0), 1e-15, 1e-15);
}

TEST_CASE("softmax and log_softmax are stable for large logits", "[loss]") {
  for (auto dt : {mg::kFloat64, mg::kFloat32}) {
    INFO(mg::dtype_name(dt));
    Tensor x = mg::from_vector(std::vector<double>{1e4, 0}, {2}, dt);
    CHECK(x.softmax(0).to_vector<double>() == std::vector<double>{1.0, 0.0});
    CHECK(x.log_softmax(0).to_vector<double>() == std::vector<double>{0.0, -1e4});
    Tensor big = mg::from_vector(std::vector<double>{3e4, 3e4, -3e4}, {3}, dt);
    require_close(big.softmax(0), f64({0.5, 0.5, 0.0}, {3}), 0, 0);
    require_close(big.log_softmax(0), f64({-std::log(2.0), -std::log(2.0), -6e4 - std::log(2.0)}, {3}),
                  1e-6, 1e-7);
    const double inf = INFINITY;
    Tensor masked = mg::from_vector(std::vector<double>{0.0, -inf, 0.0}, {3}, dt);
    require_close(masked.softmax(0), f64({0.5, 0.0, 0.5}, {3}), 0, 0);
    CHECK(masked.log_softmax(0).to_vector<double>()[1] == -inf);
    // an all -inf slice gives NaN, as torch
    Tensor none = mg::from_vector(std::vector<double>{-inf, -inf}, {2}, dt);
    for (double v : none.softmax(0).to_vector<double>()) CHECK(std::isnan(v));
  }
}

TEST_CASE("softmax and log_softmax gradcheck on any dim and strided inputs", "[loss]") {
  gradcheck("softmax last dim", [](const TensorList& in) { return mg::softmax(in[0], -1); },
            {randn({3, 4}, 1)});
  gradcheck("softmax dim 0", [](const TensorList& in) { return mg::softmax(in[0], 0); },
            {randn({3, 4}, 2)});
  gradcheck("softmax 1-d", [](const TensorList& in) { return mg::softmax(in[0], 0); }, {randn({5}, 3)});
  gradcheck("log_softmax middle dim", [](const TensorList& in) { return mg::log_softmax(in[0], 1); },
            {randn({2, 3, 4}, 4, 2.0)});
  gradcheck("log_softmax of a transposed input",
            [](const TensorList& in) { return mg::log_softmax(in[0].t(), -1); }, {randn({4, 3}, 5)});
  gradcheck("softmax of a transposed input, dim 0",
            [](const TensorList& in) { return mg::softmax(in[0].transpose(0, 2), 0); },
            {randn({2, 3, 4}, 6)});
  gradcheck("log_softmax of an expanded input",
            [](const TensorList& in) { return mg::log_softmax(in[0].expand({3, 4}), 1); },
            {randn({1, 4}, 7)});
}

TEST_CASE("softmax edge shapes", "[loss]") {
  Tensor s = mg::scalar_tensor(3.0, mg::kFloat64);
  CHECK(s.softmax(0).item() == 1.0);
  CHECK(s.log_softmax(-1).item() == 0.0);
  CHECK(s.softmax(0).dim() == 0);
  Tensor e = mg::zeros({0, 3}, mg::kFloat64);
  CHECK(e.softmax(1).sizes() == mg::Shape{0, 3});
  CHECK(mg::zeros({2, 0}, mg::kFloat64).log_softmax(1).sizes() == mg::Shape{2, 0});
  // not recorded without grad
  Tensor x = randn({2, 3}, 8).requires_grad_(true);
  {
    mg::NoGradGuard no_grad;
    CHECK_FALSE(x.softmax(1).requires_grad());
  }
  CHECK(x.softmax(1).requires_grad());
  CHECK(x.softmax(1).grad_fn()->name() == "softmax");
  CHECK(x.log_softmax(1).grad_fn()->name() == "log_softmax");
}

// ---------------------------------------------------------------- cross_entropy / nll_loss

TEST_CASE("cross_entropy matches PyTorch: reductions, label smoothing, ignore_index", "[loss]") {
  using namespace lossref;
  using mg::CrossEntropyOptions;
  const Tensor t = i32(ce_target, {3});
  const Tensor t_ign = i32(ce_target_ignore, {3});
  auto ce = [](Tensor target, CrossEntropyOptions o) {
    return [target, o](const TensorList& in) { return mg::cross_entropy(in[0], target, o); };
  };
  struct Case {
    const char* name;
    Tensor target;
    CrossEntropyOptions options;
    const std::vector<double>& y;
    const std::vector<double>& grad;
    bool none = false;
  };
  const std::vector<Case> cases = {
      {"mean", t, CrossEntropyOptions(), ce_mean_y, ce_mean_grad},
      {"sum", t, CrossEntropyOptions().reduction(mg::kSum), ce_sum_y, ce_sum_grad},
      {"none", t, CrossEntropyOptions().reduction(mg::kNone), ce_none_y, ce_none_grad, true},
      {"label smoothing", t, CrossEntropyOptions().label_smoothing(0.1), ce_smooth_y, ce_smooth_grad},
      {"ignore_index", t_ign, CrossEntropyOptions(), ce_ignore_y, ce_ignore_grad},
      {"ignore_index + smoothing, sum", t_ign,
       CrossEntropyOptions().reduction(mg::kSum).label_smoothing(0.1), ce_ignore_smooth_sum_y,
       ce_ignore_smooth_sum_grad},
  };
  for (const Case& c : cases) {
    INFO(c.name);
    const mg::Shape yshape = c.none ? mg::Shape{3} : mg::Shape{};
    const std::vector<double> dy = c.none ? ce_dy : std::vector<double>{};
    Run r = run(ce(c.target, c.options), {f64(ce_x, kCe)}, dy);
    close64(r.y, c.y, yshape);
    close64(r.grads[0], c.grad, kCe);
    r = run(ce(c.target, c.options), {f32(ce_x, kCe)}, dy);
    close32(r.y, c.y, yshape);
    close32(r.grads[0], c.grad, kCe);
  }
  // the ignored row gets exactly zero gradient
  Run r = run(ce(t_ign, CrossEntropyOptions().label_smoothing(0.1)), {f64(ce_x, kCe)});
  CHECK(r.grads[0].select(0, 1).to_vector<double>() == std::vector<double>(4, 0.0));
  // with reduction none the ignored row's loss is exactly 0
  CHECK(mg::cross_entropy(f64(ce_x, kCe), t_ign, CrossEntropyOptions().reduction(mg::kNone))
            .to_vector<double>()[1] == 0.0);
}

TEST_CASE("cross_entropy on [N, C, H, W] logits matches PyTorch", "[loss]") {
  using namespace lossref;
  const Tensor t = i32(ce4_target, {2, 2, 2});
  Run r = run([&](const TensorList& in) { return mg::cross_entropy(in[0], t); }, {f64(ce4_x, kCe4)});
  close64(r.y, ce4_mean_y, {});
  close64(r.grads[0], ce4_mean_grad, kCe4);
  auto opts = mg::CrossEntropyOptions().reduction(mg::kSum).label_smoothing(0.1);
  r = run([&](const TensorList& in) { return mg::cross_entropy(in[0], t, opts); }, {f64(ce4_x, kCe4)});
  close64(r.y, ce4_smooth_sum_y, {});
  close64(r.grads[0], ce4_smooth_sum_grad, kCe4);
  r = run([&](const TensorList& in) { return mg::cross_entropy(in[0], t, opts); }, {f32(ce4_x, kCe4)});
  close32(r.y, ce4_smooth_sum_y, {});
  close32(r.grads[0], ce4_smooth_sum_grad, kCe4);
  // reduction none keeps the target's shape
  CHECK(mg::cross_entropy(f64(ce4_x, kCe4), t, mg::CrossEntropyOptions().reduction(mg::kNone)).sizes() ==
        mg::Shape{2, 2, 2});
}

TEST_CASE("cross_entropy is stable and exact for logits of 1e4", "[loss]") {
  using namespace lossref;
  const Tensor t = i32(ce_target, {3});
  auto ce = [&](const TensorList& in) { return mg::cross_entropy(in[0], t); };
  Run r = run(ce, {f64(ce_big_x, kCe)});
  REQUIRE(std::isfinite(r.y.item()));
  close64(r.y, ce_big_y, {});
  close64(r.grads[0], ce_big_grad, kCe);
  for (double g : r.grads[0].to_vector<double>()) CHECK(std::isfinite(g));
  r = run(ce, {f32(ce_big_x, kCe)});
  REQUIRE(std::isfinite(r.y.item()));
  close32(r.y, ce_big_y, {});
  close32(r.grads[0], ce_big_grad, kCe);
  // a confidently right prediction costs exactly 0, a confidently wrong one exactly the margin
  CHECK(mg::cross_entropy(f64({1e4, 0}, {1, 2}), i32({0}, {1})).item() == 0.0);
  CHECK(mg::cross_entropy(f64({1e4, 0}, {1, 2}), i32({1}, {1})).item() == 1e4);
  CHECK(mg::cross_entropy(f32({-1e30, 1e30}, {1, 2}), i32({0}, {1})).item() == 2e30f);
}

TEST_CASE("nll_loss matches PyTorch", "[loss]") {
  using namespace lossref;
  const Tensor t = i32(ce_target, {3});
  const Tensor t_ign = i32(ce_target_ignore, {3});
  Run r = run([&](const TensorList& in) { return mg::nll_loss(in[0], t_ign); }, {f64(ce_x, kCe)});
  close64(r.y, nll_ignore_y, {});
  close64(r.grads[0], nll_ignore_grad, kCe);
  r = run([&](const TensorList& in) { return mg::nll_loss(in[0], t, mg::kNone); }, {f64(ce_x, kCe)}, ce_dy);
  close64(r.y, nll_none_y, {3});
  close64(r.grads[0], nll_none_grad, kCe);
  // cross_entropy == nll_loss(log_softmax)
  Tensor x = f64(ce_x, kCe);
  require_close(mg::nll_loss(x.log_softmax(1), t), mg::cross_entropy(x, t), 1e-15, 1e-15);
}

TEST_CASE("ignore_index: custom values, and a mean over no counted target is NaN", "[loss]") {
  Tensor x = randn({4, 3}, 9);
  // ignore_index may be a valid class: those rows are dropped from sum and count
  Tensor t = i32({2, 0, 2, 1}, {4});
  auto opts = mg::CrossEntropyOptions().ignore_index(2);
  Tensor kept = mg::cross_entropy(x.narrow(0, 1, 1), i32({0}, {1})) + mg::cross_entropy(x.narrow(0, 3, 1), i32({1}, {1}));
  require_close(mg::cross_entropy(x, t, opts), kept / 2.0, 1e-15, 1e-14);
  require_close(mg::nll_loss(x, t, mg::kSum, 2), -(x.select(0, 1).select(0, 0) + x.select(0, 3).select(0, 1)),
                1e-15, 1e-15);
  // all ignored: mean is 0/0 = NaN (as torch), sum is 0, gradient is 0
  Tensor all = i32({-100, -100, -100, -100}, {4});
  CHECK(std::isnan(mg::cross_entropy(x, all).item()));
  CHECK(std::isnan(mg::nll_loss(x, all).item()));
  CHECK(mg::cross_entropy(x, all, mg::CrossEntropyOptions().reduction(mg::kSum)).item() == 0.0);
  Tensor leaf = x.clone().requires_grad_(true);
  mg::cross_entropy(leaf, all, mg::CrossEntropyOptions().reduction(mg::kSum)).backward();
  CHECK(leaf.grad().abs().sum().item() == 0.0);
  // unbatched: logits [C] with a 0-d target
  Tensor v = randn({5}, 10);
  require_close(mg::cross_entropy(v, i32({3}, {1}).reshape({})),
                mg::cross_entropy(v.reshape({1, 5}), i32({3}, {1})), 1e-15, 1e-15);
  // an empty batch: sum 0, mean NaN
  Tensor empty = mg::zeros({0, 3}, mg::kFloat64);
  Tensor no_targets = mg::zeros({0}, mg::kInt32);
  CHECK(mg::cross_entropy(empty, no_targets, mg::CrossEntropyOptions().reduction(mg::kSum)).item() == 0.0);
  CHECK(std::isnan(mg::cross_entropy(empty, no_targets).item()));
}

TEST_CASE("cross_entropy and nll_loss gradcheck", "[loss]") {
  using mg::CrossEntropyOptions;
  const Tensor t = i32({0, 2, 1, 2, 3}, {5});
  const Tensor t_ign = i32({0, -100, 1, 2, -100}, {5});
  auto ce = [](Tensor target, CrossEntropyOptions o) {
    return [target, o](const TensorList& in) { return mg::cross_entropy(in[0], target, o); };
  };
  gradcheck("ce mean", ce(t, {}), {randn({5, 4}, 11)});
  gradcheck("ce sum", ce(t, CrossEntropyOptions().reduction(mg::kSum)), {randn({5, 4}, 12)});
  gradcheck("ce none", ce(t, CrossEntropyOptions().reduction(mg::kNone)), {randn({5, 4}, 13)});
  gradcheck("ce label smoothing", ce(t, CrossEntropyOptions().label_smoothing(0.2)), {randn({5, 4}, 14)});
  gradcheck("ce ignore_index", ce(t_ign, {}), {randn({5, 4}, 15)});
  gradcheck("ce ignore_index + smoothing, none",
            ce(t_ign, CrossEntropyOptions().reduction(mg::kNone).label_smoothing(0.3)), {randn({5, 4}, 16)});
  gradcheck("ce custom ignore_index", ce(t, CrossEntropyOptions().ignore_index(2)), {randn({5, 4}, 17)});
  gradcheck("ce label smoothing 1", ce(t, CrossEntropyOptions().label_smoothing(1.0)), {randn({5, 4}, 18)});
  gradcheck("ce transposed logits",
            [t](const TensorList& in) { return mg::cross_entropy(in[0].t(), t); }, {randn({4, 5}, 19)});
  const Tensor t4 = i32({0, 2, 1, 1, 2, 0, -100, 1, 2, 2, 0, 1}, {2, 3, 2});
  gradcheck("ce [N, C, H, W] smoothing", ce(t4, CrossEntropyOptions().label_smoothing(0.1)),
            {randn({2, 3, 3, 2}, 20)});
  gradcheck("ce [N, C, L] none", ce(t4.reshape({2, 6}), CrossEntropyOptions().reduction(mg::kNone)),
            {randn({2, 3, 6}, 21)});

  auto nll = [](Tensor target, mg::Reduction r) {
    return [target, r](const TensorList& in) { return mg::nll_loss(in[0], target, r); };
  };
  gradcheck("nll mean", nll(t, mg::kMean), {randn({5, 4}, 22)});
  gradcheck("nll sum ignore", nll(t_ign, mg::kSum), {randn({5, 4}, 23)});
  gradcheck("nll none", nll(t, mg::kNone), {randn({5, 4}, 24)});
  gradcheck("nll [N, C, H, W] mean ignore", nll(t4, mg::kMean), {randn({2, 3, 3, 2}, 25)});
  gradcheck("nll of log_softmax (composed)",
            [t](const TensorList& in) { return mg::nll_loss(mg::log_softmax(in[0], 1), t); },
            {randn({5, 4}, 26)});
}

// ---------------------------------------------------------------- mse_loss / bce_with_logits

TEST_CASE("mse_loss matches PyTorch and gradchecks", "[loss]") {
  using namespace lossref;
  const mg::Shape s{2, 3};
  Run r = run([](const TensorList& in) { return mg::mse_loss(in[0], in[1]); }, {f64(mse_a, s), f64(mse_b, s)});
  close64(r.y, mse_mean_y, {});
  close64(r.grads[0], mse_mean_grad_a, s);
  close64(r.grads[1], mse_mean_grad_b, s);
  r = run([](const TensorList& in) { return mg::mse_loss(in[0], in[1], mg::kSum); }, {f64(mse_a, s), f64(mse_b, s)});
  close64(r.y, mse_sum_y, {});
  close64(r.grads[0], mse_sum_grad_a, s);
  r = run([](const TensorList& in) { return mg::mse_loss(in[0], in[1]); }, {f32(mse_a, s), f32(mse_b, s)});
  close32(r.y, mse_mean_y, {});
  close32(r.grads[0], mse_mean_grad_a, s);

  for (auto red : {mg::kMean, mg::kSum, mg::kNone})
    gradcheck("mse_loss", [red](const TensorList& in) { return mg::mse_loss(in[0], in[1], red); },
              {randn({3, 4}, 30), randn({3, 4}, 31)});
  gradcheck("mse_loss strided",
            [](const TensorList& in) { return mg::mse_loss(in[0].t(), in[1]); },
            {randn({4, 3}, 32), randn({3, 4}, 33)});
  // a target that does not require grad gets none
  Tensor a = randn({3}, 34).requires_grad_(true), b = randn({3}, 35);
  mg::mse_loss(a, b).backward();
  CHECK(a.grad().defined());
  CHECK_FALSE(b.grad().defined());
}

TEST_CASE("binary_cross_entropy_with_logits matches PyTorch, stable at +-100", "[loss]") {
  using namespace lossref;
  const mg::Shape s{8};
  auto bce = [](mg::Reduction red) {
    return [red](const TensorList& in) { return mg::binary_cross_entropy_with_logits(in[0], in[1], red); };
  };
  Run r = run(bce(mg::kMean), {f64(bce_x, s), f64(bce_y, s)});
  close64(r.y, bce_mean_y, {});
  close64(r.grads[0], bce_mean_grad_x, s);
  close64(r.grads[1], bce_mean_grad_y, s);
  r = run(bce(mg::kNone), {f64(bce_x, s), f64(bce_y, s)}, bce_dy);
  close64(r.y, bce_none_y, s);
  close64(r.grads[0], bce_none_grad_x, s);
  close64(r.grads[1], bce_none_grad_y, s);
  for (double v : r.y.to_vector<double>()) CHECK(std::isfinite(v));
  r = run(bce(mg::kNone), {f32(bce_x, s), f32(bce_y, s)}, bce_dy);
  close32(r.y, bce_none_y, s);
  close32(r.grads[0], bce_none_grad_x, s);
  close32(r.grads[1], bce_none_grad_y, s);
  // far beyond exp's range: still finite and exact
  Tensor huge = f64({-1e4, 1e4}, {2});
  require_close(mg::binary_cross_entropy_with_logits(huge, f64({0, 1}, {2}), mg::kNone), f64({0, 0}, {2}), 0, 0);
  require_close(mg::binary_cross_entropy_with_logits(huge, f64({1, 0}, {2}), mg::kNone), f64({1e4, 1e4}, {2}), 0, 0);

  for (auto red : {mg::kMean, mg::kSum, mg::kNone})
    gradcheck("bce_with_logits", bce(red), {randn({3, 4}, 40, 3.0), randn({3, 4}, 41).sigmoid()});
  gradcheck("bce_with_logits strided",
            [](const TensorList& in) { return mg::binary_cross_entropy_with_logits(in[0].t(), in[1], mg::kMean); },
            {randn({4, 3}, 42), randn({3, 4}, 43).sigmoid()});
}

// ---------------------------------------------------------------- errors

TEST_CASE("losses and softmax reject bad input with clear messages", "[loss]") {
  using Catch::Contains;
  Tensor x = randn({4, 5}, 50);
  // target batch size
  REQUIRE_THROWS_AS(mg::cross_entropy(x, i32({0, 1, 2}, {3})), mg::Error);
  REQUIRE_THROWS_WITH(mg::cross_entropy(x, i32({0, 1, 2}, {3})),
                      Contains("cross_entropy") && Contains("batch size 3") && Contains("[3]") &&
                          Contains("[4, 5]"));
  // target dtype
  REQUIRE_THROWS_AS(mg::cross_entropy(x, mg::zeros({4}, mg::kFloat32)), mg::Error);
  REQUIRE_THROWS_WITH(mg::cross_entropy(x, mg::zeros({4}, mg::kFloat32)),
                      Contains("cross_entropy") && Contains("int32") && Contains("[4]") && Contains("[4, 5]"));
  // target rank / spatial shape
  REQUIRE_THROWS_WITH(mg::cross_entropy(x, mg::zeros({4, 1}, mg::kInt32)),
                      Contains("cross_entropy") && Contains("[4, 1]") && Contains("[4, 5]"));
  REQUIRE_THROWS_WITH(mg::cross_entropy(randn({2, 3, 4, 4}, 51), mg::zeros({2, 4, 3}, mg::kInt32)),
                      Contains("[2, 4, 3]") && Contains("[2, 3, 4, 4]") && Contains("[2, 4, 4]"));
  // labels out of [0, C)
  REQUIRE_THROWS_AS(mg::cross_entropy(x, i32({0, 7, 1, 2}, {4})), mg::Error);
  REQUIRE_THROWS_WITH(mg::cross_entropy(x, i32({0, 7, 1, 2}, {4})),
                      Contains("cross_entropy") && Contains("label 7") && Contains("[0, 5)"));
  REQUIRE_THROWS_WITH(mg::cross_entropy(x, i32({0, -1, 1, 2}, {4})),
                      Contains("cross_entropy") && Contains("label -1") && Contains("5 classes"));
  REQUIRE_THROWS_WITH(mg::cross_entropy(x, i32({0, -100, 1, 2}, {4}), mg::CrossEntropyOptions().ignore_index(-1)),
                      Contains("label -100"));
  REQUIRE_THROWS_WITH(mg::nll_loss(x, i32({0, 5, 1, 2}, {4})), Contains("nll_loss") && Contains("label 5"));
  REQUIRE_THROWS_WITH(mg::nll_loss(x, i32({0, 1}, {2})),
                      Contains("nll_loss") && Contains("[2]") && Contains("[4, 5]"));
  // bad logits
  REQUIRE_THROWS_WITH(mg::cross_entropy(mg::scalar_tensor(1.0), mg::zeros({}, mg::kInt32)),
                      Contains("cross_entropy") && Contains("[]"));
  REQUIRE_THROWS_WITH(mg::cross_entropy(mg::zeros({4, 5}, mg::kInt32), i32({0, 1, 2, 3}, {4})),
                      Contains("cross_entropy") && Contains("floating-point"));
  REQUIRE_THROWS_WITH(mg::cross_entropy(x, i32({0, 1, 2, 3}, {4}), mg::CrossEntropyOptions().label_smoothing(1.5)),
                      Contains("label_smoothing"));
  // element-wise losses: shapes and dtypes must match
  REQUIRE_THROWS_AS(mg::mse_loss(x, randn({5, 4}, 52)), mg::Error);
  REQUIRE_THROWS_WITH(mg::mse_loss(x, randn({5, 4}, 52)),
                      Contains("mse_loss") && Contains("[5, 4]") && Contains("[4, 5]"));
  REQUIRE_THROWS_WITH(mg::mse_loss(x, x.to(mg::kFloat32)), Contains("mse_loss") && Contains("dtype"));
  REQUIRE_THROWS_WITH(mg::binary_cross_entropy_with_logits(x, randn({4}, 53)),
                      Contains("binary_cross_entropy_with_logits") && Contains("[4]") && Contains("[4, 5]"));
  REQUIRE_THROWS_WITH(mg::binary_cross_entropy_with_logits(x, mg::zeros({4, 5}, mg::kInt32)),
                      Contains("binary_cross_entropy_with_logits") && Contains("floating-point"));
  // softmax
  REQUIRE_THROWS_WITH(mg::softmax(x, 2), Contains("softmax") && Contains("dim 2"));
  REQUIRE_THROWS_WITH(mg::log_softmax(mg::zeros({3}, mg::kInt32), 0),
                      Contains("log_softmax") && Contains("floating-point"));
}
