// Optimizers: SGD (momentum, dampening, Nesterov, L2 weight decay), Adam (optional AMSGrad) and
// AdamW (decoupled decay), with parameter groups and a checkpointable state. The update rules are
// torch.optim's (PyTorch 1.13, single-tensor path) operation for operation, and the C++ API is
// libtorch's: SGD opt(params, SGDOptions(0.1).momentum(0.9)); opt.zero_grad(); loss.backward();
// opt.step().
//
// Rules that go beyond torch, for training Mixture-of-Experts models:
//  * A parameter whose grad is undefined, or that does not require grad (a frozen expert that still
//    holds a stale gradient), is skipped entirely: its value and its state stay bit-identical.
//  * Parameters come and go with their state (experts grow and shrink): add_params() appends to a
//    group, remove_params() drops parameters and their state, state()/set_state() move state.
//  * zero_grad() sets gradients to undefined by default (torch's set_to_none=True).
//
// State is kept per parameter in the parameter's dtype and device. step() runs a fused loop over
// CPU-contiguous data; any other parameter is staged through a host copy (a device-native kernel
// arrives with the CUDA backend).
#pragma once
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "engine/tensor.hpp"

namespace mg::nn {

// Declares a chainable option, libtorch's TORCH_ARG: opts.lr(0.1).momentum(0.9); opts.lr().
#define MG_OPTIM_ARG(Self, T, name, ...)                                        \
 public:                                                                       \
  Self& name(T value) { name##_ = value; return static_cast<Self&>(*this); } \
  T name() const { return name##_; }                                           \
                                                                               \
 private:                                                                      \
  T name##_ = __VA_ARGS__

using OptionMap = std::map<std::string, double>;

// What every optimizer's options offer to the base class and to the LR schedulers.
class OptimizerOptions {
 public:
  virtual ~OptimizerOptions() = default;
  virtual std::unique_ptr<OptimizerOptions> clone() const = 0;
  virtual const char* optimizer_name() const = 0;  // the optimizer these options belong to
  virtual double get_lr() const = 0;
  virtual void set_lr(double lr) = 0;
  // SGD's momentum, Adam's beta1: what OneCycleLR cycles.
  virtual double get_momentum() const = 0;
  virtual void set_momentum(double momentum) = 0;
  // Every option as a number (bools as 0/1): the form that state_dict() saves.
  virtual OptionMap to_map() const = 0;
  // Sets the options named in `m`; throws on a name these options do not have.
  virtual void from_map(const OptionMap& m) = 0;
  // Throws mg::Error naming the first invalid option (torch's checks).
  virtual void validate() const = 0;
};

class SGDOptions : public OptimizerOptions {
 public:
  explicit SGDOptions(double lr) : lr_(lr) {}
  MG_OPTIM_ARG(SGDOptions, double, lr, 0.0);
  MG_OPTIM_ARG(SGDOptions, double, momentum, 0.0);
  MG_OPTIM_ARG(SGDOptions, double, dampening, 0.0);
  MG_OPTIM_ARG(SGDOptions, double, weight_decay, 0.0);
  MG_OPTIM_ARG(SGDOptions, bool, nesterov, false);

 public:
  std::unique_ptr<OptimizerOptions> clone() const override { return std::make_unique<SGDOptions>(*this); }
  const char* optimizer_name() const override { return "SGD"; }
  double get_lr() const override { return lr_; }
  void set_lr(double lr) override { lr_ = lr; }
  double get_momentum() const override { return momentum_; }
  void set_momentum(double momentum) override { momentum_ = momentum; }
  OptionMap to_map() const override;
  void from_map(const OptionMap& m) override;
  void validate() const override;
};

// Adam and AdamW share their options; only the default weight decay and its meaning differ.
template <class Self>
class AdamOptionsBase : public OptimizerOptions {
 public:
  using Betas = std::pair<double, double>;
  MG_OPTIM_ARG(Self, double, lr, 1e-3);
  MG_OPTIM_ARG(Self, Betas, betas, Betas{0.9, 0.999});
  MG_OPTIM_ARG(Self, double, eps, 1e-8);
  MG_OPTIM_ARG(Self, double, weight_decay, 0.0);
  MG_OPTIM_ARG(Self, bool, amsgrad, false);

 public:
  std::unique_ptr<OptimizerOptions> clone() const override {
    return std::make_unique<Self>(static_cast<const Self&>(*this));
  }
  double get_lr() const override { return lr_; }
  void set_lr(double lr) override { lr_ = lr; }
  double get_momentum() const override { return betas_.first; }
  void set_momentum(double momentum) override { betas_.first = momentum; }
  OptionMap to_map() const override;
  void from_map(const OptionMap& m) override;
  void validate() const override;
};

class AdamOptions : public AdamOptionsBase<AdamOptions> {
 public:
  explicit AdamOptions(double lr = 1e-3) { this->lr(lr); }
  const char* optimizer_name() const override { return "Adam"; }
};

class AdamWOptions : public AdamOptionsBase<AdamWOptions> {
 public:
  explicit AdamWOptions(double lr = 1e-3) { this->lr(lr).weight_decay(1e-2); }
  const char* optimizer_name() const override { return "AdamW"; }
};

// Parameters sharing one set of options. A group made without options takes the optimizer's
// defaults when it is added.
class ParamGroup {
 public:
  ParamGroup(std::vector<Tensor> params) : params_(std::move(params)) {}  // NOLINT: as libtorch
  ParamGroup(std::vector<Tensor> params, const OptimizerOptions& options)
      : params_(std::move(params)), options_(options.clone()) {}
  ParamGroup(const ParamGroup& o) : params_(o.params_), options_(o.options_ ? o.options_->clone() : nullptr) {}
  ParamGroup& operator=(const ParamGroup& o);
  ParamGroup(ParamGroup&&) = default;
  ParamGroup& operator=(ParamGroup&&) = default;

  bool has_options() const { return options_ != nullptr; }
  OptimizerOptions& options();
  const OptimizerOptions& options() const;
  void set_options(std::unique_ptr<OptimizerOptions> options) { options_ = std::move(options); }
  // Use Optimizer::add_params / remove_params to change these, so the state follows.
  const std::vector<Tensor>& params() const { return params_; }

 private:
  friend class Optimizer;
  std::vector<Tensor> params_;
  std::unique_ptr<OptimizerOptions> options_;
};

// One parameter's state: the number of updates it has taken and its named buffers
// ("momentum_buffer"; "exp_avg", "exp_avg_sq", "max_exp_avg_sq"), shaped like the parameter.
struct ParamState {
  int64_t step = 0;
  std::map<std::string, Tensor> buffers;
};

// The optimizer's state in a form a checkpoint stores as named tensors plus JSON numbers.
// Parameters are identified by position: <g> is the group index, <i> the index within the group.
//   optimizer                      "SGD", "Adam" or "AdamW" (empty: not checked on load)
//   tensors  "state.<g>.<i>.<buffer>"   copies of each buffer, e.g. "state.0.3.exp_avg"
//   scalars  "num_groups"               number of groups
//            "group.<g>.num_params"     parameters in group g
//            "group.<g>.<option>"       every option of group g (OptimizerOptions::to_map)
//            "state.<g>.<i>.step"       updates taken; present exactly for parameters with state
struct OptimizerStateDict {
  std::string optimizer;
  std::vector<std::pair<std::string, Tensor>> tensors;
  std::map<std::string, double> scalars;
};

class Optimizer {
 public:
  virtual ~Optimizer() = default;
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;

  // "SGD", "Adam", "AdamW": the name its options carry, so it is known during construction.
  const char* name() const { return defaults_->optimizer_name(); }
  // One update of every parameter that has a gradient and requires grad, without recording.
  void step();
  void zero_grad(bool set_to_none = true);

  std::vector<ParamGroup>& param_groups() { return groups_; }
  const std::vector<ParamGroup>& param_groups() const { return groups_; }
  const OptimizerOptions& defaults() const { return *defaults_; }
  void add_param_group(ParamGroup group);
  // Appends parameters to group `group_index`; they start without state.
  void add_params(size_t group_index, const std::vector<Tensor>& params);
  // Removes parameters (from whatever group holds them) and their state. Throws, changing
  // nothing, when one of them is not in this optimizer.
  void remove_params(const std::vector<Tensor>& params);

  // The state of `param`, or nullptr before its first update.
  ParamState* state(const Tensor& param);
  const ParamState* state(const Tensor& param) const;
  // Gives `param` (already in a group) a state, e.g. the state of the expert it was split from.
  void set_state(const Tensor& param, ParamState state);

  // A snapshot: tensors are copies, so it does not change as training continues.
  OptimizerStateDict state_dict() const;
  // Restores options and state onto the same layout of groups. Everything is checked before
  // anything changes; buffers are copied into each parameter's dtype and device.
  void load_state_dict(const OptimizerStateDict& state);

 protected:
  Optimizer(std::vector<ParamGroup> groups, const OptimizerOptions& defaults);
  // Updates one parameter in place; `grad` has its dtype and device, `state.step` already counts
  // this update.
  virtual void update(const OptimizerOptions& options, const Tensor& param, const Tensor& grad,
                      ParamState& state) = 0;

 private:
  void check_new_params(const std::vector<Tensor>& params) const;
  std::vector<ParamGroup> groups_;
  std::unique_ptr<OptimizerOptions> defaults_;
  std::unordered_map<const TensorImpl*, ParamState> state_;
};

class SGD : public Optimizer {
 public:
  SGD(std::vector<ParamGroup> groups, const SGDOptions& defaults) : Optimizer(std::move(groups), defaults) {}
  SGD(std::vector<Tensor> params, const SGDOptions& defaults)
      : SGD(std::vector<ParamGroup>{ParamGroup(std::move(params))}, defaults) {}

 protected:
  void update(const OptimizerOptions& options, const Tensor& param, const Tensor& grad,
              ParamState& state) override;
};

class Adam : public Optimizer {
 public:
  Adam(std::vector<ParamGroup> groups, const AdamOptions& defaults = AdamOptions())
      : Optimizer(std::move(groups), defaults) {}
  Adam(std::vector<Tensor> params, const AdamOptions& defaults = AdamOptions())
      : Adam(std::vector<ParamGroup>{ParamGroup(std::move(params))}, defaults) {}

 protected:
  void update(const OptimizerOptions& options, const Tensor& param, const Tensor& grad,
              ParamState& state) override;
};

class AdamW : public Optimizer {
 public:
  AdamW(std::vector<ParamGroup> groups, const AdamWOptions& defaults = AdamWOptions())
      : Optimizer(std::move(groups), defaults) {}
  AdamW(std::vector<Tensor> params, const AdamWOptions& defaults = AdamWOptions())
      : AdamW(std::vector<ParamGroup>{ParamGroup(std::move(params))}, defaults) {}

 protected:
  void update(const OptimizerOptions& options, const Tensor& param, const Tensor& grad,
              ParamState& state) override;
};

namespace detail {
// CPU-contiguous stand-ins for tensors the fused loops touch: the tensor itself when it already
// is one, else a host copy that write_back() copies into the original.
class HostStaging {
 public:
  explicit HostStaging(std::vector<Tensor> tensors);
  template <class T> T* ptr(size_t i) const { return host_[i].defined() ? host_[i].data_ptr<T>() : nullptr; }
  void write_back(std::initializer_list<size_t> indices) const;

 private:
  std::vector<Tensor> original_, host_;
};
// The buffer `name` of `state`, created as zeros like `param` when missing; `created` tells which.
Tensor state_buffer(ParamState& state, const std::string& name, const Tensor& param, bool* created = nullptr);
}  // namespace detail

}  // namespace mg::nn
