// The expert lifecycle of MoELayer and the grow/prune controller.
//
// The hot-plug test is the contract this project exists for: the study it grew out of lost 2.48
// accuracy points because a "frozen" expert's BatchNorm kept updating its running statistics
// (PyTorch's requires_grad=False does not stop them, and a parent's train() re-enables them).
// Here a frozen expert trained alongside its siblings for 100 steps, with the parent put in train
// mode every step and AdamW decaying weights, is bit-identical afterwards; the requires_grad-only
// freeze, run the same way, is shown to drift.
//
// Grow and prune must be invisible to what they do not touch: add then remove gives back the
// same outputs bit for bit, a removed middle expert leaves the others and their router rows
// working, and the router rows' optimizer state grows and shrinks so that Adam continues exactly.
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>

#include "gradcheck.hpp"
#include "moe/controller.hpp"
#include "moe/expert.hpp"
#include "moe/layer.hpp"
#include "nn/containers.hpp"
#include "nn/layers.hpp"
#include "nn/normalization.hpp"
#include "nn/optim.hpp"

namespace nn = mg::nn;
namespace moe = mg::moe;
using mg::Tensor;

namespace {

constexpr int64_t kDim = 8, kHidden = 16;

std::shared_ptr<moe::FFNExpert> ffn(const std::string& norm = "batchnorm") {
  return std::make_shared<moe::FFNExpert>(
      moe::FFNExpertConfig{.input_dim = kDim, .hidden = {kHidden}, .norm = norm});
}

moe::MoEConfig layer_config(int64_t num_experts, int64_t top_k, uint64_t seed) {
  moe::MoEConfig config;
  config.router.input_dim = kDim;
  config.router.num_experts = num_experts;
  config.router.top_k = top_k;
  config.router.seed = seed;
  return config;
}

// Seeds the default generator first, so two calls with one seed build identical layers.
std::shared_ptr<moe::MoELayer> make_layer(int64_t num_experts, int64_t top_k, uint64_t seed,
                                          const std::string& norm = "batchnorm", bool with_factory = true,
                                          double switch_coef = 0.0) {
  mg::manual_seed(seed);
  std::vector<nn::ModulePtr> experts;
  for (int64_t e = 0; e < num_experts; ++e) experts.push_back(ffn(norm));
  moe::MoEConfig config = layer_config(num_experts, top_k, seed);
  config.balance.switch_coef = switch_coef;
  return std::make_shared<moe::MoELayer>(config, experts,
                                         std::vector<nn::ModulePtr>{},
                                         with_factory ? moe::ExpertFactory(moe::make_ffn_expert_like)
                                                      : moe::ExpertFactory());
}

std::vector<std::vector<double>> values(const nn::NamedTensors& state) {
  std::vector<std::vector<double>> out;
  for (const auto& [name, t] : state) out.push_back(t.to_vector<double>());
  return out;
}

std::vector<std::string> names(const nn::NamedTensors& state) {
  std::vector<std::string> out;
  for (const auto& [name, t] : state) out.push_back(name);
  return out;
}

double max_abs_diff(const std::vector<double>& a, const std::vector<double>& b) {
  REQUIRE(a.size() == b.size());
  double d = 0.0;
  for (size_t i = 0; i < a.size(); ++i) d = std::max(d, std::abs(a[i] - b[i]));
  return d;
}

double max_abs_diff(const std::vector<std::vector<double>>& a, const std::vector<std::vector<double>>& b) {
  REQUIRE(a.size() == b.size());
  double d = 0.0;
  for (size_t i = 0; i < a.size(); ++i) d = std::max(d, max_abs_diff(a[i], b[i]));
  return d;
}

// Parameters and buffers of a module, apart.
std::vector<std::vector<double>> param_values(const nn::Module& m) { return values(m.named_parameters()); }
std::vector<std::vector<double>> buffer_values(const nn::Module& m) { return values(m.named_buffers()); }

// The module's output in eval mode, with its training flag restored afterwards.
std::vector<double> eval_output(nn::Module& m, const Tensor& x) {
  const bool was_training = m.is_training();
  m.eval();
  std::vector<double> out;
  {
    mg::NoGradGuard no_grad;
    out = m.forward(x).to_vector<double>();
  }
  m.train(was_training);
  return out;
}

Tensor row(const Tensor& t, int64_t i) { return t.select(0, i); }

// ---- the hot-plug experiment

enum class FreezeWay { Exact, RequiresGradOnly };

struct Drift {
  double params = 0, stats = 0, output = 0, others = 0;
};

// stem -> MoE layer (4 FFN experts, top-2) -> head, AdamW with weight decay. Train 5 steps,
// freeze expert 0 one way or the other, train 100 more steps with model.train() before each, and
// measure how far expert 0 (and the others) moved.
Drift hot_plug(FreezeWay way, const std::string& norm = "batchnorm") {
  auto layer = make_layer(4, 2, 31, norm, true, /*switch_coef=*/1e-2);
  auto model = std::make_shared<nn::Sequential>(std::initializer_list<nn::ModulePtr>{
      std::make_shared<nn::Linear>(6, kDim), layer, std::make_shared<nn::Linear>(kDim, 3)});
  nn::AdamW optimizer(model->parameters(), nn::AdamWOptions(1e-2).weight_decay(5e-2));
  REQUIRE(optimizer.param_groups()[0].options().to_map().at("weight_decay") > 0);
  mg::Generator data(32);
  int64_t fewest_inputs = 1 << 30;
  auto train_step = [&]() {
    model->train();  // as a trainer does every step: must not undo the freeze
    Tensor x = mg::randn({128, 6}, mg::kFloat32, &data);
    Tensor target = mg::randn({128, 3}, mg::kFloat32, &data);
    Tensor loss = mg::mse_loss(model->forward(x), target);
    if (layer->aux_loss().defined()) loss = loss + layer->aux_loss();
    optimizer.zero_grad();
    loss.backward();
    optimizer.step();
    const auto& load = layer->last_stats().tokens_per_expert;
    fewest_inputs = std::min(fewest_inputs, *std::min_element(load.begin(), load.end()));
  };
  for (int i = 0; i < 5; ++i) train_step();

  nn::ModulePtr frozen = layer->expert(0);
  if (way == FreezeWay::Exact) {
    layer->freeze_expert(0);
    CHECK(layer->expert_frozen(0));
  } else {
    for (auto& p : frozen->parameters()) p.requires_grad_(false);  // torch: p.requires_grad = False
    CHECK_FALSE(layer->expert_frozen(0));
  }
  const Tensor probe = mg::randn({32, kDim}, mg::kFloat32, &data);
  const auto out_before = eval_output(*frozen, probe);
  const auto params_before = param_values(*frozen), stats_before = buffer_values(*frozen);
  std::vector<std::vector<std::vector<double>>> others_before;
  for (int64_t e = 1; e < layer->num_experts(); ++e) others_before.push_back(values(layer->expert(e)->state_dict()));

  for (int i = 0; i < 100; ++i) train_step();

  INFO("fewest inputs an expert got in a step: " << fewest_inputs);
  CHECK(fewest_inputs > 0);  // expert 0 kept receiving inputs while frozen
  Drift d;
  d.params = max_abs_diff(param_values(*frozen), params_before);
  d.stats = max_abs_diff(buffer_values(*frozen), stats_before);
  d.output = max_abs_diff(eval_output(*frozen, probe), out_before);
  for (int64_t e = 1; e < layer->num_experts(); ++e)
    d.others = std::max(d.others, max_abs_diff(values(layer->expert(e)->state_dict()), others_before[e - 1]));
  return d;
}

}  // namespace

TEST_CASE("hot-plug: a frozen BatchNorm expert is bit-identical after 100 steps in train mode",
          "[moe][lifecycle]") {
  const Drift exact = hot_plug(FreezeWay::Exact);
  INFO("freeze_expert drift: params " << exact.params << ", running stats " << exact.stats << ", output "
                                      << exact.output << ", other experts " << exact.others);
  CHECK(exact.params == 0.0);
  CHECK(exact.stats == 0.0);
  CHECK(exact.output == 0.0);
  CHECK(exact.others > 0.0);  // the rest of the layer did train

  // The contrast: requires_grad off alone (the PyTorch way) keeps the parameters (the optimizer
  // skips them) but BatchNorm keeps normalizing with batch statistics and updating its running
  // statistics, so the eval-mode function drifts.
  const Drift torch_way = hot_plug(FreezeWay::RequiresGradOnly);
  INFO("requires_grad-only drift: params " << torch_way.params << ", running stats " << torch_way.stats
                                           << ", output " << torch_way.output);
  CHECK(torch_way.params == 0.0);
  CHECK(torch_way.stats > 0.0);
  CHECK(torch_way.output > 0.0);

  // Experts without normalization take the layer's grouped Linear-ReLU-Linear path; frozen is
  // frozen there too.
  const Drift grouped = hot_plug(FreezeWay::Exact, "none");
  CHECK(grouped.params == 0.0);
  CHECK(grouped.output == 0.0);
  CHECK(grouped.others > 0.0);
}

TEST_CASE("freeze_expert / unfreeze_expert / expert_frozen", "[moe][lifecycle]") {
  auto layer = make_layer(3, 1, 3);
  CHECK_FALSE(layer->expert_frozen(1));
  layer->freeze_expert(1);
  layer->train();
  CHECK(layer->expert_frozen(1));
  CHECK_FALSE(layer->expert_frozen(0));
  for (auto& p : layer->expert(1)->parameters()) CHECK_FALSE(p.requires_grad());
  CHECK(layer->expert(1)->running_stats_frozen());
  CHECK(layer->expert(1)->is_training());  // train mode, but the statistics stay frozen
  // Re-registration after a grow or prune leaves the freeze where it was.
  layer->add_expert(ffn());
  layer->remove_expert(0);
  CHECK(layer->expert_frozen(0));  // the old expert 1
  CHECK_FALSE(layer->expert_frozen(2));
  layer->freeze_expert(2);
  layer->remove_expert(1);
  CHECK(layer->expert_frozen(0));
  CHECK(layer->expert_frozen(1));
  layer->unfreeze_expert(1);
  CHECK_FALSE(layer->expert_frozen(1));
  layer->unfreeze_expert(0);
  CHECK_FALSE(layer->expert_frozen(0));
  CHECK(layer->expert(0)->is_training());
  for (auto& p : layer->expert(0)->parameters()) CHECK(p.requires_grad());
  CHECK_THROWS_WITH(layer->freeze_expert(2), Catch::Contains("out of range"));
  CHECK_THROWS_WITH(layer->expert_frozen(-1), Catch::Contains("out of range"));
}

TEST_CASE("add_expert then remove_expert restores the layer bit for bit", "[moe][lifecycle]") {
  auto layer = make_layer(3, 2, 5);
  mg::Generator data(6);
  const Tensor x = mg::randn({40, kDim}, mg::kFloat32, &data);
  const auto keys_before = names(layer->state_dict());
  const auto state_before = values(layer->state_dict());
  const auto y_before = eval_output(*layer, x);
  layer->eval();
  layer->forward(x);
  const auto indices_before = layer->last_routing().indices.to_vector<int32_t>();

  const int64_t added = layer->add_expert(ffn());
  CHECK(added == 3);
  CHECK(layer->num_experts() == 4);
  CHECK(layer->config().router.num_experts == 4);
  CHECK(layer->router().num_experts() == 4);
  // The new router row routes nothing: the routing is unchanged at insertion.
  const auto y_grown = eval_output(*layer, x);
  layer->eval();
  layer->forward(x);
  CHECK(layer->last_routing().indices.to_vector<int32_t>() == indices_before);
  CHECK(max_abs_diff(y_grown, y_before) < 1e-5);
  const auto keys_grown = names(layer->state_dict());
  CHECK(keys_grown.size() > keys_before.size());

  layer->remove_expert(added);
  CHECK(layer->num_experts() == 3);
  CHECK(layer->config().router.num_experts == 3);
  CHECK(names(layer->state_dict()) == keys_before);
  CHECK(values(layer->state_dict()) == state_before);
  CHECK(eval_output(*layer, x) == y_before);

  SECTION("an expert of the wrong shape is refused, leaving the layer as it was") {
    auto wrong = std::make_shared<moe::FFNExpert>(
        moe::FFNExpertConfig{.input_dim = kDim, .output_dim = kDim + 1, .hidden = {kHidden}});
    CHECK_THROWS_WITH(layer->add_expert(wrong), Catch::Contains("its siblings to [2, 8]"));
    auto wrong_input = std::make_shared<moe::FFNExpert>(
        moe::FFNExpertConfig{.input_dim = kDim + 1, .hidden = {kHidden}});
    CHECK_THROWS_WITH(layer->add_expert(wrong_input), Catch::Contains("the new expert fails on a [2, 8] input"));
    CHECK(layer->num_experts() == 3);
    CHECK(layer->router().num_experts() == 3);
    CHECK_THROWS_WITH(layer->add_expert(layer->expert(0)), Catch::Contains("already"));
  }
}

TEST_CASE("add_expert_cloned_from: noise 0 duplicates expert j, noise is seeded", "[moe][lifecycle]") {
  auto layer = make_layer(3, 3, 7);  // top-3 of 3: every expert sees every batch (BatchNorm needs > 1)
  mg::Generator data(8);
  const Tensor probe = mg::randn({16, kDim}, mg::kFloat32, &data);
  // A few training forwards so the running statistics are not the defaults.
  for (int i = 0; i < 3; ++i) {
    mg::NoGradGuard no_grad;
    layer->train();
    layer->forward(mg::randn({64, kDim}, mg::kFloat32, &data));
  }
  const auto router_before = layer->router().output_layer_parameters();
  const auto weight_row1 = row(router_before[0], 1).to_vector<double>();
  const auto bias_row1 = row(router_before[1], 1).to_vector<double>();

  layer->freeze_expert(1);
  const int64_t clone = layer->add_expert_cloned_from(1, 0.0);
  CHECK(clone == 3);
  CHECK(layer->config().router.num_experts == 4);
  CHECK(values(layer->expert(clone)->state_dict()) == values(layer->expert(1)->state_dict()));
  CHECK(eval_output(*layer->expert(clone), probe) == eval_output(*layer->expert(1), probe));
  CHECK_FALSE(layer->expert_frozen(clone));  // the split is meant to specialize
  CHECK(layer->expert_frozen(1));
  const auto router_after = layer->router().output_layer_parameters();
  CHECK(row(router_after[0], clone).to_vector<double>() == weight_row1);
  CHECK(row(router_after[1], clone).to_vector<double>() == bias_row1);
  CHECK(row(router_after[0], 1).to_vector<double>() == weight_row1);

  // With noise: the clone differs from j, and the same seed splits the same way.
  auto a = make_layer(3, 1, 9), b = make_layer(3, 1, 9);
  const int64_t ca = a->add_expert_cloned_from(0, 0.1), cb = b->add_expert_cloned_from(0, 0.1);
  CHECK(values(a->expert(ca)->state_dict()) == values(b->expert(cb)->state_dict()));
  CHECK(param_values(*a->expert(ca)) != param_values(*a->expert(0)));
  CHECK(values(a->router().state_dict()) == values(b->router().state_dict()));

  auto no_factory = make_layer(2, 1, 10, "none", false);
  CHECK_THROWS_WITH(no_factory->add_expert_cloned_from(0, 0.0), Catch::Contains("ExpertFactory"));
  CHECK(no_factory->num_experts() == 2);
  CHECK_THROWS_WITH(layer->add_expert_cloned_from(4, 0.0), Catch::Contains("out of range"));
}

TEST_CASE("remove_expert of a middle expert: the others and their router rows keep working",
          "[moe][lifecycle]") {
  // Top-2 with renormalized weights: removing an expert neither input chose leaves both its choices
  // and its weights unchanged (at top-1 the raw Switch weight would move with the softmax's sum).
  auto layer = make_layer(4, 2, 11, "layernorm");
  mg::Generator data(12);
  const Tensor x = mg::randn({200, kDim}, mg::kFloat32, &data);
  layer->eval();
  const auto y_before = eval_output(*layer, x);
  layer->forward(x);
  const auto chosen_before = layer->last_routing().indices.to_vector<int32_t>();  // [T, 2]
  const std::vector<nn::ModulePtr> experts_before{layer->expert(0), layer->expert(1), layer->expert(2),
                                                  layer->expert(3)};
  const auto router_before = layer->router().output_layer_parameters();
  std::vector<std::vector<double>> weight_rows, bias_rows;
  for (int64_t e = 0; e < 4; ++e) {
    weight_rows.push_back(row(router_before[0], e).to_vector<double>());
    bias_rows.push_back(row(router_before[1], e).to_vector<double>());
  }

  layer->remove_expert(1);
  REQUIRE(layer->num_experts() == 3);
  CHECK(layer->config().router.num_experts == 3);
  CHECK(layer->expert(0) == experts_before[0]);
  CHECK(layer->expert(1) == experts_before[2]);
  CHECK(layer->expert(2) == experts_before[3]);
  const auto router_after = layer->router().output_layer_parameters();
  REQUIRE(router_after[0].size(0) == 3);
  const int64_t old_of_new[] = {0, 2, 3};
  for (int64_t e = 0; e < 3; ++e) {
    CHECK(row(router_after[0], e).to_vector<double>() == weight_rows[old_of_new[e]]);
    CHECK(row(router_after[1], e).to_vector<double>() == bias_rows[old_of_new[e]]);
  }

  // Inputs that were not routed to the removed expert keep their expert and their output.
  const auto y_after = eval_output(*layer, x);
  layer->forward(x);
  const auto chosen_after = layer->last_routing().indices.to_vector<int32_t>();
  int64_t kept = 0;
  for (size_t t = 0; t < chosen_before.size() / 2; ++t) {
    const int32_t first = chosen_before[2 * t], second = chosen_before[2 * t + 1];
    if (first == 1 || second == 1) continue;  // re-routed: any surviving expert may take it
    ++kept;
    CHECK(chosen_after[2 * t] == (first > 1 ? first - 1 : first));
    CHECK(chosen_after[2 * t + 1] == (second > 1 ? second - 1 : second));
    for (int64_t k = 0; k < kDim; ++k) CHECK(std::abs(y_after[t * kDim + k] - y_before[t * kDim + k]) < 1e-5);
  }
  CHECK(kept > 0);

  // Routing needs top_k experts.
  auto top2 = make_layer(2, 2, 13, "none");
  CHECK_THROWS_WITH(top2->remove_expert(0), Catch::Contains("top_k"));
  CHECK(top2->num_experts() == 2);
}

TEST_CASE("the router rows' optimizer state grows and shrinks with the experts", "[moe][lifecycle]") {
  // Two identical runs; run B adds an expert and removes it again between steps. Adam (AMSGrad,
  // so all three buffers) must then continue exactly as in run A.
  struct Run {
    std::shared_ptr<moe::MoELayer> layer;
    std::unique_ptr<nn::Adam> optimizer;
    mg::Generator data{21};
    explicit Run() {
      layer = make_layer(3, 2, 20);
      optimizer = std::make_unique<nn::Adam>(layer->parameters(), nn::AdamOptions(1e-2).amsgrad(true));
    }
    void step() {
      layer->train();
      Tensor x = mg::randn({48, kDim}, mg::kFloat32, &data);
      Tensor loss = mg::mse_loss(layer->forward(x), x * 0.5);
      if (layer->aux_loss().defined()) loss = loss + layer->aux_loss();
      optimizer->zero_grad();
      loss.backward();
      optimizer->step();
    }
  };
  Run a, b;
  for (int i = 0; i < 3; ++i) {
    a.step();
    b.step();
  }
  const auto router_params = b.layer->router().output_layer_parameters();
  REQUIRE(router_params.size() == 2);
  const Tensor& weight = router_params[0];
  REQUIRE(b.optimizer->state(weight) != nullptr);
  const auto exp_avg_before = b.optimizer->state(weight)->buffers.at("exp_avg").to_vector<double>();
  const int64_t step_before = b.optimizer->state(weight)->step;
  const size_t params_before = b.optimizer->param_groups()[0].params().size();

  const int64_t added = b.layer->add_expert(ffn(), b.optimizer.get());
  CHECK(b.optimizer->param_groups()[0].params().size() == params_before + b.layer->expert(added)->parameters().size());
  const nn::ParamState* grown = b.optimizer->state(weight);
  REQUIRE(grown != nullptr);
  CHECK(grown->step == step_before);
  for (const auto& [name, buffer] : grown->buffers) {
    INFO("buffer " << name);
    CHECK(buffer.sizes() == weight.sizes());
    CHECK(row(buffer, added).abs().sum().item() == 0.0);
  }
  CHECK(grown->buffers.at("exp_avg").slice(0, 0, 3).to_vector<double>() == exp_avg_before);
  for (const auto& p : b.layer->router().output_layer_parameters()) {
    const nn::ParamState* st = b.optimizer->state(p);
    REQUIRE(st != nullptr);
    for (const auto& [name, buffer] : st->buffers) CHECK(buffer.sizes() == p.sizes());
  }

  b.layer->remove_expert(added, b.optimizer.get());
  CHECK(b.optimizer->param_groups()[0].params().size() == params_before);
  CHECK(b.optimizer->state(weight)->buffers.at("exp_avg").to_vector<double>() == exp_avg_before);

  for (int i = 0; i < 3; ++i) {
    a.step();
    b.step();
  }
  CHECK(names(b.layer->state_dict()) == names(a.layer->state_dict()));
  CHECK(values(b.layer->state_dict()) == values(a.layer->state_dict()));
  const auto sa = a.optimizer->state_dict(), sb = b.optimizer->state_dict();
  REQUIRE(sa.tensors.size() == sb.tensors.size());
  for (size_t k = 0; k < sa.tensors.size(); ++k) {
    INFO(sa.tensors[k].first);
    CHECK(sb.tensors[k].first == sa.tensors[k].first);
    CHECK(sb.tensors[k].second.to_vector<double>() == sa.tensors[k].second.to_vector<double>());
  }
  CHECK(sb.scalars == sa.scalars);

  SECTION("a clone's router row starts from a copy of row j's state; its expert from none") {
    const auto exp_avg = b.optimizer->state(weight)->buffers.at("exp_avg");
    const auto row1 = row(exp_avg, 1).to_vector<double>();
    const int64_t clone = b.layer->add_expert_cloned_from(1, 0.01, b.optimizer.get());
    const nn::ParamState* st = b.optimizer->state(weight);
    CHECK(row(st->buffers.at("exp_avg"), clone).to_vector<double>() == row1);
    CHECK(row(st->buffers.at("exp_avg"), 1).to_vector<double>() == row1);
    for (const auto& p : b.layer->expert(clone)->parameters()) CHECK(b.optimizer->state(p) == nullptr);
    b.step();  // and the optimizer steps with the new shapes
    CHECK(b.optimizer->state(b.layer->expert(clone)->parameters()[0]) != nullptr);
  }

  SECTION("removing a middle expert drops its row and its parameters' state (SGD momentum)") {
    auto layer = make_layer(4, 1, 22, "none");
    nn::SGD sgd(layer->parameters(), nn::SGDOptions(0.1).momentum(0.9));
    mg::Generator data(23);
    for (int i = 0; i < 2; ++i) {
      layer->train();
      Tensor x = mg::randn({32, kDim}, mg::kFloat32, &data);
      Tensor loss = mg::mse_loss(layer->forward(x), x);
      sgd.zero_grad();
      loss.backward();
      sgd.step();
    }
    const Tensor w = layer->router().output_layer_parameters()[0];
    REQUIRE(sgd.state(w) != nullptr);
    const Tensor momentum = sgd.state(w)->buffers.at("momentum_buffer").clone();
    const auto removed_params = layer->expert(2)->parameters();
    const size_t count = sgd.param_groups()[0].params().size();
    layer->remove_expert(2, &sgd);
    CHECK(sgd.param_groups()[0].params().size() == count - removed_params.size());
    for (const auto& p : removed_params) CHECK(sgd.state(p) == nullptr);
    const Tensor shrunk = sgd.state(w)->buffers.at("momentum_buffer");
    REQUIRE(shrunk.sizes() == mg::Shape{3, w.size(1)});
    CHECK(row(shrunk, 0).to_vector<double>() == row(momentum, 0).to_vector<double>());
    CHECK(row(shrunk, 1).to_vector<double>() == row(momentum, 1).to_vector<double>());
    CHECK(row(shrunk, 2).to_vector<double>() == row(momentum, 3).to_vector<double>());
  }
}

TEST_CASE("every router tensor with expert rows has its state resized (Learned noise, MLP gate)",
          "[moe][lifecycle]") {
  mg::manual_seed(30);
  moe::MoEConfig config = layer_config(3, 2, 30);
  config.router.noise = moe::NoiseType::Learned;  // noise projection [E, D]: rows are experts too
  config.router.gate_hidden = {12};
  std::vector<nn::ModulePtr> experts{ffn("none"), ffn("none"), ffn("none")};
  auto layer = std::make_shared<moe::MoELayer>(config, experts, std::vector<nn::ModulePtr>{},
                                               moe::make_ffn_expert_like);
  nn::AdamW optimizer(layer->parameters(), nn::AdamWOptions(1e-2));
  mg::Generator data(31);
  auto step = [&]() {
    layer->train();
    Tensor x = mg::randn({32, kDim}, mg::kFloat32, &data);
    Tensor loss = mg::mse_loss(layer->forward(x), x);
    if (layer->aux_loss().defined()) loss = loss + layer->aux_loss();
    optimizer.zero_grad();
    loss.backward();
    optimizer.step();
  };
  auto states_match_shapes = [&]() {
    int64_t resized = 0;
    for (const auto& p : layer->router().parameters()) {
      const nn::ParamState* st = optimizer.state(p);
      if (!st) continue;
      for (const auto& [name, buffer] : st->buffers) {
        CHECK(buffer.sizes() == p.sizes());
        resized += p.size(0) == layer->num_experts();
      }
    }
    return resized;
  };
  step();
  layer->add_expert_cloned_from(2, 0.01, &optimizer);
  CHECK(states_match_shapes() >= 3 * 2);  // gate weight, gate bias, noise projection; two Adam buffers
  step();
  layer->remove_expert(0, &optimizer);
  CHECK(states_match_shapes() >= 3 * 2);
  step();
  layer->add_expert(ffn("none"), &optimizer);
  step();
  CHECK(states_match_shapes() >= 3 * 2);
  CHECK(layer->router().config().num_experts == 4);
}

TEST_CASE("a state_dict saved after grow and prune loads into a freshly built layer", "[moe][lifecycle]") {
  auto layer = make_layer(3, 2, 40);
  mg::Generator data(41);
  nn::AdamW optimizer(layer->parameters(), nn::AdamWOptions(1e-2));
  auto step = [&]() {
    layer->train();
    Tensor x = mg::randn({48, kDim}, mg::kFloat32, &data);
    Tensor loss = mg::mse_loss(layer->forward(x), x);
    if (layer->aux_loss().defined()) loss = loss + layer->aux_loss();
    optimizer.zero_grad();
    loss.backward();
    optimizer.step();
  };
  step();
  layer->add_expert_cloned_from(0, 0.05, &optimizer);
  step();
  layer->remove_expert(1, &optimizer);
  step();
  layer->add_expert(ffn(), &optimizer);
  step();
  REQUIRE(layer->num_experts() == 4);
  REQUIRE(layer->config().router.num_experts == 4);

  const nn::NamedTensors saved = layer->state_dict();
  const Tensor probe = mg::randn({32, kDim}, mg::kFloat32, &data);
  const auto y = eval_output(*layer, probe);

  // The trainer rebuilds from the saved config: the same number of experts, fresh weights.
  mg::manual_seed(99);
  std::vector<nn::ModulePtr> experts;
  for (int64_t e = 0; e < layer->config().router.num_experts; ++e) experts.push_back(ffn());
  auto fresh = std::make_shared<moe::MoELayer>(layer->config(), experts, std::vector<nn::ModulePtr>{},
                                               moe::make_ffn_expert_like);
  CHECK(names(fresh->state_dict()) == names(saved));
  REQUIRE_NOTHROW(fresh->load_state_dict(saved));
  CHECK(eval_output(*fresh, probe) == y);
}

// ---- the controller

namespace {

moe::StepStats shares(std::vector<double> fraction, double router_entropy = 0.0) {
  moe::StepStats s;
  s.num_experts = static_cast<int64_t>(fraction.size());
  s.top_k = 1;
  s.inputs = 1000;
  for (double f : fraction) s.tokens_per_expert.push_back(static_cast<int64_t>(std::llround(f * 1000)));
  s.fraction = std::move(fraction);
  s.router_entropy = router_entropy;
  return s;
}

}  // namespace

TEST_CASE("controller: prune after exactly `patience` evaluations - streaks follow removals",
          "[moe][lifecycle][controller]") {
  auto layer = make_layer(4, 1, 50, "none");
  moe::GrowPruneController controller(
      {.prune_below_share = 0.05, .grow_above_share = 1.0, .patience = 2, .min_experts = 2, .max_experts = 8});

  CHECK(controller.evaluate(*layer, shares({0.30, 0.01, 0.39, 0.30})).empty());  // expert 1: streak 1
  auto d = controller.evaluate(*layer, shares({0.30, 0.01, 0.68, 0.01}));       // 1: 2, 3: 1
  REQUIRE(d.size() == 1);
  CHECK(d[0].action == "prune");
  CHECK(d[0].expert == 1);
  CHECK(d[0].evaluation == 2);
  CHECK(d[0].share == 0.01);
  CHECK_THAT(d[0].reason, Catch::Contains("prune_below_share") && Catch::Contains("patience 2"));
  CHECK(layer->num_experts() == 3);
  CHECK(layer->config().router.num_experts == 3);

  // The old expert 3 is now expert 2 and brings its streak of 1: one more low evaluation prunes it.
  d = controller.evaluate(*layer, shares({0.50, 0.49, 0.01}));
  REQUIRE(d.size() == 1);
  CHECK(d[0].action == "prune");
  CHECK(d[0].expert == 2);
  CHECK(layer->num_experts() == 2);

  // min_experts: never below 2, however long the share stays low.
  for (int i = 0; i < 4; ++i) CHECK(controller.evaluate(*layer, shares({0.99, 0.01})).empty());
  CHECK(layer->num_experts() == 2);
  CHECK(controller.history().size() == 2);
  CHECK_THROWS_WITH(controller.evaluate(*layer, shares({0.5, 0.3, 0.2})), Catch::Contains("cover 3 experts"));
}

TEST_CASE("controller: a frozen expert is never pruned - the lowest-share eligible one is",
          "[moe][lifecycle][controller]") {
  auto layer = make_layer(4, 1, 51, "none");
  layer->freeze_expert(0);
  moe::GrowPruneController controller(
      {.prune_below_share = 0.05, .grow_above_share = 1.0, .patience = 1, .min_experts = 1});
  auto d = controller.evaluate(*layer, shares({0.00, 0.03, 0.02, 0.95}));
  REQUIRE(d.size() == 1);
  CHECK(d[0].action == "prune");
  CHECK(d[0].expert == 2);  // expert 0 has the lowest share but is frozen
  CHECK(layer->expert_frozen(0));
  d = controller.evaluate(*layer, shares({0.00, 0.03, 0.97}));
  REQUIRE(d.size() == 1);
  CHECK(d[0].expert == 1);
  d = controller.evaluate(*layer, shares({0.00, 1.00}));
  CHECK(d.empty());  // only the frozen expert is left below the threshold
  CHECK(layer->num_experts() == 2);
}

TEST_CASE("controller: grow by splitting the busiest expert, by share or by entropy - max respected",
          "[moe][lifecycle][controller]") {
  auto layer = make_layer(2, 1, 52, "none");
  moe::GrowPruneController controller(
      {.prune_below_share = 0.01, .grow_above_share = 0.6, .patience = 3, .min_experts = 1, .max_experts = 3,
       .clone_noise_std = 0.0});
  CHECK(controller.evaluate(*layer, shares({0.7, 0.3})).empty());
  CHECK(controller.evaluate(*layer, shares({0.8, 0.2})).empty());
  auto d = controller.evaluate(*layer, shares({0.75, 0.25}));
  REQUIRE(d.size() == 1);
  CHECK(d[0].action == "grow");
  CHECK(d[0].expert == 0);
  CHECK(d[0].new_expert == 2);
  CHECK(d[0].evaluation == 3);
  CHECK(d[0].share == 0.75);
  CHECK_THAT(d[0].reason, Catch::Contains("grow_above_share") && Catch::Contains("2 -> 3"));
  REQUIRE(layer->num_experts() == 3);
  CHECK(values(layer->expert(2)->state_dict()) == values(layer->expert(0)->state_dict()));  // noise 0

  // At max_experts nothing grows, however busy an expert is.
  for (int i = 0; i < 5; ++i) CHECK(controller.evaluate(*layer, shares({0.9, 0.05, 0.05})).empty());
  CHECK(layer->num_experts() == 3);

  // Entropy: a near-uniform router for `patience` evaluations splits the busiest expert.
  auto flat = make_layer(3, 1, 53, "none");
  moe::GrowPruneController by_entropy(
      {.prune_below_share = 0.0, .grow_above_share = 1.0, .grow_above_entropy = 0.9, .patience = 2,
       .max_experts = 4});
  const double high = 0.95 * std::log(3.0), low = 0.5 * std::log(3.0);
  CHECK(by_entropy.evaluate(*flat, shares({0.3, 0.4, 0.3}, high)).empty());
  CHECK(by_entropy.evaluate(*flat, shares({0.3, 0.4, 0.3}, low)).empty());  // the streak breaks
  CHECK(by_entropy.evaluate(*flat, shares({0.3, 0.4, 0.3}, high)).empty());
  d = by_entropy.evaluate(*flat, shares({0.3, 0.4, 0.3}, high));
  REQUIRE(d.size() == 1);
  CHECK(d[0].action == "grow");
  CHECK(d[0].expert == 1);
  CHECK(d[0].new_expert == 3);
  CHECK(d[0].router_entropy == Approx(high));
  CHECK_THAT(d[0].reason, Catch::Contains("entropy"));
  CHECK(flat->num_experts() == 4);
}

TEST_CASE("controller: one prune and one grow in one evaluation - decisions as JSON lines",
          "[moe][lifecycle][controller]") {
  auto layer = make_layer(3, 1, 54, "none");
  nn::Adam optimizer(layer->parameters());
  moe::GrowPruneController controller(
      {.prune_below_share = 0.05, .grow_above_share = 0.6, .patience = 1, .min_experts = 1, .max_experts = 4});
  auto d = controller.evaluate(*layer, shares({0.01, 0.7, 0.29}, 0.4), &optimizer);
  REQUIRE(d.size() == 2);
  CHECK(d[0].action == "prune");
  CHECK(d[0].expert == 0);
  CHECK(d[1].action == "grow");
  CHECK(d[1].expert == 0);  // the old expert 1, after the prune
  CHECK(d[1].new_expert == 2);
  CHECK(layer->num_experts() == 3);
  CHECK(optimizer.param_groups()[0].params().size() == layer->parameters().size());

  for (const auto& decision : controller.history()) {
    const std::string line = decision.to_json();
    CHECK(line.find('\n') == std::string::npos);
    const auto j = nlohmann::json::parse(line);
    CHECK(j.at("action") == decision.action);
    CHECK(j.at("expert") == decision.expert);
    CHECK(j.at("new_expert") == decision.new_expert);
    CHECK(j.at("evaluation") == 1);
    CHECK(j.at("share").get<double>() == decision.share);
    CHECK(j.at("router_entropy").get<double>() == 0.4);
    CHECK(j.at("reason") == decision.reason);
  }
  moe::ControllerDecision odd;
  odd.reason = "a \"quoted\"\nreason\\";
  odd.share = NAN;
  const auto j = nlohmann::json::parse(odd.to_json());
  CHECK(j.at("reason") == odd.reason);
  CHECK(j.at("share").is_null());
}
