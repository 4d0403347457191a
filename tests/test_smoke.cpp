#include <catch2/catch.hpp>

#include "moegrad.hpp"

TEST_CASE("smoke: mlp backward") {
  mg::manual_seed(0);
  auto x = mg::randn({4, 3});
  auto w = mg::randn({3, 2}, mg::requires_grad());
  auto y = mg::relu(mg::matmul(x, w)).sum();
  y.backward();
  REQUIRE(w.grad().defined());
  REQUIRE(w.grad().sizes() == mg::Shape{3, 2});
}
