// The smallest complete moegrad program: a two-layer MLP learns to separate two interleaved
// spirals with plain gradient descent. Everything a training loop needs from the engine appears
// here — tensors, a forward pass, cross_entropy, backward(), reading .grad(), an update under
// NoGradGuard — and nothing else (modules and optimizers come with the nn layer).
#include <cmath>
#include <cstdio>
#include <vector>

#include "moegrad.hpp"

namespace {

// Two spirals of `per_class` points each, with a little noise; labels 0 and 1.
void make_spirals(int per_class, mg::Tensor& x, mg::Tensor& y) {
  mg::Generator gen(7);
  mg::Tensor noise = mg::randn({2 * per_class, 2}, mg::kFloat32, &gen) * 0.08;
  std::vector<float> points;
  std::vector<int32_t> labels;
  for (int c = 0; c < 2; ++c)
    for (int i = 0; i < per_class; ++i) {
      const double r = 0.1 + 0.9 * i / per_class;
      const double angle = 2.0 * M_PI * i / per_class + c * M_PI;
      points.push_back(static_cast<float>(r * std::cos(angle)));
      points.push_back(static_cast<float>(r * std::sin(angle)));
      labels.push_back(c);
    }
  x = mg::from_vector(points, {2 * per_class, 2}) + noise;
  y = mg::from_vector(labels, {2 * per_class}, mg::kInt32);
}

}  // namespace

int main() {
  mg::manual_seed(0);
  mg::Tensor x, y;
  make_spirals(200, x, y);

  const int64_t hidden = 64;
  auto uniform = [](const mg::Shape& shape, double bound) {
    return ((mg::rand(shape) * 2.0 - 1.0) * bound).requires_grad_();
  };
  // A wide first layer: on a 2-d input, large weights give tanh features that vary across the
  // plane, which is what lets a single hidden layer bend its boundary around the spirals.
  mg::Tensor w1 = uniform({2, hidden}, 4.0);
  mg::Tensor b1 = uniform({hidden}, 2.0);
  mg::Tensor w2 = uniform({hidden, 2}, 1.0 / std::sqrt(double(hidden)));
  mg::Tensor b2 = uniform({2}, 1.0 / std::sqrt(double(hidden)));
  std::vector<mg::Tensor> params = {w1, b1, w2, b2};

  const double lr = 0.5;
  std::printf("training a 2-%lld-2 MLP on %lld spiral points\n", static_cast<long long>(hidden),
              static_cast<long long>(x.size(0)));
  float loss_value = 0;
  for (int step = 0; step <= 2000; ++step) {
    mg::Tensor logits = mg::matmul(mg::tanh(mg::matmul(x, w1) + b1), w2) + b2;
    mg::Tensor loss = mg::cross_entropy(logits, y);
    for (auto& p : params) p.mutable_grad_zero_();
    loss.backward();
    {
      mg::NoGradGuard no_grad;
      for (auto& p : params) p.copy_(p - lr * p.grad());
    }
    loss_value = loss.item<float>();
    if (step % 250 == 0) {
      mg::Tensor correct = mg::eq(logits.argmax(1), y).to(mg::kFloat32).mean();
      std::printf("step %4d  loss %.4f  accuracy %.1f%%\n", step, loss_value, 100 * correct.item<float>());
    }
  }

  // One more forward/backward on the first four points to show the gradients themselves.
  mg::Tensor small = mg::cross_entropy(mg::matmul(mg::tanh(mg::matmul(x.narrow(0, 0, 4), w1) + b1), w2) + b2,
                                       y.narrow(0, 0, 4));
  for (auto& p : params) p.mutable_grad_zero_();
  small.backward();
  std::printf("\nloss on 4 points: %s\n", small.to_string().c_str());
  std::printf("d loss / d b2 = %s\n", b2.grad().to_string().c_str());
  std::printf("d loss / d w1[:, :4] = %s\n", w1.grad().narrow(1, 0, 4).to_string().c_str());
  return loss_value < 0.3 ? 0 : 1;
}
