// BatchNorm1d/2d and LayerNorm. BatchNorm makes its three choices explicit:
//   normalize with batch statistics  <=> is_training() && !running_stats_frozen()
//   update the running statistics    <=> the same, and track_running_stats
//   train the affine parameters      <=> their requires_grad
// so freeze() (parameters off, statistics frozen) survives any later train() of a parent.
#pragma once
#include "engine/ops/norm.hpp"
#include "nn/module.hpp"

namespace mg::nn {

class BatchNorm : public Module {
 public:
  // expected_dims: 2 or 3 for BatchNorm1d ([N, C] or [N, C, L]), 4 for BatchNorm2d.
  BatchNorm(std::string name, std::vector<int64_t> expected_dims, int64_t num_features,
            double eps, double momentum, bool affine, bool track_running_stats);
  Tensor forward(const Tensor& x) override;
  std::string extra_repr() const override;
  void reset_running_stats();
  bool uses_batch_stats() const;

  int64_t num_features;
  double eps, momentum;
  bool track_running_stats;
  Tensor weight, bias;                 // [C], undefined when not affine
  Tensor running_mean, running_var;    // [C], undefined when not tracking

 private:
  std::vector<int64_t> expected_dims_;
};

class BatchNorm1d : public BatchNorm {
 public:
  explicit BatchNorm1d(int64_t num_features, double eps = kNormEps, double momentum = kBatchNormMomentum,
                       bool affine = true, bool track_running_stats = true)
      : BatchNorm("BatchNorm1d", {2, 3}, num_features, eps, momentum, affine, track_running_stats) {}
};

class BatchNorm2d : public BatchNorm {
 public:
  explicit BatchNorm2d(int64_t num_features, double eps = kNormEps, double momentum = kBatchNormMomentum,
                       bool affine = true, bool track_running_stats = true)
      : BatchNorm("BatchNorm2d", {4}, num_features, eps, momentum, affine, track_running_stats) {}
};

class LayerNorm : public Module {
 public:
  explicit LayerNorm(Shape normalized_shape, double eps = kNormEps, bool elementwise_affine = true);
  Tensor forward(const Tensor& x) override;
  std::string extra_repr() const override;
  Shape normalized_shape;
  double eps;
  Tensor weight, bias;
};

}  // namespace mg::nn
