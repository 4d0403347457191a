// MoELayer: sorted dispatch against the tutorial masked loop and the dense mixture, finite
// differences through the whole layer (router, noise, balancing losses, experts), capacity drops
// on hand-built routings, empty experts, [B, N, D] inputs, shared experts, labels, and the
// statistics (StepStats, StatsAccumulator, StuckGateDetector, JSON).
//
// Both expert paths are checked: the grouped Linear-ReLU-Linear kernel (taken for plain
// Sequential / FFNExpert experts) and the module path (forced with a Sequential subclass, which
// the grouped path does not recognize, computing the very same function).
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <set>
#include <map>

#include "engine/cpu/gemm_f32.hpp"
#include "gradcheck.hpp"
#include "moe/expert.hpp"
#include "moe/layer.hpp"
#include "nn/containers.hpp"
#include "nn/layers.hpp"

namespace nn = mg::nn;
namespace moe = mg::moe;
using mg::Tensor;
using mgtest::require_close;

namespace {

// Same math as Sequential, but not its exact type: the layer runs it through the module path.
class ModulePathSequential : public nn::Sequential {};

// Linear(D, H) -> ReLU -> Linear(H, D_out).
nn::ModulePtr ffn(int64_t D, int64_t H, int64_t D_out, bool grouped) {
  std::shared_ptr<nn::Sequential> s =
      grouped ? std::make_shared<nn::Sequential>() : std::make_shared<ModulePathSequential>();
  s->push_back(std::make_shared<nn::Linear>(D, H));
  s->push_back(std::make_shared<nn::ReLU>());
  s->push_back(std::make_shared<nn::Linear>(H, D_out));
  return s;
}

moe::MoEConfig config(int64_t D, int64_t E, int64_t k) {
  moe::MoEConfig c;
  c.router.input_dim = D;
  c.router.num_experts = E;
  c.router.top_k = k;
  c.router.seed = 7;
  return c;
}

// Expert e has hidden size H + e (the grouped kernel handles unequal experts). The default
// generator is seeded first, so the two paths get identical weights from one seed.
std::shared_ptr<moe::MoELayer> make_layer(const moe::MoEConfig& c, int64_t H, bool grouped,
                                          int64_t D_out = 0, mg::ScalarType dtype = mg::kFloat64,
                                          std::vector<nn::ModulePtr> shared = {}) {
  mg::manual_seed(11);
  const int64_t D = c.router.input_dim;
  std::vector<nn::ModulePtr> experts;
  for (int64_t e = 0; e < c.router.num_experts; ++e) experts.push_back(ffn(D, H + e, D_out ? D_out : D, grouped));
  auto layer = std::make_shared<moe::MoELayer>(c, experts, shared);
  layer->to(dtype);
  return layer;
}

Tensor randn(const mg::Shape& s, uint64_t seed, mg::ScalarType dtype = mg::kFloat64) {
  mg::Generator g(seed);
  return mg::randn(s, dtype, &g);
}
Tensor i32(const std::vector<int32_t>& v) { return mg::from_vector(v, {static_cast<int64_t>(v.size())}, mg::kInt32); }

// Every parameter's gradient by name (zeros where none was accumulated).
std::map<std::string, Tensor> grads_of(const nn::Module& m) {
  std::map<std::string, Tensor> out;
  for (const auto& [name, p] : m.named_parameters())
    out[name] = p.grad().defined() ? p.grad().clone() : mg::zeros_like(p);
  return out;
}

// One check per tensor (they can be large): every element within atol + rtol * |expected|, the
// worst one reported.
void require_all_close(const Tensor& actual, const Tensor& expected, double atol, double rtol) {
  REQUIRE(actual.sizes() == expected.sizes());
  const auto a = actual.to_vector<double>(), e = expected.to_vector<double>();
  int64_t worst = -1;
  double worst_excess = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double excess = std::abs(a[i] - e[i]) - (atol + rtol * std::abs(e[i]));
    if (excess > worst_excess || (std::isnan(excess) && worst < 0)) {
      worst = static_cast<int64_t>(i);
      worst_excess = std::isnan(excess) ? INFINITY : excess;
    }
  }
  INFO("worst element " << worst << ": " << (worst >= 0 ? a[worst] : 0.0) << " vs expected "
                        << (worst >= 0 ? e[worst] : 0.0));
  CHECK(worst < 0);
}

void require_same_grads(const std::map<std::string, Tensor>& a, const std::map<std::string, Tensor>& b,
                        double atol, double rtol) {
  REQUIRE(a.size() == b.size());
  for (const auto& [name, g] : a) {
    INFO("gradient of " << name);
    REQUIRE(b.count(name) == 1);
    require_all_close(g, b.at(name), atol, rtol);
  }
}

bool all_zero_or_undefined(const Tensor& g) {
  if (!g.defined()) return true;
  for (double v : g.to_vector<double>())
    if (v != 0.0) return false;
  return true;
}

// The tutorial MoE (reference moe_layer.py's "naive"): every expert on ALL inputs, weighted by
// the combine weight it got (0 where it was not chosen), summed.
Tensor naive_moe(moe::MoELayer& layer, const Tensor& x2, const moe::Routing& r) {
  const int64_t T = x2.size(0), k = r.indices.size(1);
  const std::vector<int32_t> idx = r.indices.to_vector<int32_t>();
  Tensor out;
  for (int64_t e = 0; e < layer.num_experts(); ++e) {
    std::vector<double> mask(T * k);
    for (int64_t p = 0; p < T * k; ++p) mask[p] = idx[p] == e ? 1.0 : 0.0;
    const Tensor gate = (r.weights * mg::from_vector(mask, {T, k}, r.weights.dtype())).sum({1}, true);
    const Tensor y = gate * layer.expert(e)->forward(x2);
    out = out.defined() ? out + y : y;
  }
  return out;
}

// Sets the linear gate to logits = x W^T + b.
void set_gate(moe::MoELayer& layer, const Tensor& weight, const Tensor& bias) {
  mg::NoGradGuard no_grad;
  auto params = layer.router().output_layer_parameters();
  params[0].copy_(weight);
  params[1].copy_(bias);
}

bool took_grouped_path(moe::MoELayer& layer, const Tensor& x, const Tensor& labels = {}) {
  mg::profiler::reset();
  mg::profiler::enable();
  {
    mg::NoGradGuard no_grad;
    layer.forward(x, labels);
  }
  mg::profiler::enable(false);
  bool grouped = false;
  for (const auto& s : mg::profiler::stats()) grouped = grouped || s.name == "grouped_mlp";
  mg::profiler::reset();
  return grouped;
}

}  // namespace

// ---------------------------------------------------------------- dispatch against references

TEST_CASE("MoELayer: sorted dispatch equals the naive masked loop (outputs and all gradients)", "[moe][layer]") {
  for (bool grouped : {true, false}) {
    for (mg::ScalarType dtype : {mg::kFloat64, mg::kFloat32}) {
      INFO((grouped ? "grouped path" : "module path") << ", " << mg::dtype_name(dtype));
      const double tol = dtype == mg::kFloat64 ? 1e-12 : 2e-5;
      auto layer = make_layer(config(6, 5, 2), 5, grouped, 0, dtype);
      Tensor x = randn({37, 6}, 3, dtype).requires_grad_();
      const Tensor g = randn({37, 6}, 4, dtype);

      Tensor out = layer->forward(x);
      (out * g).sum().backward();
      const auto sorted_grads = grads_of(*layer);
      const Tensor sorted_gx = x.grad().clone();

      layer->zero_grad();
      x.set_grad(Tensor());
      const moe::Routing r = layer->router().route(x);
      Tensor reference = naive_moe(*layer, x, r);
      (reference * g).sum().backward();
      // Float32 outputs are bit-identical: every expert output is the same fixed-order GEMM sum
      // (engine/cpu/gemm_f32.hpp) on either path, and each input's weighted outputs are added in
      // expert order on both. Float64 GEMMs differ between the paths (Eigen on the module path).
      const bool exact = dtype == mg::kFloat32 && mg::cpu::gemm_f32_available();
      require_close(out, reference, exact ? 0 : tol, exact ? 0 : tol);
      require_close(sorted_gx, x.grad(), tol, tol);
      require_same_grads(sorted_grads, grads_of(*layer), tol, tol);
      // the router got gradient through the combine weights
      CHECK_FALSE(all_zero_or_undefined(sorted_grads.at("router.gate.0.weight")));
    }
  }
}

// Outputs and all gradients of the grouped kernel against the module path (equal up to rounding)
// and across 1, 2 and 3 threads. Its tasks do not depend on the thread count, so with Oracle
// routing (top-1, weight exactly 1) the whole layer is bit-identical for any thread count; with
// learned routing the router's GEMM (the engine's) may round differently per thread count.
void check_grouped_against_modules(int64_t D, int64_t H, int64_t E, int64_t B, int64_t N, mg::ScalarType dtype) {
  // the module path sums in another order: float64 agrees to ~1e-15, float32 to ~1e-6
  const double tol = dtype == mg::kFloat64 ? 1e-12 : 1e-4;
  for (bool oracle : {false, true}) {
    INFO("D " << D << ", H " << H << ", E " << E << ", tokens " << B * N << (oracle ? ", oracle" : "")
              << ", " << mg::dtype_name(dtype));
    moe::MoEConfig c = config(D, E, oracle ? 1 : 2);
    if (oracle) {
      c.router.mode = moe::RoutingMode::Oracle;
      for (int32_t e = 0; e < E; ++e) c.router.oracle_map.push_back(e);
    }
    auto grouped = make_layer(c, H, true, 5, dtype);
    auto modules = make_layer(c, H, false, 5, dtype);
    const Tensor x = randn({B, N, D}, 5, dtype);
    std::vector<int32_t> label_values(B * N);  // 9 in 10 inputs to expert 0: a big expert
    for (int64_t t = 0; t < B * N; ++t) label_values[t] = t % 10 == 0 ? static_cast<int32_t>(1 + t % (E - 1)) : 0;
    const Tensor labels = mg::from_vector(label_values, {B, N}, mg::kInt32);
    CHECK(took_grouped_path(*grouped, x, labels));
    CHECK_FALSE(took_grouped_path(*modules, x, labels));
    const Tensor g = randn({B, N, 5}, 6, dtype);
    auto run = [&](moe::MoELayer& layer, int threads) {
      const int before = mg::get_num_threads();
      mg::set_num_threads(threads);
      layer.zero_grad();
      Tensor xl = x.clone().requires_grad_();
      Tensor out = layer.forward(xl, labels);
      (out * g).sum().backward();
      mg::set_num_threads(before);
      auto grads = grads_of(layer);
      grads["x"] = xl.grad();
      grads["out"] = out.detach();
      return grads;
    };
    const auto a1 = run(*grouped, 1);
    for (int threads : {2, 3}) {
      INFO(threads << " threads");
      require_same_grads(a1, run(*grouped, threads), oracle ? 0 : tol, oracle ? 0 : tol);
    }
    require_same_grads(a1, run(*modules, 2), tol, tol);
  }
}

TEST_CASE("MoELayer: the grouped kernel equals the module path, for any thread count", "[moe][layer]") {
  check_grouped_against_modules(8, 7, 6, 3, 11, mg::kFloat64);  // small experts: one task each
  // Experts large enough that their inputs are cut into several tasks and the big expert's
  // first-layer weight gradient [H, D] into several tiles: across columns, then across rows
  // (float32: the engine's GEMM, as in training).
  check_grouped_against_modules(512, 192, 2, 110, 11, mg::kFloat32);
  check_grouped_against_modules(256, 640, 2, 110, 11, mg::kFloat32);
  // a small expert (one task for its whole backward) whose weight gradient still takes 2 tiles
  check_grouped_against_modules(512, 640, 2, 20, 20, mg::kFloat32);
}

TEST_CASE("MoELayer: top_k = E without noise is the dense softmax-weighted mixture", "[moe][layer]") {
  for (bool grouped : {true, false}) {
    INFO((grouped ? "grouped path" : "module path"));
    auto layer = make_layer(config(5, 4, 4), 6, grouped);
    Tensor x = randn({9, 5}, 8).requires_grad_();
    Tensor out = layer->forward(x);
    out.sum().backward();
    const Tensor gx = x.grad().clone();

    x.set_grad(Tensor());
    const auto gate = layer->router().output_layer_parameters();
    const Tensor p = mg::softmax(mg::linear(x, gate[0], gate[1]), 1);
    Tensor dense;
    for (int64_t e = 0; e < 4; ++e) {
      const Tensor y = p.narrow(1, e, 1) * layer->expert(e)->forward(x);
      dense = dense.defined() ? dense + y : y;
    }
    dense.sum().backward();
    require_close(out, dense, 1e-12, 1e-12);
    require_close(gx, x.grad(), 1e-12, 1e-12);
  }
}

// ---------------------------------------------------------------- gradients by finite differences

// Central differences of sum(out * w) + aux_loss w.r.t. x and every parameter, against backward.
// The router's generator is reseeded before every forward, so each sees the same noise draw.
void check_layer_gradients(moe::MoELayer& layer, const Tensor& x_in, uint64_t noise_seed) {
  Tensor x = x_in.clone().requires_grad_();
  mg::Shape out_shape = x.sizes();
  Tensor w;
  auto objective = [&] {
    layer.router().generator().manual_seed(noise_seed);
    Tensor out = layer.forward(x);
    if (!w.defined()) w = randn(out.sizes(), 99);
    return (out * w).sum() + layer.aux_loss();
  };
  layer.zero_grad();
  objective().backward();
  REQUIRE(layer.aux_loss().item() != 0.0);  // the balancing losses are part of the check

  std::vector<std::pair<std::string, Tensor>> leaves{{"x", x}};
  for (const auto& np : layer.named_parameters()) leaves.push_back(np);
  const double eps = 1e-6;
  for (auto& [name, leaf] : leaves) {
    INFO("gradient of " << name);
    const std::vector<double> analytic = leaf.grad().defined() ? leaf.grad().to_vector<double>()
                                                               : std::vector<double>(leaf.numel(), 0.0);
    double* data = leaf.data_ptr<double>();
    for (int64_t i = 0; i < leaf.numel(); ++i) {
      mg::NoGradGuard no_grad;
      const double saved = data[i];
      data[i] = saved + eps;
      const double plus = objective().item();
      data[i] = saved - eps;
      const double minus = objective().item();
      data[i] = saved;
      const double numeric = (plus - minus) / (2 * eps);
      INFO("element " << i << ": analytic " << analytic[i] << ", numeric " << numeric);
      CHECK(std::abs(analytic[i] - numeric) <= 1e-7 + 1e-5 * std::abs(numeric));
    }
  }
}

TEST_CASE("MoELayer: gradient check through the whole layer (noise fixed by seed)", "[moe][layer]") {
  for (bool grouped : {true, false}) {
    for (moe::NoiseType noise : {moe::NoiseType::Learned, moe::NoiseType::Jitter}) {
      for (double capacity : {0.0, 1.0}) {
        INFO((grouped ? "grouped path" : "module path") << ", noise " << static_cast<int>(noise)
                                                        << ", capacity " << capacity);
        moe::MoEConfig c = config(3, 3, 2);
        c.router.noise = noise;
        c.router.jitter_eps = 0.1;
        c.capacity_factor = capacity;
        c.balance.switch_coef = 0.1;
        c.balance.variance_coef = 0.3;
        c.balance.importance_coef = 0.05;
        c.balance.load_coef = noise == moe::NoiseType::Learned ? 0.05 : 0.0;
        c.balance.z_coef = 0.01;
        auto layer = make_layer(c, 4, grouped);
        {  // a non-zero noise projection, so its gradient is a real check
          mg::NoGradGuard no_grad;
          for (auto& [name, p] : layer->named_parameters())
            if (name.find("noise_proj") != std::string::npos) p.copy_(randn(p.sizes(), 17) * 0.5);
        }
        check_layer_gradients(*layer, randn({2, 3, 3}, 21), 5);
      }
    }
  }
}

// ---------------------------------------------------------------- capacity, empty experts

TEST_CASE("MoELayer: capacity keeps each expert's first inputs and drops exactly the rest", "[moe][layer]") {
  // Oracle routing (top-1, weight 1) makes the assignment a hand-built table.
  for (bool grouped : {true, false}) {
    for (auto [capacity, kept, dropped_tokens] :
         {std::tuple{1.0, std::vector<int64_t>{3, 2, 1}, std::vector<int>{4, 6}},     // ceil(8/3) = 3
          std::tuple{0.5, std::vector<int64_t>{2, 2, 1}, std::vector<int>{2, 4, 6}},  // ceil(4/3) = 2
          std::tuple{0.0, std::vector<int64_t>{5, 2, 1}, std::vector<int>{}}}) {
      INFO((grouped ? "grouped path" : "module path") << ", capacity " << capacity);
      moe::MoEConfig c = config(4, 3, 1);
      c.router.mode = moe::RoutingMode::Oracle;
      c.router.oracle_map = {0, 1, 2};
      c.capacity_factor = capacity;
      auto layer = make_layer(c, 5, grouped);
      const Tensor x = randn({8, 4}, 2);
      const Tensor labels = i32({0, 0, 0, 1, 0, 2, 0, 1});
      const Tensor out = layer->forward(x, labels);
      const moe::StepStats& s = layer->last_stats();
      CHECK(s.tokens_per_expert == kept);
      CHECK(s.dropped == static_cast<int64_t>(dropped_tokens.size()));
      const std::vector<int32_t> expert_of{0, 0, 0, 1, 0, 2, 0, 1};
      for (int t = 0; t < 8; ++t) {
        INFO("input " << t);
        const bool dropped = std::find(dropped_tokens.begin(), dropped_tokens.end(), t) != dropped_tokens.end();
        const Tensor expected = dropped ? mg::zeros({1, 4}, mg::kFloat64)
                                        : layer->expert(expert_of[t])->forward(x.narrow(0, t, 1));
        require_close(out.narrow(0, t, 1), expected, 1e-14, 1e-14);
      }
    }
  }
}

TEST_CASE("MoELayer: capacity with top-2 drops second choices in input order", "[moe][layer]") {
  // Oracle picks the first expert; the second is the best other one by the gate, here set to
  // constant logits [3, 2, 1]: label 0 -> (0, 1), label 1 -> (1, 0), label 2 -> (2, 0).
  // Capacity ceil(1 * 6 * 2 / 3) = 4: expert 0 is chosen by the pairs of inputs 0..5 in that
  // order and keeps those of inputs 0..3; the second choices of inputs 4 and 5 are dropped.
  for (bool grouped : {true, false}) {
    INFO((grouped ? "grouped path" : "module path"));
    moe::MoEConfig c = config(4, 3, 2);
    c.router.mode = moe::RoutingMode::Oracle;
    c.router.oracle_map = {0, 1, 2};
    c.capacity_factor = 1.0;
    auto layer = make_layer(c, 5, grouped);
    set_gate(*layer, mg::zeros({3, 4}, mg::kFloat64), mg::from_vector(std::vector<double>{3, 2, 1}, {3}, mg::kFloat64));
    const Tensor x = randn({6, 4}, 2);
    const Tensor out = layer->forward(x, i32({0, 1, 2, 0, 1, 2}));
    const moe::StepStats& s = layer->last_stats();
    CHECK(s.tokens_per_expert == std::vector<int64_t>{4, 4, 2});
    CHECK(s.dropped == 2);
    const moe::Routing& r = layer->last_routing();
    CHECK(r.indices.to_vector<int32_t>() == std::vector<int32_t>{0, 1, 1, 0, 2, 0, 0, 1, 1, 0, 2, 0});
    const std::vector<double> w = r.weights.to_vector<double>();
    const std::vector<int32_t> idx = r.indices.to_vector<int32_t>();
    for (int t = 0; t < 6; ++t) {
      INFO("input " << t);
      const Tensor xt = x.narrow(0, t, 1);
      Tensor expected = layer->expert(idx[2 * t])->forward(xt) * w[2 * t];
      if (t < 4) expected = expected + layer->expert(idx[2 * t + 1])->forward(xt) * w[2 * t + 1];
      require_close(out.narrow(0, t, 1), expected, 1e-14, 1e-14);
    }
  }
}

TEST_CASE("MoELayer: an expert that receives no input is skipped (no NaN, zero gradient)", "[moe][layer]") {
  for (bool grouped : {true, false}) {
    INFO((grouped ? "grouped path" : "module path"));
    moe::MoEConfig c = config(4, 3, 1);
    c.router.mode = moe::RoutingMode::Oracle;
    c.router.oracle_map = {0, 1, 2};
    c.balance.switch_coef = 0.01;
    auto layer = make_layer(c, 5, grouped);
    Tensor x = randn({6, 4}, 2).requires_grad_();
    Tensor out = layer->forward(x, i32({0, 1, 0, 1, 1, 0}));  // nobody goes to expert 2
    (out.sum() + layer->aux_loss()).backward();
    for (double v : out.to_vector<double>()) CHECK(std::isfinite(v));
    for (double v : x.grad().to_vector<double>()) CHECK(std::isfinite(v));
    for (const auto& [name, p] : layer->named_parameters()) {
      INFO(name);
      if (name.rfind("experts.2.", 0) == 0) CHECK(all_zero_or_undefined(p.grad()));
      if (name.rfind("experts.0.", 0) == 0) CHECK_FALSE(all_zero_or_undefined(p.grad()));
    }
    const moe::StepStats& s = layer->last_stats();
    CHECK(s.tokens_per_expert == std::vector<int64_t>{3, 3, 0});
    CHECK(std::isfinite(s.load_entropy));
    CHECK(s.load_entropy == Approx(std::log(2.0)));
  }
}

TEST_CASE("MoELayer: a frozen expert gets no gradient on the grouped path, the others exact ones", "[moe][layer]") {
  auto grouped = make_layer(config(5, 4, 2), 6, true);
  auto modules = make_layer(config(5, 4, 2), 6, false);
  grouped->expert(1)->freeze();
  modules->expert(1)->freeze();
  auto run = [](moe::MoELayer& layer) {
    Tensor x = randn({20, 5}, 3).requires_grad_();
    layer.forward(x).pow(2.0).sum().backward();
    auto grads = grads_of(layer);
    grads["x"] = x.grad();
    return grads;
  };
  const auto a = run(*grouped), b = run(*modules);
  require_same_grads(a, b, 1e-12, 1e-12);
  for (const auto& p : grouped->expert(1)->parameters()) CHECK_FALSE(p.grad().defined());
  for (const auto& p : grouped->expert(0)->parameters()) CHECK(p.grad().defined());
}

// ---------------------------------------------------------------- shapes, shared experts, labels

TEST_CASE("MoELayer: [B, N, D] routes per token and equals the flattened [B * N, D] call", "[moe][layer]") {
  for (bool grouped : {true, false}) {
    auto layer = make_layer(config(6, 4, 2), 5, grouped, /*D_out=*/3);
    const Tensor x = randn({2, 5, 6}, 4);
    mg::NoGradGuard no_grad;
    const Tensor out3 = layer->forward(x);
    CHECK(out3.sizes() == mg::Shape{2, 5, 3});
    CHECK(layer->last_stats().inputs == 10);
    const Tensor out2 = layer->forward(x.reshape({10, 6}));
    CHECK(out2.sizes() == mg::Shape{10, 3});
    require_close(out3.reshape({10, 3}), out2, 0, 0);
  }
  auto layer = make_layer(config(6, 4, 2), 5, true);
  CHECK_THROWS_WITH(layer->forward(randn({2, 5}, 1)), Catch::Contains("expected input [B, 6]"));
  CHECK_THROWS_WITH(layer->forward(randn({1, 2, 3, 6}, 1)), Catch::Contains("[B, N, 6]"));
}

TEST_CASE("MoELayer: shared experts see every input and add to the routed output", "[moe][layer]") {
  mg::manual_seed(3);
  auto shared = std::make_shared<nn::Linear>(6, 6);
  shared->to(mg::kFloat64);
  auto with_shared = make_layer(config(6, 4, 2), 5, true, 0, mg::kFloat64, {shared});
  auto without = make_layer(config(6, 4, 2), 5, true);
  Tensor x = randn({2, 3, 6}, 4).requires_grad_();
  Tensor out = with_shared->forward(x);
  require_close(out, without->forward(x) + shared->forward(x), 1e-14, 1e-14);
  out.sum().backward();
  CHECK_FALSE(all_zero_or_undefined(shared->weight.grad()));

  // names are stable and say what they are
  std::vector<std::string> names;
  for (const auto& [name, t] : with_shared->state_dict()) names.push_back(name);
  for (const char* expected : {"router.gate.0.weight", "router.expert_bias", "experts.0.0.weight",
                               "experts.3.2.bias", "shared_experts.0.weight"})
    CHECK(std::find(names.begin(), names.end(), expected) != names.end());
}

TEST_CASE("MoELayer: per-example labels are repeated over the example's tokens", "[moe][layer]") {
  moe::MoEConfig c = config(4, 3, 1);
  c.router.mode = moe::RoutingMode::Oracle;
  c.router.oracle_map = {2, 0, 1};
  auto layer = make_layer(c, 5, true);
  const Tensor x = randn({2, 3, 4}, 1);
  layer->forward(x, i32({0, 1}));  // example 0 -> expert 2, example 1 -> expert 0
  CHECK(layer->last_routing().indices.to_vector<int32_t>() == std::vector<int32_t>{2, 2, 2, 0, 0, 0});
  CHECK(layer->last_stats().tokens_per_expert == std::vector<int64_t>{3, 0, 3});
  // one label per token is taken as it is
  layer->forward(x, mg::from_vector(std::vector<int32_t>{0, 1, 2, 2, 1, 0}, {2, 3}, mg::kInt32));
  CHECK(layer->last_routing().indices.to_vector<int32_t>() == std::vector<int32_t>{2, 0, 1, 1, 0, 2});
  CHECK_THROWS_WITH(layer->forward(x, i32({0, 1, 2})), Catch::Contains("labels must be int32 [B]"));
}

TEST_CASE("MoELayer: the constructor validates the experts against the config", "[moe][layer]") {
  auto experts = [](int n) {
    std::vector<nn::ModulePtr> v;
    for (int i = 0; i < n; ++i) v.push_back(ffn(4, 5, 4, true));
    return v;
  };
  CHECK_THROWS_WITH(moe::MoELayer(config(4, 3, 1), {}), Catch::Contains("at least one expert"));
  CHECK_THROWS_WITH(moe::MoELayer(config(4, 3, 1), experts(2)), Catch::Contains("2 experts but"));
  CHECK_THROWS_WITH(moe::MoELayer(config(0, 3, 1), experts(3)), Catch::Contains("input_dim must be set"));
  moe::MoEConfig c = config(4, 3, 1);
  c.capacity_factor = -1;
  CHECK_THROWS_WITH(moe::MoELayer(c, experts(3)), Catch::Contains("capacity_factor"));
  CHECK_THROWS_WITH(moe::MoELayer(config(4, 3, 1), experts(3)).expert(3), Catch::Contains("out of range"));
}

// ---------------------------------------------------------------- statistics

TEST_CASE("MoELayer: step statistics on a hand-built routing", "[moe][layer]") {
  // Gate weights 0 and biases log(1, 2, 5): every input scores p = (1, 2, 5) / 8. Oracle routing
  // sends the 6 inputs to experts (0, 0, 0, 1, 1, 2).
  moe::MoEConfig c = config(4, 3, 1);
  c.router.mode = moe::RoutingMode::Oracle;
  c.router.oracle_map = {0, 1, 2};
  c.balance.switch_coef = 0.5;
  auto layer = make_layer(c, 5, true);
  set_gate(*layer, mg::zeros({3, 4}, mg::kFloat64),
           mg::from_vector(std::vector<double>{0, std::log(2.0), std::log(5.0)}, {3}, mg::kFloat64));
  const Tensor x = randn({6, 4}, 2);
  const Tensor labels = i32({0, 0, 0, 1, 1, 2});
  layer->forward(x, labels);
  const std::vector<double> p{1 / 8.0, 2 / 8.0, 5 / 8.0};
  const double router_entropy = -(p[0] * std::log(p[0]) + p[1] * std::log(p[1]) + p[2] * std::log(p[2]));
  {
    const moe::StepStats& s = layer->last_stats();
    CHECK(s.inputs == 6);
    CHECK(s.num_experts == 3);
    CHECK(s.top_k == 1);
    CHECK(s.tokens_per_expert == std::vector<int64_t>{3, 2, 1});
    REQUIRE(s.fraction.size() == 3);
    CHECK(s.fraction[0] == Approx(0.5));
    CHECK(s.fraction[1] == Approx(1 / 3.0));
    CHECK(s.fraction[2] == Approx(1 / 6.0));
    for (int e = 0; e < 3; ++e) CHECK(s.mean_gate_prob[e] == Approx(p[e]).epsilon(1e-12));
    CHECK(s.router_entropy == Approx(router_entropy).epsilon(1e-12));
    CHECK(s.load_entropy == Approx(-(0.5 * std::log(0.5) + std::log(1 / 3.0) / 3 + std::log(1 / 6.0) / 6)));
    CHECK(s.max_over_mean_load == Approx(1.5));
    CHECK(s.dropped == 0);
    CHECK(s.bias.empty());
    // Switch: E * sum_i f_i P_i with the routed shares f
    CHECK(s.losses.switch_value == Approx(3 * (0.5 * p[0] + p[1] / 3 + p[2] / 6)));
    CHECK(layer->aux_loss().item() == Approx(0.5 * s.losses.switch_value));
  }
  // capacity ceil(6 / 3) = 2 drops expert 0's third input
  c.capacity_factor = 1.0;
  c.router.bias_update_rate = 0.1;
  auto capped = make_layer(c, 5, true);
  capped->forward(x, labels);
  const moe::StepStats& s = capped->last_stats();
  CHECK(s.tokens_per_expert == std::vector<int64_t>{2, 2, 1});
  CHECK(s.dropped == 1);
  CHECK(s.fraction[0] == Approx(0.4));
  CHECK(s.max_over_mean_load == Approx(2 / (5 / 3.0)));
  CHECK(s.bias == std::vector<double>{0, 0, 0});
  // aux-loss-free balancing moves the bias against the processed load (mean 5/3)
  capped->update_router_bias();
  const std::vector<double> bias = capped->router().expert_bias.to_vector<double>();
  CHECK(bias[0] == Approx(-0.1));
  CHECK(bias[1] == Approx(-0.1));
  CHECK(bias[2] == Approx(0.1));
  layer->update_router_bias();  // off: a no-op
  CHECK(layer->router().expert_bias.to_vector<double>() == std::vector<double>{0, 0, 0});
}

namespace {
moe::StepStats hand_step(std::vector<int64_t> tokens, std::vector<double> gate_prob, double entropy,
                         double switch_value) {
  moe::StepStats s;
  s.inputs = 3;
  s.num_experts = 2;
  s.top_k = 1;
  s.tokens_per_expert = std::move(tokens);
  s.mean_gate_prob = std::move(gate_prob);
  s.router_entropy = entropy;
  s.losses.switch_value = switch_value;
  return s;
}
Tensor top1(const std::vector<int32_t>& v) {
  return mg::from_vector(v, {static_cast<int64_t>(v.size()), 1}, mg::kInt32);
}
}  // namespace

TEST_CASE("StatsAccumulator: epoch sums, class-by-expert counts and router accuracy", "[moe][layer]") {
  moe::StatsAccumulator acc(2, 2);
  CHECK(std::isnan(acc.router_accuracy()));
  const std::vector<int32_t> oracle{0, 1};
  acc.add(hand_step({2, 1}, {0.6, 0.4}, 0.5, 1.0), top1({0, 0, 1}), i32({0, 0, 1}), oracle);  // 3 of 3 agree
  acc.add(hand_step({1, 2}, {0.3, 0.7}, 0.2, 2.0), top1({1, 1, 0}), i32({0, 1, 1}), oracle);  // 1 of 3
  CHECK(acc.steps() == 2);
  CHECK(acc.class_by_expert() == std::vector<std::vector<int64_t>>{{2, 1}, {1, 2}});
  CHECK(acc.router_accuracy() == Approx(4 / 6.0));
  const moe::StepStats e = acc.epoch();
  CHECK(e.inputs == 6);
  CHECK(e.tokens_per_expert == std::vector<int64_t>{3, 3});
  CHECK(e.fraction == std::vector<double>{0.5, 0.5});
  CHECK(e.load_entropy == Approx(std::log(2.0)));
  CHECK(e.max_over_mean_load == Approx(1.0));
  CHECK(e.mean_gate_prob[0] == Approx(0.45));
  CHECK(e.mean_gate_prob[1] == Approx(0.55));
  CHECK(e.router_entropy == Approx(0.35));
  CHECK(e.losses.switch_value == Approx(1.5));
  CHECK(std::isnan(e.losses.variance_value));

  // Per-example labels against per-token routing: each label covers T / B inputs. Without
  // num_classes the matrix grows with the labels seen.
  moe::StatsAccumulator tokens(2);
  tokens.add(hand_step({3, 1}, {0.5, 0.5}, 0.1, NAN), top1({0, 0, 1, 0}), i32({0, 3}));
  CHECK(tokens.class_by_expert() == std::vector<std::vector<int64_t>>{{2, 0}, {0, 0}, {0, 0}, {1, 1}});
  CHECK(std::isnan(tokens.router_accuracy()));
  CHECK_THROWS_WITH(acc.add(hand_step({1, 1, 1}, {}, 0, 0)), Catch::Contains("tokens_per_expert has 3 entries"));
}

TEST_CASE("StuckGateDetector: fires once per collapse, after `patience` steps", "[moe][layer]") {
  moe::StuckGateDetector detector(0.8, 3);
  auto step = [](std::vector<int64_t> tokens) {
    moe::StepStats s;
    s.num_experts = static_cast<int64_t>(tokens.size());
    s.tokens_per_expert = std::move(tokens);
    return s;
  };
  CHECK_FALSE(detector.update(step({9, 1})));
  CHECK_FALSE(detector.update(step({9, 1})));
  CHECK(detector.update(step({9, 1})));  // third step over 80%
  CHECK(detector.stuck_expert() == 0);
  CHECK_THAT(detector.message(), Catch::Contains("expert 0") && Catch::Contains("80.0%"));
  CHECK_FALSE(detector.update(step({9, 1})));  // reported already
  CHECK_FALSE(detector.update(step({8, 2})));  // exactly 80% is not over: clears
  CHECK(detector.stuck_expert() == -1);
  CHECK_FALSE(detector.update(step({1, 9})));
  CHECK_FALSE(detector.update(step({9, 1})));  // another expert took over: its run restarts
  CHECK_FALSE(detector.update(step({9, 1})));
  CHECK(detector.update(step({9, 1})));
  CHECK_FALSE(detector.update(step({0, 0})));  // no assignments: not stuck
}

TEST_CASE("StepStats and StatsAccumulator write one parseable JSON line", "[moe][layer]") {
  moe::MoEConfig c = config(4, 3, 2);
  c.balance.switch_coef = 0.01;
  auto layer = make_layer(c, 5, true);
  layer->forward(randn({10, 4}, 1));
  const std::string line = layer->last_stats().to_json();
  CHECK(line.find('\n') == std::string::npos);
  const auto j = nlohmann::json::parse(line);
  CHECK(j["inputs"] == 10);
  CHECK(j["top_k"] == 2);
  CHECK(j["tokens_per_expert"].size() == 3);
  CHECK(j["dropped"] == 0);
  CHECK(j["fraction"].size() == 3);
  CHECK(j["router_entropy"].is_number());
  CHECK(j["losses"]["switch"].is_number());
  CHECK(j["bias"].is_array());

  moe::StatsAccumulator acc(3, 2);
  moe::StepStats s = layer->last_stats();
  s.losses.variance_value = NAN;
  acc.add(s, layer->last_routing().indices, i32({0, 1, 0, 1, 0, 1, 0, 1, 0, 1}), {0, 1});
  const auto e = nlohmann::json::parse(acc.to_json());
  CHECK(e["steps"] == 1);
  CHECK(e["class_by_expert"].size() == 2);
  CHECK(e["router_accuracy"].is_number());
  CHECK(e["losses"]["variance"].is_null());  // NaN has no JSON spelling
}

TEST_CASE("a BatchNorm expert routed a single input in training names itself in the error", "[moe][layer]") {
  mg::moe::MoEConfig config;
  config.router.input_dim = 4;
  config.router.num_experts = 2;
  config.router.top_k = 1;
  config.router.mode = mg::moe::RoutingMode::Oracle;
  config.router.oracle_map = {0, 1};
  std::vector<mg::nn::ModulePtr> experts;
  for (int e = 0; e < 2; ++e)
    experts.push_back(std::make_shared<mg::moe::FFNExpert>(mg::moe::FFNExpertConfig{4, 4, {8}, "batchnorm"}));
  mg::moe::MoELayer layer(config, experts);
  const mg::Tensor x = mg::randn({4, 4});
  CHECK_THROWS_WITH(layer.forward(x, mg::from_vector<int32_t>({0, 0, 0, 1}, {4}, mg::kInt32)),
                    Catch::Contains("expert 1") && Catch::Contains("1 routed input") &&
                        Catch::Contains("more than 1 value per channel"));
  // two inputs each: fine
  CHECK(layer.forward(x, mg::from_vector<int32_t>({0, 0, 1, 1}, {4}, mg::kInt32)).sizes() == mg::Shape{4, 4});
}

TEST_CASE("best_assignment finds the best one-to-one group -> expert map", "[moe][stats]") {
  // Brute force over every injective map on random count tables, square and not.
  mg::Generator gen(5);
  for (auto [G, E] : {std::pair<int, int>{4, 4}, {5, 3}, {3, 6}}) {
    for (int trial = 0; trial < 20; ++trial) {
      const std::vector<double> flat = (mg::rand({G * E}, mg::kFloat64, &gen) * 100).to_vector<double>();
      std::vector<std::vector<double>> counts(G, std::vector<double>(E));
      double total = 0;
      for (int g = 0; g < G; ++g)
        for (int e = 0; e < E; ++e) total += counts[g][e] = std::floor(flat[g * E + e]);
      // best over maps: permute the larger side, pair the first min(G, E) of it with the other
      const int n = std::max(G, E), k = std::min(G, E);
      std::vector<int> perm(n);
      for (int i = 0; i < n; ++i) perm[i] = i;
      double best = 0;
      do {
        double agreed = 0;
        for (int i = 0; i < k; ++i) agreed += G <= E ? counts[i][perm[i]] : counts[perm[i]][i];
        best = std::max(best, agreed);
      } while (std::next_permutation(perm.begin(), perm.end()));
      const mg::moe::GroupAssignment a = mg::moe::best_assignment(counts);
      CHECK(a.agreement == Approx(best / total));
      std::set<int64_t> experts;
      for (int64_t e : a.expert_of_group)
        if (e >= 0) CHECK(experts.insert(e).second);
      CHECK(static_cast<int>(experts.size()) == k);
    }
  }
  CHECK(mg::moe::best_assignment({}).expert_of_group.empty());
}
