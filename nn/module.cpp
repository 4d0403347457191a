// Module registration, traversal, modes, freezing and state dicts.
#include "nn/module.hpp"

#include <algorithm>
#include <set>
#include <sstream>

#include "engine/autograd.hpp"

namespace mg::nn {

Tensor Module::forward(const Tensor&) {
  throw Error(detail::concat(name_, ": this module has no single-tensor forward"));
}

namespace {
void check_name(const std::string& owner, const std::string& name) {
  MG_CHECK(!name.empty() && name.find('.') == std::string::npos, owner, ": invalid name '", name,
           "' (must be non-empty and contain no '.')");
}
template <class V>
bool has_name(const V& v, const std::string& name) {
  return std::any_of(v.begin(), v.end(), [&](const auto& kv) { return kv.first == name; });
}
}  // namespace

Tensor Module::register_parameter(const std::string& name, Tensor tensor, bool requires_grad) {
  check_name(name_, name);
  MG_CHECK(!has_name(parameters_, name) && !has_name(buffers_, name) && !has_name(children_, name),
           name_, ": '", name, "' is already registered");
  tensor = tensor.detach();
  if (requires_grad) tensor.requires_grad_(true);
  parameters_.emplace_back(name, tensor);
  return parameters_.back().second;
}

Tensor Module::register_buffer(const std::string& name, Tensor tensor) {
  check_name(name_, name);
  MG_CHECK(!has_name(parameters_, name) && !has_name(buffers_, name) && !has_name(children_, name),
           name_, ": '", name, "' is already registered");
  buffers_.emplace_back(name, tensor.detach());
  return buffers_.back().second;
}

void Module::add_child(const std::string& name, ModulePtr module) {
  check_name(name_, name);
  MG_CHECK(module != nullptr, name_, ": registering a null module as '", name, "'");
  MG_CHECK(!has_name(parameters_, name) && !has_name(buffers_, name) && !has_name(children_, name),
           name_, ": '", name, "' is already registered");
  children_.emplace_back(name, std::move(module));
}

void Module::unregister_module(const std::string& name) {
  auto it = std::find_if(children_.begin(), children_.end(), [&](const auto& kv) { return kv.first == name; });
  MG_CHECK(it != children_.end(), name_, ": no child module named '", name, "'");
  children_.erase(it);
}

void Module::collect(const std::string& prefix, bool recurse, bool params, NamedTensors& out) const {
  for (const auto& [n, t] : params ? parameters_ : buffers_) out.emplace_back(prefix + n, t);
  if (!recurse) return;
  for (const auto& [n, child] : children_) child->collect(prefix + n + ".", true, params, out);
}

NamedTensors Module::named_parameters(bool recurse) const {
  NamedTensors out;
  collect("", recurse, true, out);
  return out;
}

NamedTensors Module::named_buffers(bool recurse) const {
  NamedTensors out;
  collect("", recurse, false, out);
  return out;
}

std::vector<Tensor> Module::parameters(bool recurse) const {
  std::vector<Tensor> out;
  for (auto& kv : named_parameters(recurse)) out.push_back(kv.second);
  return out;
}

std::vector<Tensor> Module::buffers(bool recurse) const {
  std::vector<Tensor> out;
  for (auto& kv : named_buffers(recurse)) out.push_back(kv.second);
  return out;
}

std::vector<ModulePtr> Module::children() const {
  std::vector<ModulePtr> out;
  for (const auto& kv : children_) out.push_back(kv.second);
  return out;
}

std::vector<std::pair<std::string, ModulePtr>> Module::named_modules(const std::string& prefix) {
  std::vector<std::pair<std::string, ModulePtr>> out{{prefix, shared_from_this()}};
  for (const auto& [n, child] : children_) {
    auto sub = child->named_modules(prefix.empty() ? n : prefix + "." + n);
    out.insert(out.end(), sub.begin(), sub.end());
  }
  return out;
}

void Module::apply(const std::function<void(Module&)>& fn) {
  fn(*this);
  for (const auto& kv : children_) kv.second->apply(fn);
}

void Module::train(bool on) {
  training_ = on;
  for (const auto& kv : children_) kv.second->train(on);
}

void Module::freeze() {
  apply([](Module& m) {
    if (m.trainable_before_freeze_.empty()) {
      for (auto& [n, p] : m.parameters_) {
        m.trainable_before_freeze_.push_back(p.requires_grad());
        p.requires_grad_(false);
      }
    }
    m.stats_frozen_ = true;
  });
}

void Module::unfreeze() {
  apply([](Module& m) {
    for (size_t i = 0; i < m.trainable_before_freeze_.size() && i < m.parameters_.size(); ++i)
      m.parameters_[i].second.requires_grad_(m.trainable_before_freeze_[i]);
    m.trainable_before_freeze_.clear();
    m.stats_frozen_ = false;
  });
}

void Module::freeze_running_stats(bool frozen) {
  apply([frozen](Module& m) { m.stats_frozen_ = frozen; });
}

void Module::zero_grad() {
  for (auto& p : parameters()) p.set_grad(Tensor());
}

void Module::to(Device device) {
  apply([device](Module& m) {
    for (auto& [n, p] : m.parameters_) p.set_data(p.detach().to(device));
    for (auto& [n, b] : m.buffers_) b.set_data(b.to(device));
  });
}

void Module::to(ScalarType dtype) {
  apply([dtype](Module& m) {
    for (auto& [n, p] : m.parameters_)
      if (p.is_floating_point()) p.set_data(p.detach().to(dtype));
    for (auto& [n, b] : m.buffers_)
      if (b.is_floating_point()) b.set_data(b.to(dtype));
  });
}

NamedTensors Module::state_dict() const {
  NamedTensors out = named_parameters();
  NamedTensors bufs = named_buffers();
  out.insert(out.end(), bufs.begin(), bufs.end());
  return out;
}

void Module::load_state_dict(const NamedTensors& state, bool strict) {
  NamedTensors own = state_dict();
  std::map<std::string, Tensor> given(state.begin(), state.end());
  std::vector<std::string> missing, unexpected, mismatched;
  std::set<std::string> own_names;
  for (const auto& [n, t] : own) {
    own_names.insert(n);
    auto it = given.find(n);
    if (it == given.end()) {
      missing.push_back(n);
    } else if (it->second.sizes() != t.sizes()) {
      mismatched.push_back(n + " (checkpoint " + shape_str(it->second.sizes()) + ", model " +
                           shape_str(t.sizes()) + ")");
    }
  }
  for (const auto& [n, t] : state)
    if (!own_names.count(n)) unexpected.push_back(n);
  auto join = [](const std::vector<std::string>& v) {
    std::string s;
    for (const auto& x : v) s += (s.empty() ? "" : ", ") + x;
    return s;
  };
  std::string problems;
  if (strict && !missing.empty()) problems += "\n  missing keys: " + join(missing);
  if (strict && !unexpected.empty()) problems += "\n  unexpected keys: " + join(unexpected);
  if (!mismatched.empty()) problems += "\n  shape mismatches: " + join(mismatched);
  MG_CHECK(problems.empty(), "load_state_dict: error(s) loading state into ", name_, ":", problems);
  NoGradGuard no_grad;
  for (auto& [n, t] : own) {
    auto it = given.find(n);
    if (it != given.end()) t.copy_(it->second.to(t.dtype()));
  }
}

std::string Module::to_string(int indent) const {
  std::ostringstream os;
  os << name_ << "(" << extra_repr();
  if (!children_.empty()) {
    os << "\n";
    for (const auto& [n, child] : children_)
      os << std::string(indent + 2, ' ') << "(" << n << "): " << child->to_string(indent + 2) << "\n";
    os << std::string(indent, ' ');
  }
  os << ")";
  return os.str();
}

std::ostream& operator<<(std::ostream& os, const Module& m) { return os << m.to_string(); }

}  // namespace mg::nn
