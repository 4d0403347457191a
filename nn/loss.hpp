// The engine's losses as modules (torch.nn.CrossEntropyLoss etc.), for Sequential-style code.
#pragma once
#include "engine/ops/loss.hpp"
#include "nn/module.hpp"

namespace mg::nn {

class CrossEntropyLoss : public Module {
 public:
  explicit CrossEntropyLoss(CrossEntropyOptions options = {}) : Module("CrossEntropyLoss"), options(options) {}
  Tensor forward(const Tensor& logits, const Tensor& target) { return cross_entropy(logits, target, options); }
  CrossEntropyOptions options;
};

class NLLLoss : public Module {
 public:
  explicit NLLLoss(Reduction reduction = kMean, int64_t ignore_index = -100)
      : Module("NLLLoss"), reduction(reduction), ignore_index(ignore_index) {}
  Tensor forward(const Tensor& log_probs, const Tensor& target) {
    return nll_loss(log_probs, target, reduction, ignore_index);
  }
  Reduction reduction;
  int64_t ignore_index;
};

class MSELoss : public Module {
 public:
  explicit MSELoss(Reduction reduction = kMean) : Module("MSELoss"), reduction(reduction) {}
  Tensor forward(const Tensor& input, const Tensor& target) { return mse_loss(input, target, reduction); }
  Reduction reduction;
};

class BCEWithLogitsLoss : public Module {
 public:
  explicit BCEWithLogitsLoss(Reduction reduction = kMean) : Module("BCEWithLogitsLoss"), reduction(reduction) {}
  Tensor forward(const Tensor& logits, const Tensor& target) {
    return binary_cross_entropy_with_logits(logits, target, reduction);
  }
  Reduction reduction;
};

}  // namespace mg::nn
