// The expert lifecycle of MoELayer: freeze/unfreeze, grow (add_expert, add_expert_cloned_from)
// and prune (remove_expert), with the optimizer state following every change.
//
// Freezing is nn::Module::freeze() on the expert: its parameters stop requiring grad (optimizers
// skip them, so not even weight decay moves them) and its running statistics freeze, which a
// parent's train() does not undo. This is the fix for the study's 2.48-point loss, where
// requires_grad=False left a "frozen" expert's BatchNorm statistics drifting.
//
// The router's output layer has one row per expert. Router::add_expert_row / clone_expert_row /
// remove_expert_row resize those parameters in place (Tensor::set_data), so the optimizer still
// knows them, but their moments keep the old shape. resize_router_state() brings every state
// buffer to the new shape without touching the old rows, so Adam or SGD continue on the
// surviving rows exactly as if nothing had happened:
//   add_expert               the new row's moments are zero (a fresh row has no history);
//   add_expert_cloned_from   the new row's moments are a copy of row j's (the clone is j's twin
//                            and starts where j is, instead of taking Adam's oversized first
//                            step from zero moments under an already bias-corrected step count);
//   remove_expert            row i's moments are dropped.
// Step counts are per tensor and stay as they are. Resizing a parameter with set_data drops its
// gradient, so change the expert set between steps, not between backward() and step().
#include <algorithm>
#include <optional>
#include <string>
#include <unordered_set>

#include "engine/autograd.hpp"
#include "engine/generator.hpp"
#include "engine/ops.hpp"
#include "moe/layer.hpp"

namespace mg::moe {

namespace {

void check_expert_index(const char* who, int64_t i, int64_t num_experts) {
  MG_CHECK(i >= 0 && i < num_experts, "MoELayer::", who, ": expert index ", i, " out of range [0, ",
           num_experts, ")");
}

// A router parameter and its shape before a row change.
struct ParamShape {
  Tensor param;
  Shape shape;
};

std::vector<ParamShape> snapshot_shapes(const Router& router) {
  std::vector<ParamShape> out;
  for (const auto& p : router.parameters()) out.push_back({p, p.sizes()});
  return out;
}

enum class RowChange { AppendZero, AppendCopy, Remove };

// `row` is the copied row (AppendCopy) or the removed one (Remove).
Tensor resize_rows(const Tensor& buffer, RowChange change, int64_t row) {
  const int64_t rows = buffer.size(0);
  switch (change) {
    case RowChange::AppendZero: {
      Shape zero_shape = buffer.sizes();
      zero_shape[0] = 1;
      return cat({buffer, zeros(zero_shape, buffer.options())}, 0).contiguous();
    }
    case RowChange::AppendCopy:
      return cat({buffer, buffer.slice(0, row, row + 1)}, 0).contiguous();
    case RowChange::Remove:
      return cat({buffer.slice(0, 0, row), buffer.slice(0, row + 1, rows)}, 0).contiguous();
  }
  return buffer;
}

// Every router parameter whose leading (expert) dimension changed has its optimizer state
// resized the same way. A parameter that changed in any other way means the router and this
// file disagree about the layout; that is a bug, reported rather than papered over.
void resize_router_state(nn::Optimizer* optimizer, const std::vector<ParamShape>& before,
                         int64_t old_experts, RowChange change, int64_t row) {
  const int64_t new_experts = change == RowChange::Remove ? old_experts - 1 : old_experts + 1;
  NoGradGuard no_grad;
  for (const auto& [param, old_shape] : before) {
    if (param.sizes() == old_shape) continue;
    Shape expected = old_shape;
    if (!expected.empty()) expected[0] = new_experts;
    MG_CHECK(!old_shape.empty() && old_shape[0] == old_experts && param.sizes() == expected,
             "MoELayer: a router parameter changed from ", shape_str(old_shape), " to ",
             shape_str(param.sizes()), "; expected its expert rows to go from ", old_experts, " to ",
             new_experts);
    if (!optimizer) continue;
    nn::ParamState* state = optimizer->state(param);
    if (!state) continue;
    for (auto& [name, buffer] : state->buffers) {
      MG_CHECK(buffer.sizes() == old_shape, "MoELayer: optimizer buffer '", name, "' of a router "
               "parameter has shape ", shape_str(buffer.sizes()), ", the parameter had ",
               shape_str(old_shape));
      buffer = resize_rows(buffer, change, row);
    }
  }
}

// The parameters of `module` that `optimizer` holds (a frozen expert may have been left out of it).
std::vector<Tensor> params_in_optimizer(const nn::Module& module, const nn::Optimizer& optimizer) {
  std::unordered_set<const TensorImpl*> held;
  for (const auto& group : optimizer.param_groups())
    for (const auto& p : group.params()) held.insert(p.impl().get());
  std::vector<Tensor> out;
  for (const auto& p : module.parameters())
    if (held.count(p.impl().get())) out.push_back(p);
  return out;
}

// The options of `module`'s first floating-point tensor: the dtype and device a probe input needs.
std::optional<TensorOptions> floating_options(const nn::Module& module) {
  for (const auto& t : module.state_dict())
    if (t.second.is_floating_point()) return t.second.options();
  return std::nullopt;
}

// The output shape of `module` on a [2, input_dim] zero input. Run in eval mode under
// NoGradGuard, which for the layers in nn (BatchNorm reads its running statistics, Dropout is the
// identity) changes no state; every module's own training flag is restored afterwards.
Shape probe_output_shape(nn::Module& module, int64_t input_dim, TensorOptions options, const char* which) {
  const auto modules = module.named_modules();
  std::vector<bool> was_training;
  for (const auto& [name, m] : modules) was_training.push_back(m->is_training());
  module.eval();
  Shape out;
  std::string error;
  try {
    NoGradGuard no_grad;
    out = module.forward(zeros({2, input_dim}, options)).sizes();
  } catch (const Error& e) {
    error = e.what();
  }
  // Parents first, so each module ends with its own flag even though train() recurses.
  for (size_t k = 0; k < modules.size(); ++k) modules[k].second->train(was_training[k]);
  MG_CHECK(error.empty(), "MoELayer::add_expert: ", which, " fails on a [2, ", input_dim, "] input: ", error);
  return out;
}

}  // namespace

void MoELayer::freeze_expert(int64_t i) {
  check_expert_index("freeze_expert", i, num_experts());
  experts_[i]->freeze();
}

void MoELayer::unfreeze_expert(int64_t i) {
  check_expert_index("unfreeze_expert", i, num_experts());
  experts_[i]->unfreeze();
}

bool MoELayer::expert_frozen(int64_t i) const {
  check_expert_index("expert_frozen", i, num_experts());
  const auto& e = experts_[i];
  if (!e->running_stats_frozen()) return false;
  const auto params = e->parameters();
  return std::none_of(params.begin(), params.end(), [](const Tensor& p) { return p.requires_grad(); });
}

int64_t MoELayer::add_expert(nn::ModulePtr expert, nn::Optimizer* optimizer, size_t group) {
  MG_CHECK(expert != nullptr, "MoELayer::add_expert: null expert");
  for (const auto& e : experts_)
    MG_CHECK(e != expert, "MoELayer::add_expert: this module is already an expert of the layer");

  // The new expert must map [n, D] to what its siblings produce. Probing is cheap (two rows) and
  // catches a mismatch here instead of in the middle of the next forward.
  const int64_t input_dim = config_.router.input_dim;
  const auto sibling_options = experts_.empty() ? std::nullopt : floating_options(*experts_[0]);
  const TensorOptions options = floating_options(*expert).value_or(sibling_options.value_or(TensorOptions()));
  const Shape new_shape = probe_output_shape(*expert, input_dim, options, "the new expert");
  if (!experts_.empty()) {
    const Shape sibling_shape =
        probe_output_shape(*experts_[0], input_dim, sibling_options.value_or(options), "expert 0");
    MG_CHECK(new_shape == sibling_shape, "MoELayer::add_expert: the new expert maps [2, ", input_dim,
             "] to ", shape_str(new_shape), ", its siblings to ", shape_str(sibling_shape));
  }

  // add_params validates before it changes anything, so a throw here leaves the layer intact.
  if (optimizer) optimizer->add_params(group, expert->parameters());

  const int64_t old_experts = num_experts();
  const auto before = snapshot_shapes(*router_);
  router_->add_expert_row();
  resize_router_state(optimizer, before, old_experts, RowChange::AppendZero, -1);

  expert->train(is_training());
  experts_.push_back(std::move(expert));
  config_.router = router_->config();
  rebuild_expert_registration();
  MG_CHECK(router_->num_experts() == num_experts(), "MoELayer::add_expert: the router has ",
           router_->num_experts(), " expert rows, the layer ", num_experts(), " experts");
  return num_experts() - 1;
}

int64_t MoELayer::add_expert_cloned_from(int64_t j, double noise_std, nn::Optimizer* optimizer,
                                         size_t group) {
  check_expert_index("add_expert_cloned_from", j, num_experts());
  MG_CHECK(factory_, "MoELayer::add_expert_cloned_from: the layer has no ExpertFactory to build a "
           "copy of expert ", j, " (pass one to the MoELayer constructor, e.g. make_ffn_expert_like)");
  MG_CHECK(noise_std >= 0.0, "MoELayer::add_expert_cloned_from: noise_std must be >= 0, got ", noise_std);

  nn::ModulePtr clone = factory_(*experts_[j]);
  MG_CHECK(clone != nullptr, "MoELayer::add_expert_cloned_from: the factory returned null");
  // The factory builds on the CPU in float32; the clone lives where expert j does.
  if (const auto source = floating_options(*experts_[j])) {
    clone->to(source->device_);
    clone->to(source->dtype_);
  }
  // Buffers too: the clone normalizes with j's running statistics until it sees its own inputs.
  clone->load_state_dict(experts_[j]->state_dict());
  if (noise_std > 0.0) {
    // The router's generator, so a seeded run splits the same way every time.
    NoGradGuard no_grad;
    for (auto& p : clone->parameters())
      if (p.is_floating_point()) p.copy_(p + randn_like(p, &router_->generator()) * noise_std);
  }

  if (optimizer) optimizer->add_params(group, clone->parameters());

  const int64_t old_experts = num_experts();
  const auto before = snapshot_shapes(*router_);
  router_->clone_expert_row(j, noise_std);
  resize_router_state(optimizer, before, old_experts, RowChange::AppendCopy, j);

  // A fresh, trainable module, even when j is frozen: the split is meant to specialize.
  clone->train(is_training());
  experts_.push_back(std::move(clone));
  config_.router = router_->config();
  rebuild_expert_registration();
  MG_CHECK(router_->num_experts() == num_experts(), "MoELayer::add_expert_cloned_from: the router "
           "has ", router_->num_experts(), " expert rows, the layer ", num_experts(), " experts");
  return num_experts() - 1;
}

void MoELayer::remove_expert(int64_t i, nn::Optimizer* optimizer) {
  check_expert_index("remove_expert", i, num_experts());
  const int64_t top_k = router_->config().top_k;
  MG_CHECK(num_experts() - 1 >= std::max<int64_t>(top_k, 1), "MoELayer::remove_expert: removing expert ",
           i, " would leave ", num_experts() - 1, " experts, fewer than top_k = ", top_k);

  if (optimizer) {
    const auto held = params_in_optimizer(*experts_[i], *optimizer);
    if (!held.empty()) optimizer->remove_params(held);
  }

  const int64_t old_experts = num_experts();
  const auto before = snapshot_shapes(*router_);
  router_->remove_expert_row(i);
  resize_router_state(optimizer, before, old_experts, RowChange::Remove, i);

  experts_.erase(experts_.begin() + i);
  config_.router = router_->config();
  rebuild_expert_registration();
  MG_CHECK(router_->num_experts() == num_experts(), "MoELayer::remove_expert: the router has ",
           router_->num_experts(), " expert rows, the layer ", num_experts(), " experts");
}

}  // namespace mg::moe
