// The run's optimizer (nn::SGD / Adam / AdamW) and schedule (nn::CosineWarmupLR / OneCycleLR /
// StepLR), stepped once per training step; see optimization.hpp for the group layout.
#include "examples/trainer/optimization.hpp"

#include <cmath>

namespace mg::trainer {
namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// The three groups' parameters, in registration order.
std::vector<std::vector<Tensor>> group_params(const MoEClassifier& model) {
  std::vector<std::vector<Tensor>> groups(3);
  for (const auto& [name, p] : model.named_parameters()) {
    if (name.find("router.") != std::string::npos)
      groups[2].push_back(p);
    else if (p.dim() < 2 || ends_with(name, "pos_embed"))
      groups[1].push_back(p);
    else
      groups[0].push_back(p);
  }
  return groups;
}

std::unique_ptr<nn::OptimizerOptions> group_options(const TrainConfig& c, size_t group) {
  const double lr = group == 2 && c.router_lr > 0 ? c.router_lr : c.lr;
  const double decay = group == 0 ? c.weight_decay : 0.0;
  if (c.optimizer == "adam") return nn::AdamOptions(lr).weight_decay(decay).clone();
  if (c.optimizer == "adamw") return nn::AdamWOptions(lr).weight_decay(decay).clone();
  return nn::SGDOptions(lr).momentum(c.momentum).nesterov(c.momentum > 0).weight_decay(decay).clone();
}

std::unique_ptr<nn::Optimizer> make_optimizer(const TrainConfig& c, std::vector<nn::ParamGroup> groups) {
  if (c.optimizer == "adam") return std::make_unique<nn::Adam>(std::move(groups), nn::AdamOptions(c.lr));
  if (c.optimizer == "adamw") return std::make_unique<nn::AdamW>(std::move(groups), nn::AdamWOptions(c.lr));
  return std::make_unique<nn::SGD>(std::move(groups), nn::SGDOptions(c.lr));
}

}  // namespace

Optimization::Optimization(MoEClassifier& model, const TrainConfig& config, int64_t steps_per_epoch)
    : config_(config), steps_per_epoch_(steps_per_epoch) {
  std::vector<nn::ParamGroup> groups;
  const auto params = group_params(model);
  for (size_t g = 0; g < params.size(); ++g) groups.emplace_back(params[g], *group_options(config, g));
  optimizer_ = make_optimizer(config, std::move(groups));
  scheduler_ = make_scheduler();
}

std::unique_ptr<nn::LRScheduler> Optimization::make_scheduler() {
  const int64_t total = config_.epochs * steps_per_epoch_;
  if (config_.schedule == "cosine") {
    const auto warmup = static_cast<int64_t>(std::llround(config_.warmup_epochs * steps_per_epoch_));
    return std::make_unique<nn::CosineWarmupLR>(*optimizer_, std::min(warmup, total - 1), total);
  }
  if (config_.schedule == "onecycle") {
    std::vector<double> peaks;
    for (size_t g = 0; g < optimizer_->param_groups().size(); ++g)
      peaks.push_back(group_options(config_, g)->get_lr());
    return std::make_unique<nn::OneCycleLR>(*optimizer_, peaks, total);
  }
  if (config_.schedule == "step")
    return std::make_unique<nn::StepLR>(*optimizer_, config_.step_epochs * steps_per_epoch_);
  return nullptr;
}

void Optimization::step() {
  optimizer_->step();
  if (scheduler_) scheduler_->step();
}

double Optimization::lr() const { return optimizer_->param_groups().front().options().get_lr(); }

void Optimization::rebuild(MoEClassifier& model) {
  const auto schedule_state = scheduler_ ? scheduler_->state_dict() : std::map<std::string, double>{};
  scheduler_.reset();
  std::unique_ptr<nn::Optimizer> old = std::move(optimizer_);
  std::vector<nn::ParamGroup> groups;
  const auto params = group_params(model);
  for (size_t g = 0; g < params.size(); ++g) groups.emplace_back(params[g], old->param_groups()[g].options());
  optimizer_ = make_optimizer(config_, std::move(groups));
  for (const auto& group : params)
    for (const Tensor& p : group)
      if (const nn::ParamState* state = old->state(p)) optimizer_->set_state(p, *state);
  scheduler_ = make_scheduler();
  if (scheduler_) scheduler_->load_state_dict(schedule_state);
}

}  // namespace mg::trainer
