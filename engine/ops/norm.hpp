// Normalization, dropout and embedding: the functional forms behind nn's modules.
#pragma once
#include "engine/generator.hpp"
#include "engine/tensor.hpp"

namespace mg {

// One constant per normalization default, shared by every backend and module.
inline constexpr double kBatchNormMomentum = 0.1;
inline constexpr double kNormEps = 1e-5;

// batch_norm over [N, C, *]: statistics per channel C over every other dim.
//   use_batch_stats: normalize with this batch's mean and biased variance (training) rather
//                    than running_mean / running_var;
//   update_running_stats: with batch stats, fold them into running_mean / running_var in place
//                    with `momentum` (running_var takes the unbiased variance), as torch.
// The three choices a module makes (batch or running stats, update or freeze, train affine or
// not) are independent arguments here; weight and bias may be undefined.
Tensor batch_norm(const Tensor& x, const Tensor& running_mean, const Tensor& running_var,
                  const Tensor& weight, const Tensor& bias, bool use_batch_stats,
                  bool update_running_stats, double momentum = kBatchNormMomentum,
                  double eps = kNormEps);

// layer_norm over the trailing dims given by normalized_shape; weight/bias may be undefined.
Tensor layer_norm(const Tensor& x, const Shape& normalized_shape, const Tensor& weight = {},
                  const Tensor& bias = {}, double eps = kNormEps);

// Inverted dropout: zeroes elements with probability p and scales the rest by 1/(1-p) when
// training; identity otherwise. The mask comes from `gen` (the default generator when null).
Tensor dropout(const Tensor& x, double p, bool training, Generator* gen = nullptr);

// Rows of weight [num_embeddings, dim] selected by int32 indices of any shape -> [..., dim].
Tensor embedding(const Tensor& weight, const Tensor& indices);

}  // namespace mg
