// Builds a small tensor, runs backward and checks the gradient: exit code 0 on success.
#include <cmath>
#include <cstdio>
#include <vector>

#include "moegrad.hpp"

int main() {
  // loss = sum((x @ w)^2) with x [2, 3], w [3, 1]; d loss / d w = 2 x^T (x @ w)
  mg::Tensor x = mg::from_vector(std::vector<float>{1, 2, 3, 4, 5, 6}, {2, 3});
  mg::Tensor w = mg::from_vector(std::vector<float>{0.5f, -1.f, 2.f}, {3, 1}).requires_grad_();
  mg::Tensor y = mg::matmul(x, w);  // [4.5, 9]
  mg::Tensor loss = (y * y).sum();
  loss.backward();
  const std::vector<float> grad = w.grad().to_vector<float>();
  const std::vector<float> expected = {2 * (1 * 4.5f + 4 * 9), 2 * (2 * 4.5f + 5 * 9),
                                       2 * (3 * 4.5f + 6 * 9)};  // 81, 108, 135
  if (grad.size() != expected.size()) {
    std::printf("consumer: gradient has %zu elements, expected 3\n", grad.size());
    return 1;
  }
  bool ok = loss.item<float>() == 4.5f * 4.5f + 81.f;
  for (size_t i = 0; ok && i < grad.size(); ++i) ok = std::fabs(grad[i] - expected[i]) < 1e-4f;
  std::printf("consumer: loss %g, grad [%g, %g, %g] -> %s\n", loss.item<float>(), grad[0], grad[1],
              grad[2], ok ? "ok" : "WRONG");
  return ok ? 0 : 1;
}
