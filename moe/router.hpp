// The router (gating network) of a Mixture-of-Experts layer: which experts each input goes to,
// and with what weight. Every mechanism the literature uses to make routing work is a switch in
// RouterConfig, so a study can turn them on one at a time:
//   gate         linear (Shazeer 2017, Switch) or an MLP with hidden sizes and dropout
//   scoring      SoftmaxTopK: softmax over all experts, top-k, renormalized (Switch / Mixtral)
//                TopKSoftmax: top-k logits, softmax over those k (Shazeer's noisy top-k form)
//                Sigmoid: per-expert sigmoid scores, top-k, normalized over the k (DeepSeek-V3)
//   temperature  logits / temperature before scoring
//   noise        training only: Scaled (N(0,1) * noise_std * per-row std of the logits, clamped
//                below), Learned (Shazeer 2017: std = softplus(x W_noise)), Jitter (the input
//                times U(1 - eps, 1 + eps), Switch)
//   warmup       for the first warmup_random_steps training steps every input goes to k experts
//                drawn uniformly, weights 1/k, gate bypassed (no expert starves early)
//   mode         Learned; Oracle (expert = oracle_map[label]: the ceiling of a perfect router);
//                Random (the floor)
//   bias         auxiliary-loss-free balancing (DeepSeek-V3): a per-expert bias added to the
//                scores for selection only, nudged after each step by rate * sign(mean - load)
// Router math runs in float32 or float64 even when the model is lower precision (router_fp32).
// All randomness comes from the router's own Generator, seeded by config.seed.
#pragma once
#include <cstdint>
#include <vector>

#include "engine/generator.hpp"
#include "nn/containers.hpp"
#include "nn/layers.hpp"

namespace mg::moe {

enum class Scoring { SoftmaxTopK, TopKSoftmax, Sigmoid };
enum class NoiseType { None, Scaled, Learned, Jitter };
enum class RoutingMode { Learned, Oracle, Random };

struct RouterConfig {
  int64_t input_dim = 0;
  int64_t num_experts = 0;
  int64_t top_k = 1;                  // 1 .. num_experts
  std::vector<int64_t> gate_hidden;   // empty: a linear gate
  double gate_dropout = 0.0;          // MLP gate only
  Scoring scoring = Scoring::SoftmaxTopK;
  // SoftmaxTopK / Sigmoid: divide the k chosen scores by their sum (Mixtral, DeepSeek-V3), or
  // keep the raw scores (false). At top_k = 1 renormalizing would make every weight exactly 1
  // and cut the gate off the task gradient, so top_k = 1 always keeps the raw score (Switch).
  // TopKSoftmax is a softmax over the k by definition: at top_k = 1 its weight is 1.
  bool renormalize = true;
  double temperature = 1.0;
  NoiseType noise = NoiseType::None;
  double noise_std = 1.0;             // Scaled: multiple of the per-row logit std
  double noise_min_std = 1e-2;        // Scaled: lower clamp of that per-row std
  double jitter_eps = 1e-2;           // Jitter
  int64_t warmup_random_steps = 0;
  RoutingMode mode = RoutingMode::Learned;
  std::vector<int32_t> oracle_map;    // Oracle: label -> expert
  double bias_update_rate = 0.0;      // > 0 turns on auxiliary-loss-free balancing
  uint64_t seed = 0;
};

// The routing of T inputs among E experts.
struct Routing {
  Tensor logits;     // [T, E] gate logits / temperature, before noise (z-loss, statistics)
  Tensor scores;     // [T, E] softmax (or sigmoid) of the noisy logits: the router's
                     // probabilities, differentiable (balancing losses, statistics)
  Tensor indices;    // [T, k] int32 chosen experts, best first
  Tensor weights;    // [T, k] combine weights, differentiable w.r.t. the gate when it chose
  Tensor clean_logits_for_load;  // [T, E] Learned noise only: inputs to Shazeer's load loss
  Tensor noise_stddev;           // [T, E] Learned noise only
  Tensor noisy_logits;           // [T, E] Learned noise only: logits + noise, as ranked (load loss)
  bool gate_bypassed = false;    // warmup, Random or Oracle routing chose the experts
};

class Router : public nn::Module {
 public:
  explicit Router(RouterConfig config);
  // x [T, D]; labels [T] int32 (needed for Oracle mode). Training steps (is_training()) advance
  // the warmup counter and draw noise; eval routing is deterministic.
  Routing route(const Tensor& x, const Tensor& labels = {});
  // Auxiliary-loss-free balancing: after a step, bias_i += rate * sign(mean load - load_i).
  void update_bias(const std::vector<int64_t>& tokens_per_expert);

  int64_t num_experts() const { return config_.num_experts; }
  const RouterConfig& config() const { return config_; }
  void set_mode(RoutingMode mode);
  Generator& generator() { return generator_; }
  int64_t steps() const { return steps_; }        // training routes so far (warmup clock)
  void set_steps(int64_t steps) { steps_ = steps; }
  Tensor expert_bias;  // buffer [E]

  // ---- expert lifecycle: the gate's output layer gains or loses rows.
  // A new row with zero weights and a very low bias: no input routes to it until the gate
  // learns to, so the existing routing is unchanged at the moment of insertion.
  void add_expert_row();
  // A copy of row j (weights and bias) plus N(0, noise_std) on the weights.
  void clone_expert_row(int64_t j, double noise_std);
  void remove_expert_row(int64_t i);
  // The gate's output-layer parameters (weight [E, H] and bias [E]), whose rows are experts.
  std::vector<Tensor> output_layer_parameters() const;

 private:
  Tensor gate_logits(const Tensor& x);
  bool renormalize_weights() const;
  RouterConfig config_;
  std::shared_ptr<nn::Sequential> gate_;         // ... -> Linear(hidden, E)
  std::shared_ptr<nn::Linear> noise_proj_;       // Learned noise: Linear(D, E, no bias)
  Generator generator_;
  int64_t steps_ = 0;
};

}  // namespace mg::moe
