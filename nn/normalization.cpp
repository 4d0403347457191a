#include "nn/normalization.hpp"

#include <algorithm>

#include "engine/autograd.hpp"
#include "nn/init.hpp"

namespace mg::nn {

BatchNorm::BatchNorm(std::string name, std::vector<int64_t> expected_dims, int64_t features,
                     double eps_, double momentum_, bool affine, bool track)
    : Module(std::move(name)),
      num_features(features),
      eps(eps_),
      momentum(momentum_),
      track_running_stats(track),
      expected_dims_(std::move(expected_dims)) {
  MG_CHECK(features > 0, this->name(), ": num_features must be positive, got ", features);
  if (affine) {
    weight = register_parameter("weight", ones({features}));
    bias = register_parameter("bias", zeros({features}));
  }
  if (track) {
    running_mean = register_buffer("running_mean", zeros({features}));
    running_var = register_buffer("running_var", ones({features}));
  }
}

void BatchNorm::reset_running_stats() {
  if (!track_running_stats) return;
  init::zeros_(running_mean);
  init::ones_(running_var);
}

bool BatchNorm::uses_batch_stats() const {
  return !track_running_stats || (is_training() && !running_stats_frozen());
}

Tensor BatchNorm::forward(const Tensor& x) {
  MG_CHECK(std::find(expected_dims_.begin(), expected_dims_.end(), x.dim()) != expected_dims_.end(),
           name(), ": expected input of ", expected_dims_.front(),
           expected_dims_.size() > 1 ? " or " + std::to_string(expected_dims_.back()) : std::string(),
           " dims, got shape ", shape_str(x.sizes()));
  MG_CHECK(x.size(1) == num_features, name(), ": expected ", num_features, " channels, got input shape ",
           shape_str(x.sizes()));
  const bool batch_stats = uses_batch_stats();
  return batch_norm(x, running_mean, running_var, weight, bias, batch_stats,
                    batch_stats && track_running_stats, momentum, eps);
}

std::string BatchNorm::extra_repr() const {
  return detail::concat(num_features, ", eps=", eps, ", momentum=", momentum,
                        ", affine=", weight.defined() ? "True" : "False",
                        ", track_running_stats=", track_running_stats ? "True" : "False",
                        running_stats_frozen() ? ", stats frozen" : "");
}

LayerNorm::LayerNorm(Shape shape, double eps_, bool affine)
    : Module("LayerNorm"), normalized_shape(std::move(shape)), eps(eps_) {
  if (affine) {
    weight = register_parameter("weight", ones(normalized_shape));
    bias = register_parameter("bias", zeros(normalized_shape));
  }
}

Tensor LayerNorm::forward(const Tensor& x) { return layer_norm(x, normalized_shape, weight, bias, eps); }

std::string LayerNorm::extra_repr() const {
  return detail::concat(shape_str(normalized_shape), ", eps=", eps,
                        ", elementwise_affine=", weight.defined() ? "True" : "False");
}

}  // namespace mg::nn
