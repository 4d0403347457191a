// Reverse-mode automatic differentiation (define-by-run), after PyTorch's engine and micrograd.
//
// Every op that sees an input requiring grad records a Node: the op's name, one Edge per input
// (to the input's own grad_fn, or to an AccumulateGrad node for a leaf), and a closure that maps
// the gradients of the op's outputs to gradients of its inputs. backward() orders the reachable
// nodes topologically without recursion, so a 100k-op chain cannot overflow the stack.
//
// Rule, as in llm.c: leaf gradients accumulate (+=) across backward() calls; the gradients that
// flow between nodes are assigned fresh on every call.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "engine/tensor.hpp"

namespace mg {

struct Edge {
  std::shared_ptr<Node> fn;
  uint32_t input_nr = 0;  // which output of fn this edge feeds
  bool valid() const { return fn != nullptr; }
};

struct TensorMeta {  // enough to make a zero gradient or check a gradient's shape
  Shape sizes;
  ScalarType dtype = kFloat32;
  Device device;
};

class Node : public std::enable_shared_from_this<Node> {
 public:
  Node(std::string name, std::vector<Edge> next_edges, std::vector<TensorMeta> input_meta);
  virtual ~Node();
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;

  const std::string& name() const { return name_; }
  const std::vector<Edge>& next_edges() const { return next_edges_; }
  const std::vector<TensorMeta>& output_meta() const { return output_meta_; }
  const std::vector<TensorMeta>& input_meta() const { return input_meta_; }
  uint64_t sequence_nr() const { return sequence_nr_; }
  uint32_t add_output(const TensorMeta& meta);
  void add_output_hook(uint32_t output_nr, GradHook hook);
  const std::vector<GradHook>& output_hooks(uint32_t output_nr) const;

  // Gradients of the outputs (never undefined: the engine fills in zeros) -> gradients of the
  // inputs, one per next_edge (undefined where an input needs none).
  virtual TensorList apply(TensorList&& grad_outputs) = 0;
  // Frees what apply() needed (saved tensors) once the graph is not retained.
  virtual void release() {}

 private:
  std::string name_;
  std::vector<Edge> next_edges_;
  std::vector<TensorMeta> input_meta_;
  std::vector<TensorMeta> output_meta_;
  std::vector<std::vector<GradHook>> output_hooks_;
  uint64_t sequence_nr_;
};

using BackwardFn = std::function<TensorList(const TensorList& grad_outputs)>;

// The node of an ordinary op: its backward is a closure holding what the op saved.
class FunctionNode final : public Node {
 public:
  FunctionNode(std::string name, std::vector<Edge> next_edges, std::vector<TensorMeta> input_meta,
               BackwardFn fn);
  TensorList apply(TensorList&& grad_outputs) override;
  void release() override;

 private:
  BackwardFn fn_;
};

// The sink for a leaf: accumulates into leaf.grad() after running the leaf's hooks.
class AccumulateGrad final : public Node {
 public:
  explicit AccumulateGrad(std::shared_ptr<TensorImpl> leaf);
  TensorList apply(TensorList&& grad_outputs) override;
  const std::shared_ptr<TensorImpl>& leaf() const { return leaf_; }

 private:
  std::shared_ptr<TensorImpl> leaf_;
};

// ---- grad mode (thread-local, like torch::GradMode) and the no-grad guard
struct GradMode {
  static bool is_enabled();
  static void set_enabled(bool enabled);
};

class NoGradGuard {
 public:
  NoGradGuard() : prev_(GradMode::is_enabled()) { GradMode::set_enabled(false); }
  ~NoGradGuard() { GradMode::set_enabled(prev_); }
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool prev_;
};

// ---- anomaly mode: names the op that first produced a NaN or Inf, in forward or backward
namespace autograd {
void set_detect_anomaly(bool enabled);
bool is_anomaly_enabled();
class DetectAnomalyGuard {
 public:
  DetectAnomalyGuard() : prev_(is_anomaly_enabled()) { set_detect_anomaly(true); }
  ~DetectAnomalyGuard() { set_detect_anomaly(prev_); }
  DetectAnomalyGuard(const DetectAnomalyGuard&) = delete;
  DetectAnomalyGuard& operator=(const DetectAnomalyGuard&) = delete;

 private:
  bool prev_;
};

// Runs backward from several roots at once. grads[i] may be undefined only for scalar roots.
void backward(const TensorList& roots, const TensorList& grads = {}, bool retain_graph = false);

// The graph that produced `root`, as Graphviz DOT (ops as boxes, leaves as ellipses).
std::string to_dot(const Tensor& root);
}  // namespace autograd

// ---- recording, used by every differentiable op
// True when grad mode is on and any of `inputs` requires grad.
bool any_requires_grad(std::initializer_list<const Tensor*> inputs);
bool any_requires_grad(const TensorList& inputs);
// Makes `output` the result of op `name` on `inputs` with the given backward, when recording is
// needed; always runs the anomaly check. Returns `output` for chaining.
Tensor record(const char* name, Tensor output, const TensorList& inputs, BackwardFn backward);
// The same for an op with several differentiable outputs.
TensorList record_multi(const char* name, TensorList outputs, const TensorList& inputs,
                        BackwardFn backward);
// The edge through which a gradient for `t` enters the graph (grad_fn or leaf accumulator).
Edge gradient_edge(const Tensor& t);

}  // namespace mg
