// The backward engine: graph recording, topological execution without recursion, hooks,
// anomaly detection and DOT export.
#include "engine/autograd.hpp"

#include <atomic>
#include <cmath>
#include <queue>
#include <sstream>
#include <unordered_map>
#include <unordered_set>

#include "engine/ops/elementwise.hpp"
#include "engine/ops/reduce.hpp"
#include "engine/profiler.hpp"

namespace mg {
namespace {

std::atomic<uint64_t> next_sequence_nr{0};
thread_local bool grad_mode_enabled = true;
std::atomic<bool> anomaly_enabled{false};

TensorMeta meta_of(const Tensor& t) { return TensorMeta{t.sizes(), t.dtype(), t.device()}; }

thread_local bool checking_anomaly = false;  // the check's own ops must not check themselves

bool has_non_finite(const Tensor& t) {
  if (checking_anomaly || !t.defined() || !t.is_floating_point()) return false;
  checking_anomaly = true;
  NoGradGuard no_grad;
  const bool bad = !std::isfinite(t.abs().sum().item());
  checking_anomaly = false;
  return bad;
}

}  // namespace

bool GradMode::is_enabled() { return grad_mode_enabled; }
void GradMode::set_enabled(bool enabled) { grad_mode_enabled = enabled; }

namespace autograd {
void set_detect_anomaly(bool enabled) { anomaly_enabled = enabled; }
bool is_anomaly_enabled() { return anomaly_enabled; }
}  // namespace autograd

// ---- nodes

Node::Node(std::string name, std::vector<Edge> next_edges, std::vector<TensorMeta> input_meta)
    : name_(std::move(name)),
      next_edges_(std::move(next_edges)),
      input_meta_(std::move(input_meta)),
      sequence_nr_(next_sequence_nr++) {}

// Destroying a long chain of nodes recursively would overflow the stack, so a dying node hands
// its edges to an explicit stack and frees every node it was the last owner of iteratively.
Node::~Node() {
  std::vector<std::shared_ptr<Node>> stack;
  for (auto& e : next_edges_)
    if (e.fn) stack.push_back(std::move(e.fn));
  while (!stack.empty()) {
    std::shared_ptr<Node> node = std::move(stack.back());
    stack.pop_back();
    if (node.use_count() == 1) {
      node->release();
      for (auto& e : node->next_edges_)
        if (e.fn) stack.push_back(std::move(e.fn));
    }
  }
}

uint32_t Node::add_output(const TensorMeta& meta) {
  output_meta_.push_back(meta);
  output_hooks_.emplace_back();
  return static_cast<uint32_t>(output_meta_.size() - 1);
}

void Node::add_output_hook(uint32_t output_nr, GradHook hook) {
  output_hooks_.at(output_nr).push_back(std::move(hook));
}

const std::vector<GradHook>& Node::output_hooks(uint32_t output_nr) const {
  return output_hooks_.at(output_nr);
}

FunctionNode::FunctionNode(std::string name, std::vector<Edge> next_edges,
                           std::vector<TensorMeta> input_meta, BackwardFn fn)
    : Node(std::move(name), std::move(next_edges), std::move(input_meta)), fn_(std::move(fn)) {}

TensorList FunctionNode::apply(TensorList&& grad_outputs) {
  MG_CHECK(fn_ != nullptr, "backward: trying to backward through the graph a second time (through ",
           name(), "); its saved tensors were freed. Pass retain_graph=true to the first backward");
  return fn_(grad_outputs);
}

void FunctionNode::release() { fn_ = nullptr; }

AccumulateGrad::AccumulateGrad(std::shared_ptr<TensorImpl> leaf)
    : Node("AccumulateGrad", {}, {}), leaf_(std::move(leaf)) {
  add_output(TensorMeta{leaf_->sizes, leaf_->dtype, leaf_->storage->device()});
}

TensorList AccumulateGrad::apply(TensorList&& grad_outputs) {
  Tensor g = std::move(grad_outputs.at(0));
  for (const auto& hook : leaf_->autograd.leaf_hooks) {
    Tensor replaced = hook(g);
    if (replaced.defined()) g = replaced;
  }
  auto& slot = leaf_->autograd.grad;
  if (slot) {
    slot = (Tensor(slot) + g).impl();
  } else if (g.impl().use_count() == 1 && g.impl()->storage.use_count() == 1 && g.is_contiguous() &&
             g.impl()->offset == 0 && !g.requires_grad()) {
    // Nothing else can see this gradient (no other tensor, view or hook holds it), so it becomes
    // .grad as it is, as PyTorch's AccumulateGrad steals it: no copy per parameter per step.
    slot = g.impl();
  } else {
    // Copied, so that in-place updates of .grad (zero_, optimizers) can never write into a tensor
    // the graph or the user still holds.
    slot = g.detach().clone().impl();
  }
  return {};
}

// ---- recording

Edge gradient_edge(const Tensor& t) {
  if (!t.requires_grad()) return {};
  if (t.grad_fn()) return Edge{t.grad_fn(), t.output_nr()};
  auto& meta = t.impl()->autograd;
  std::shared_ptr<Node> acc = meta.grad_accumulator.lock();
  if (!acc) {
    acc = std::make_shared<AccumulateGrad>(t.impl());
    meta.grad_accumulator = acc;
  }
  return Edge{acc, 0};
}

bool any_requires_grad(std::initializer_list<const Tensor*> inputs) {
  if (!GradMode::is_enabled()) return false;
  for (const Tensor* t : inputs)
    if (t->defined() && t->requires_grad()) return true;
  return false;
}

bool any_requires_grad(const TensorList& inputs) {
  if (!GradMode::is_enabled()) return false;
  for (const Tensor& t : inputs)
    if (t.defined() && t.requires_grad()) return true;
  return false;
}

TensorList record_multi(const char* name, TensorList outputs, const TensorList& inputs,
                        BackwardFn backward) {
  if (autograd::is_anomaly_enabled())
    for (const Tensor& out : outputs)
      MG_CHECK(!has_non_finite(out), "anomaly: op '", name, "' produced NaN or Inf in its forward "
               "output of shape ", shape_str(out.sizes()));
  if (!any_requires_grad(inputs)) return outputs;
  std::vector<Edge> edges;
  std::vector<TensorMeta> input_meta;
  edges.reserve(inputs.size());
  for (const Tensor& in : inputs) {
    edges.push_back(in.defined() ? gradient_edge(in) : Edge{});
    input_meta.push_back(in.defined() ? meta_of(in) : TensorMeta{});
  }
  auto node = std::make_shared<FunctionNode>(name, std::move(edges), std::move(input_meta),
                                             std::move(backward));
  for (Tensor& out : outputs) {
    if (!out.is_floating_point()) continue;  // int outputs (indices) carry no gradient
    auto& meta = out.impl()->autograd;
    meta.grad_fn = node;
    meta.output_nr = node->add_output(meta_of(out));
    meta.requires_grad = true;
  }
  return outputs;
}

Tensor record(const char* name, Tensor output, const TensorList& inputs, BackwardFn backward) {
  return record_multi(name, {std::move(output)}, inputs, std::move(backward))[0];
}

// ---- the engine

namespace autograd {

void backward(const TensorList& roots, const TensorList& grads, bool retain_graph) {
  MG_CHECK(grads.empty() || grads.size() == roots.size(), "backward: ", roots.size(), " roots but ",
           grads.size(), " gradients");
  NoGradGuard no_grad;  // gradients are computed without recording (no higher-order graphs)

  struct Pending {
    TensorList grads;
  };
  std::unordered_map<Node*, Pending> buffers;
  auto accumulate = [&](const Edge& e, Tensor g) {
    auto& slot = buffers[e.fn.get()].grads;
    if (slot.size() < e.fn->output_meta().size()) slot.resize(e.fn->output_meta().size());
    Tensor& dst = slot[e.input_nr];
    dst = dst.defined() ? dst + g : std::move(g);
  };

  std::vector<std::shared_ptr<Node>> root_nodes;
  for (size_t i = 0; i < roots.size(); ++i) {
    const Tensor& root = roots[i];
    MG_CHECK(root.requires_grad(), "backward: element ", i, " of shape ", shape_str(root.sizes()),
             " does not require grad and has no grad_fn");
    Tensor g = grads.empty() ? Tensor() : grads[i];
    if (!g.defined()) {
      MG_CHECK(root.numel() == 1, "backward: grad can be implicitly created only for scalar "
               "outputs, but the output has shape ", shape_str(root.sizes()),
               "; pass a gradient of that shape");
      g = ones_like(root);
    }
    MG_CHECK(g.sizes() == root.sizes(), "backward: gradient of shape ", shape_str(g.sizes()),
             " for an output of shape ", shape_str(root.sizes()));
    Edge e = gradient_edge(root);
    accumulate(e, g.detach());
    root_nodes.push_back(e.fn);
  }

  // Count, for each reachable node, how many edges lead into it (iterative DFS).
  std::unordered_map<Node*, int> dependencies;
  std::unordered_set<Node*> seen;
  std::vector<Node*> stack;
  for (auto& n : root_nodes)
    if (seen.insert(n.get()).second) stack.push_back(n.get());
  while (!stack.empty()) {
    Node* n = stack.back();
    stack.pop_back();
    for (const Edge& e : n->next_edges()) {
      if (!e.fn) continue;
      ++dependencies[e.fn.get()];
      if (seen.insert(e.fn.get()).second) stack.push_back(e.fn.get());
    }
  }

  // Kahn's algorithm; among ready nodes the most recently created runs first, as PyTorch does,
  // which makes the order (and so float rounding) deterministic.
  auto later_first = [](const std::shared_ptr<Node>& a, const std::shared_ptr<Node>& b) {
    return a->sequence_nr() < b->sequence_nr();
  };
  std::priority_queue<std::shared_ptr<Node>, std::vector<std::shared_ptr<Node>>,
                      decltype(later_first)>
      ready(later_first);
  std::unordered_set<Node*> queued;
  for (auto& n : root_nodes)
    if (dependencies[n.get()] == 0 && queued.insert(n.get()).second) ready.push(n);

  while (!ready.empty()) {
    std::shared_ptr<Node> node = ready.top();
    ready.pop();
    TensorList grad_outputs = std::move(buffers[node.get()].grads);
    buffers.erase(node.get());
    grad_outputs.resize(node->output_meta().size());
    for (uint32_t i = 0; i < grad_outputs.size(); ++i) {
      const TensorMeta& m = node->output_meta()[i];
      if (!grad_outputs[i].defined())
        grad_outputs[i] = zeros(m.sizes, TensorOptions(m.dtype).device(m.device));
      for (const auto& hook : node->output_hooks(i)) {
        Tensor replaced = hook(grad_outputs[i]);
        if (replaced.defined()) grad_outputs[i] = replaced;
      }
    }
    TensorList input_grads;
    {
      profiler::Scope scope(node->name().c_str(), /*backward=*/true);
      input_grads = node->apply(std::move(grad_outputs));
    }
    if (!retain_graph) node->release();

    const auto& edges = node->next_edges();
    for (size_t i = 0; i < edges.size(); ++i) {
      const Edge& e = edges[i];
      if (!e.fn) continue;
      if (i < input_grads.size() && input_grads[i].defined()) {
        const Tensor& g = input_grads[i];
        const TensorMeta& m = node->input_meta()[i];
        MG_CHECK(g.sizes() == m.sizes, "backward of ", node->name(), " returned a gradient of shape ",
                 shape_str(g.sizes()), " for input ", i, " of shape ", shape_str(m.sizes));
        if (is_anomaly_enabled())
          MG_CHECK(!has_non_finite(g), "anomaly: backward of op '", node->name(),
                   "' produced NaN or Inf in the gradient of its input ", i, " (shape ",
                   shape_str(m.sizes), ")");
        accumulate(e, g);
      }
      if (--dependencies[e.fn.get()] == 0 && queued.insert(e.fn.get()).second) ready.push(e.fn);
    }
  }
}

std::string to_dot(const Tensor& root) {
  std::ostringstream os;
  os << "digraph autograd {\n  node [fontname=\"Helvetica\"];\n";
  if (!root.grad_fn()) {
    os << "}\n";
    return os.str();
  }
  std::unordered_map<const Node*, int> ids;
  std::vector<const Node*> stack{root.grad_fn().get()};
  ids[root.grad_fn().get()] = 0;
  os << "  out [label=\"output " << shape_str(root.sizes()) << "\", shape=none];\n";
  os << "  n0 -> out;\n";
  while (!stack.empty()) {
    const Node* n = stack.back();
    stack.pop_back();
    const int id = ids[n];
    if (auto acc = dynamic_cast<const AccumulateGrad*>(n))
      os << "  n" << id << " [label=\"leaf " << shape_str(acc->leaf()->sizes)
         << "\", shape=ellipse, style=filled, fillcolor=lightblue];\n";
    else
      os << "  n" << id << " [label=\"" << n->name() << "\", shape=box];\n";
    for (const Edge& e : n->next_edges()) {
      if (!e.fn) continue;
      auto [it, inserted] = ids.emplace(e.fn.get(), static_cast<int>(ids.size()));
      if (inserted) stack.push_back(e.fn.get());
      os << "  n" << it->second << " -> n" << id << ";\n";
    }
  }
  os << "}\n";
  return os.str();
}

}  // namespace autograd
}  // namespace mg
