// softmax / log_softmax and the losses, numerically stable for large logits (1e4 and beyond).
#pragma once
#include "engine/tensor.hpp"

namespace mg {

Tensor softmax(const Tensor& x, int64_t dim);
Tensor log_softmax(const Tensor& x, int64_t dim);

// Options in the libtorch style: CrossEntropyOptions().reduction(kSum).label_smoothing(0.1).
struct CrossEntropyOptions {
  Reduction reduction_ = kMean;
  double label_smoothing_ = 0.0;
  int64_t ignore_index_ = -100;
  CrossEntropyOptions reduction(Reduction r) const { auto o = *this; o.reduction_ = r; return o; }
  CrossEntropyOptions label_smoothing(double s) const { auto o = *this; o.label_smoothing_ = s; return o; }
  CrossEntropyOptions ignore_index(int64_t i) const { auto o = *this; o.ignore_index_ = i; return o; }
};

// logits [N, C] (or [N, C, d1, ...]), int32 targets [N] (or [N, d1, ...]). Mean reduction
// divides by the number of targets that are not ignore_index, as torch.
Tensor cross_entropy(const Tensor& logits, const Tensor& target, CrossEntropyOptions options = {});
Tensor nll_loss(const Tensor& log_probs, const Tensor& target, Reduction reduction = kMean,
                int64_t ignore_index = -100);
Tensor mse_loss(const Tensor& input, const Tensor& target, Reduction reduction = kMean);
// Stable for any logit: max(x, 0) - x*y + log(1 + exp(-|x|)).
Tensor binary_cross_entropy_with_logits(const Tensor& logits, const Tensor& target,
                                        Reduction reduction = kMean);

}  // namespace mg
