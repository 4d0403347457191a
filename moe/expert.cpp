// The ready-made FFN expert: the transformer feed-forward block (Vaswani et al. 2017) generalized
// to any number of hidden layers, with the optional normalization of the V-MoE CIFAR-100 study
// this project grew out of (Riquelme et al. 2021 route between such MLPs).
//
// With norm = "batchnorm" an expert normalizes over the inputs routed to it, so in training it
// needs at least 2 of them: a single-input batch is an error from BatchNorm1d, as in torch. In
// eval mode (running statistics) any batch size works.
#include "moe/expert.hpp"

#include "nn/layers.hpp"
#include "nn/normalization.hpp"

namespace mg::moe {
namespace {

nn::ModulePtr make_activation(const std::string& name) {
  if (name == "relu") return std::make_shared<nn::ReLU>();
  if (name == "gelu") return std::make_shared<nn::GELU>();
  if (name == "silu") return std::make_shared<nn::SiLU>();
  if (name == "tanh") return std::make_shared<nn::Tanh>();
  throw Error("FFNExpertConfig.activation must be relu, gelu, silu or tanh, got '" + name + "'");
}

FFNExpertConfig validated(FFNExpertConfig c) {
  MG_CHECK(c.input_dim > 0, "FFNExpertConfig.input_dim must be positive, got ", c.input_dim);
  MG_CHECK(c.output_dim >= 0, "FFNExpertConfig.output_dim must be >= 0 (0: input_dim), got ", c.output_dim);
  if (c.output_dim == 0) c.output_dim = c.input_dim;
  for (int64_t h : c.hidden) MG_CHECK(h > 0, "FFNExpertConfig.hidden sizes must be positive, got ", h);
  MG_CHECK(c.norm == "none" || c.norm == "layernorm" || c.norm == "batchnorm",
           "FFNExpertConfig.norm must be none, layernorm or batchnorm, got '", c.norm, "'");
  MG_CHECK(c.dropout >= 0 && c.dropout < 1, "FFNExpertConfig.dropout must be in [0, 1), got ", c.dropout);
  make_activation(c.activation);  // throws on an unknown name, before any layer is built
  return c;
}

}  // namespace

FFNExpert::FFNExpert(FFNExpertConfig config) : config_(validated(std::move(config))) {
  int64_t width = config_.input_dim;
  for (int64_t hidden : config_.hidden) {
    push_back(std::make_shared<nn::Linear>(width, hidden));
    if (config_.norm == "layernorm") push_back(std::make_shared<nn::LayerNorm>(Shape{hidden}));
    if (config_.norm == "batchnorm") push_back(std::make_shared<nn::BatchNorm1d>(hidden));
    push_back(make_activation(config_.activation));
    if (config_.dropout > 0) push_back(std::make_shared<nn::Dropout>(config_.dropout));
    width = hidden;
  }
  push_back(std::make_shared<nn::Linear>(width, config_.output_dim));
}

nn::ModulePtr make_ffn_expert_like(const nn::Module& source) {
  const auto* ffn = dynamic_cast<const FFNExpert*>(&source);
  MG_CHECK(ffn != nullptr, "make_ffn_expert_like: the source expert is a ", source.name(),
           ", not an FFNExpert; give MoELayer a factory for its expert type");
  auto fresh = std::make_shared<FFNExpert>(ffn->config());
  // The fresh expert lives where the source does, so its weights can be copied in directly.
  const std::vector<Tensor> params = source.parameters();
  if (!params.empty()) {
    fresh->to(params.front().dtype());
    fresh->to(params.front().device());
  }
  fresh->train(source.is_training());
  return fresh;
}

}  // namespace mg::moe
