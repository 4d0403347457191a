// The MoE layer: route, dispatch, run each expert once on its inputs, combine.
//
// Dispatch sorts the routed (input, expert) pairs by expert (a stable counting sort), gathers the
// inputs into one contiguous slice per expert, runs each expert once on its slice, and combines
// the outputs weighted by the gates with index_add: no loop materializes a full-size tensor per
// expert. Gradients reach the experts through the slices and the router through the combine
// weights. An expert that receives no input in a step is skipped (zero gradient, no NaN).
//
// Capacity: with capacity_factor c > 0 each expert takes at most ceil(c * T * k / E) pairs, in
// input order; the rest are dropped (weight 0: in a residual block the input passes through) and
// counted. c = 0 is dropless.
//
// Inputs [B, D] (one routing decision per example) or [B, N, D] (per token, V-MoE style); labels
// [B] (per example, repeated over tokens) feed Oracle routing and the statistics.
#pragma once
#include <functional>
#include <memory>
#include <vector>

#include "moe/balance.hpp"
#include "moe/router.hpp"
#include "moe/stats.hpp"
#include "nn/optim.hpp"

namespace mg::moe {

struct MoEConfig {
  RouterConfig router;        // router.input_dim and router.num_experts must match the experts
  double capacity_factor = 0.0;
  BalanceConfig balance;
};

// Makes a fresh expert of the same architecture as `source` (for add_expert_cloned_from).
using ExpertFactory = std::function<nn::ModulePtr(const nn::Module& source)>;

class MoELayer : public nn::Module {
 public:
  MoELayer(MoEConfig config, std::vector<nn::ModulePtr> experts,
           std::vector<nn::ModulePtr> shared_experts = {}, ExpertFactory factory = {});

  Tensor forward(const Tensor& x) override;
  Tensor forward(const Tensor& x, const Tensor& labels);

  // The balancing loss of the last forward (coefficients applied; 0-d, differentiable): add it
  // to the task loss.
  Tensor aux_loss() const { return last_aux_loss_; }
  const StepStats& last_stats() const { return last_stats_; }
  const Routing& last_routing() const { return last_routing_; }
  // Auxiliary-loss-free balancing: call after optimizer.step() (a no-op when it is off).
  void update_router_bias();

  int64_t num_experts() const { return static_cast<int64_t>(experts_.size()); }
  nn::ModulePtr expert(int64_t i) const;
  Router& router() { return *router_; }
  const MoEConfig& config() const { return config_; }

  // ---- expert lifecycle
  // Its parameters stop training, its BatchNorm statistics freeze, and optimizers skip it
  // (they skip parameters that do not require grad); unfreeze undoes it.
  void freeze_expert(int64_t i);
  void unfreeze_expert(int64_t i);
  bool expert_frozen(int64_t i) const;
  // Adds an expert; the router gains a row that leaves the current routing unchanged. With an
  // optimizer, its parameter group `group` gains the new parameters and the router rows' state
  // (moments) grows to match. Returns the new expert's index.
  int64_t add_expert(nn::ModulePtr expert, nn::Optimizer* optimizer = nullptr, size_t group = 0);
  // A copy of expert j (weights plus N(0, noise_std) noise) with a copy of j's router row, so
  // the two share j's inputs: "grow by splitting". Needs the factory.
  int64_t add_expert_cloned_from(int64_t j, double noise_std, nn::Optimizer* optimizer = nullptr,
                                 size_t group = 0);
  // Removes expert i, its router row and, with an optimizer, their optimizer state.
  void remove_expert(int64_t i, nn::Optimizer* optimizer = nullptr);

 private:
  void rebuild_expert_registration();
  MoEConfig config_;
  std::shared_ptr<Router> router_;
  std::vector<nn::ModulePtr> experts_;
  std::vector<nn::ModulePtr> shared_experts_;
  ExpertFactory factory_;
  Tensor last_aux_loss_;
  StepStats last_stats_;
  Routing last_routing_;
};

}  // namespace mg::moe
