// Basic layers. Linear's init is torch's: kaiming_uniform_(a = sqrt(5)) for the weight, which is
// U(-1/sqrt(in), 1/sqrt(in)), and the same bound for the bias.
#include "nn/layers.hpp"

#include <cmath>

#include "engine/ops/elementwise.hpp"
#include "engine/ops/linalg.hpp"
#include "engine/ops/norm.hpp"
#include "nn/init.hpp"

namespace mg::nn {

Linear::Linear(int64_t in, int64_t out, bool with_bias)
    : Module("Linear"), in_features(in), out_features(out) {
  MG_CHECK(in > 0 && out > 0, "Linear: features must be positive, got ", in, " -> ", out);
  weight = register_parameter("weight", empty({out, in}));
  if (with_bias) bias = register_parameter("bias", empty({out}));
  reset_parameters();
}

void Linear::reset_parameters() {
  init::kaiming_uniform_(weight, std::sqrt(5.0));
  if (bias.defined()) {
    const double bound = 1.0 / std::sqrt(static_cast<double>(in_features));
    init::uniform_(bias, -bound, bound);
  }
}

Tensor Linear::forward(const Tensor& x) {
  MG_CHECK(x.dim() >= 1 && x.size(-1) == in_features, "Linear: input of shape ", shape_str(x.sizes()),
           " does not end in in_features = ", in_features);
  return linear(x, weight, bias);
}

std::string Linear::extra_repr() const {
  return detail::concat("in_features=", in_features, ", out_features=", out_features,
                        ", bias=", bias.defined() ? "True" : "False");
}

Embedding::Embedding(int64_t num, int64_t dim) : Module("Embedding") {
  weight = register_parameter("weight", empty({num, dim}));
  init::normal_(weight);
}
Tensor Embedding::forward(const Tensor& indices) { return embedding(weight, indices); }
std::string Embedding::extra_repr() const {
  return detail::concat(weight.size(0), ", ", weight.size(1));
}

Dropout::Dropout(double p_) : Module("Dropout"), p(p_) {
  MG_CHECK(p >= 0 && p <= 1, "Dropout: probability must be in [0, 1], got ", p);
}
Tensor Dropout::forward(const Tensor& x) { return dropout(x, p, is_training()); }
std::string Dropout::extra_repr() const { return detail::concat("p=", p); }

Flatten::Flatten(int64_t s, int64_t e) : Module("Flatten"), start_dim(s), end_dim(e) {}
Tensor Flatten::forward(const Tensor& x) { return x.flatten(start_dim, end_dim); }

Tensor ReLU::forward(const Tensor& x) { return relu(x); }
GELU::GELU(std::string a) : Module("GELU"), approximate(std::move(a)) {}
Tensor GELU::forward(const Tensor& x) { return gelu(x, approximate); }
Tensor SiLU::forward(const Tensor& x) { return silu(x); }
Tensor Tanh::forward(const Tensor& x) { return tanh(x); }
Tensor Sigmoid::forward(const Tensor& x) { return sigmoid(x); }

}  // namespace mg::nn
