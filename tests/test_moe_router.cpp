// The MoE router and the balancing losses: gradients (float64 central differences) of the weights,
// scores and every loss; hand-computed loss values; ties, temperature, warmup, noise, oracle and
// random routing, aux-loss-free bias; the lifecycle row surgery; config errors. Also FFNExpert.
#include "gradcheck.hpp"

#include <algorithm>
#include <cmath>
#include <set>

#include "moe/balance.hpp"
#include "moe/expert.hpp"
#include "moe/router.hpp"

using mg::Tensor;
using mg::TensorList;
using mg::moe::NoiseType;
using mg::moe::Router;
using mg::moe::RouterConfig;
using mg::moe::Routing;
using mg::moe::RoutingMode;
using mg::moe::Scoring;
using mgtest::gradcheck;
using mgtest::gradcheck_params;
using mgtest::require_close;

namespace {

Tensor f64(const std::vector<double>& v, const mg::Shape& s) { return mg::from_vector(v, s, mg::kFloat64); }
Tensor f32(const std::vector<float>& v, const mg::Shape& s) { return mg::from_vector(v, s, mg::kFloat32); }
Tensor i32(const std::vector<int32_t>& v, const mg::Shape& s) { return mg::from_vector(v, s, mg::kInt32); }
Tensor randn64(const mg::Shape& s, uint64_t seed) {
  mg::Generator g(seed);
  return mg::randn(s, mg::kFloat64, &g);
}
std::vector<int32_t> ints(const Tensor& t) { return t.to_vector<int32_t>(); }

RouterConfig config(int64_t D, int64_t E, int64_t k, Scoring scoring = Scoring::SoftmaxTopK,
                    uint64_t seed = 7) {
  RouterConfig c;
  c.input_dim = D;
  c.num_experts = E;
  c.top_k = k;
  c.scoring = scoring;
  c.seed = seed;
  return c;
}

const std::vector<Scoring> kAllScorings = {Scoring::SoftmaxTopK, Scoring::TopKSoftmax, Scoring::Sigmoid};
const char* scoring_name(Scoring s) {
  return s == Scoring::SoftmaxTopK ? "SoftmaxTopK" : s == Scoring::TopKSoftmax ? "TopKSoftmax" : "Sigmoid";
}

// Routes x twice under the same generator state (the noise draw repeats), for gradchecks of
// training-mode routing.
std::function<Routing(const Tensor&)> repeatable_route(Router& router) {
  const uint64_t seed = router.generator().seed(), offset = router.generator().offset();
  return [&router, seed, offset](const Tensor& x) {
    router.generator().set_state(seed, offset);
    return router.route(x);
  };
}

std::vector<int64_t> tokens_per_expert(const Tensor& indices, int64_t E) {
  std::vector<int64_t> counts(E, 0);
  for (int32_t e : ints(indices)) ++counts[e];
  return counts;
}

// The gate's output layer becomes the identity (logits = x) so a test controls the logits exactly.
void make_identity_gate(Router& router) {
  mg::NoGradGuard no_grad;
  auto params = router.output_layer_parameters();
  params[0].copy_(mg::eye(params[0].size(0), params[0].dtype()));
  params[1].zero_();
}

}  // namespace

// ---------------------------------------------------------------- configuration

TEST_CASE("router: config validation names the field", "[moe][router]") {
  using Catch::Contains;
  CHECK_THROWS_WITH(Router(config(0, 4, 1)), Contains("input_dim"));
  CHECK_THROWS_WITH(Router(config(3, 0, 1)), Contains("num_experts"));
  CHECK_THROWS_WITH(Router(config(3, 4, 0)), Contains("top_k"));
  CHECK_THROWS_WITH(Router(config(3, 4, 5)), Contains("top_k") && Contains("num_experts = 4"));
  RouterConfig c = config(3, 4, 1);
  c.temperature = 0;
  CHECK_THROWS_WITH(Router(c), Contains("temperature"));
  c = config(3, 4, 1);
  c.mode = RoutingMode::Oracle;
  CHECK_THROWS_WITH(Router(c), Contains("oracle_map"));
  c.oracle_map = {0, 3, 4};
  CHECK_THROWS_WITH(Router(c), Contains("oracle_map[2] = 4"));
  c.oracle_map = {0, -1};
  CHECK_THROWS_WITH(Router(c), Contains("oracle_map[1] = -1"));
  c = config(3, 4, 1);
  c.gate_hidden = {8, 0};
  CHECK_THROWS_WITH(Router(c), Contains("gate_hidden"));
  c = config(3, 4, 1);
  c.gate_dropout = 1.0;
  CHECK_THROWS_WITH(Router(c), Contains("gate_dropout"));
  c = config(3, 4, 1);
  c.jitter_eps = -0.1;
  CHECK_THROWS_WITH(Router(c), Contains("jitter_eps"));
  c = config(3, 4, 1);
  c.bias_update_rate = -1;
  CHECK_THROWS_WITH(Router(c), Contains("bias_update_rate"));
  c = config(3, 4, 1);
  c.warmup_random_steps = -1;
  CHECK_THROWS_WITH(Router(c), Contains("warmup_random_steps"));

  Router router(config(3, 4, 2));
  CHECK_THROWS_WITH(router.set_mode(RoutingMode::Oracle), Contains("oracle_map"));
  CHECK_THROWS_WITH(router.route(mg::randn({2, 5})), Contains("[T, D = 3]") && Contains("[2, 5]"));
  CHECK_THROWS_WITH(router.update_bias({1, 2}), Contains("update_bias"));
}

TEST_CASE("router: linear and MLP gates, parameters and buffer", "[moe][router]") {
  Router linear(config(3, 4, 2));
  CHECK(linear.output_layer_parameters()[0].sizes() == mg::Shape{4, 3});
  CHECK(linear.output_layer_parameters()[1].sizes() == mg::Shape{4});
  CHECK(linear.expert_bias.sizes() == mg::Shape{4});
  CHECK(linear.buffers().size() == 1);

  RouterConfig c = config(3, 4, 2);
  c.gate_hidden = {8, 6};
  c.gate_dropout = 0.1;
  c.noise = NoiseType::Learned;
  Router mlp(c);
  std::vector<std::string> names;
  for (const auto& [name, p] : mlp.named_parameters()) names.push_back(name);
  // Linear, ReLU, Dropout per hidden size, then the output Linear (the last child)
  CHECK(names == std::vector<std::string>{"gate.0.weight", "gate.0.bias", "gate.3.weight", "gate.3.bias",
                                          "gate.6.weight", "gate.6.bias", "noise_proj.weight"});
  CHECK(mlp.output_layer_parameters()[0].sizes() == mg::Shape{4, 6});
  CHECK(mlp.output_layer_parameters()[0].is_same(mlp.named_parameters()[4].second));
  // Shazeer: the noise projection starts at zero
  for (const auto& [name, p] : mlp.named_parameters())
    if (name == "noise_proj.weight") CHECK(p.abs().sum().item() == 0.0);

  // the seed alone fixes the initial gate
  Router again(c);
  for (size_t i = 0; i < mlp.parameters().size(); ++i)
    CHECK(mlp.parameters()[i].to_vector<float>() == again.parameters()[i].to_vector<float>());
}

// ---------------------------------------------------------------- gradients

TEST_CASE("router: gradients of weights and scores for each scoring mode", "[moe][router]") {
  for (Scoring scoring : kAllScorings) {
    for (bool mlp : {false, true}) {
      INFO(scoring_name(scoring) << (mlp ? ", MLP gate" : ", linear gate"));
      RouterConfig c = config(3, 5, 2, scoring);
      if (mlp) c.gate_hidden = {4};
      Router router(c);
      router.to(mg::kFloat64);
      router.eval();
      const Tensor x = randn64({6, 3}, 11);
      gradcheck("weights wrt x", [&](const TensorList& in) { return router.route(in[0]).weights; }, {x});
      gradcheck("scores wrt x", [&](const TensorList& in) { return router.route(in[0]).scores; }, {x});
      gradcheck_params("weights wrt gate", [&] { return router.route(x).weights; }, router.parameters());
      gradcheck_params("scores wrt gate", [&] { return router.route(x).scores; }, router.parameters());
    }
  }
}

TEST_CASE("router: gradients of each balancing loss through the router", "[moe][router]") {
  using namespace mg::moe;
  const Tensor x = randn64({8, 3}, 21);
  for (Scoring scoring : kAllScorings) {
    INFO(scoring_name(scoring));
    Router router(config(3, 4, 2, scoring));
    router.to(mg::kFloat64);
    router.eval();
    const std::vector<std::pair<const char*, std::function<Tensor(const Routing&)>>> losses = {
        {"switch", [](const Routing& r) { return switch_loss(r, 4); }},
        {"variance", [](const Routing& r) { return variance_loss(r); }},
        {"importance", [](const Routing& r) { return importance_loss(r, 4); }},
        {"z", [](const Routing& r) { return z_loss(r); }},
    };
    for (const auto& entry : losses) {
      const auto& loss = entry.second;
      gradcheck(entry.first, [&](const TensorList& in) { return loss(router.route(in[0])); }, {x});
      gradcheck_params(entry.first, [&] { return loss(router.route(x)); }, router.parameters());
    }
  }
}

TEST_CASE("router: gradient of Shazeer's smooth load loss, Learned noise in training", "[moe][router]") {
  using namespace mg::moe;
  const Tensor x = randn64({8, 3}, 21);
  {
    // the noise draw is repeated for every evaluation of the objective
    RouterConfig c = config(3, 5, 2);
    c.noise = NoiseType::Learned;
    c.gate_hidden = {4};
    c.gate_dropout = 0.2;  // dropout masks come from the router's generator too
    Router router(c);
    router.to(mg::kFloat64);
    for (auto& [name, p] : router.named_parameters())
      if (name == "noise_proj.weight") {
        mg::NoGradGuard no_grad;
        p.copy_(randn64(p.sizes(), 5) * 0.5);
      }
    auto route = repeatable_route(router);
    const Routing r = route(x);
    REQUIRE(r.noise_stddev.defined());
    REQUIRE(r.noisy_logits.defined());
    gradcheck("load", [&](const TensorList& in) { return load_loss(route(in[0]), 5, 2); }, {x});
    gradcheck_params("load", [&] { return load_loss(route(x), 5, 2); }, router.parameters());
    gradcheck_params("weights with learned noise", [&] { return route(x).weights; }, router.parameters());
  }
}

// ---------------------------------------------------------------- hand-computed loss values

TEST_CASE("balance losses: hand-computed values on a tiny routing", "[moe][router]") {
  using namespace mg::moe;
  // T = 2 inputs, E = 3 experts, k = 2.
  //   row 0: logits [0, 0, 0]          scores [1/3, 1/3, 1/3]  top-2 {0, 1} (tie: lower index)
  //          weights [1/2, 1/2]
  //   row 1: logits [0, ln 2, ln 3]    scores [1/6, 2/6, 3/6]  top-2 {2, 1}
  //          weights [3/5, 2/5]
  Routing r;
  r.logits = f64({0, 0, 0, 0, std::log(2.0), std::log(3.0)}, {2, 3});
  r.scores = f64({1. / 3, 1. / 3, 1. / 3, 1. / 6, 2. / 6, 3. / 6}, {2, 3});
  r.indices = i32({0, 1, 2, 1}, {2, 2});
  r.weights = f64({0.5, 0.5, 0.6, 0.4}, {2, 2});

  // switch: assignments [1, 2, 1] of T*k = 4 -> f = [1/4, 1/2, 1/4];
  //   P = column means of the scores = [1/4, 1/3, 5/12];
  //   E * sum f P = 3 * (1/16 + 1/6 + 5/48) = 3 * (3 + 8 + 5)/48 = 1
  CHECK(switch_loss(r, 3).item() == Approx(1.0).epsilon(1e-12));
  // variance: P = [3, 4, 5]/12, mean 4/12, deviations [-1, 0, 1]/12 -> (1 + 0 + 1)/144/3 = 1/216
  CHECK(variance_loss(r).item() == Approx(1.0 / 216).epsilon(1e-12));
  // importance: per-expert weight sums [0.5, 0.5 + 0.4, 0.6] = [0.5, 0.9, 0.6], mean 2/3;
  //   deviations [-1/6, 7/30, -1/15] -> squares [25, 49, 4]/900, variance 78/2700;
  //   CV^2 = (78/2700) / (4/9) = 0.065
  CHECK(importance_loss(r, 3).item() == Approx(0.065).epsilon(1e-9));
  // load without Learned noise: hard counts [1, 2, 1], mean 4/3, squares of deviations
  //   [1, 4, 1]/9 -> variance 2/9; CV^2 = (2/9) / (16/9) = 1/8
  CHECK(load_loss(r, 3, 2).item() == Approx(0.125).epsilon(1e-9));
  CHECK_FALSE(load_loss(r, 3, 2).requires_grad());
  // z: logsumexp of row 0 = ln 3, of row 1 = ln(1 + 2 + 3) = ln 6;
  //   mean of squares = (1.0986123^2 + 1.7917595^2)/2 = (1.2069490 + 3.2104020)/2 = 2.2086755
  CHECK(z_loss(r).item() == Approx(2.2086755).epsilon(1e-7));

  SECTION("balance_losses: total of the enabled ones, values of all five") {
    BalanceConfig bc;
    bc.switch_coef = 0.01;
    bc.variance_coef = 1.0;
    bc.importance_coef = 0.1;
    bc.z_coef = 0.001;
    const BalanceLosses losses = balance_losses(bc, r, 3, 2);
    // 0.01 * 1 + 1/216 + 0.1 * 0.065 + 0.001 * 2.2086755 = 0.01 + 0.0046296 + 0.0065 + 0.0022087
    CHECK(losses.total.item() == Approx(0.0233383).epsilon(1e-6));
    CHECK(losses.switch_value == Approx(1.0));
    CHECK(losses.variance_value == Approx(1.0 / 216));
    CHECK(losses.importance_value == Approx(0.065));
    CHECK(losses.load_value == Approx(0.125));  // disabled but still measured
    CHECK(losses.z_value == Approx(2.2086755));

    const BalanceLosses none = balance_losses(BalanceConfig{}, r, 3, 2);
    CHECK(none.total.item() == 0.0);
    CHECK(none.total.dim() == 0);
    CHECK(none.switch_value == Approx(1.0));
  }

  SECTION("Shazeer's smooth load, Learned noise") {
    // T = 1, E = 3, k = 1: clean [1, 0, -1], noise std [1, 1, 1], noisy [1.5, 0.2, -1].
    //   top-2 noisy [1.5, 0.2]: threshold if in = 0.2 (2nd best), if out = 1.5 (best);
    //   expert 0 is in: Phi((1 - 0.2)/1) = Phi(0.8) = 0.7881446
    //   expert 1 is out: Phi((0 - 1.5)/1) = Phi(-1.5) = 0.0668072
    //   expert 2 is out: Phi((-1 - 1.5)/1) = Phi(-2.5) = 0.0062097
    //   mean 0.2870538; deviations [0.5010908, -0.2202466, -0.2808442];
    //   variance (0.2510920 + 0.0485086 + 0.0788734)/3 = 0.1261580; CV^2 = 0.1261580/0.0823999 = 1.5310455
    Routing s;
    s.clean_logits_for_load = f64({1, 0, -1}, {1, 3});
    s.noisy_logits = f64({1.5, 0.2, -1}, {1, 3});
    s.noise_stddev = f64({1, 1, 1}, {1, 3});
    s.indices = i32({0}, {1, 1});
    s.scores = s.noisy_logits.softmax(1);
    CHECK(load_loss(s, 3, 1).item() == Approx(1.5310455).epsilon(1e-6));
    // with k = E every expert is always chosen: the load is flat
    s.indices = i32({0, 1, 2}, {1, 3});
    CHECK(load_loss(s, 3, 3).item() == Approx(0.0).margin(1e-12));
  }

  SECTION("an enabled loss the routing cannot support is an error") {
    Routing bare;
    bare.indices = r.indices;
    BalanceConfig bc;
    bc.z_coef = 1.0;
    CHECK_THROWS_WITH(balance_losses(bc, bare, 3, 2), Catch::Contains("z"));
    const BalanceLosses values = balance_losses(BalanceConfig{}, bare, 3, 2);
    CHECK(std::isnan(values.z_value));
    CHECK(std::isnan(values.switch_value));
    CHECK(values.load_value == Approx(0.125));
  }
}

// ---------------------------------------------------------------- selection and scoring

TEST_CASE("router: top-k ties pick the lower index", "[moe][router]") {
  for (Scoring scoring : kAllScorings) {
    INFO(scoring_name(scoring));
    Router router(config(3, 4, 2, scoring));
    router.eval();
    {
      mg::NoGradGuard no_grad;
      auto p = router.output_layer_parameters();
      p[0].zero_();
      p[1].copy_(f32({1, 2, 2, 0}, {4}));
    }
    const Routing r = router.route(mg::randn({3, 3}));
    CHECK(ints(r.indices) == std::vector<int32_t>{1, 2, 1, 2, 1, 2});
    {
      mg::NoGradGuard no_grad;
      router.output_layer_parameters()[1].zero_();
    }
    CHECK(ints(router.route(mg::randn({2, 3})).indices) == std::vector<int32_t>{0, 1, 0, 1});
  }
}

TEST_CASE("router: temperature divides the logits", "[moe][router]") {
  for (Scoring scoring : kAllScorings) {
    INFO(scoring_name(scoring));
    RouterConfig c = config(3, 4, 2, scoring);
    Router cold(c);
    c.temperature = 2.5;
    Router warm(c);  // same seed: same gate
    cold.eval();
    warm.eval();
    const Tensor x = randn64({5, 3}, 3);
    const Routing a = cold.route(x), b = warm.route(x);
    require_close(b.logits, a.logits / 2.5, 1e-12);
    if (scoring == Scoring::Sigmoid)
      require_close(b.scores, (a.logits / 2.5).sigmoid(), 1e-12);
    else
      require_close(b.scores, (a.logits / 2.5).softmax(1), 1e-12);
    CHECK(ints(a.indices) == ints(b.indices));  // monotone: the same choice, softer weights
    require_close(b.weights, b.scores.gather(1, b.indices) / b.scores.gather(1, b.indices).sum({1}, true),
                  1e-12);
  }
}

TEST_CASE("router: scores, weights and dtypes", "[moe][router]") {
  for (Scoring scoring : kAllScorings) {
    INFO(scoring_name(scoring));
    Router router(config(4, 6, 3, scoring));
    const Routing r = router.route(mg::randn({16, 4}));
    CHECK(r.scores.dtype() == mg::kFloat32);
    CHECK(r.indices.dtype() == mg::kInt32);
    CHECK(r.indices.sizes() == mg::Shape{16, 3});
    require_close(r.weights.sum({1}), mg::ones({16}), 1e-6);
    if (scoring == Scoring::Sigmoid) {
      require_close(r.scores, r.logits.sigmoid(), 1e-6);
    } else {
      require_close(r.scores.sum({1}), mg::ones({16}), 1e-6);
    }
    for (int64_t t = 0; t < 16; ++t) {  // best first, distinct
      const auto row = ints(r.indices[t]);
      CHECK(std::set<int32_t>(row.begin(), row.end()).size() == 3);
      const auto w = r.weights[t].to_vector<float>();
      CHECK(w[0] >= w[1]);
      CHECK(w[1] >= w[2]);
    }
    // a float64 input is routed in float64 by the float32 gate, and gradients reach the gate
    const Routing r64 = router.route(randn64({4, 4}, 1));
    CHECK(r64.weights.dtype() == mg::kFloat64);
    CHECK(r64.scores.dtype() == mg::kFloat64);
    r64.weights.select(1, 0).sum().backward();
    CHECK(router.output_layer_parameters()[0].grad().defined());
    CHECK(router.output_layer_parameters()[0].grad().dtype() == mg::kFloat32);
  }
}

TEST_CASE("router: top-1 keeps the raw score so the task loss reaches the gate", "[moe][router]") {
  // Renormalizing one weight makes it exactly 1: the gate would get no gradient from the task.
  for (Scoring scoring : {Scoring::SoftmaxTopK, Scoring::Sigmoid}) {
    INFO(scoring_name(scoring));
    Router router(config(4, 5, 1, scoring));
    const Routing r = router.route(randn64({6, 4}, 3));
    require_close(r.weights, mg::gather(r.scores, 1, r.indices), 1e-12);
    CHECK(r.weights.to_vector<double>()[0] < 1.0);
    r.weights.sum().backward();
    const Tensor gate_weight_grad = router.output_layer_parameters()[0].grad();
    REQUIRE(gate_weight_grad.defined());
    CHECK(gate_weight_grad.abs().sum().item<float>() > 0.0f);
  }
}

TEST_CASE("router: renormalize = false keeps the chosen scores", "[moe][router]") {
  for (Scoring scoring : {Scoring::SoftmaxTopK, Scoring::Sigmoid}) {
    INFO(scoring_name(scoring));
    RouterConfig c = config(4, 6, 2, scoring);
    c.renormalize = false;
    Router router(c);
    router.to(mg::kFloat64);
    router.eval();
    const Tensor x = randn64({8, 4}, 4);
    const Routing r = router.route(x);
    require_close(r.weights, mg::gather(r.scores, 1, r.indices), 1e-12);
    gradcheck_params("raw top-2 weights", [&] { return router.route(x).weights; }, router.parameters());
  }
}

// ---------------------------------------------------------------- warmup and random routing

TEST_CASE("router: warmup routes randomly for the first N training steps", "[moe][router]") {
  RouterConfig c = config(3, 6, 2);
  c.warmup_random_steps = 3;
  const Tensor x = randn64({10, 3}, 8).to(mg::kFloat32);

  Router router(c);
  Router other_gate(c);
  {
    mg::NoGradGuard no_grad;
    other_gate.output_layer_parameters()[0].copy_(mg::randn({6, 3}) * 10.0);  // a different gate
  }
  std::vector<std::vector<int32_t>> warmup_indices;
  for (int step = 0; step < 3; ++step) {
    INFO("step " << step);
    // eval routes in between neither randomize nor advance the clock
    router.eval();
    const Routing e = router.route(x);
    CHECK_FALSE(e.gate_bypassed);
    CHECK(router.steps() == step);
    router.train();

    const Routing r = router.route(x);
    CHECK(r.gate_bypassed);
    CHECK(router.steps() == step + 1);
    require_close(r.weights, mg::full({10, 2}, 0.5));
    CHECK_FALSE(r.weights.requires_grad());
    CHECK(r.scores.requires_grad());  // the losses still see the gate
    for (int64_t t = 0; t < 10; ++t) CHECK(ints(r.indices[t])[0] != ints(r.indices[t])[1]);
    warmup_indices.push_back(ints(r.indices));
    // the gate is bypassed: a different gate with the same seed routes the same way
    CHECK(ints(other_gate.route(x).indices) == warmup_indices.back());
  }
  CHECK(warmup_indices[0] != warmup_indices[1]);  // a fresh draw each step
  const Routing after = router.route(x);
  CHECK_FALSE(after.gate_bypassed);
  CHECK(after.weights.requires_grad());
  router.eval();
  CHECK(ints(after.indices) == ints(router.route(x).indices));  // learned routing from here on

  // same seed -> same draws; another seed -> other draws
  Router same(c);
  c.seed = 8;
  Router reseeded(c);
  CHECK(ints(same.route(x).indices) == warmup_indices[0]);
  CHECK(ints(reseeded.route(x).indices) != warmup_indices[0]);
}

TEST_CASE("router: Random mode is uniform over experts, in training and eval", "[moe][router]") {
  RouterConfig c = config(2, 4, 2);
  c.mode = RoutingMode::Random;
  Router router(c);
  router.eval();
  const int64_t T = 40000;
  const Routing r = router.route(mg::randn({T, 2}));
  CHECK(r.gate_bypassed);
  CHECK(router.steps() == 0);
  const auto counts = tokens_per_expert(r.indices, 4);
  // each expert is one of the 2 of 4 with probability 1/2: 20000 expected, binomial std 100
  for (int64_t n : counts) CHECK(std::abs(n - 20000) < 400);
  const auto idx = ints(r.indices);
  int64_t repeated = 0;
  for (int64_t t = 0; t < T; ++t) repeated += idx[2 * t] == idx[2 * t + 1];
  CHECK(repeated == 0);
  require_close(r.weights, mg::full({T, 2}, 0.5));
  // and the first pick alone is uniform too
  std::vector<int64_t> first(4, 0);
  for (int64_t t = 0; t < T; ++t) ++first[idx[2 * t]];
  for (int64_t n : first) CHECK(std::abs(n - 10000) < 400);

  router.train();
  CHECK(router.route(mg::randn({4, 2})).gate_bypassed);
  CHECK(router.steps() == 1);
}

// ---------------------------------------------------------------- noise

TEST_CASE("router: noise only in training, reproducible by seed", "[moe][router]") {
  for (NoiseType noise : {NoiseType::Scaled, NoiseType::Learned, NoiseType::Jitter}) {
    INFO("noise type " << static_cast<int>(noise));
    RouterConfig c = config(3, 5, 2);
    c.noise = noise;
    c.jitter_eps = 0.2;
    Router a(c), b(c);
    c.seed = 99;
    Router other(c);
    other.load_state_dict(a.state_dict());  // same gate, another generator
    const Tensor x = randn64({6, 3}, 4);

    a.eval();
    const Routing clean = a.route(x);
    require_close(clean.scores, clean.logits.softmax(1), 1e-12);
    CHECK(ints(a.route(x).indices) == ints(clean.indices));
    CHECK_FALSE(clean.noise_stddev.defined());
    a.train();

    const Routing ra = a.route(x), rb = b.route(x), ro = other.route(x);
    CHECK(ra.scores.to_vector<double>() == rb.scores.to_vector<double>());
    CHECK(ints(ra.indices) == ints(rb.indices));
    CHECK(ra.scores.to_vector<double>() != ro.scores.to_vector<double>());
    CHECK(ra.scores.to_vector<double>() != clean.scores.to_vector<double>());
    if (noise == NoiseType::Learned) {
      // softplus(0) + 0.01 with W_noise = 0
      require_close(ra.noise_stddev, mg::full({6, 5}, std::log(2.0) + 0.01, mg::kFloat64), 1e-12);
      require_close(ra.clean_logits_for_load, ra.logits, 0);
    }
    // a fresh draw every step
    CHECK(a.route(x).scores.to_vector<double>() != ra.scores.to_vector<double>());
  }
}

TEST_CASE("router: Scaled noise follows the per-row std of the logits", "[moe][router]") {
  const int64_t E = 400;
  RouterConfig c = config(E, E, 2);
  c.noise = NoiseType::Scaled;
  c.noise_std = 0.5;
  c.noise_min_std = 0.01;
  Router router(c);
  make_identity_gate(router);
  // rows of population std 1, 3 and 0 (clamped to noise_min_std)
  std::vector<double> rows(3 * E);
  for (int64_t e = 0; e < E; ++e) {
    rows[e] = e % 2 ? 1.0 : -1.0;
    rows[E + e] = e % 2 ? 3.0 : -3.0;
    rows[2 * E + e] = 0.0;
  }
  const Tensor x = f64(rows, {3, E});
  // log softmax recovers the noisy logits up to a per-row constant, which the std ignores
  auto noise_std_per_row = [&](const Routing& r) {
    return (r.scores.narrow(1, 0, E).log() - r.logits.narrow(1, 0, E)).std({1}, false).to_vector<double>();
  };
  const auto measured = noise_std_per_row(router.route(x));
  CHECK(measured[0] == Approx(0.5 * 1.0).epsilon(0.1));
  CHECK(measured[1] == Approx(0.5 * 3.0).epsilon(0.1));
  CHECK(measured[2] == Approx(0.5 * 0.01).epsilon(0.1));

  // a parked row (add_expert_row) does not inflate the noise of the others
  router.add_expert_row();
  const auto parked = noise_std_per_row(router.route(x));
  CHECK(parked[0] == Approx(0.5 * 1.0).epsilon(0.1));
  CHECK(parked[1] == Approx(0.5 * 3.0).epsilon(0.1));
  CHECK(parked[2] == Approx(0.5 * 0.01).epsilon(0.1));
}

// ---------------------------------------------------------------- oracle routing

TEST_CASE("router: Oracle routing follows the label map", "[moe][router]") {
  // six classes in three superclasses, one expert each
  RouterConfig c = config(3, 3, 1);
  c.mode = RoutingMode::Oracle;
  c.oracle_map = {0, 0, 1, 1, 2, 2};
  const Tensor x = randn64({6, 3}, 5);
  const Tensor labels = i32({5, 0, 3, 2, 1, 4}, {6});

  Router top1(c);
  const Routing r = top1.route(x, labels);
  CHECK(r.gate_bypassed);
  CHECK(ints(r.indices) == std::vector<int32_t>{2, 0, 1, 1, 0, 2});
  require_close(r.weights, mg::ones({6, 1}, mg::kFloat64));

  c.top_k = 2;
  for (Scoring scoring : kAllScorings) {
    INFO(scoring_name(scoring));
    c.scoring = scoring;
    Router top2(c);
    top2.eval();
    const Routing r2 = top2.route(x, labels);
    const auto idx = ints(r2.indices);
    const auto logits = r2.logits.to_vector<double>();
    for (int64_t t = 0; t < 6; ++t) {
      const int32_t oracle = c.oracle_map[ints(labels)[t]];
      CHECK(idx[2 * t] == oracle);
      // the second pick is the gate's best among the others
      int32_t best = -1;
      for (int32_t e = 0; e < 3; ++e)
        if (e != oracle && (best < 0 || logits[3 * t + e] > logits[3 * t + best])) best = e;
      CHECK(idx[2 * t + 1] == best);
    }
    const Tensor chosen = r2.scores.gather(1, r2.indices);
    require_close(r2.weights, chosen / chosen.sum({1}, true), 1e-12);
    CHECK(r2.weights.requires_grad());
  }

  using Catch::Contains;
  CHECK_THROWS_WITH(top1.route(x), Contains("Oracle") && Contains("labels"));
  CHECK_THROWS_WITH(top1.route(x, i32({0, 1, 2, 3, 4, 6}, {6})),
                    Contains("label 6") && Contains("no oracle_map entry"));
  CHECK_THROWS_WITH(top1.route(x, i32({0, 1}, {2})), Contains("labels [T = 6]"));
}

// ---------------------------------------------------------------- aux-loss-free balancing

TEST_CASE("router: aux-loss-free bias changes the choice, not the weights", "[moe][router]") {
  for (Scoring scoring : kAllScorings) {
    INFO(scoring_name(scoring));
    RouterConfig c = config(3, 4, 2, scoring);
    c.bias_update_rate = 0.01;
    Router router(c);
    router.eval();
    const Tensor x = randn64({12, 3}, 6);
    const Routing before = router.route(x);
    Router plain(config(3, 4, 2, scoring));  // same seed, no bias
    plain.eval();
    CHECK(ints(plain.route(x).indices) == ints(before.indices));  // zero bias: same choice

    {
      mg::NoGradGuard no_grad;
      router.expert_bias.copy_(f32({0, 0, 0, 5}, {4}));
    }
    const Routing biased = router.route(x);
    CHECK(ints(biased.indices) != ints(before.indices));
    for (int64_t t = 0; t < 12; ++t) CHECK(ints(biased.indices[t])[0] == 3);
    require_close(biased.scores, before.scores, 0);  // the bias is not in the scores...
    const Tensor chosen = biased.scores.gather(1, biased.indices);
    const Tensor expected = scoring == Scoring::TopKSoftmax
                                ? biased.logits.gather(1, biased.indices).softmax(1)
                                : chosen / chosen.sum({1}, true);
    require_close(biased.weights, expected, 1e-12);  // ...nor in the weights
  }
}

TEST_CASE("router: update_bias nudges toward balance", "[moe][router]") {
  RouterConfig c = config(2, 4, 1);
  c.bias_update_rate = 0.25;
  Router router(c);
  router.update_bias({10, 0, 5, 5});  // mean 5: overloaded down, idle up, balanced unchanged
  CHECK(router.expert_bias.to_vector<float>() == std::vector<float>{-0.25f, 0.25f, 0.f, 0.f});
  RouterConfig off = config(2, 4, 1);
  Router no_bias(off);
  no_bias.update_bias({10, 0, 5, 5});
  CHECK(no_bias.expert_bias.abs().sum().item() == 0.0);

  // a gate that sends most inputs to expert 0
  c.bias_update_rate = 0.01;
  Router skewed(c);
  {
    mg::NoGradGuard no_grad;
    auto p = skewed.output_layer_parameters();
    p[0].copy_(f32({1, 0, 0, 1, -1, 0, 0, -1}, {4, 2}));
    p[1].copy_(f32({1.5f, 0, 0, 0}, {4}));
  }
  skewed.eval();
  const Tensor x = randn64({400, 2}, 13).to(mg::kFloat32);
  auto max_share = [&] {
    const auto counts = tokens_per_expert(skewed.route(x).indices, 4);
    return static_cast<double>(*std::max_element(counts.begin(), counts.end())) / 400.0;
  };
  const double initial = max_share();
  CHECK(initial > 0.5);
  for (int step = 0; step < 300; ++step) skewed.update_bias(tokens_per_expert(skewed.route(x).indices, 4));
  CHECK(max_share() < 0.35);
}

// ---------------------------------------------------------------- lifecycle

TEST_CASE("router: add_expert_row leaves the routing bit-identical", "[moe][router]") {
  for (Scoring scoring : kAllScorings) {
    for (bool mlp : {false, true}) {
      for (bool bias : {false, true}) {
        for (auto dtype : {mg::kFloat32, mg::kFloat64}) {
          INFO(scoring_name(scoring) << (mlp ? ", MLP gate" : ", linear gate")
                                     << (bias ? ", aux-loss-free bias" : "") << ", "
                                     << mg::dtype_name(dtype));
          RouterConfig c = config(3, 4, 2, scoring);
          if (mlp) c.gate_hidden = {5};
          c.noise = NoiseType::Learned;
          c.bias_update_rate = bias ? 0.1 : 0.0;
          Router router(c);
          router.eval();
          if (bias) router.update_bias({9, 1, 3, 3});
          const Tensor x = randn64({32, 3}, 12).to(dtype);
          const Routing before = router.route(x);
          const Tensor weight = router.output_layer_parameters()[0];
          const Tensor noise_weight = router.named_parameters().back().second;

          router.add_expert_row();
          CHECK(router.num_experts() == 5);
          CHECK(router.config().num_experts == 5);
          CHECK(router.output_layer_parameters()[0].is_same(weight));  // same handle, new rows
          CHECK(weight.sizes() == mg::Shape{5, mlp ? 5 : 3});
          CHECK(noise_weight.sizes() == mg::Shape{5, 3});
          CHECK(router.expert_bias.sizes() == mg::Shape{5});
          const Routing after = router.route(x);
          CHECK(ints(after.indices) == ints(before.indices));
          CHECK(after.weights.to_vector<double>() == before.weights.to_vector<double>());
          // the parked expert has score exactly 0, so the others' scores do not move either
          CHECK(after.scores.narrow(1, 0, 4).to_vector<double>() == before.scores.to_vector<double>());
          CHECK(after.scores.select(1, 4).abs().sum().item() == 0.0);
        }
      }
    }
  }
}

TEST_CASE("router: clone_expert_row copies the row", "[moe][router]") {
  RouterConfig c = config(3, 4, 2);
  c.noise = NoiseType::Learned;
  c.bias_update_rate = 0.1;
  Router router(c);
  router.update_bias({0, 1, 9, 2});
  const auto params = router.output_layer_parameters();
  Tensor weight = params[0], gate_bias = params[1];
  Tensor noise_weight = router.named_parameters().back().second;
  {
    mg::NoGradGuard no_grad;
    noise_weight.copy_(mg::randn({4, 3}));
  }
  weight.set_grad(mg::ones({4, 3}));  // an accumulated gradient follows the rows

  router.clone_expert_row(2, 0.0);
  CHECK(weight.sizes() == mg::Shape{5, 3});
  CHECK(weight[4].to_vector<float>() == weight[2].to_vector<float>());
  CHECK(gate_bias[4].item() == gate_bias[2].item());
  CHECK(router.expert_bias[4].item() == router.expert_bias[2].item());
  CHECK(noise_weight[4].to_vector<float>() == noise_weight[2].to_vector<float>());
  REQUIRE(weight.grad().defined());
  CHECK(weight.grad().to_vector<float>() ==
        std::vector<float>{1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0});
  router.eval();
  const Routing r = router.route(mg::randn({6, 3}));
  require_close(r.logits.select(1, 4), r.logits.select(1, 2), 0);

  router.clone_expert_row(0, 0.05);
  const Tensor diff = weight[5] - weight[0];
  CHECK(diff.abs().max().item() > 0);
  CHECK(diff.abs().max().item() < 0.5);
  CHECK(gate_bias[5].item() == gate_bias[0].item());
  CHECK_THROWS_WITH(router.clone_expert_row(6, 0.0), Catch::Contains("expert 6"));
}

TEST_CASE("router: remove_expert_row drops exactly that row", "[moe][router]") {
  RouterConfig c = config(3, 5, 2);
  c.noise = NoiseType::Learned;
  c.bias_update_rate = 0.1;
  c.mode = RoutingMode::Oracle;
  c.oracle_map = {4, 1, 2, 0};
  Router router(c);
  router.update_bias({0, 1, 9, 2, 2});
  const auto params = router.output_layer_parameters();
  Tensor weight = params[0], gate_bias = params[1];
  const std::vector<float> w = weight.to_vector<float>(), b = gate_bias.to_vector<float>();
  const std::vector<float> eb = router.expert_bias.to_vector<float>();
  weight.set_grad(mg::ones({5, 3}));

  router.remove_expert_row(1);
  CHECK(router.output_layer_parameters()[0].is_same(weight));
  CHECK(router.num_experts() == 4);
  CHECK(weight.sizes() == mg::Shape{4, 3});
  std::vector<float> w_expected = w, b_expected = b, eb_expected = eb;
  w_expected.erase(w_expected.begin() + 3, w_expected.begin() + 6);
  b_expected.erase(b_expected.begin() + 1);
  eb_expected.erase(eb_expected.begin() + 1);
  CHECK(weight.to_vector<float>() == w_expected);
  CHECK(gate_bias.to_vector<float>() == b_expected);
  CHECK(router.expert_bias.to_vector<float>() == eb_expected);
  CHECK(weight.grad().sizes() == mg::Shape{4, 3});
  CHECK(router.named_parameters().back().second.sizes() == mg::Shape{4, 3});
  // experts after the removed one shift down; the removed one's labels lose their mapping
  CHECK(router.config().oracle_map == std::vector<int32_t>{3, -1, 1, 0});
  const Tensor x = mg::randn({2, 3});
  CHECK(ints(router.route(x, i32({0, 3}, {2})).indices.select(1, 0)) == std::vector<int32_t>{3, 0});
  CHECK_THROWS_WITH(router.route(x, i32({1, 0}, {2})), Catch::Contains("removed"));

  router.remove_expert_row(0);
  router.remove_expert_row(0);
  CHECK_THROWS_WITH(router.remove_expert_row(0), Catch::Contains("top_k"));
  CHECK_THROWS_WITH(router.remove_expert_row(2), Catch::Contains("expert 2"));
}

// ---------------------------------------------------------------- FFNExpert

TEST_CASE("FFNExpert: layers, norms, and the factory", "[moe][expert]") {
  using mg::moe::FFNExpert;
  using mg::moe::FFNExpertConfig;
  FFNExpertConfig c;
  c.input_dim = 6;
  c.hidden = {8, 4};
  c.norm = "layernorm";
  c.activation = "gelu";
  c.dropout = 0.1;
  FFNExpert ln(c);
  CHECK(ln.config().output_dim == 6);
  CHECK(ln.size() == 9);  // (Linear, LayerNorm, GELU, Dropout) x 2, Linear
  CHECK(ln.forward(mg::randn({3, 6})).sizes() == mg::Shape{3, 6});

  c.norm = "batchnorm";
  c.dropout = 0.0;
  c.output_dim = 2;
  auto bn = std::make_shared<FFNExpert>(c);
  CHECK(bn->size() == 7);
  for (int64_t n : {2, 3, 17}) CHECK(bn->forward(mg::randn({n, 6})).sizes() == mg::Shape{n, 2});
  CHECK_THROWS_WITH(bn->forward(mg::randn({1, 6})), Catch::Contains("more than 1 value"));
  bn->eval();
  CHECK(bn->forward(mg::randn({1, 6})).sizes() == mg::Shape{1, 2});

  bn->to(mg::kFloat64);
  mg::nn::ModulePtr fresh = mg::moe::make_ffn_expert_like(*bn);
  auto* fresh_ffn = dynamic_cast<FFNExpert*>(fresh.get());
  REQUIRE(fresh_ffn != nullptr);
  CHECK(fresh_ffn->config().hidden == c.hidden);
  CHECK(fresh_ffn->config().norm == "batchnorm");
  CHECK_FALSE(fresh->is_training());
  CHECK(fresh->parameters().front().dtype() == mg::kFloat64);
  fresh->load_state_dict(bn->state_dict());

  CHECK_THROWS_WITH(mg::moe::make_ffn_expert_like(mg::nn::Linear(2, 2)), Catch::Contains("FFNExpert"));
  c.norm = "groupnorm";
  CHECK_THROWS_WITH(FFNExpert(c), Catch::Contains("norm"));
  c.norm = "none";
  c.activation = "swish";
  CHECK_THROWS_WITH(FFNExpert(c), Catch::Contains("activation"));
  c.activation = "relu";
  c.hidden = {};
  FFNExpert single(c);
  CHECK(single.size() == 1);
}
