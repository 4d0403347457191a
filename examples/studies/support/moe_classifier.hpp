// The small MoE classifier every study trains, assembled from existing pieces (nn::Linear,
// moe::MoELayer, moe::FFNExpert):
//   input [B, D] -> trunk (Linear + ReLU per trunk_hidden size; none by default) -> MoE -> head
// with two heads:
//   Head::None      the experts map straight to class logits: each expert is a whole classifier of
//                   the inputs routed to it, so "expert e alone" is a model one can evaluate.
//   Head::Residual  h + MoE(h), then Linear(h -> classes), the transformer block's form: an input
//                   dropped by capacity passes through unchanged.
// The classifier owns nothing the MoE layer does not already do: routing, dispatch, balancing
// losses, statistics and the expert lifecycle are moe()'s.
#pragma once
#include <memory>
#include <vector>

#include "moe/expert.hpp"
#include "moe/layer.hpp"
#include "nn/containers.hpp"
#include "nn/layers.hpp"

namespace mg::study {

enum class Head { None, Residual };

struct MoEClassifierConfig {
  int64_t input_dim = 0;
  int64_t num_classes = 0;
  std::vector<int64_t> trunk_hidden;  // empty: the MoE sees the input itself
  // Hidden sizes, norm, activation and dropout of every expert; input_dim and output_dim are set
  // by the classifier (the MoE's width in, class logits or the MoE's width out).
  moe::FFNExpertConfig expert;
  // Router, capacity and balancing; router.input_dim is set by the classifier, router.num_experts
  // must be given.
  moe::MoEConfig moe;
  Head head = Head::None;
  // The trunk, experts and head draw their initial weights from the default generator, seeded
  // with this just before they are built (the router has its own: moe.router.seed).
  uint64_t init_seed = 0;
};

class MoEClassifier : public nn::Module {
 public:
  explicit MoEClassifier(MoEClassifierConfig config);

  Tensor forward(const Tensor& x) override { return forward(x, Tensor()); }
  // labels int32 [B]: needed for Oracle routing, and for nothing else.
  Tensor forward(const Tensor& x, const Tensor& labels);
  // What the MoE layer sees for input x (the trunk's output; x itself without a trunk).
  Tensor features(const Tensor& x);

  moe::MoELayer& moe() { return *moe_; }
  const MoEClassifierConfig& config() const { return config_; }
  // The router's parameters, and all the others: the two groups a study gives different
  // learning rates.
  std::vector<Tensor> router_parameters() const;
  std::vector<Tensor> non_router_parameters() const;

 private:
  MoEClassifierConfig config_;
  std::shared_ptr<nn::Sequential> trunk_;
  std::shared_ptr<moe::MoELayer> moe_;
  std::shared_ptr<nn::Linear> head_;  // Head::Residual only
};

}  // namespace mg::study
