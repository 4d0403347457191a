// Load-balancing losses: each one selectable with its own coefficient, all combinable. Each takes
// the router's outputs for T inputs and E experts and returns a differentiable 0-d tensor.
#pragma once
#include <cmath>  // NAN
#include "moe/router.hpp"

namespace mg::moe {

struct BalanceConfig {
  double switch_coef = 0.0;      // Switch / GShard: E * sum_i f_i * P_i
  double variance_coef = 0.0;    // the original study's usage variance: mean_i (P_i - mean P)^2
  double importance_coef = 0.0;  // Shazeer 2017: CV^2 of the per-expert sum of combine weights
  double load_coef = 0.0;        // Shazeer 2017: CV^2 of the smooth per-expert load estimate
  double z_coef = 0.0;           // ST-MoE router z-loss: mean_t logsumexp(logits_t)^2
};

// f_i = share of the T*k routed assignments that went to expert i (no gradient);
// P_i = mean over inputs of scores[:, i] (gradient to the gate).
Tensor switch_loss(const Routing& routing, int64_t num_experts);
Tensor variance_loss(const Routing& routing);
// importance_i = sum over inputs of the combine weight given to expert i (0 where not chosen).
Tensor importance_loss(const Routing& routing, int64_t num_experts);
// load_i = sum over inputs of P(expert i stays in the top k under a fresh noise draw), from the
// clean logits, the noise std and the k-th best noisy logit (Shazeer et al. 2017, appendix A).
// Needs Learned noise; with any other router it is the hard count's CV^2 (no gradient).
Tensor load_loss(const Routing& routing, int64_t num_experts, int64_t top_k);
Tensor z_loss(const Routing& routing);

struct BalanceLosses {
  Tensor total;  // sum of coef * loss over the enabled losses (0 when none is)
  // Each loss's value (no gradient) for statistics; NaN where not computed.
  double switch_value = NAN, variance_value = NAN, importance_value = NAN, load_value = NAN,
         z_value = NAN;
};
BalanceLosses balance_losses(const BalanceConfig& config, const Routing& routing,
                             int64_t num_experts, int64_t top_k);

}  // namespace mg::moe
