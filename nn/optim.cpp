// The Optimizer base: parameter groups, per-parameter state, the skipping rule for frozen
// parameters, and the state_dict layout documented in optim.hpp. The update rules live in
// optim_sgd.cpp and optim_adam.cpp.
#include "nn/optim.hpp"

#include <algorithm>
#include <cstdio>
#include <unordered_set>

#include "engine/autograd.hpp"
#include "engine/error.hpp"

namespace mg::nn {

ParamGroup& ParamGroup::operator=(const ParamGroup& o) {
  if (this != &o) {
    params_ = o.params_;
    options_ = o.options_ ? o.options_->clone() : nullptr;
  }
  return *this;
}

OptimizerOptions& ParamGroup::options() {
  MG_CHECK(options_, "ParamGroup: this group has no options yet (it takes the optimizer's defaults)");
  return *options_;
}

const OptimizerOptions& ParamGroup::options() const {
  MG_CHECK(options_, "ParamGroup: this group has no options yet (it takes the optimizer's defaults)");
  return *options_;
}

Optimizer::Optimizer(std::vector<ParamGroup> groups, const OptimizerOptions& defaults)
    : defaults_(defaults.clone()) {
  defaults_->validate();
  for (auto& g : groups) add_param_group(std::move(g));
}

void Optimizer::check_new_params(const std::vector<Tensor>& params) const {
  std::unordered_set<const TensorImpl*> seen;
  for (const auto& g : groups_)
    for (const auto& p : g.params_) seen.insert(p.impl().get());
  for (const auto& p : params) {
    MG_CHECK(p.defined(), name(), ": cannot optimize an undefined tensor");
    MG_CHECK(p.is_floating_point(), name(), ": can only optimize floating-point tensors, got ",
             dtype_name(p.dtype()));
    MG_CHECK(p.is_leaf(), name(), ": cannot optimize a non-leaf tensor");
    MG_CHECK(seen.insert(p.impl().get()).second, name(), ": a parameter appears more than once "
             "(in this list or in another parameter group)");
  }
}

void Optimizer::add_param_group(ParamGroup group) {
  if (!group.has_options()) group.options_ = defaults_->clone();
  MG_CHECK(std::string(group.options_->optimizer_name()) == name(), name(), ": a parameter group "
           "has ", group.options_->optimizer_name(), " options");
  group.options_->validate();
  check_new_params(group.params_);
  groups_.push_back(std::move(group));
}

void Optimizer::add_params(size_t group_index, const std::vector<Tensor>& params) {
  MG_CHECK(group_index < groups_.size(), name(), ": add_params to group ", group_index, " but there are ",
           groups_.size(), " groups");
  check_new_params(params);
  auto& dst = groups_[group_index].params_;
  dst.insert(dst.end(), params.begin(), params.end());
}

void Optimizer::remove_params(const std::vector<Tensor>& params) {
  std::unordered_set<const TensorImpl*> doomed;
  for (const auto& p : params) {
    MG_CHECK(p.defined(), name(), ": remove_params: undefined tensor");
    doomed.insert(p.impl().get());
  }
  size_t found = 0;
  for (const auto& g : groups_)
    for (const auto& p : g.params_) found += doomed.count(p.impl().get());
  MG_CHECK(found == doomed.size(), name(), ": remove_params: ", doomed.size() - found,
           " of the tensors are not parameters of this optimizer");
  for (auto& g : groups_)
    std::erase_if(g.params_, [&](const Tensor& p) { return doomed.count(p.impl().get()) > 0; });
  for (const auto* impl : doomed) state_.erase(impl);
}

ParamState* Optimizer::state(const Tensor& param) {
  auto it = state_.find(param.impl().get());
  return it == state_.end() ? nullptr : &it->second;
}

const ParamState* Optimizer::state(const Tensor& param) const {
  auto it = state_.find(param.impl().get());
  return it == state_.end() ? nullptr : &it->second;
}

void Optimizer::set_state(const Tensor& param, ParamState state) {
  bool present = false;
  for (const auto& g : groups_)
    for (const auto& p : g.params_) present = present || p.is_same(param);
  MG_CHECK(present, name(), ": set_state for a tensor that is not a parameter of this optimizer");
  for (const auto& [buf_name, buf] : state.buffers)
    MG_CHECK(buf.sizes() == param.sizes(), name(), ": set_state: buffer '", buf_name, "' has shape ",
             shape_str(buf.sizes()), ", the parameter ", shape_str(param.sizes()));
  state_[param.impl().get()] = std::move(state);
}

void Optimizer::zero_grad(bool set_to_none) {
  for (auto& g : groups_)
    for (auto& p : g.params_) {
      if (set_to_none)
        p.set_grad(Tensor());
      else
        p.mutable_grad_zero_();
    }
}

void Optimizer::step() {
  NoGradGuard no_grad;
  for (auto& group : groups_) {
    for (auto& p : group.params_) {
      // A frozen parameter keeps its stale gradient (Module::freeze does not clear it); updating
      // from it would move an expert that is meant to stay bit-identical.
      if (!p.requires_grad()) continue;
      Tensor grad = p.grad();
      if (!grad.defined()) continue;
      if (grad.dtype() != p.dtype()) grad = grad.to(p.dtype());
      if (grad.device() != p.device()) grad = grad.to(p.device());
      ParamState& st = state_[p.impl().get()];
      ++st.step;
      update(*group.options_, p, grad, st);
    }
  }
}

// ---- state_dict

namespace {
std::string key(size_t g, size_t i, const std::string& leaf) {
  return "state." + std::to_string(g) + "." + std::to_string(i) + "." + leaf;
}
}  // namespace

OptimizerStateDict Optimizer::state_dict() const {
  NoGradGuard no_grad;
  OptimizerStateDict out;
  out.optimizer = name();
  out.scalars["num_groups"] = static_cast<double>(groups_.size());
  for (size_t g = 0; g < groups_.size(); ++g) {
    const std::string prefix = "group." + std::to_string(g) + ".";
    out.scalars[prefix + "num_params"] = static_cast<double>(groups_[g].params_.size());
    for (const auto& [opt, value] : groups_[g].options_->to_map()) out.scalars[prefix + opt] = value;
    for (size_t i = 0; i < groups_[g].params_.size(); ++i) {
      const ParamState* st = state(groups_[g].params_[i]);
      if (!st) continue;
      out.scalars[key(g, i, "step")] = static_cast<double>(st->step);
      for (const auto& [buf_name, buf] : st->buffers) out.tensors.emplace_back(key(g, i, buf_name), buf.clone());
    }
  }
  return out;
}

void Optimizer::load_state_dict(const OptimizerStateDict& sd) {
  MG_CHECK(sd.optimizer.empty() || sd.optimizer == name(), name(), ": load_state_dict: the state is "
           "for ", sd.optimizer);
  auto scalar = [&](const std::string& k) {
    auto it = sd.scalars.find(k);
    MG_CHECK(it != sd.scalars.end(), name(), ": load_state_dict: missing '", k, "'");
    return it->second;
  };
  MG_CHECK(static_cast<size_t>(scalar("num_groups")) == groups_.size(), name(), ": load_state_dict: "
           "the state has ", scalar("num_groups"), " parameter groups, this optimizer ", groups_.size());

  // Phase 1: build everything aside, so a bad state dict changes nothing.
  std::vector<std::unique_ptr<OptimizerOptions>> options;
  std::vector<std::vector<ParamState>> states(groups_.size());
  std::vector<std::vector<bool>> has_state(groups_.size());
  for (size_t g = 0; g < groups_.size(); ++g) {
    const std::string prefix = "group." + std::to_string(g) + ".";
    const auto& params = groups_[g].params_;
    MG_CHECK(static_cast<size_t>(scalar(prefix + "num_params")) == params.size(), name(),
             ": load_state_dict: group ", g, " has ", scalar(prefix + "num_params"),
             " parameters in the state, ", params.size(), " here");
    OptionMap opts;
    for (const auto& [k, v] : sd.scalars)
      if (k.rfind(prefix, 0) == 0 && k != prefix + "num_params") opts[k.substr(prefix.size())] = v;
    options.push_back(groups_[g].options_->clone());
    options.back()->from_map(opts);
    options.back()->validate();
    states[g].resize(params.size());
    has_state[g].assign(params.size(), false);
    for (size_t i = 0; i < params.size(); ++i) {
      auto it = sd.scalars.find(key(g, i, "step"));
      if (it == sd.scalars.end()) continue;
      has_state[g][i] = true;
      states[g][i].step = static_cast<int64_t>(it->second);
    }
  }
  NoGradGuard no_grad;
  for (const auto& [k, t] : sd.tensors) {
    size_t g = 0, i = 0;
    char leaf[64] = {0};
    MG_CHECK(std::sscanf(k.c_str(), "state.%zu.%zu.%63s", &g, &i, leaf) == 3 && g < groups_.size() &&
                 i < groups_[g].params_.size(),
             name(), ": load_state_dict: unexpected tensor '", k, "'");
    MG_CHECK(has_state[g][i], name(), ": load_state_dict: tensor '", k, "' without its step count");
    const Tensor& p = groups_[g].params_[i];
    MG_CHECK(t.sizes() == p.sizes(), name(), ": load_state_dict: '", k, "' has shape ",
             shape_str(t.sizes()), ", its parameter ", shape_str(p.sizes()));
    // A clone, so the optimizer never writes into the caller's tensors.
    states[g][i].buffers[leaf] = t.detach().to(p.dtype()).to(p.device()).clone();
  }

  // Phase 2: commit.
  for (size_t g = 0; g < groups_.size(); ++g) {
    groups_[g].options_ = std::move(options[g]);
    for (size_t i = 0; i < groups_[g].params_.size(); ++i) {
      const TensorImpl* impl = groups_[g].params_[i].impl().get();
      if (has_state[g][i])
        state_[impl] = std::move(states[g][i]);
      else
        state_.erase(impl);
    }
  }
}

// ---- fused-loop helpers

namespace detail {

HostStaging::HostStaging(std::vector<Tensor> tensors) : original_(std::move(tensors)) {
  host_.reserve(original_.size());
  for (const auto& t : original_) {
    if (!t.defined() || (t.device().is_cpu() && t.is_contiguous()))
      host_.push_back(t);
    else
      host_.push_back(t.detach().to(Device::cpu()).contiguous());  // a fresh copy either way
  }
}

void HostStaging::write_back(std::initializer_list<size_t> indices) const {
  for (size_t i : indices) {
    Tensor dst = original_[i];
    if (dst.defined() && !host_[i].is_same(dst)) dst.copy_(host_[i]);
  }
}

Tensor state_buffer(ParamState& state, const std::string& name, const Tensor& param, bool* created) {
  auto it = state.buffers.find(name);
  const bool missing = it == state.buffers.end();
  if (created) *created = missing;
  if (missing) return state.buffers[name] = zeros(param.sizes(), param.options());
  // set_state or a dtype move of the module may leave a buffer unlike the parameter.
  Tensor& buf = it->second;
  if (buf.dtype() != param.dtype()) buf = buf.to(param.dtype());
  if (buf.device() != param.device()) buf = buf.to(param.device());
  return buf;
}

}  // namespace detail

}  // namespace mg::nn
