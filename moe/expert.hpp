// A ready-made FFN expert: Linear -> norm -> activation -> dropout for each hidden size, then a
// Linear back to the model dim. Sizes may differ between experts of one layer (e.g. [256, 128]
// next to [512, 256, 128], as in the V-MoE CIFAR-100 study this project grew out of).
#pragma once
#include <string>
#include <vector>

#include "nn/containers.hpp"

namespace mg::moe {

struct FFNExpertConfig {
  int64_t input_dim = 0;
  int64_t output_dim = 0;              // 0: same as input_dim
  std::vector<int64_t> hidden = {};    // hidden sizes
  std::string norm = "none";           // "none", "layernorm", "batchnorm"
  std::string activation = "relu";     // "relu", "gelu", "silu", "tanh"
  double dropout = 0.0;
};

class FFNExpert : public nn::Sequential {
 public:
  explicit FFNExpert(FFNExpertConfig config);
  const FFNExpertConfig& config() const { return config_; }

 private:
  FFNExpertConfig config_;
};

// A fresh FFNExpert of the same configuration as `source` (which must be one): the factory that
// MoELayer uses to clone experts.
nn::ModulePtr make_ffn_expert_like(const nn::Module& source);

}  // namespace mg::moe
