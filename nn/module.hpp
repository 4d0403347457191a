// nn::Module: named parameters, buffers and children, train/eval, and moegrad's explicit freezing.
// After torch::nn::Module; modules are held by std::shared_ptr (std::make_shared<nn::Linear>(...)).
//
// Freezing is a first-class mode, separate from requires_grad and from train/eval, because in
// PyTorch `requires_grad=False` does not stop BatchNorm's running statistics and a parent's
// train() silently re-enables them (the study this project grew out of lost 2.48 accuracy points
// to that). Here:
//   freeze()               every parameter below stops training AND every running statistic below
//                          freezes (normalization then uses the running statistics);
//   unfreeze()             undoes both;
//   freeze_running_stats() only the statistics.
// train()/eval() change only the training flag; a frozen statistic stays frozen in train mode.
#pragma once
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "engine/tensor.hpp"

namespace mg::nn {

class Module;
using ModulePtr = std::shared_ptr<Module>;
// Ordered name -> tensor map (insertion order: the order parameters were registered, depth first).
using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

class Module : public std::enable_shared_from_this<Module> {
 public:
  explicit Module(std::string name = "Module") : name_(std::move(name)) {}
  virtual ~Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  const std::string& name() const { return name_; }

  // The single-tensor forward that containers call. Modules with other signatures add overloads.
  virtual Tensor forward(const Tensor& x);
  Tensor operator()(const Tensor& x) { return forward(x); }

  // ---- registration (returns the registered object, for member initialization)
  // Subclasses keep the returned handle as a member: moves between devices and dtypes, and loading,
  // update the tensor in place (Tensor::set_data), so the member stays valid.
  Tensor register_parameter(const std::string& name, Tensor tensor, bool requires_grad = true);
  Tensor register_buffer(const std::string& name, Tensor tensor);
  template <class M>
  std::shared_ptr<M> register_module(const std::string& name, std::shared_ptr<M> module) {
    add_child(name, module);
    return module;
  }
  // Removes a child (MoE experts come and go); throws when there is none of that name.
  void unregister_module(const std::string& name);

  // ---- traversal
  std::vector<Tensor> parameters(bool recurse = true) const;
  NamedTensors named_parameters(bool recurse = true) const;
  std::vector<Tensor> buffers(bool recurse = true) const;
  NamedTensors named_buffers(bool recurse = true) const;
  std::vector<ModulePtr> children() const;
  std::vector<std::pair<std::string, ModulePtr>> named_children() const { return children_; }
  std::vector<std::pair<std::string, ModulePtr>> named_modules(const std::string& prefix = "");
  // fn(module) on this module and every descendant, parents first.
  void apply(const std::function<void(Module&)>& fn);

  // ---- modes
  virtual void train(bool on = true);
  void eval() { train(false); }
  bool is_training() const { return training_; }
  void freeze();
  void unfreeze();
  void freeze_running_stats(bool frozen = true);
  // True when running statistics are frozen here (they normalize with running stats, no update).
  bool running_stats_frozen() const { return stats_frozen_; }

  // ---- state
  void zero_grad();
  void to(Device device);
  void to(ScalarType dtype);
  // Parameters then buffers, qualified names ("block.0.weight"), sharing storage with the module.
  NamedTensors state_dict() const;
  // Copies values in. strict: missing and unexpected keys are errors (all listed); shapes must
  // match. Nothing is modified unless every check passes.
  void load_state_dict(const NamedTensors& state, bool strict = true);

  virtual std::string extra_repr() const { return ""; }
  std::string to_string(int indent = 0) const;

 private:
  void add_child(const std::string& name, ModulePtr module);
  void collect(const std::string& prefix, bool recurse, bool params, NamedTensors& out) const;

  std::string name_;
  bool training_ = true;
  bool stats_frozen_ = false;
  // requires_grad of this module's own parameters before freeze(), restored by unfreeze()
  std::vector<bool> trainable_before_freeze_;
  std::vector<std::pair<std::string, Tensor>> parameters_;
  std::vector<std::pair<std::string, Tensor>> buffers_;
  std::vector<std::pair<std::string, ModulePtr>> children_;
};

std::ostream& operator<<(std::ostream& os, const Module& m);

}  // namespace mg::nn
