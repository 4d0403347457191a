// The CUDA backend against its CPU twin (after ggml's test-backend-ops): one harness runs every op
// forward and backward on the CPU and on the GPU from the same random inputs, contiguous and as
// transposed / sliced / expanded views, and compares outputs and input gradients element by
// element with |cuda - cpu| <= atol + rtol * |cpu|, tolerances chosen per op (float32) and one
// tight pair for float64. Optimizer steps are compared the same way, and an end-to-end run
// trains the same small MoE model 20 steps on both devices. Every [cuda] case needs a GPU and
// says so with a visible WARN where there is none (Catch2 2.x has no SKIP); ctest labels them
// `cuda`: `ctest -L cuda --output-on-failure`.
//
// The [device] cases run everywhere: the Philox functions the CUDA kernel calls reproduce the
// CPU's random stream, and asking for CUDA without a device fails with a clear error.
#include <catch2/catch.hpp>

#include <cmath>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "engine/cuda_device.hpp"
#include "engine/math/philox.hpp"
#include "moe/expert.hpp"
#include "moe/layer.hpp"
#include "moegrad.hpp"
#include "nn/containers.hpp"
#include "nn/layers.hpp"
#include "nn/optim.hpp"

using mg::Tensor;
using mg::TensorList;
using Catch::Matchers::Contains;

namespace {

#define MG_REQUIRE_CUDA_DEVICE()                                                          \
  if (!mg::cuda::is_available()) {                                                        \
    WARN("skipped: no CUDA device (" << mg::cuda::unavailable_reason() << ")");           \
    return;                                                                               \
  }

enum class Layout { Contiguous, Transposed, Sliced, Expanded };
const char* layout_name(Layout l) {
  switch (l) {
    case Layout::Contiguous: return "contiguous";
    case Layout::Transposed: return "transposed";
    case Layout::Sliced: return "sliced";
    case Layout::Expanded: return "expanded";
  }
  return "?";
}

// One argument of an op: random floating data of `shape` (`positive`: in [0.5, 1.5), for log,
// sqrt, pow, div), or a fixed tensor given as is (indices, labels, masks: never differentiated).
struct Arg {
  mg::Shape shape;
  bool positive = false;
  Tensor fixed;
};
Arg rnd(mg::Shape shape) { return Arg{std::move(shape), false, {}}; }
Arg pos(mg::Shape shape) { return Arg{std::move(shape), true, {}}; }
Arg fixed(Tensor t) { return Arg{{}, false, std::move(t)}; }
Tensor ints(std::vector<int32_t> values, mg::Shape shape) { return mg::from_vector(values, shape, mg::kInt32); }

struct OpCase {
  std::string name;
  std::vector<Arg> args;
  std::function<Tensor(const TensorList&)> f;
  double atol = 1e-5, rtol = 1e-5;  // float32; float64 uses kF64Atol / kF64Rtol
  bool strided = true;              // also run the non-contiguous layouts
};

constexpr double kF64Atol = 1e-10, kF64Rtol = 1e-9;

// The leaf's shape for a layout, and the view that turns the leaf into the op's argument.
bool layout_applies(Layout l, const mg::Shape& s) {
  if (l == Layout::Transposed) return s.size() >= 2;
  if (l == Layout::Sliced) return !s.empty();
  if (l == Layout::Expanded) return !s.empty() && s[0] > 1;
  return true;
}
mg::Shape leaf_shape(Layout l, mg::Shape s) {
  if (l == Layout::Transposed) std::swap(s[s.size() - 1], s[s.size() - 2]);
  if (l == Layout::Sliced) s.back() *= 2;
  if (l == Layout::Expanded) s[0] = 1;
  return s;
}
// The layout one argument takes: the case's where it applies (a 1-d bias stays contiguous while
// the matrix beside it is transposed), else contiguous.
Layout layout_for(Layout l, const Arg& a) { return layout_applies(l, a.shape) ? l : Layout::Contiguous; }
Tensor view_of(Layout l, const Tensor& leaf, const mg::Shape& s) {
  if (l == Layout::Transposed) return leaf.transpose(-1, -2);
  if (l == Layout::Sliced) return leaf.slice(-1, 0, 2 * s.back(), 2);
  if (l == Layout::Expanded) return leaf.expand(s);
  return leaf;
}

struct Run {
  std::vector<double> out;
  std::vector<std::vector<double>> grads;  // one per random argument
};

// Runs the case on `device` from the given CPU leaves: forward, then backward from grad_out.
Run run_on(const OpCase& c, Layout layout, const TensorList& cpu_leaves, const Tensor& grad_out,
           mg::Device device) {
  TensorList leaves, args;
  for (size_t i = 0; i < c.args.size(); ++i) {
    if (c.args[i].fixed.defined()) {
      leaves.push_back(Tensor());
      args.push_back(c.args[i].fixed.to(device));
      continue;
    }
    Tensor leaf = cpu_leaves[i].detach().to(device);
    leaf.requires_grad_(true);
    leaves.push_back(leaf);
    args.push_back(view_of(layout_for(layout, c.args[i]), leaf, c.args[i].shape));
  }
  Run r;
  const Tensor out = c.f(args);
  CHECK(out.device() == device);  // computed where its inputs live, not on the host
  r.out = out.to_vector<double>();
  if (grad_out.defined() && out.requires_grad()) out.backward(grad_out.to(device));
  for (const Tensor& leaf : leaves) {
    if (!leaf.defined()) continue;
    if (leaf.grad().defined()) CHECK(leaf.grad().device() == device);
    r.grads.push_back(leaf.grad().defined() ? leaf.grad().to_vector<double>() : std::vector<double>());
  }
  return r;
}

// The worst |a - b| - (atol + rtol |ref|) over the elements; <= 0 passes.
double worst_violation(const std::vector<double>& ref, const std::vector<double>& got, double atol,
                       double rtol, size_t& where) {
  REQUIRE(ref.size() == got.size());
  double worst = -1;
  for (size_t i = 0; i < ref.size(); ++i) {
    const bool same = (std::isnan(ref[i]) && std::isnan(got[i])) || ref[i] == got[i];  // inf too
    const double v = same ? -1 : std::abs(ref[i] - got[i]) - (atol + rtol * std::abs(ref[i]));
    if (!(v <= worst)) {
      worst = std::isnan(v) ? INFINITY : v;
      where = i;
    }
  }
  return worst;
}

void check_close(const std::string& what, const std::vector<double>& ref,
                 const std::vector<double>& got, double atol, double rtol) {
  size_t at = 0;
  const double v = worst_violation(ref, got, atol, rtol, at);
  INFO(what << ": element " << at << " cpu " << (ref.empty() ? 0.0 : ref[at]) << " cuda "
            << (got.empty() ? 0.0 : got[at]) << " (atol " << atol << ", rtol " << rtol << ")");
  CHECK(v <= 0);
}

void check_case(const OpCase& c, mg::ScalarType dtype) {
  const std::vector<Layout> layouts = c.strided ? std::vector<Layout>{Layout::Contiguous,
                                                                      Layout::Transposed,
                                                                      Layout::Sliced,
                                                                      Layout::Expanded}
                                                : std::vector<Layout>{Layout::Contiguous};
  const double atol = dtype == mg::kFloat64 ? kF64Atol : c.atol;
  const double rtol = dtype == mg::kFloat64 ? kF64Rtol : c.rtol;
  for (Layout layout : layouts) {
    bool applies = layout == Layout::Contiguous;  // else some argument must take the layout
    for (const Arg& a : c.args) applies |= !a.fixed.defined() && layout_applies(layout, a.shape);
    if (!applies) continue;
    mg::Generator gen(1234);
    TensorList leaves;
    for (const Arg& a : c.args) {
      if (a.fixed.defined()) {
        leaves.push_back(Tensor());
        continue;
      }
      const mg::Shape s = leaf_shape(layout_for(layout, a), a.shape);
      leaves.push_back(a.positive ? mg::rand(s, dtype, &gen) + 0.5 : mg::randn(s, dtype, &gen));
    }
    // the CPU output's shape gives the gradient's
    Tensor grad_out;
    {
      mg::NoGradGuard no_grad;
      TensorList args;
      for (size_t i = 0; i < c.args.size(); ++i)
        args.push_back(c.args[i].fixed.defined() ? c.args[i].fixed
                                                 : view_of(layout_for(layout, c.args[i]), leaves[i], c.args[i].shape));
      const Tensor probe = c.f(args);
      if (probe.is_floating_point()) grad_out = mg::randn(probe.sizes(), probe.dtype(), &gen);
    }
    const std::string what = c.name + " (" + mg::dtype_name(dtype) + ", " + layout_name(layout) + ")";
    const Run cpu = run_on(c, layout, leaves, grad_out, mg::Device::cpu());
    const Run gpu = run_on(c, layout, leaves, grad_out, mg::Device::cuda());
    check_close(what + " forward", cpu.out, gpu.out, atol, rtol);
    REQUIRE(cpu.grads.size() == gpu.grads.size());
    for (size_t i = 0; i < cpu.grads.size(); ++i)
      check_close(what + " gradient of argument " + std::to_string(i), cpu.grads[i], gpu.grads[i],
                  atol, rtol);
  }
}

// Every op of engine/ops, with the float32 tolerances it needs: element-wise ops differ only by
// the device's libm (a few ulp); sums and GEMMs by their summation order (cuBLAS vs Eigen /
// the engine's GEMM, block-ordered double sums), which grows with the reduced length.
std::vector<OpCase> op_cases() {
  using namespace mg;
  const double ew = 1e-6, sum = 1e-5, gemm = 1e-4;
  std::vector<OpCase> c;
  auto unary = [&](const std::string& name, std::function<Tensor(const Tensor&)> f, bool positive = false) {
    c.push_back({name, {Arg{{6, 5}, positive, {}}}, [f](const TensorList& a) { return f(a[0]); }, ew, 4 * ew});
  };
  unary("neg", [](const Tensor& x) { return -x; });
  unary("exp", [](const Tensor& x) { return mg::exp(x); });
  unary("log", [](const Tensor& x) { return mg::log(x); }, true);
  unary("sqrt", [](const Tensor& x) { return mg::sqrt(x); }, true);
  unary("rsqrt", [](const Tensor& x) { return mg::rsqrt(x); }, true);
  unary("abs", [](const Tensor& x) { return mg::abs(x); });
  unary("relu", [](const Tensor& x) { return mg::relu(x); });
  unary("leaky_relu", [](const Tensor& x) { return mg::leaky_relu(x, 0.1); });
  unary("gelu", [](const Tensor& x) { return mg::gelu(x); });
  unary("gelu_tanh", [](const Tensor& x) { return mg::gelu(x, "tanh"); });
  unary("silu", [](const Tensor& x) { return mg::silu(x); });
  unary("sigmoid", [](const Tensor& x) { return mg::sigmoid(x); });
  unary("tanh", [](const Tensor& x) { return mg::tanh(x); });
  unary("softplus", [](const Tensor& x) { return mg::softplus(x, 2.0, 1.0); });
  unary("pow_scalar", [](const Tensor& x) { return mg::pow(x, 2.5); }, true);
  unary("clamp", [](const Tensor& x) { return mg::clamp(x, -0.5, 0.7); });
  unary("dropout_eval", [](const Tensor& x) { return mg::dropout(x, 0.3, false); });
  auto binary = [&](const std::string& name, std::function<Tensor(const Tensor&, const Tensor&)> f,
                    bool positive = false) {
    c.push_back({name, {Arg{{6, 5}, positive, {}}, Arg{{6, 5}, positive, {}}},
                 [f](const TensorList& a) { return f(a[0], a[1]); }, ew, 4 * ew});
    c.push_back({name + "_broadcast", {Arg{{6, 5}, positive, {}}, Arg{{5}, positive, {}}},
                 [f](const TensorList& a) { return f(a[0], a[1]); }, ew, 4 * ew});
  };
  binary("add", [](const Tensor& a, const Tensor& b) { return a + b; });
  binary("sub", [](const Tensor& a, const Tensor& b) { return a - b; });
  binary("mul", [](const Tensor& a, const Tensor& b) { return a * b; });
  binary("div", [](const Tensor& a, const Tensor& b) { return a / b; }, true);
  binary("pow", [](const Tensor& a, const Tensor& b) { return mg::pow(a, b); }, true);
  binary("maximum", [](const Tensor& a, const Tensor& b) { return mg::maximum(a, b); });
  binary("minimum", [](const Tensor& a, const Tensor& b) { return mg::minimum(a, b); });
  binary("lt", [](const Tensor& a, const Tensor& b) { return mg::lt(a, b); });
  binary("ge", [](const Tensor& a, const Tensor& b) { return mg::ge(a, b); });
  binary("le_gt", [](const Tensor& a, const Tensor& b) { return mg::le(a, b) * 2.0 + mg::gt(a, b); });
  binary("eq_self", [](const Tensor& a, const Tensor&) { return mg::eq(a, a) + mg::ne(a, a); });
  binary("where", [](const Tensor& a, const Tensor& b) { return mg::where(mg::gt(a, b), a, b); });
  c.push_back({"masked_fill", {rnd({4, 3}), fixed(ints({1, 0, 1}, {3}))},
               [](const TensorList& a) { return mg::masked_fill(a[0], a[1], -2.0); }});
  // reductions
  c.push_back({"sum_all", {rnd({7, 9})}, [](const TensorList& a) { return mg::sum(a[0]); }, sum, sum});
  c.push_back({"sum_dim0", {rnd({7, 9})}, [](const TensorList& a) { return mg::sum(a[0], {0}); }, sum, sum});
  c.push_back({"sum_dim1_keep", {rnd({3, 7, 9})}, [](const TensorList& a) { return mg::sum(a[0], {1}, true); }, sum, sum});
  c.push_back({"mean", {rnd({7, 9})}, [](const TensorList& a) { return mg::mean(a[0], {1}); }, sum, sum});
  c.push_back({"var", {rnd({7, 9})}, [](const TensorList& a) { return mg::var(a[0], {1}); }, sum, sum});
  // along dim 1: the expanded layout repeats rows, and the std of equal values has no gradient
  c.push_back({"std", {rnd({7, 9})}, [](const TensorList& a) { return mg::std(a[0], {1}); }, sum, sum});
  c.push_back({"max_dim", {rnd({7, 9})}, [](const TensorList& a) { return std::get<0>(mg::max(a[0], 1)); }});
  c.push_back({"min_dim_indices", {rnd({7, 9})}, [](const TensorList& a) { return std::get<1>(mg::min(a[0], 0)); }});
  c.push_back({"amax", {rnd({7, 9})}, [](const TensorList& a) { return mg::amax(a[0], {0}); }});
  c.push_back({"amin_all", {rnd({7, 9})}, [](const TensorList& a) { return mg::amin(a[0]); }});
  c.push_back({"argmax", {rnd({7, 9})}, [](const TensorList& a) { return mg::argmax(a[0], 1); }});
  c.push_back({"logsumexp", {rnd({7, 9})}, [](const TensorList& a) { return mg::logsumexp(a[0], {1}); }, sum, sum});
  c.push_back({"norm", {rnd({7, 9})}, [](const TensorList& a) { return mg::norm(a[0]); }, sum, sum});
  // linear algebra
  c.push_back({"mm", {rnd({5, 7}), rnd({7, 3})}, [](const TensorList& a) { return mg::mm(a[0], a[1]); }, gemm, gemm});
  c.push_back({"bmm", {rnd({2, 5, 7}), rnd({2, 7, 3})}, [](const TensorList& a) { return mg::bmm(a[0], a[1]); }, gemm, gemm});
  c.push_back({"matmul_broadcast", {rnd({2, 5, 7}), rnd({7, 3})}, [](const TensorList& a) { return mg::matmul(a[0], a[1]); }, gemm, gemm});
  c.push_back({"matmul_vector", {rnd({5, 7}), rnd({7})}, [](const TensorList& a) { return mg::matmul(a[0], a[1]); }, gemm, gemm});
  c.push_back({"linear", {rnd({4, 6}), rnd({3, 6}), rnd({3})}, [](const TensorList& a) { return mg::linear(a[0], a[1], a[2]); }, gemm, gemm});
  // softmax and losses
  c.push_back({"softmax", {rnd({5, 8})}, [](const TensorList& a) { return mg::softmax(a[0], 1); }, sum, sum});
  c.push_back({"log_softmax_dim0", {rnd({5, 8})}, [](const TensorList& a) { return mg::log_softmax(a[0], 0); }, sum, sum});
  const Tensor labels = ints({2, 0, 7, 3, 3}, {5});
  c.push_back({"cross_entropy", {rnd({5, 8}), fixed(labels)}, [](const TensorList& a) {
                 return mg::cross_entropy(a[0], a[1], mg::CrossEntropyOptions().label_smoothing(0.1));
               }, sum, sum});
  c.push_back({"nll_loss_sum", {rnd({5, 8}), fixed(labels)}, [](const TensorList& a) {
                 return mg::nll_loss(mg::log_softmax(a[0], 1), a[1], mg::kSum);
               }, sum, sum});
  c.push_back({"mse_loss", {rnd({5, 8}), rnd({5, 8})}, [](const TensorList& a) { return mg::mse_loss(a[0], a[1]); }, sum, sum});
  c.push_back({"bce_with_logits", {rnd({5, 8}), pos({5, 8})}, [](const TensorList& a) {
                 return mg::binary_cross_entropy_with_logits(a[0], a[1] - 0.5);
               }, sum, sum});
  // indexing, joining
  const Tensor rows = ints({3, 0, 3, 1}, {4});
  c.push_back({"index_select", {rnd({5, 6}), fixed(rows)}, [](const TensorList& a) { return mg::index_select(a[0], 0, a[1]); }});
  c.push_back({"index_select_dim1", {rnd({5, 6}), fixed(rows)}, [](const TensorList& a) { return mg::index_select(a[0], 1, a[1]); }});
  c.push_back({"index_add", {rnd({5, 6}), fixed(rows), rnd({4, 6})}, [](const TensorList& a) { return mg::index_add(a[0], 0, a[1], a[2]); }});
  // past 64 indices the CUDA index_add sorts them by destination (a radix sort of two digits here)
  std::vector<int32_t> many(300);
  for (size_t i = 0; i < many.size(); ++i) many[i] = static_cast<int32_t>((i * 37 + i / 7) % 290);
  const Tensor many_rows = ints(many, {300});
  c.push_back({"index_add_many", {rnd({290, 3}), fixed(many_rows), rnd({300, 3})}, [](const TensorList& a) {
                 return mg::index_add(a[0], 0, a[1], a[2]);
               }, sum, sum});
  c.push_back({"index_add_many_dim1", {rnd({2, 290, 3}), fixed(many_rows), rnd({2, 300, 3})}, [](const TensorList& a) {
                 return mg::index_add(a[0], 1, a[1], a[2]);
               }, sum, sum, false});
  c.push_back({"index_select_many", {rnd({290, 4}), fixed(many_rows)}, [](const TensorList& a) {
                 return mg::index_select(a[0], 0, a[1]);  // its gradient: index_add of 300 rows
               }, sum, sum});
  const Tensor cols = ints({1, 4, 4, 0, 2, 2, 5, 1}, {4, 2});
  c.push_back({"gather", {rnd({4, 6}), fixed(cols)}, [](const TensorList& a) { return mg::gather(a[0], 1, a[1]); }});
  c.push_back({"scatter_add", {rnd({4, 6}), fixed(cols), rnd({4, 2})}, [](const TensorList& a) { return mg::scatter_add(a[0], 1, a[1], a[2]); }});
  c.push_back({"embedding", {rnd({5, 6}), fixed(ints({4, 4, 0, 2, 1, 3}, {2, 3}))}, [](const TensorList& a) { return mg::embedding(a[0], a[1]); }});
  c.push_back({"topk_values", {rnd({4, 9})}, [](const TensorList& a) { return std::get<0>(mg::topk(a[0], 3)); }});
  c.push_back({"topk_smallest_indices", {rnd({4, 9})}, [](const TensorList& a) { return std::get<1>(mg::topk(a[0], 2, 1, false)); }});
  c.push_back({"sort_descending", {rnd({4, 9})}, [](const TensorList& a) { return std::get<0>(mg::sort(a[0], 1, true)); }});
  c.push_back({"argsort_dim0", {rnd({4, 9})}, [](const TensorList& a) { return mg::argsort(a[0], 0); }});
  c.push_back({"cat_stack", {rnd({3, 4}), rnd({3, 4})}, [](const TensorList& a) {
                 return mg::cat({mg::stack({a[0], a[1]}), mg::stack({a[1], a[0]})}, 1);
               }});
  c.push_back({"repeat_chunk", {rnd({3, 4})}, [](const TensorList& a) { return mg::chunk(mg::repeat(a[0], {2, 3}), 3, 1)[1]; }});
  c.push_back({"one_hot", {fixed(rows)}, [](const TensorList& a) { return mg::one_hot(a[0], 5); }, 0, 0, false});
  // convolution, pooling, normalization, attention
  c.push_back({"conv2d", {rnd({2, 4, 7, 6}), rnd({6, 2, 3, 3}), rnd({6})}, [](const TensorList& a) {
                 return mg::conv2d(a[0], a[1], a[2], 2, 1, 1, 2);
               }, gemm, gemm});
  c.push_back({"conv2d_dilated", {rnd({2, 3, 8, 8}), rnd({4, 3, 3, 2})}, [](const TensorList& a) {
                 return mg::conv2d(a[0], a[1], {}, 1, {2, 1}, {2, 1});
               }, gemm, gemm});
  c.push_back({"max_pool2d", {rnd({2, 3, 8, 7})}, [](const TensorList& a) { return mg::max_pool2d(a[0], 2); }});
  c.push_back({"max_pool2d_overlapping", {rnd({2, 3, 8, 7})}, [](const TensorList& a) {
                 return mg::max_pool2d(a[0], 3, 2, 1, 1, true);
               }});
  c.push_back({"avg_pool2d", {rnd({2, 3, 8, 7})}, [](const TensorList& a) {
                 return mg::avg_pool2d(a[0], 3, 2, 1, true, false);
               }});
  c.push_back({"adaptive_avg_pool2d", {rnd({2, 3, 8, 7})}, [](const TensorList& a) { return mg::adaptive_avg_pool2d(a[0], {3, 2}); }});
  c.push_back({"batch_norm_train", {rnd({4, 3, 5, 2}), pos({3}), rnd({3})}, [](const TensorList& a) {
                 return mg::batch_norm(a[0], {}, {}, a[1], a[2], true, false);
               }, sum, sum});
  c.push_back({"batch_norm_running_stats", {rnd({4, 3, 5})}, [](const TensorList& a) {
                 // the in-place update of the running statistics, on the tensors' device
                 const Tensor mean = mg::zeros({3}, a[0].options()), var = mg::ones({3}, a[0].options());
                 const Tensor out = mg::batch_norm(a[0], mean, var, {}, {}, true, true);
                 return mg::cat({out.flatten(), mean, var});
               }, sum, sum});
  c.push_back({"batch_norm_eval", {rnd({4, 3, 5}), pos({3}), rnd({3})}, [](const TensorList& a) {
                 const Tensor mean = mg::full({3}, 0.1, a[0].options()), var = mg::full({3}, 0.8, a[0].options());
                 return mg::batch_norm(a[0], mean, var, a[1], a[2], false, false);
               }, sum, sum});
  c.push_back({"layer_norm", {rnd({4, 6}), pos({6}), rnd({6})}, [](const TensorList& a) {
                 return mg::layer_norm(a[0], {6}, a[1], a[2]);
               }, sum, sum});
  c.push_back({"attention_causal", {rnd({2, 5, 4}), rnd({2, 5, 4}), rnd({2, 5, 3})}, [](const TensorList& a) {
                 mg::AttentionOptions o;
                 o.is_causal = true;
                 return mg::scaled_dot_product_attention(a[0], a[1], a[2], o);
               }, gemm, gemm});
  c.push_back({"grouped_mlp", {rnd({7, 4}), rnd({5, 4}), rnd({5}), rnd({3, 5}), rnd({3}), rnd({6, 4}), rnd({3, 6})},
               [](const TensorList& a) {
                 return mg::grouped_mlp(a[0], {0, 3, 3, 7}, {{a[1], a[2], a[3], a[4]}, {a[1], {}, a[3], {}}, {a[5], {}, a[6], a[4]}});
               }, gemm, gemm, false});

  // Sizes that leave one warp, one block, one grid row or one column chunk: long rows fold all
  // eight warps of a block; 70000 rows pass the 65535-row grid of top-k; a 64-channel 32x32 batch
  // of 28 unfolds in two chunks of 64 MB.
  c.push_back({"sum_tall_columns", {rnd({3000, 5})}, [](const TensorList& a) { return mg::sum(a[0], {0}); }, sum, sum, false});
  c.push_back({"sum_long_rows", {rnd({3, 5000})}, [](const TensorList& a) { return mg::sum(a[0], {1}); }, sum, sum, false});
  c.push_back({"softmax_long_rows", {rnd({3, 5000})}, [](const TensorList& a) { return mg::softmax(a[0], 1); }, sum, sum, false});
  c.push_back({"log_softmax_long_rows", {rnd({3, 5000})}, [](const TensorList& a) { return mg::log_softmax(a[0], 1); }, sum, sum, false});
  c.push_back({"max_long_rows", {rnd({3, 5000})}, [](const TensorList& a) { return std::get<0>(mg::max(a[0], 1)); }, 0, 0, false});
  c.push_back({"argmax_long_rows", {rnd({3, 5000})}, [](const TensorList& a) { return mg::argmax(a[0], 1); }, 0, 0, false});
  c.push_back({"sort_long_row", {rnd({2, 700})}, [](const TensorList& a) { return std::get<0>(mg::sort(a[0], 1)); }, 0, 0, false});
  c.push_back({"topk_many_rows", {rnd({70000, 4})}, [](const TensorList& a) { return std::get<1>(mg::topk(a[0], 2)); }, 0, 0, false});
  // (the weight gradient sums 28672 products: float32 rounding alone reaches ~1e-3 there)
  c.push_back({"conv2d_two_chunks", {rnd({28, 64, 32, 32}), rnd({8, 64, 3, 3})}, [](const TensorList& a) {
                 return mg::conv2d(a[0], a[1], {}, 1, 1);
               }, 5e-3, gemm, false});

  // Ties, NaN and int32 data, given as is: first index on ties, a NaN wins max and sorts last.
  const Tensor ties = mg::from_vector<float>({1, 3, 3, NAN, 2, 2, 0, 0, -1, 5, 5, 4}, {3, 4});
  const Tensor ties_no_nan = mg::from_vector<float>({1, 3, 3, 0, 2, 2, 0, 0, -1, 5, 5, 4}, {3, 4});
  const Tensor int_data = ints({4, -2, 7, 7, 0, 3, -5, 3, 9, 1, 1, 2}, {3, 4});
  c.push_back({"max_ties_nan", {fixed(ties)}, [](const TensorList& a) { return std::get<0>(mg::max(a[0], 1)); }});
  c.push_back({"softmax_inf", {fixed(mg::from_vector<float>({1, -INFINITY, 2, INFINITY, -INFINITY, -INFINITY}, {3, 2}))},
               [](const TensorList& a) { return mg::softmax(a[0], 1); }});
  c.push_back({"argmax_ties_nan", {fixed(ties)}, [](const TensorList& a) { return mg::argmax(a[0], 1); }});
  c.push_back({"topk_ties", {fixed(ties_no_nan)}, [](const TensorList& a) { return std::get<1>(mg::topk(a[0], 3)); }});
  c.push_back({"sort_ties_nan", {fixed(ties)}, [](const TensorList& a) { return std::get<1>(mg::sort(a[0], 1)); }});
  // a[0] / a[0].detach() is exactly 1: the values are the ties, the gradient shows which one won
  c.push_back({"max_pool2d_ties", {rnd({1, 1, 3, 4})}, [ties_no_nan](const TensorList& a) {
                 const Tensor one = a[0] / a[0].detach();
                 return mg::max_pool2d(ties_no_nan.reshape({1, 1, 3, 4}).to(a[0].device()).to(a[0].dtype()) * one, 2, 1);
               }, ew, ew, false});
  c.push_back({"int32_sum_max", {fixed(int_data)}, [](const TensorList& a) {
                 return mg::cat({mg::sum(a[0], {1}), std::get<0>(mg::max(a[0], 0)), std::get<1>(mg::max(a[0], 0))});
               }});
  c.push_back({"int32_sort_topk", {fixed(int_data)}, [](const TensorList& a) {
                 return mg::cat({std::get<1>(mg::sort(a[0], 1)).flatten(), std::get<1>(mg::topk(a[0], 2, 0)).flatten()});
               }});
  c.push_back({"int32_index_gather_binary", {fixed(int_data)}, [](const TensorList& a) {
                 const Tensor idx = ints({2, 0, 2}, {3}).to(a[0].device());
                 return mg::cat({mg::index_select(a[0], 0, idx).flatten(),
                                 mg::gather(a[0], 1, ints({3, 0, 1, 1, 2, 2}, {3, 2}).to(a[0].device())).flatten(),
                                 (a[0] + a[0] * a[0]).flatten()});
               }});
  return c;
}

}  // namespace

TEST_CASE("cuda: every op forward and backward matches the CPU", "[cuda]") {
  MG_REQUIRE_CUDA_DEVICE();
  for (const OpCase& c : op_cases()) {
    SECTION(c.name) {
      check_case(c, mg::kFloat32);
      check_case(c, mg::kFloat64);
    }
  }
}

TEST_CASE("cuda: random tensors and dropout draw the CPU's numbers for a seed", "[cuda]") {
  MG_REQUIRE_CUDA_DEVICE();
  for (mg::ScalarType dtype : {mg::kFloat32, mg::kFloat64}) {
    mg::Generator cpu_gen(77), gpu_gen(77);
    const auto on_gpu = mg::TensorOptions(dtype).device(mg::Device::cuda());
    CHECK(mg::rand({1000}, dtype, &cpu_gen).to_vector<double>() == mg::rand({1000}, on_gpu, &gpu_gen).to_vector<double>());
    CHECK(mg::randint(-5, 9, {1000}, mg::kInt32, &cpu_gen).to_vector<int32_t>() ==
          mg::randint(-5, 9, {1000}, mg::TensorOptions(mg::kInt32).device(mg::Device::cuda()), &gpu_gen).to_vector<int32_t>());
    // Box-Muller through the device's log / sqrt / cos: equal to a few ulp
    const double tolerance = dtype == mg::kFloat64 ? 1e-14 : 1e-6;
    check_close("randn", mg::randn({1000}, dtype, &cpu_gen).to_vector<double>(),
                mg::randn({1000}, on_gpu, &gpu_gen).to_vector<double>(), tolerance, tolerance);
    mg::Generator data_gen(5);  // the input's draw must not advance only the CPU's generator
    const Tensor x = mg::randn({50, 40}, dtype, &data_gen);
    const Tensor kept_cpu = mg::dropout(x, 0.4, true, &cpu_gen);
    const Tensor kept_gpu = mg::dropout(x.to(mg::Device::cuda()), 0.4, true, &gpu_gen);
    check_close("dropout", kept_cpu.to_vector<double>(), kept_gpu.to_vector<double>(), 0, 1e-6);
  }
}

TEST_CASE("cuda: the counting sort into buckets gives the CPU's order and counts", "[cuda]") {
  MG_REQUIRE_CUDA_DEVICE();
  mg::Generator g(9);
  // several chunks of 256 keys
  for (int64_t n : {1, 255, 256, 1000, 70000}) {
    const Tensor keys = mg::randint(0, 13, {n}, mg::kInt32, &g);
    for (int64_t limit : {int64_t(-1), int64_t(0), n / 20}) {
      const mg::Buckets cpu = mg::bucket_by_key(keys, 13, limit);
      const mg::Buckets gpu = mg::bucket_by_key(keys.to(mg::Device::cuda()), 13, limit);
      CHECK(gpu.position.device() == mg::Device::cuda());
      CHECK(gpu.position.to_vector<int32_t>() == cpu.position.to_vector<int32_t>());
      CHECK(gpu.total == cpu.total);
      CHECK(gpu.kept == cpu.kept);
    }
  }
  // keys outside the buckets, in many chunks: the same count as on the CPU
  const Tensor bad = mg::randint(-1, 14, {70000}, mg::kInt32, &g);
  std::string cpu_error;
  try {
    mg::bucket_by_key(bad, 13);
  } catch (const mg::Error& e) {
    cpu_error = e.what();
  }
  REQUIRE_THAT(cpu_error, Contains("keys are outside the buckets [0, 13)"));
  CHECK_THROWS_WITH(mg::bucket_by_key(bad.to(mg::Device::cuda()), 13), cpu_error);
}

TEST_CASE("cuda: copies between devices keep values, dtypes and strides", "[cuda]") {
  MG_REQUIRE_CUDA_DEVICE();
  const Tensor x = mg::arange(24.0, mg::kFloat64).reshape({2, 3, 4});
  const Tensor on_gpu = x.to(mg::Device::cuda());
  CHECK(on_gpu.is_cuda());
  CHECK(on_gpu.transpose(0, 2).to(mg::Device::cpu()).to_vector<double>() == x.transpose(0, 2).contiguous().to_vector<double>());
  CHECK(on_gpu.to(mg::kInt32).to_vector<int32_t>() == x.to(mg::kInt32).to_vector<int32_t>());
  Tensor strided_dst = mg::zeros({4, 6}, mg::TensorOptions(mg::kFloat32).device(mg::Device::cuda()));
  strided_dst.slice(1, 0, 6, 2).copy_(x.reshape({4, 6}).slice(1, 1, 4));
  const std::vector<double> got = strided_dst.to_vector<double>();
  for (int64_t r = 0; r < 4; ++r)
    for (int64_t k = 0; k < 3; ++k) CHECK(got[r * 6 + 2 * k] == static_cast<double>(r * 6 + 1 + k));
  // gradients flow back across the device boundary
  Tensor leaf = x.clone().requires_grad_(true);
  (leaf.to(mg::Device::cuda()) * 3.0).sum().backward();
  CHECK(leaf.grad().device().is_cpu());
  CHECK(leaf.grad().to_vector<double>() == std::vector<double>(24, 3.0));
}

// Optimizer updates run as tensor ops on the parameters' device: five steps of each optimizer on
// a float64 Linear give the CPU's parameters to rounding.
TEST_CASE("cuda: optimizer steps on the GPU match the CPU", "[cuda]") {
  MG_REQUIRE_CUDA_DEVICE();
  namespace nn = mg::nn;
  using MakeOptimizer = std::function<std::unique_ptr<nn::Optimizer>(std::vector<Tensor>)>;
  const std::vector<std::pair<std::string, MakeOptimizer>> optimizers = {
      {"sgd", [](std::vector<Tensor> p) {
         return std::make_unique<nn::SGD>(p, nn::SGDOptions(0.1).momentum(0.9).nesterov(true).weight_decay(1e-2));
       }},
      {"adam", [](std::vector<Tensor> p) { return std::make_unique<nn::Adam>(p, nn::AdamOptions(1e-2).amsgrad(true)); }},
      {"adamw", [](std::vector<Tensor> p) {
         return std::make_unique<nn::AdamW>(p, nn::AdamWOptions(1e-2).weight_decay(0.1));
       }},
  };
  for (const auto& [name, make] : optimizers) {
    std::vector<std::vector<double>> params;
    for (mg::Device device : {mg::Device::cpu(), mg::Device::cuda()}) {
      mg::manual_seed(3);
      nn::Linear layer(5, 4);
      layer.to(mg::kFloat64);
      layer.to(device);
      auto optimizer = make(layer.parameters());
      mg::Generator data(4);
      for (int step = 0; step < 5; ++step) {
        const Tensor x = mg::randn({16, 5}, mg::kFloat64, &data).to(device);
        optimizer->zero_grad();
        mg::mse_loss(layer.forward(x), mg::zeros({16, 4}, x.options())).backward();
        optimizer->step();
      }
      std::vector<double> values;
      for (const Tensor& p : layer.parameters())
        for (double v : p.to_vector<double>()) values.push_back(v);
      params.push_back(values);
    }
    check_close(name + " parameters after 5 steps", params[0], params[1], 1e-12, 1e-10);
  }
}

// The same model trained on both devices: float64, so routing (a top-2 choice) cannot flip on a
// rounding difference and the losses agree to 1e-9 relative; a frozen expert must not move by a
// single bit on the GPU either.
TEST_CASE("cuda: a small MoE model trains the same on CPU and GPU", "[cuda]") {
  MG_REQUIRE_CUDA_DEVICE();
  namespace nn = mg::nn;
  namespace moe = mg::moe;
  auto build = [] {
    constexpr int64_t kDim = 8;
    mg::manual_seed(5);
    std::vector<nn::ModulePtr> experts;
    for (int e = 0; e < 4; ++e)
      experts.push_back(std::make_shared<moe::FFNExpert>(moe::FFNExpertConfig{.input_dim = kDim, .hidden = {16}}));
    moe::MoEConfig config;
    config.router.input_dim = kDim;
    config.router.num_experts = 4;
    config.router.top_k = 2;
    config.router.seed = 5;
    auto layer = std::make_shared<moe::MoELayer>(config, experts);
    auto model = std::make_shared<nn::Sequential>(std::initializer_list<nn::ModulePtr>{
        std::make_shared<nn::Linear>(6, kDim), layer, std::make_shared<nn::Linear>(kDim, 3)});
    model->to(mg::kFloat64);
    layer->freeze_expert(0);
    return std::make_pair(model, layer);
  };
  auto train = [](nn::Sequential& model, mg::Device device) {
    model.to(device);
    nn::Adam optimizer(model.parameters(), nn::AdamOptions(1e-2));
    mg::Generator data(9);
    std::vector<double> losses;
    for (int step = 0; step < 20; ++step) {
      const Tensor x = mg::randn({64, 6}, mg::kFloat64, &data).to(device);
      const Tensor target = mg::randn({64, 3}, mg::kFloat64, &data).to(device);
      const Tensor loss = mg::mse_loss(model.forward(x), target);
      optimizer.zero_grad();
      loss.backward();
      optimizer.step();
      losses.push_back(loss.item());
    }
    return losses;
  };
  auto [cpu_model, cpu_layer] = build();
  auto [gpu_model, gpu_layer] = build();
  const std::vector<double> frozen_before = [&] {
    std::vector<double> v;
    for (const auto& p : gpu_layer->expert(0)->parameters()) for (double d : p.to_vector<double>()) v.push_back(d);
    return v;
  }();
  const std::vector<double> cpu_losses = train(*cpu_model, mg::Device::cpu());
  const std::vector<double> gpu_losses = train(*gpu_model, mg::Device::cuda());
  check_close("losses over 20 steps", cpu_losses, gpu_losses, 1e-12, 1e-9);
  CHECK(gpu_losses.back() < gpu_losses.front());
  std::vector<double> frozen_after;
  for (const auto& p : gpu_layer->expert(0)->parameters()) {
    CHECK(p.is_cuda());
    for (double d : p.to_vector<double>()) frozen_after.push_back(d);
  }
  CHECK(frozen_after == frozen_before);
}

// Index validation on the GPU keeps the indices there: a bad one is not reported by the op (that
// would stall the stream) but at the next synchronization, with the op's own message, the first
// failing op winning; the device stays usable afterwards.
TEST_CASE("cuda: a bad index is reported at the next synchronization, then the device works", "[cuda]") {
  MG_REQUIRE_CUDA_DEVICE();
  const mg::Device gpu = mg::Device::cuda();
  const Tensor x = mg::arange(15.0, mg::kFloat32).reshape({5, 3}).to(gpu);
  const Tensor bad_index = ints({1, 9, 2, 11}, {4}).to(gpu);
  Tensor selected;
  REQUIRE_NOTHROW(selected = x.index_select(0, bad_index));
  REQUIRE_NOTHROW(x.gather(1, ints({0, 7}, {1, 2}).to(gpu)));  // a later failure: not the one reported
  CHECK_THROWS_WITH(selected.to(mg::Device::cpu()),
                    Contains("index_select: index 9 is out of range [0, 5) for dim 0 of input shape [5, 3]") &&
                        Contains("cuda:0") && Contains("next synchronization"));
  REQUIRE_NOTHROW(mg::cuda::synchronize());  // reported once

  const Tensor logits = mg::zeros({3, 4}, mg::TensorOptions(mg::kFloat32).device(gpu));
  Tensor loss;
  REQUIRE_NOTHROW(loss = mg::cross_entropy(logits, ints({0, 7, -100}, {3}).to(gpu)));
  CHECK_THROWS_WITH(mg::cuda::synchronize(),
                    Contains("cross_entropy: target label 7 is out of range [0, 4) for 4 classes") &&
                        Contains("cuda:0"));

  // afterwards: correct ops give correct values and raise nothing
  CHECK(x.index_select(0, ints({4, 0}, {2}).to(gpu)).to_vector<float>() == std::vector<float>{12, 13, 14, 0, 1, 2});
  CHECK(mg::cross_entropy(logits, ints({0, 3, -100}, {3}).to(gpu)).item() == Approx(std::log(4.0)));
  CHECK(std::isnan(mg::cross_entropy(logits, ints({-100, -100, -100}, {3}).to(gpu)).item()));
  Tensor leaf = logits.clone().requires_grad_(true);
  mg::cross_entropy(leaf, ints({1, -100, 2}, {3}).to(gpu)).backward();
  const std::vector<float> grad = leaf.grad().to_vector<float>();
  CHECK(grad[1] == Approx(0.25f / 2 - 0.5f));  // (softmax - one-hot) / 2 counted rows
  CHECK(grad[4] == 0.0f);                      // the ignored row
  REQUIRE_NOTHROW(mg::cuda::synchronize());
}

TEST_CASE("cuda: the Philox functions the device shares give the CPU's random stream", "[device]") {
  // Random123's known answer for Philox4x32-10 with counter 0 and key 0
  const mg::math::PhiloxBlock zero = mg::math::philox4x32(0, 0);
  CHECK(zero.x[0] == 0x6627e8d5u);
  CHECK(zero.x[1] == 0xe169c58du);
  CHECK(zero.x[2] == 0xbc57ac4cu);
  CHECK(zero.x[3] == 0x9b00dbd8u);
  // the CPU's rand / randn are these functions at counters offset + i: what cuda_random.cu calls
  mg::Generator gen(2024);
  gen.advance(17);
  const std::vector<float> uniform = mg::rand({64}, mg::kFloat32, &gen).to_vector<float>();
  const std::vector<double> normal = mg::randn({64}, mg::kFloat64, &gen).to_vector<double>();
  for (uint64_t i = 0; i < 64; ++i) {
    CHECK(uniform[i] == mg::math::philox_uniform<float>(2024, 17 + i));
    CHECK(normal[i] == mg::math::philox_normal<double>(2024, 17 + 64 + i));
  }
}

TEST_CASE("cuda: asking for CUDA without a device gives a clear error", "[device]") {
  CHECK_FALSE(mg::cuda::allow_tf32());  // TF32 is opt-in
  if (mg::cuda::is_available()) {
    WARN("skipped: a CUDA device is present, so CUDA requests succeed");
    return;
  }
  CHECK(mg::cuda::device_count() == 0);
  CHECK_FALSE(mg::cuda::unavailable_reason().empty());
  const std::string expected = mg::cuda::unavailable_reason() == "this build has no CUDA backend"
                                   ? "CUDA requested but this build has no CUDA backend"
                                   : "no CUDA device is available: " + mg::cuda::unavailable_reason();
  CHECK_THROWS_WITH(mg::zeros({2, 3}, mg::Device::cuda()), Contains(expected) && Contains("cuda:0"));
  const Tensor x = mg::ones({2, 3});
  CHECK_THROWS_WITH(x.to(mg::Device::cuda()), Contains(expected));
  mg::nn::Linear layer(3, 2);
  CHECK_THROWS_WITH(layer.to(mg::Device::cuda()), Contains(expected));
  // the failed requests left the CPU side untouched
  CHECK(x.sum().item() == 6.0);
  CHECK(layer.forward(x).sizes() == mg::Shape{2, 2});
  CHECK(layer.parameters().front().device().is_cpu());
}
