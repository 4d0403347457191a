// A rule-based grow/prune controller, evaluated at epoch boundaries from the measured routing
// statistics. Rules, not a learned control head: the study this project grew out of tried to learn
// one and it learned noise. Every decision is logged with the numbers behind it.
#pragma once
#include <string>
#include <vector>

#include "moe/layer.hpp"

namespace mg::moe {

struct ControllerConfig {
  double prune_below_share = 0.02;  // p_min
  double grow_above_share = 0.5;    // p_max
  double grow_above_entropy = -1;   // grow when mean router entropy / log(E) exceeds this (< 0: off)
  int64_t patience = 2;             // evaluations a condition must hold
  int64_t min_experts = 1, max_experts = 16;
  double clone_noise_std = 1e-2;
};

struct ControllerDecision {
  int64_t evaluation = 0;
  std::string action;       // "grow", "prune"
  int64_t expert = -1;      // the expert pruned, or the one split
  int64_t new_expert = -1;  // grow: index of the clone
  double share = 0.0;       // the share that triggered it
  double router_entropy = 0.0;
  std::string reason;
  std::string to_json() const;
};

class GrowPruneController {
 public:
  explicit GrowPruneController(ControllerConfig config = {}) : config_(config) {}
  // Applies at most one prune and one grow to `layer` from the epoch's statistics; returns the
  // decisions taken (also kept in history()).
  std::vector<ControllerDecision> evaluate(MoELayer& layer, const StepStats& epoch_stats,
                                           nn::Optimizer* optimizer = nullptr);
  const std::vector<ControllerDecision>& history() const { return history_; }

 private:
  ControllerConfig config_;
  int64_t evaluations_ = 0;
  std::vector<int64_t> low_streak_, high_streak_;  // per expert
  int64_t entropy_streak_ = 0;
  std::vector<ControllerDecision> history_;
};

}  // namespace mg::moe
