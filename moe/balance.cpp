// Load-balancing losses, each after its paper:
//   switch      Fedus et al. 2021, "Switch Transformers", eq. 4 (GShard's form): E * sum_i f_i P_i
//   variance    the population variance of the mean router probabilities P_i (the study this
//               project grew out of)
//   importance  Shazeer et al. 2017, "Outrageously Large Neural Networks", eq. 6-7: CV^2 of the
//               per-expert sum of gate values
//   load        Shazeer et al. 2017, appendix A: CV^2 of the smooth load estimate
//               sum_x Phi((clean_i - kth_excluding(noisy, k, i)) / noise_std_i)
//   z           Zoph et al. 2022, "ST-MoE", eq. 5: mean over inputs of logsumexp(logits)^2
// CV^2 is the population variance over the squared mean, plus 1e-10 in the denominator: the
// cv_squared of the paper authors' tensor2tensor code, so an all-zero vector gives 0, not NaN.
// (The widely copied PyTorch port uses the unbiased variance instead: E/(E-1) times ours.)
#include "moe/balance.hpp"

#include <cmath>
#include <functional>
#include <numbers>

#include "engine/autograd.hpp"
#include "engine/ops.hpp"

namespace mg::moe {
namespace {

constexpr double kCvSquaredEps = 1e-10;

Tensor cv_squared(const Tensor& values) {
  const Tensor mean = values.mean();
  return values.var({0}, /*unbiased=*/false) / (mean * mean + kCvSquaredEps);
}

// Assignments per expert [E] in the scores' dtype, from indices [T, k]; no gradient.
Tensor assignments_per_expert(const Routing& routing, int64_t num_experts) {
  NoGradGuard no_grad;
  const Tensor& idx = routing.indices;
  const TensorOptions opts = routing.scores.defined() ? routing.scores.options() : TensorOptions(kFloat32);
  return zeros({idx.size(0), num_experts}, opts)
      .scatter_add(1, idx, ones(idx.sizes(), opts))
      .sum({0});
}

// The standard normal CDF, 0.5 * erfc(-z / sqrt 2) (accurate in the lower tail), as an op of its
// own: the engine has no erf. Its derivative is the normal density.
Tensor normal_cdf(const Tensor& z) {
  std::vector<double> values = z.detach().to_vector<double>();
  for (double& v : values) v = 0.5 * std::erfc(-v / std::sqrt(2.0));
  Tensor out = from_vector(values, z.sizes(), kFloat64).to(z.dtype()).to(z.device());
  return record("normal_cdf", out, {z}, [zd = z.detach()](const TensorList& g) {
    const double inv_sqrt_2pi = 1.0 / std::sqrt(2.0 * std::numbers::pi);
    return TensorList{g[0] * exp(zd * zd * -0.5) * inv_sqrt_2pi};
  });
}

void check_routing(const char* loss, const Routing& routing, int64_t num_experts) {
  MG_CHECK(routing.indices.defined() && routing.indices.dim() == 2,
           loss, ": the routing has no indices [T, k]");
  MG_CHECK(!routing.scores.defined() || routing.scores.size(1) == num_experts, loss, ": scores of shape ",
           shape_str(routing.scores.sizes()), " for ", num_experts, " experts");
}

}  // namespace

Tensor switch_loss(const Routing& routing, int64_t num_experts) {
  check_routing("switch_loss", routing, num_experts);
  MG_CHECK(routing.scores.defined(), "switch_loss: the routing has no scores");
  const double assignments = static_cast<double>(routing.indices.numel());
  const Tensor f = assignments_per_expert(routing, num_experts) / assignments;
  const Tensor P = routing.scores.mean({0});
  return (f * P).sum() * static_cast<double>(num_experts);
}

Tensor variance_loss(const Routing& routing) {
  MG_CHECK(routing.scores.defined() && routing.scores.dim() == 2, "variance_loss: the routing has no scores");
  return routing.scores.mean({0}).var({0}, /*unbiased=*/false);
}

Tensor importance_loss(const Routing& routing, int64_t num_experts) {
  check_routing("importance_loss", routing, num_experts);
  MG_CHECK(routing.weights.defined(), "importance_loss: the routing has no weights");
  const Tensor& w = routing.weights;
  const Tensor importance =
      zeros({w.size(0), num_experts}, w.options()).scatter_add(1, routing.indices, w).sum({0});
  return cv_squared(importance);
}

Tensor load_loss(const Routing& routing, int64_t num_experts, int64_t top_k) {
  check_routing("load_loss", routing, num_experts);
  const bool smooth = routing.noise_stddev.defined() && routing.noisy_logits.defined() &&
                      routing.clean_logits_for_load.defined() && top_k < num_experts;
  if (!smooth) return cv_squared(assignments_per_expert(routing, num_experts));
  const Tensor& noisy = routing.noisy_logits;
  const Tensor& clean = routing.clean_logits_for_load;
  const Tensor top = std::get<0>(topk(noisy, top_k + 1, 1));
  // Expert i keeps its place if its fresh noisy logit beats the k-th best of the others: the
  // (k+1)-th overall when i is in the top k, the k-th when it is not.
  const Tensor threshold_if_in = top.narrow(1, top_k, 1);
  const Tensor threshold_if_out = top.narrow(1, top_k - 1, 1);
  Tensor is_in;
  {
    NoGradGuard no_grad;
    is_in = gt(noisy.detach(), threshold_if_in.detach());
  }
  const Tensor prob_if_in = normal_cdf((clean - threshold_if_in) / routing.noise_stddev);
  const Tensor prob_if_out = normal_cdf((clean - threshold_if_out) / routing.noise_stddev);
  const Tensor load = where(is_in, prob_if_in, prob_if_out).sum({0});
  return cv_squared(load);
}

Tensor z_loss(const Routing& routing) {
  MG_CHECK(routing.logits.defined() && routing.logits.dim() == 2, "z_loss: the routing has no logits");
  const Tensor lse = routing.logits.logsumexp({1});
  return (lse * lse).mean();
}

BalanceLosses balance_losses(const BalanceConfig& config, const Routing& routing,
                             int64_t num_experts, int64_t top_k) {
  BalanceLosses out;
  const bool has_indices = routing.indices.defined();
  const bool has_scores = routing.scores.defined();
  Tensor total;
  // An enabled loss joins the total with its gradient; a disabled one is still measured, without
  // building a graph, so the statistics always show all five. The values are read in one copy at
  // the end: on a GPU each read is a wait for the device.
  std::vector<double*> measured;
  TensorList values;
  auto account = [&](const char* name, double coef, bool computable, double& value,
                     const std::function<Tensor()>& compute) {
    if (!computable) {
      MG_CHECK(coef == 0, "balance_losses: ", name, " is enabled (coef ", coef,
               ") but the routing lacks what it needs");
      return;
    }
    Tensor loss;
    if (coef == 0) {
      NoGradGuard no_grad;
      loss = compute();
    } else {
      loss = compute();
      total = total.defined() ? total + loss * coef : loss * coef;
    }
    measured.push_back(&value);
    values.push_back(loss.detach().to(kFloat64).reshape({1}));
  };
  account("switch", config.switch_coef, has_indices && has_scores, out.switch_value,
          [&] { return switch_loss(routing, num_experts); });
  account("variance", config.variance_coef, has_scores, out.variance_value,
          [&] { return variance_loss(routing); });
  account("importance", config.importance_coef, has_indices && routing.weights.defined(),
          out.importance_value, [&] { return importance_loss(routing, num_experts); });
  account("load", config.load_coef, has_indices, out.load_value,
          [&] { return load_loss(routing, num_experts, top_k); });
  account("z", config.z_coef, routing.logits.defined(), out.z_value, [&] { return z_loss(routing); });
  if (!values.empty()) {
    const std::vector<double> read = cat(values, 0).to_vector<double>();
    for (size_t i = 0; i < measured.size(); ++i) *measured[i] = read[i];
  }
  if (!total.defined()) total = zeros({}, has_scores ? routing.scores.options() : TensorOptions(kFloat32));
  out.total = total;
  return out;
}

}  // namespace mg::moe
