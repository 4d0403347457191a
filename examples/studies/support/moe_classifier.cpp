// MoEClassifier: builds the trunk, the experts (FFNExpert, cloneable through make_ffn_expert_like)
// and the head, and chains them.
#include "examples/studies/support/moe_classifier.hpp"

#include <unordered_set>

#include "engine/error.hpp"
#include "engine/generator.hpp"
#include "engine/ops.hpp"

namespace mg::study {

MoEClassifier::MoEClassifier(MoEClassifierConfig config) : nn::Module("MoEClassifier"), config_(std::move(config)) {
  MG_CHECK(config_.input_dim > 0 && config_.num_classes > 0, "MoEClassifier: input_dim and num_classes must be ",
           "positive, got ", config_.input_dim, " and ", config_.num_classes);
  const int64_t E = config_.moe.router.num_experts;
  MG_CHECK(E >= 1, "MoEClassifier: config.moe.router.num_experts must be set, got ", E);
  manual_seed(config_.init_seed);

  trunk_ = std::make_shared<nn::Sequential>();
  int64_t width = config_.input_dim;
  for (int64_t hidden : config_.trunk_hidden) {
    trunk_->push_back(std::make_shared<nn::Linear>(width, hidden));
    trunk_->push_back(std::make_shared<nn::ReLU>());
    width = hidden;
  }
  register_module("trunk", trunk_);

  config_.moe.router.input_dim = width;
  config_.expert.input_dim = width;
  config_.expert.output_dim = config_.head == Head::None ? config_.num_classes : width;
  std::vector<nn::ModulePtr> experts;
  for (int64_t e = 0; e < E; ++e) experts.push_back(std::make_shared<moe::FFNExpert>(config_.expert));
  moe_ = register_module("moe", std::make_shared<moe::MoELayer>(config_.moe, std::move(experts),
                                                                std::vector<nn::ModulePtr>{},
                                                                moe::make_ffn_expert_like));
  if (config_.head == Head::Residual)
    head_ = register_module("head", std::make_shared<nn::Linear>(width, config_.num_classes));
}

Tensor MoEClassifier::features(const Tensor& x) {
  MG_CHECK(x.dim() == 2 && x.size(1) == config_.input_dim, "MoEClassifier: expected input [B, ",
           config_.input_dim, "], got ", shape_str(x.sizes()));
  return trunk_->forward(x);
}

Tensor MoEClassifier::forward(const Tensor& x, const Tensor& labels) {
  const Tensor h = features(x);
  const Tensor routed = moe_->forward(h, labels);
  return head_ ? head_->forward(h + routed) : routed;
}

std::vector<Tensor> MoEClassifier::router_parameters() const { return moe_->router().parameters(); }

std::vector<Tensor> MoEClassifier::non_router_parameters() const {
  std::unordered_set<const TensorImpl*> router;
  for (const Tensor& p : router_parameters()) router.insert(p.impl().get());
  std::vector<Tensor> rest;
  for (const Tensor& p : parameters())
    if (!router.count(p.impl().get())) rest.push_back(p);
  return rest;
}

}  // namespace mg::study
