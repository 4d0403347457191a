// The MoE router: gate, scoring, noise, warmup, oracle/random modes, aux-loss-free bias, and the
// row surgery the expert lifecycle needs. It follows:
//   Shazeer et al. 2017, "Outrageously Large Neural Networks" (noisy top-k gating, learned noise
//     std = softplus(x W_noise), W_noise initialised to zero);
//   Fedus et al. 2021, "Switch Transformers" (softmax router, multiplicative input jitter);
//   Jiang et al. 2024, "Mixtral of Experts" (softmax, top-k, renormalized over the k);
//   DeepSeek-AI 2024, "DeepSeek-V3" and Wang et al. 2024, "Auxiliary-Loss-Free Load Balancing"
//     (sigmoid scores normalized over the chosen k; a selection-only per-expert bias).
// All router math runs in float64 for a float64 input and in float32 otherwise; every random draw
// (the gate's init, noise, jitter, gate dropout, random routing) comes from generator_, so the
// seed alone fixes the router. Selection never carries gradient; the combine weights and scores do.
//
// Choices the header leaves open:
//   - Selection ranks the noisy logits; with aux-loss-free balancing on it ranks scores + bias.
//     SoftmaxTopK and TopKSoftmax then give the same weights in exact arithmetic (renormalizing a
//     softmax over the chosen k is the softmax of their logits); they differ in rounding only.
//   - Temperature divides the clean logits; noise is added after it, not divided by it.
//   - Warmup applies to Learned routing only; Random routing is random in eval too. While the
//     choice is random no noise is drawn, but the gate still runs: the scores and logits feed the
//     balancing losses and statistics.
//   - add_expert_row parks the new expert kParkedLogitGap below the lowest gate bias: its score is
//     exactly 0, so the other experts' indices, weights AND scores stay bit-identical. The price:
//     it gets no gate gradient either, so it stays unused until its row is written (clone it, or
//     set it through output_layer_parameters()).
#include "moe/router.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

#include "engine/autograd.hpp"
#include "engine/ops.hpp"
#include "nn/init.hpp"

namespace mg::moe {
namespace {

// The learned noise std never reaches 0, so Shazeer's load estimate never divides by it (the
// floor of the widely used PyTorch port of Shazeer's layer, noise_epsilon = 1e-2).
constexpr double kLearnedNoiseFloor = 1e-2;
// A row parked by add_expert_row sits this far below the lowest gate bias: exp() of the gap
// underflows to exactly 0 in float32 and float64, so the parked expert is never chosen, takes no
// probability mass and no gradient, and the other experts' numbers stay bit-identical.
constexpr double kParkedLogitGap = 1e4;
// Sigmoid scores of the k chosen experts are normalized by their sum plus this (DeepSeek-V3's
// reference code), so k saturated-at-zero scores give weights 0 rather than NaN.
constexpr double kSigmoidNormEps = 1e-20;

ScalarType router_dtype(const Tensor& x) { return x.dtype() == kFloat64 ? kFloat64 : kFloat32; }

void validate(const RouterConfig& c) {
  MG_CHECK(c.input_dim > 0, "RouterConfig.input_dim must be positive, got ", c.input_dim);
  MG_CHECK(c.num_experts >= 1, "RouterConfig.num_experts must be at least 1, got ", c.num_experts);
  MG_CHECK(c.top_k >= 1 && c.top_k <= c.num_experts, "RouterConfig.top_k must be in [1, num_experts = ",
           c.num_experts, "], got ", c.top_k);
  for (int64_t h : c.gate_hidden)
    MG_CHECK(h > 0, "RouterConfig.gate_hidden sizes must be positive, got ", h);
  MG_CHECK(c.gate_dropout >= 0 && c.gate_dropout < 1, "RouterConfig.gate_dropout must be in [0, 1), got ",
           c.gate_dropout);
  MG_CHECK(c.temperature > 0 && std::isfinite(c.temperature),
           "RouterConfig.temperature must be positive and finite, got ", c.temperature);
  MG_CHECK(c.noise_std >= 0, "RouterConfig.noise_std must be >= 0, got ", c.noise_std);
  MG_CHECK(c.noise_min_std >= 0, "RouterConfig.noise_min_std must be >= 0, got ", c.noise_min_std);
  MG_CHECK(c.jitter_eps >= 0 && c.jitter_eps < 1, "RouterConfig.jitter_eps must be in [0, 1), got ",
           c.jitter_eps);
  MG_CHECK(c.warmup_random_steps >= 0, "RouterConfig.warmup_random_steps must be >= 0, got ",
           c.warmup_random_steps);
  MG_CHECK(c.bias_update_rate >= 0, "RouterConfig.bias_update_rate must be >= 0, got ",
           c.bias_update_rate);
  for (size_t label = 0; label < c.oracle_map.size(); ++label)
    MG_CHECK(c.oracle_map[label] >= 0 && c.oracle_map[label] < c.num_experts,
             "RouterConfig.oracle_map[", label, "] = ", c.oracle_map[label],
             " is not an expert in [0, num_experts = ", c.num_experts, ")");
  MG_CHECK(c.mode != RoutingMode::Oracle || !c.oracle_map.empty(),
           "RouterConfig.oracle_map must map every label to an expert for Oracle routing; it is empty");
}

nn::Linear& output_linear(const nn::Sequential& gate) {
  return dynamic_cast<nn::Linear&>(*gate[gate.size() - 1]);
}

// Parameter and buffer rows change IN PLACE (set_data), so every handle to them (optimizers, the
// layer, the user) stays valid. An accumulated gradient follows the rows, a new row's being 0.
void append_row(Tensor t, const Tensor& row) {
  NoGradGuard no_grad;
  const Tensor grad = t.grad();
  t.set_data(cat({t.detach(), row.to(t.dtype()).to(t.device()).unsqueeze(0)}, 0));
  if (grad.defined()) t.set_grad(cat({grad, zeros_like(row).to(grad.dtype()).unsqueeze(0)}, 0));
}

Tensor without_row(const Tensor& t, int64_t i) {
  const int64_t n = t.size(0);
  return cat({t.narrow(0, 0, i), t.narrow(0, i + 1, n - i - 1)}, 0);
}

void remove_row(Tensor t, int64_t i) {
  NoGradGuard no_grad;
  const Tensor grad = t.grad();
  t.set_data(without_row(t.detach(), i));
  if (grad.defined()) t.set_grad(without_row(grad, i));
}

}  // namespace

Router::Router(RouterConfig config)
    : nn::Module("Router"), config_(std::move(config)), generator_(config_.seed) {
  validate(config_);
  gate_ = std::make_shared<nn::Sequential>();
  int64_t width = config_.input_dim;
  for (int64_t hidden : config_.gate_hidden) {
    gate_->push_back(std::make_shared<nn::Linear>(width, hidden));
    gate_->push_back(std::make_shared<nn::ReLU>());
    gate_->push_back(std::make_shared<nn::Dropout>(config_.gate_dropout));
    width = hidden;
  }
  gate_->push_back(std::make_shared<nn::Linear>(width, config_.num_experts));
  register_module("gate", gate_);
  // Linear drew its init from the default generator; redraw it from ours so the seed alone fixes
  // the router (torch's Linear init: kaiming_uniform_(a = sqrt(5)), bias U(+-1/sqrt(in))).
  for (const auto& child : gate_->children()) {
    auto* linear = dynamic_cast<nn::Linear*>(child.get());
    if (!linear) continue;
    nn::init::kaiming_uniform_(linear->weight, std::sqrt(5.0), nn::init::FanMode::FanIn, "leaky_relu",
                               &generator_);
    const double bound = 1.0 / std::sqrt(static_cast<double>(linear->in_features));
    nn::init::uniform_(linear->bias, -bound, bound, &generator_);
  }
  if (config_.noise == NoiseType::Learned) {
    noise_proj_ = std::make_shared<nn::Linear>(config_.input_dim, config_.num_experts, /*bias=*/false);
    nn::init::zeros_(noise_proj_->weight);  // Shazeer: W_noise starts at 0 (std = softplus(0))
    register_module("noise_proj", noise_proj_);
  }
  expert_bias = register_buffer("expert_bias", zeros({config_.num_experts}));
}

void Router::set_mode(RoutingMode mode) {
  MG_CHECK(mode != RoutingMode::Oracle || !config_.oracle_map.empty(),
           "Router::set_mode: Oracle routing needs RouterConfig.oracle_map; it is empty");
  config_.mode = mode;
}

// The gate's layers run one by one rather than through Sequential::forward so that the weights are
// cast to the router dtype (a float32 gate routes a float64 input in float64) and the dropout
// masks come from the router's generator.
Tensor Router::gate_logits(const Tensor& x) {
  const ScalarType dt = x.dtype();
  Tensor h = x;
  for (const auto& child : gate_->children()) {
    if (auto* layer = dynamic_cast<nn::Linear*>(child.get())) {
      h = linear(h, layer->weight.to(dt), layer->bias.defined() ? layer->bias.to(dt) : Tensor());
    } else if (auto* drop = dynamic_cast<nn::Dropout*>(child.get())) {
      h = dropout(h, drop->p, drop->is_training(), &generator_);
    } else {
      h = child->forward(h);
    }
  }
  return h;
}

namespace {

// Per-row std of the logits for Scaled noise, treated as a constant (the noise level is not
// something to optimize). Experts whose raw gate logit lies more than half the parking gap below
// the row's best are parked rows (add_expert_row): they would inflate the std by orders of
// magnitude, so they are left out of it.
Tensor scaled_noise_std(const Tensor& raw, const Tensor& logits, double min_std) {
  NoGradGuard no_grad;
  const Tensor live = ge(raw.detach(), amax(raw.detach(), {1}, true) - kParkedLogitGap / 2);
  const Tensor zero = zeros({}, logits.options());
  const Tensor l = where(live, logits.detach(), zero);
  const Tensor n = live.sum({1}, true);
  const Tensor centered = where(live, l - l.sum({1}, true) / n, zero);
  const Tensor std = sqrt((centered * centered).sum({1}, true) / n);
  return clamp(std, min_std, std::nullopt);
}

}  // namespace

Routing Router::route(const Tensor& x, const Tensor& labels) {
  const int64_t D = config_.input_dim, E = config_.num_experts, k = config_.top_k;
  MG_CHECK(x.defined() && x.dim() == 2 && x.size(1) == D && x.is_floating_point(),
           "Router: expected a floating-point input [T, D = ", D, "], got ",
           x.defined() ? shape_str(x.sizes()) + " " + dtype_name(x.dtype()) : std::string("undefined"));
  const int64_t T = x.size(0);
  const bool training = is_training();
  const ScalarType dt = router_dtype(x);
  const TensorOptions opts = TensorOptions().dtype(dt).device(x.device());

  const bool warmup = training && config_.mode == RoutingMode::Learned && steps_ < config_.warmup_random_steps;
  const bool random = warmup || config_.mode == RoutingMode::Random;
  if (training) ++steps_;
  // Noise perturbs the gate's choice; when the choice is random it would only blur the scores.
  const bool noisy = training && !random && config_.noise != NoiseType::None;

  Tensor input = x.to(dt);
  if (noisy && config_.noise == NoiseType::Jitter) {
    const double eps = config_.jitter_eps;
    input = input * (rand({T, D}, opts, &generator_) * (2 * eps) + (1 - eps));
  }
  Routing r;
  const Tensor raw = gate_logits(input);
  r.logits = config_.temperature == 1.0 ? raw : raw / config_.temperature;
  Tensor noisy_logits = r.logits;
  if (noisy && config_.noise == NoiseType::Scaled) {
    const Tensor std = scaled_noise_std(raw, r.logits, config_.noise_min_std);
    noisy_logits = r.logits + randn({T, E}, opts, &generator_) * (std * config_.noise_std);
  } else if (noisy && config_.noise == NoiseType::Learned) {
    r.noise_stddev = softplus(linear(input, noise_proj_->weight.to(dt))) + kLearnedNoiseFloor;
    noisy_logits = r.logits + randn({T, E}, opts, &generator_) * r.noise_stddev;
    r.clean_logits_for_load = r.logits;
    r.noisy_logits = noisy_logits;
  }
  r.scores = config_.scoring == Scoring::Sigmoid ? sigmoid(noisy_logits) : softmax(noisy_logits, 1);

  if (random) {
    // The top k of T x E iid uniform keys is a uniformly random set of k distinct experts.
    NoGradGuard no_grad;
    r.indices = std::get<1>(topk(rand({T, E}, opts.dtype(kFloat64), &generator_), k, 1));
    r.weights = full({T, k}, 1.0 / static_cast<double>(k), opts);
    r.gate_bypassed = true;
    return r;
  }

  // What the choice ranks: the noisy logits, or with aux-loss-free balancing the scores plus the
  // per-expert bias (DeepSeek-V3 adds the bias to the affinity scores, not to the logits).
  Tensor rank_by;
  {
    NoGradGuard no_grad;
    rank_by = config_.bias_update_rate > 0 ? r.scores.detach() + expert_bias.to(dt).to(x.device())
                                           : noisy_logits.detach();
  }

  if (config_.mode == RoutingMode::Oracle) {
    MG_CHECK(labels.defined(), "Router: Oracle routing needs labels [T] int32; none were given");
    MG_CHECK(labels.dtype() == kInt32 && labels.dim() == 1 && labels.size(0) == T,
             "Router: Oracle routing needs labels [T = ", T, "] int32, got ", shape_str(labels.sizes()),
             " ", dtype_name(labels.dtype()));
    const std::vector<int32_t> label_values = labels.to_vector<int32_t>();
    std::vector<int32_t> oracle(static_cast<size_t>(T));
    const auto& map = config_.oracle_map;
    for (int64_t t = 0; t < T; ++t) {
      const int32_t label = label_values[t];
      MG_CHECK(label >= 0 && static_cast<size_t>(label) < map.size(), "Router: label ", label,
               " (input ", t, ") has no oracle_map entry; oracle_map covers labels 0..", map.size() - 1);
      MG_CHECK(map[label] >= 0, "Router: label ", label, " (input ", t,
               ") maps to an expert that was removed; update oracle_map");
      oracle[t] = map[label];
    }
    r.gate_bypassed = true;
    const Tensor first = from_vector(oracle, {T, 1}, kInt32).to(x.device());
    if (k == 1) {
      r.indices = first;
      r.weights = ones({T, 1}, opts);
      return r;
    }
    Tensor rest;
    {
      NoGradGuard no_grad;
      const Tensor is_oracle = one_hot(first.squeeze(1), E);
      rest = std::get<1>(topk(masked_fill(rank_by, is_oracle, -INFINITY), k - 1, 1));
    }
    r.indices = cat({first, rest}, 1);
  } else {
    r.indices = std::get<1>(topk(rank_by, k, 1));
  }

  switch (config_.scoring) {
    case Scoring::SoftmaxTopK: {
      const Tensor chosen = gather(r.scores, 1, r.indices);
      r.weights = renormalize_weights() ? chosen / chosen.sum({1}, true) : chosen;
      break;
    }
    case Scoring::TopKSoftmax:
      r.weights = softmax(gather(noisy_logits, 1, r.indices), 1);
      break;
    case Scoring::Sigmoid: {
      const Tensor chosen = gather(r.scores, 1, r.indices);
      r.weights = renormalize_weights() ? chosen / (chosen.sum({1}, true) + kSigmoidNormEps) : chosen;
      break;
    }
  }
  return r;
}

bool Router::renormalize_weights() const { return config_.renormalize && config_.top_k > 1; }

void Router::update_bias(const std::vector<int64_t>& tokens_per_expert) {
  const int64_t E = config_.num_experts;
  MG_CHECK(static_cast<int64_t>(tokens_per_expert.size()) == E, "Router::update_bias: got ",
           tokens_per_expert.size(), " token counts for ", E, " experts");
  if (config_.bias_update_rate <= 0) return;
  double mean = 0;
  for (int64_t n : tokens_per_expert) mean += static_cast<double>(n);
  mean /= static_cast<double>(E);
  std::vector<double> bias = expert_bias.to_vector<double>();
  for (int64_t i = 0; i < E; ++i) {
    const double gap = mean - static_cast<double>(tokens_per_expert[i]);
    bias[i] += config_.bias_update_rate * static_cast<double>((gap > 0) - (gap < 0));
  }
  NoGradGuard no_grad;
  expert_bias.copy_(from_vector(bias, {E}, kFloat64).to(expert_bias.dtype()).to(expert_bias.device()));
}

// ---- expert lifecycle

std::vector<Tensor> Router::output_layer_parameters() const {
  const nn::Linear& out = output_linear(*gate_);
  return {out.weight, out.bias};
}

void Router::add_expert_row() {
  NoGradGuard no_grad;
  nn::Linear& out = output_linear(*gate_);
  const double parked_bias = out.bias.min().item() - kParkedLogitGap;
  append_row(out.weight, zeros({out.in_features}, out.weight.options()));
  append_row(out.bias, full({}, parked_bias, out.bias.options()));
  // Selection with the bias on ranks scores (in [0, 1]) + bias: one below the lowest bias keeps
  // the parked expert (score 0) last.
  const double selection_bias = config_.bias_update_rate > 0 ? expert_bias.min().item() - 1.0 : 0.0;
  append_row(expert_bias, full({}, selection_bias, expert_bias.options()));
  if (noise_proj_) {
    append_row(noise_proj_->weight, zeros({noise_proj_->in_features}, noise_proj_->weight.options()));
    ++noise_proj_->out_features;
  }
  ++out.out_features;
  ++config_.num_experts;
}

void Router::clone_expert_row(int64_t j, double noise_std) {
  const int64_t E = config_.num_experts;
  MG_CHECK(j >= 0 && j < E, "Router::clone_expert_row: expert ", j, " is not in [0, ", E, ")");
  MG_CHECK(noise_std >= 0, "Router::clone_expert_row: noise_std must be >= 0, got ", noise_std);
  NoGradGuard no_grad;
  nn::Linear& out = output_linear(*gate_);
  Tensor row = out.weight.select(0, j).clone();
  if (noise_std > 0) row = row + randn(row.sizes(), row.options(), &generator_) * noise_std;
  append_row(out.weight, row);
  append_row(out.bias, out.bias.select(0, j).clone());
  append_row(expert_bias, expert_bias.select(0, j).clone());
  if (noise_proj_) {
    append_row(noise_proj_->weight, noise_proj_->weight.select(0, j).clone());
    ++noise_proj_->out_features;
  }
  ++out.out_features;
  ++config_.num_experts;
}

void Router::remove_expert_row(int64_t i) {
  const int64_t E = config_.num_experts;
  MG_CHECK(i >= 0 && i < E, "Router::remove_expert_row: expert ", i, " is not in [0, ", E, ")");
  MG_CHECK(E - 1 >= config_.top_k, "Router::remove_expert_row: removing expert ", i, " would leave ",
           E - 1, " experts, fewer than top_k = ", config_.top_k);
  nn::Linear& out = output_linear(*gate_);
  remove_row(out.weight, i);
  remove_row(out.bias, i);
  remove_row(expert_bias, i);
  if (noise_proj_) {
    remove_row(noise_proj_->weight, i);
    --noise_proj_->out_features;
  }
  --out.out_features;
  --config_.num_experts;
  // Labels of the removed expert lose their mapping (route() names them); later experts shift down.
  for (int32_t& e : config_.oracle_map) e = e == i ? -1 : (e > i ? e - 1 : e);
}

}  // namespace mg::moe
