// Routing statistics, what a researcher reads: per step (StepStats) and aggregated over an epoch
// (StatsAccumulator), as structs and as JSON lines.
#pragma once
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "moe/balance.hpp"

namespace mg::moe {

struct StepStats {
  int64_t inputs = 0;                       // T
  int64_t num_experts = 0;
  int64_t top_k = 0;
  std::vector<int64_t> tokens_per_expert;   // assignments processed (after capacity drops)
  std::vector<double> fraction;             // tokens_per_expert / their sum
  std::vector<double> mean_gate_prob;       // mean over inputs of the router's score per expert
  double router_entropy = 0.0;              // mean over inputs of the entropy of the scores (nats)
  double load_entropy = 0.0;                // entropy of `fraction` (nats; log E when balanced)
  double max_over_mean_load = 0.0;          // max_i tokens / mean tokens
  int64_t dropped = 0;                      // assignments dropped by capacity
  std::vector<double> bias;                 // aux-loss-free bias per expert (empty when off)
  BalanceLosses losses;                     // values only
  std::string to_json() const;              // one line
};

// Collects StepStats over an epoch, plus, when labels are given, the class-by-expert routing
// count matrix and the router's agreement with an oracle mapping.
class StatsAccumulator {
 public:
  StatsAccumulator(int64_t num_experts, int64_t num_classes = 0);
  // indices [T, k] int32 as routed; labels [T] int32 or undefined; oracle_map label -> expert.
  void add(const StepStats& step, const Tensor& indices = {}, const Tensor& labels = {},
           const std::vector<int32_t>& oracle_map = {});
  StepStats epoch() const;  // summed counts, averaged means
  // counts[c][e]: inputs of class c whose top-1 expert was e
  const std::vector<std::vector<int64_t>>& class_by_expert() const { return class_by_expert_; }
  // Share of labelled inputs whose top-1 expert equals oracle_map[label]; NaN without labels.
  double router_accuracy() const;
  std::string to_json() const;
  int64_t steps() const { return steps_; }

 private:
  int64_t num_experts_, num_classes_;
  int64_t steps_ = 0;
  StepStats sum_;
  std::vector<std::vector<int64_t>> class_by_expert_;
  int64_t oracle_agree_ = 0, oracle_total_ = 0;
};

// Expert numbers are arbitrary: whether routing follows a grouping of the inputs (superclasses,
// domains) is measured up to the best one-to-one group -> expert map, the one maximizing the share
// of inputs whose top-1 expert is their group's expert. Solved exactly (the Hungarian algorithm:
// Kuhn 1955, Munkres 1957); with more groups than experts, the groups that add least get none.
struct GroupAssignment {
  std::vector<int64_t> expert_of_group;  // distinct experts; -1 for a group left without one
  double agreement = 0;                  // share of inputs routed to their group's expert
};
// group_by_expert[g][e]: inputs of group g whose top-1 expert was e.
GroupAssignment best_assignment(const std::vector<std::vector<double>>& group_by_expert);

// Warns when one expert takes more than `max_share` of the assignments for `patience`
// consecutive steps: the gate has collapsed onto it.
class StuckGateDetector {
 public:
  StuckGateDetector(double max_share = 0.9, int64_t patience = 50)
      : max_share_(max_share), patience_(patience) {}
  // True on the step the condition is first met (and again after it clears and recurs).
  bool update(const StepStats& step);
  int64_t stuck_expert() const { return expert_; }
  std::string message() const;

 private:
  double max_share_;
  int64_t patience_;
  int64_t expert_ = -1, run_ = 0;
  bool reported_ = false;
};

}  // namespace mg::moe
