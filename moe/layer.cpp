// MoELayer: routing, sorted dispatch, the experts, the weighted combine, the balancing loss and the
// step statistics (the expert lifecycle is in lifecycle.cpp). Dispatch follows the "sorted" form
// of shared/reference/torch/moe_layer.py (and MegaBlocks' grouping of tokens by expert): a stable
// counting sort of the (input, slot) pairs by expert, one index_select that gathers every kept
// input, each expert run once on its contiguous slice, and one index_add that scatters the
// gate-weighted outputs back.
//
// The experts run one of two ways, with the same results up to the order of floating-point sums:
//   module path   expert->forward(slice) for each expert in turn, recorded op by op. Any module.
//   grouped path  when every expert is a plain Linear -> ReLU -> Linear (FFNExpert without norm
//                 and dropout, or such a Sequential): one grouped_mlp op (engine/ops/grouped_mlp.hpp)
//                 runs all experts' GEMMs together, so many small experts (E = 64 gives ~128
//                 inputs each) are as fast as a few large ones.
#include "moe/layer.hpp"

#include <algorithm>
#include <cmath>
#include <optional>
#include <typeinfo>

#include "engine/autograd.hpp"
#include "engine/ops.hpp"
#include "engine/parallel.hpp"
#include "engine/profiler.hpp"
#include "moe/expert.hpp"
#include "nn/layers.hpp"

namespace mg::moe {
namespace {

// ---------------------------------------------------------------- dispatch plan

// The kept (input, slot) pairs grouped by expert: expert e's pairs are [offset[e], offset[e+1]),
// in input order (the counting sort is stable), so capacity keeps each expert's first inputs.
// The pairs stay on the routing's device; only the counts come to the host, as they size the
// experts' batches.
struct DispatchPlan {
  Tensor token;                         // int32 [P] input of each kept pair
  Tensor pair;                          // int32 [P] its flat position t * k + j in indices / weights
  std::vector<int64_t> offset;          // [E + 1]
  std::vector<int64_t> tokens_per_expert;
  int64_t dropped = 0;
};

// At most ceil(c * T * k / E) pairs per expert; c = 0: no limit. The small slack keeps a product
// that is an integer up to rounding (0.1 * 30 = 3.0000000000000004) from gaining a slot.
int64_t expert_capacity(double capacity_factor, int64_t T, int64_t k, int64_t E) {
  if (capacity_factor <= 0) return T * k;
  const double exact = capacity_factor * static_cast<double>(T * k) / static_cast<double>(E);
  return static_cast<int64_t>(std::ceil(exact - 1e-9 * std::max(1.0, exact)));
}

DispatchPlan plan_dispatch(const Tensor& indices, int64_t E, double capacity_factor) {
  const int64_t T = indices.size(0), k = indices.size(1);
  Buckets buckets;
  try {
    buckets = bucket_by_key(indices.reshape({T * k}), E, expert_capacity(capacity_factor, T, k, E));
  } catch (const Error& error) {
    throw Error(detail::concat("MoELayer: the router chose experts outside [0, ", E, "): ", error.what()));
  }
  DispatchPlan plan;
  plan.pair = buckets.position;
  plan.token = k == 1 ? plan.pair : div(plan.pair, full({}, static_cast<double>(k), plan.pair.options()));
  plan.tokens_per_expert = buckets.kept;
  plan.offset.assign(E + 1, 0);
  for (int64_t e = 0; e < E; ++e) {
    plan.offset[e + 1] = plan.offset[e] + buckets.kept[e];
    plan.dropped += buckets.total[e] - buckets.kept[e];
  }
  return plan;
}

// ---------------------------------------------------------------- grouped Linear-ReLU-Linear

// Dropout is the identity when p = 0 or in eval mode, Identity always.
bool is_identity(const nn::Module& m) {
  if (typeid(m) == typeid(nn::Identity)) return true;
  if (typeid(m) != typeid(nn::Dropout)) return false;
  return static_cast<const nn::Dropout&>(m).p == 0.0 || !m.is_training();
}

// The experts' weights when every one computes exactly Linear -> ReLU -> Linear with weights of
// x's dtype on x's device; nullopt otherwise (the module path then runs them). Exact types only: a subclass
// may override forward.
std::optional<std::vector<GroupedMlpWeights>> linear_relu_linear(
    const std::vector<nn::ModulePtr>& experts, const Tensor& x) {
  std::vector<GroupedMlpWeights> all;
  for (const nn::ModulePtr& expert : experts) {
    const std::type_info& type = typeid(*expert);
    if (type != typeid(nn::Sequential) && type != typeid(FFNExpert)) return std::nullopt;
    std::vector<nn::ModulePtr> layers;
    for (const nn::ModulePtr& child : expert->children())
      if (!is_identity(*child)) layers.push_back(child);
    if (layers.size() != 3 || typeid(*layers[0]) != typeid(nn::Linear) ||
        typeid(*layers[1]) != typeid(nn::ReLU) || typeid(*layers[2]) != typeid(nn::Linear))
      return std::nullopt;
    const auto& l1 = static_cast<const nn::Linear&>(*layers[0]);
    const auto& l2 = static_cast<const nn::Linear&>(*layers[2]);
    GroupedMlpWeights w{l1.weight, l1.bias, l2.weight, l2.bias};
    for (const Tensor* t : {&w.w1, &w.b1, &w.w2, &w.b2})
      if (t->defined() && (t->dtype() != x.dtype() || t->device() != x.device()))
        return std::nullopt;
    if (w.w1.size(1) != x.size(1) || w.w2.size(1) != w.w1.size(0)) return std::nullopt;
    if (!all.empty() && w.w2.size(0) != all.front().w2.size(0)) return std::nullopt;
    all.push_back(std::move(w));
  }
  return all;
}

// ---------------------------------------------------------------- statistics

// Entropy in nats of a distribution given by non-negative weights (normalized here).
double entropy_of(const std::vector<double>& weights) {
  double total = 0, h = 0;
  for (double v : weights) total += v;
  if (total <= 0) return 0.0;
  for (double v : weights)
    if (v > 0) h -= v / total * std::log(v / total);
  return h;
}

// mean_gate_prob and router_entropy from scores [T, E]. Each row is normalized before its entropy
// is taken, so Sigmoid scores (which need not sum to 1) get the entropy of their shares. Rows are
// summed in fixed blocks combined in order, so the figures do not depend on the thread count.
template <class T>
void score_stats(const Tensor& scores, StepStats& s) {
  const int64_t rows = scores.size(0), E = scores.size(1);
  constexpr int64_t kBlock = 256;
  const int64_t blocks = (rows + kBlock - 1) / kBlock;
  std::vector<double> column_sums(blocks * E, 0.0), entropy_sums(blocks, 0.0);
  const T* p = scores.data_ptr<T>();
  parallel_for(blocks, rows * E * 8, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      double* column = column_sums.data() + b * E;
      for (int64_t t = b * kBlock; t < std::min(rows, (b + 1) * kBlock); ++t) {
        const T* row = p + t * E;
        T total = 0, plogp = 0;
        for (int64_t e = 0; e < E; ++e) {
          column[e] += row[e];
          total += row[e];
          if (row[e] > 0) plogp += row[e] * std::log(row[e]);
        }
        // H = -sum (p/Z) log(p/Z) = log Z - (sum p log p) / Z
        if (total > 0) entropy_sums[b] += std::log(total) - plogp / total;
      }
    }
  });
  s.mean_gate_prob.assign(E, 0.0);
  double entropy = 0;
  for (int64_t b = 0; b < blocks; ++b) {
    entropy += entropy_sums[b];
    for (int64_t e = 0; e < E; ++e) s.mean_gate_prob[e] += column_sums[b * E + e];
  }
  for (double& m : s.mean_gate_prob) m = rows > 0 ? m / rows : 0.0;
  s.router_entropy = rows > 0 ? entropy / rows : 0.0;
}

StepStats step_stats(const Routing& routing, const DispatchPlan& plan, int64_t E, int64_t k,
                     const Router& router, const BalanceLosses& losses) {
  NoGradGuard no_grad;
  StepStats s;
  s.inputs = routing.indices.size(0);
  s.num_experts = E;
  s.top_k = k;
  s.tokens_per_expert = plan.tokens_per_expert;
  s.dropped = plan.dropped;
  int64_t kept = 0, most = 0;
  for (int64_t n : plan.tokens_per_expert) {
    kept += n;
    most = std::max(most, n);
  }
  s.fraction.resize(E);
  for (int64_t e = 0; e < E; ++e) s.fraction[e] = kept > 0 ? double(plan.tokens_per_expert[e]) / kept : 0.0;
  s.load_entropy = entropy_of(s.fraction);
  s.max_over_mean_load = kept > 0 ? double(most) / (double(kept) / E) : 0.0;
  if (routing.scores.defined() && routing.scores.numel() > 0) {
    const Tensor scores = routing.scores.detach().to(Device::cpu()).contiguous();
    MG_DISPATCH_FLOATING_TYPES(scores.dtype(), "MoELayer stats", [&] { score_stats<scalar_t>(scores, s); });
  } else {
    s.mean_gate_prob.assign(E, 0.0);
  }
  if (router.config().bias_update_rate > 0 && router.expert_bias.defined())
    s.bias = router.expert_bias.to_vector<double>();
  s.losses = losses;
  return s;
}

}  // namespace

// ---------------------------------------------------------------- MoELayer

MoELayer::MoELayer(MoEConfig config, std::vector<nn::ModulePtr> experts,
                   std::vector<nn::ModulePtr> shared_experts, ExpertFactory factory)
    : Module("MoELayer"),
      config_(std::move(config)),
      experts_(std::move(experts)),
      shared_experts_(std::move(shared_experts)),
      factory_(std::move(factory)) {
  const RouterConfig& rc = config_.router;
  MG_CHECK(!experts_.empty(), "MoELayer: needs at least one expert");
  MG_CHECK(static_cast<int64_t>(experts_.size()) == rc.num_experts, "MoELayer: ", experts_.size(),
           " experts but config.router.num_experts = ", rc.num_experts);
  MG_CHECK(rc.input_dim > 0, "MoELayer: config.router.input_dim must be set (the model dim), got ",
           rc.input_dim);
  MG_CHECK(rc.top_k >= 1 && rc.top_k <= rc.num_experts, "MoELayer: top_k = ", rc.top_k,
           " must be in [1, ", rc.num_experts, "]");
  MG_CHECK(config_.capacity_factor >= 0, "MoELayer: capacity_factor must be >= 0 (0: dropless), got ",
           config_.capacity_factor);
  for (size_t i = 0; i < experts_.size(); ++i) MG_CHECK(experts_[i] != nullptr, "MoELayer: expert ", i, " is null");
  for (size_t i = 0; i < shared_experts_.size(); ++i)
    MG_CHECK(shared_experts_[i] != nullptr, "MoELayer: shared expert ", i, " is null");
  router_ = register_module("router", std::make_shared<Router>(config_.router));
  rebuild_expert_registration();
}

// Children "experts" (a ModuleList: "experts.<i>.<...>") and, when there are any,
// "shared_experts", re-registered after the router in that order whenever experts come or go,
// so parameter order and state_dict names always follow experts_.
void MoELayer::rebuild_expert_registration() {
  for (const char* name : {"experts", "shared_experts"})
    for (const auto& [child, module] : named_children())
      if (child == name) {
        unregister_module(name);
        break;
      }
  auto list = std::make_shared<nn::ModuleList>();
  for (const nn::ModulePtr& e : experts_) list->push_back(e);
  register_module("experts", list);
  if (!shared_experts_.empty()) {
    auto shared = std::make_shared<nn::ModuleList>();
    for (const nn::ModulePtr& e : shared_experts_) shared->push_back(e);
    register_module("shared_experts", shared);
  }
}

nn::ModulePtr MoELayer::expert(int64_t i) const {
  MG_CHECK(i >= 0 && i < num_experts(), "MoELayer: expert ", i, " out of range [0, ", num_experts(), ")");
  return experts_[i];
}

Tensor MoELayer::forward(const Tensor& x) { return forward(x, Tensor()); }

Tensor MoELayer::forward(const Tensor& x, const Tensor& labels) {
  MG_PROFILE("moe_layer");
  const int64_t D = config_.router.input_dim;
  MG_CHECK((x.dim() == 2 || x.dim() == 3) && x.size(-1) == D, "MoELayer: expected input [B, ", D,
           "] or [B, N, ", D, "], got ", shape_str(x.sizes()));
  const int64_t B = x.size(0), N = x.dim() == 3 ? x.size(1) : 1, T = B * N;
  const int64_t E = num_experts(), k = config_.router.top_k;
  MG_CHECK(router_->num_experts() == E, "MoELayer: the router has ", router_->num_experts(),
           " rows but the layer ", E, " experts");
  const Tensor tokens = x.reshape({T, D});

  // Per-example labels become per-token labels (V-MoE routes tokens; the label is the image's).
  Tensor token_labels;
  if (labels.defined()) {
    MG_CHECK(labels.dtype() == kInt32 && (labels.numel() == B || labels.numel() == T),
             "MoELayer: labels must be int32 [B] (or one per token, [B, N]), got ",
             dtype_name(labels.dtype()), " ", shape_str(labels.sizes()), " for input ", shape_str(x.sizes()));
    token_labels = (labels.numel() == T ? labels.reshape({T})
                                        : labels.reshape({B, 1}).expand({B, N}).reshape({T}))
                       .to(x.device());
  }

  Routing routing;
  {
    MG_PROFILE("moe_route");
    routing = router_->route(tokens, token_labels);
  }
  DispatchPlan plan;
  Tensor token_index, xs;
  {
    MG_PROFILE("moe_dispatch");
    plan = plan_dispatch(routing.indices, E, config_.capacity_factor);
    token_index = plan.token;
    xs = index_select(tokens, 0, token_index);
  }

  Tensor expert_out;  // [P, D_out], grouped by expert
  int64_t D_out = D;
  {
    MG_PROFILE("moe_experts");
    const auto grouped = linear_relu_linear(experts_, tokens);
    if (grouped) {
      D_out = grouped->front().w2.size(0);
      expert_out = grouped_mlp(xs, plan.offset, *grouped);
    } else {
      TensorList outs;
      for (int64_t e = 0; e < E; ++e) {
        const int64_t n = plan.tokens_per_expert[e];
        if (n == 0) continue;  // skipped: no NaN from an empty batch, no gradient
        try {
          outs.push_back(experts_[e]->forward(xs.narrow(0, plan.offset[e], n)));
        } catch (const Error& error) {
          // Which expert, on how many inputs: a BatchNorm expert routed a single input in training
          // fails here, as torch's BatchNorm does, and the routing decides when.
          throw Error(detail::concat("MoELayer: expert ", e, " failed on its ", n, " routed input",
                                     n == 1 ? "" : "s", ": ", error.what()));
        }
      }
      if (!outs.empty()) {
        expert_out = outs.size() == 1 ? outs.front() : cat(outs, 0);
        D_out = expert_out.size(1);
      }
    }
  }

  Tensor out;
  {
    MG_PROFILE("moe_combine");
    out = zeros({T, D_out}, x.options());
    if (expert_out.defined()) {
      Tensor pair_weight = index_select(routing.weights.reshape({-1}), 0, plan.pair);
      if (pair_weight.dtype() != expert_out.dtype()) pair_weight = pair_weight.to(expert_out.dtype());
      out = index_add(out, 0, token_index, expert_out * pair_weight.unsqueeze(1));
    }
    for (const nn::ModulePtr& shared : shared_experts_) out = out + shared->forward(tokens);
  }

  BalanceLosses losses;
  {
    MG_PROFILE("moe_balance");
    losses = balance_losses(config_.balance, routing, E, k);
  }
  last_aux_loss_ = losses.total;
  {
    MG_PROFILE("moe_stats");
    last_stats_ = step_stats(routing, plan, E, k, *router_, losses);
  }
  last_routing_ = std::move(routing);
  return x.dim() == 3 ? out.reshape({B, N, out.size(1)}) : out;
}

void MoELayer::update_router_bias() {
  if (config_.router.bias_update_rate <= 0 || last_stats_.tokens_per_expert.empty()) return;
  router_->update_bias(last_stats_.tokens_per_expert);
}

}  // namespace mg::moe
