// The gradient-check harness every differentiable op goes through (after ggml's test-backend-ops
// gradient mode): central differences in float64 against the analytic backward.
//
// `f` receives float64 leaves and returns one tensor; to test non-contiguous inputs, build the view
// inside `f` (x.t(), x.slice(...), x.expand(...)), so the op sees strided data while the check
// perturbs the contiguous leaf. The scalar differentiated is sum(f(x) * w) for a fixed random w,
// which checks every output element's gradient at once. Int32 inputs pass through untouched.
#pragma once
#include <catch2/catch.hpp>

#include <cmath>
#include <functional>
#include <string>

#include "moegrad.hpp"

namespace mgtest {

struct GradcheckOptions {
  double eps = 1e-6;
  double atol = 1e-7;
  double rtol = 1e-5;
};

// Compares each float64 tensor's .grad (from one backward of the objective) with central
// differences of objective(), perturbing its elements in place one at a time.
inline void check_against_central_differences(const mg::TensorList& tensors,
                                              const std::function<double()>& objective,
                                              const GradcheckOptions& opt, const char* kind) {
  for (size_t i = 0; i < tensors.size(); ++i) {
    const mg::Tensor& t = tensors[i];
    if (!t.is_floating_point()) continue;
    INFO(kind << " " << i << " of shape " << mg::shape_str(t.sizes()));
    const std::vector<double> analytic =
        t.grad().defined() ? t.grad().to_vector<double>() : std::vector<double>(t.numel(), 0.0);
    double* data = t.data_ptr<double>();
    for (int64_t k = 0; k < t.numel(); ++k) {
      const double saved = data[k];
      data[k] = saved + opt.eps;
      const double plus = objective();
      data[k] = saved - opt.eps;
      const double minus = objective();
      data[k] = saved;
      const double numeric = (plus - minus) / (2 * opt.eps);
      INFO("element " << k << ": analytic " << analytic[k] << ", numeric " << numeric);
      CHECK(std::abs(analytic[k] - numeric) <= opt.atol + opt.rtol * std::abs(numeric));
    }
  }
}

inline void gradcheck(const std::string& name, const std::function<mg::Tensor(const mg::TensorList&)>& f,
                      const mg::TensorList& inputs, GradcheckOptions opt = {}) {
  INFO("gradcheck of " << name);
  mg::TensorList leaves;
  for (const auto& in : inputs) {
    if (!in.is_floating_point()) {
      leaves.push_back(in);
      continue;
    }
    mg::Tensor leaf = in.detach().to(mg::kFloat64).contiguous().clone();
    leaf.requires_grad_(true);
    leaves.push_back(leaf);
  }
  mg::Tensor out = f(leaves);
  REQUIRE(out.defined());
  REQUIRE(out.requires_grad());
  mg::Generator gen(1234);
  const mg::Tensor w = mg::randn(out.sizes(), mg::kFloat64, &gen);
  (out.to(mg::kFloat64) * w).sum().backward();
  check_against_central_differences(leaves, [&] {
    mg::NoGradGuard no_grad;
    return (f(leaves).to(mg::kFloat64) * w).sum().item();
  }, opt, "input");
}

// The same check for float64 tensors that live inside a module (parameters): f() takes no
// arguments and reads them in place.
inline void gradcheck_params(const std::string& name, const std::function<mg::Tensor()>& f,
                             const mg::TensorList& params, GradcheckOptions opt = {}) {
  INFO("parameter gradcheck of " << name);
  for (mg::Tensor p : params) {
    REQUIRE(p.dtype() == mg::kFloat64);
    p.set_grad(mg::Tensor());
  }
  mg::Tensor out = f();
  REQUIRE(out.requires_grad());
  mg::Generator gen(4321);
  const mg::Tensor w = mg::randn(out.sizes(), mg::kFloat64, &gen);
  (out * w).sum().backward();
  check_against_central_differences(params, [&] {
    mg::NoGradGuard no_grad;
    return (f() * w).sum().item();
  }, opt, "parameter");
}

// Element-wise comparison of two tensors with atol + rtol * |expected|.
inline void require_close(const mg::Tensor& actual, const mg::Tensor& expected, double atol = 1e-6,
                          double rtol = 1e-5) {
  REQUIRE(actual.sizes() == expected.sizes());
  const auto a = actual.to_vector<double>();
  const auto e = expected.to_vector<double>();
  for (size_t i = 0; i < a.size(); ++i) {
    INFO("element " << i << ": " << a[i] << " vs expected " << e[i]);
    if (std::isnan(e[i])) {
      CHECK(std::isnan(a[i]));
    } else if (std::isinf(e[i])) {
      CHECK(a[i] == e[i]);
    } else {
      CHECK(std::abs(a[i] - e[i]) <= atol + rtol * std::abs(e[i]));
    }
  }
}

}  // namespace mgtest
