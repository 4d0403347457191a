// Learning-rate schedules; formulas and torch correspondence in lr_scheduler.hpp.
#include "nn/lr_scheduler.hpp"

#include <cmath>
#include <numbers>

#include "engine/error.hpp"

namespace mg::nn {

LRScheduler::LRScheduler(Optimizer& optimizer) : optimizer_(optimizer), base_lrs_(group_lrs()) {}

std::vector<double> LRScheduler::group_lrs() const {
  std::vector<double> lrs;
  for (const auto& g : optimizer_.param_groups()) lrs.push_back(g.options().get_lr());
  return lrs;
}

void LRScheduler::initial_step() { step(); }

void LRScheduler::step() {
  auto& groups = optimizer_.param_groups();
  MG_CHECK(groups.size() == base_lrs_.size(), "LRScheduler: the optimizer has ", groups.size(),
           " parameter groups, the scheduler was made for ", base_lrs_.size());
  ++last_epoch_;
  std::vector<double> lrs;
  try {
    lrs = get_lr();
  } catch (...) {  // a schedule that ran out leaves the scheduler where it was
    --last_epoch_;
    throw;
  }
  for (size_t g = 0; g < groups.size(); ++g) groups[g].options().set_lr(lrs[g]);
  last_lr_ = lrs;
}

std::map<std::string, double> LRScheduler::state_dict() const {
  std::map<std::string, double> out{{"last_epoch", static_cast<double>(last_epoch_)}};
  for (size_t g = 0; g < base_lrs_.size(); ++g) {
    out["base_lr." + std::to_string(g)] = base_lrs_[g];
    out["last_lr." + std::to_string(g)] = last_lr_[g];
  }
  return out;
}

void LRScheduler::load_state_dict(const std::map<std::string, double>& state) {
  auto get = [&](const std::string& k) {
    auto it = state.find(k);
    MG_CHECK(it != state.end(), "LRScheduler: load_state_dict: missing '", k, "'");
    return it->second;
  };
  auto& groups = optimizer_.param_groups();
  MG_CHECK(groups.size() == base_lrs_.size(), "LRScheduler: the optimizer has ", groups.size(),
           " parameter groups, the scheduler was made for ", base_lrs_.size());
  std::vector<double> base(groups.size()), last(groups.size());
  for (size_t g = 0; g < groups.size(); ++g) {
    base[g] = get("base_lr." + std::to_string(g));
    last[g] = get("last_lr." + std::to_string(g));
  }
  last_epoch_ = static_cast<int64_t>(get("last_epoch"));
  base_lrs_ = base;
  last_lr_ = last;
  // The chainable schedules continue from the groups' lrs, so those must be where the run was.
  for (size_t g = 0; g < groups.size(); ++g) groups[g].options().set_lr(last[g]);
  after_load();
}

// ---- StepLR, MultiStepLR

StepLR::StepLR(Optimizer& optimizer, int64_t step_size, double gamma)
    : LRScheduler(optimizer), step_size_(step_size), gamma_(gamma) {
  MG_CHECK(step_size > 0, "StepLR: step_size must be positive, got ", step_size);
  initial_step();
}

std::vector<double> StepLR::get_lr() {
  std::vector<double> lrs = group_lrs();
  if (last_epoch_ == 0 || last_epoch_ % step_size_ != 0) return lrs;
  for (double& lr : lrs) lr *= gamma_;
  return lrs;
}

MultiStepLR::MultiStepLR(Optimizer& optimizer, std::vector<int64_t> milestones, double gamma)
    : LRScheduler(optimizer), gamma_(gamma) {
  for (int64_t m : milestones) ++milestone_counts_[m];
  initial_step();
}

std::vector<double> MultiStepLR::get_lr() {
  std::vector<double> lrs = group_lrs();
  auto it = milestone_counts_.find(last_epoch_);
  if (it == milestone_counts_.end()) return lrs;
  for (double& lr : lrs) lr *= std::pow(gamma_, it->second);
  return lrs;
}

// ---- CosineWarmupLR

CosineWarmupLR::CosineWarmupLR(Optimizer& optimizer, int64_t warmup_steps, int64_t total_steps,
                               double min_lr, double warmup_start_factor)
    : LRScheduler(optimizer), warmup_steps_(warmup_steps), total_steps_(total_steps), min_lr_(min_lr),
      warmup_start_factor_(warmup_start_factor) {
  MG_CHECK(warmup_steps >= 0 && total_steps > warmup_steps, "CosineWarmupLR: need 0 <= warmup_steps < "
           "total_steps, got warmup_steps ", warmup_steps, ", total_steps ", total_steps);
  MG_CHECK(min_lr >= 0.0, "CosineWarmupLR: invalid min_lr ", min_lr);
  MG_CHECK(warmup_start_factor >= 0.0 && warmup_start_factor <= 1.0,
           "CosineWarmupLR: warmup_start_factor must be in [0, 1], got ", warmup_start_factor);
  initial_step();
}

std::vector<double> CosineWarmupLR::get_lr() {
  const double t = static_cast<double>(last_epoch_);
  std::vector<double> lrs;
  for (double base : base_lrs_) {
    if (last_epoch_ < warmup_steps_) {
      const double f = warmup_start_factor_;
      lrs.push_back(base * (f + (1.0 - f) * t / static_cast<double>(warmup_steps_)));
    } else if (last_epoch_ < total_steps_) {
      const double progress = (t - warmup_steps_) / static_cast<double>(total_steps_ - warmup_steps_);
      lrs.push_back(min_lr_ + (base - min_lr_) * (1.0 + std::cos(std::numbers::pi * progress)) / 2.0);
    } else {
      lrs.push_back(min_lr_);
    }
  }
  return lrs;
}

// ---- OneCycleLR

OneCycleLR::OneCycleLR(Optimizer& optimizer, double max_lr, int64_t total_steps, OneCycleOptions options)
    : OneCycleLR(optimizer, std::vector<double>(optimizer.param_groups().size(), max_lr), total_steps,
                 std::move(options)) {}

OneCycleLR::OneCycleLR(Optimizer& optimizer, std::vector<double> max_lrs, int64_t total_steps,
                       OneCycleOptions options)
    : LRScheduler(optimizer), total_steps_(total_steps), options_(std::move(options)) {
  const auto& o = options_;
  MG_CHECK(total_steps > 0, "OneCycleLR: expected a positive total_steps, got ", total_steps);
  MG_CHECK(o.pct_start >= 0.0 && o.pct_start <= 1.0, "OneCycleLR: pct_start must be in [0, 1], got ",
           o.pct_start);
  MG_CHECK(o.anneal_strategy == "cos" || o.anneal_strategy == "linear",
           "OneCycleLR: anneal_strategy must be 'cos' or 'linear', got '", o.anneal_strategy, "'");
  auto& groups = optimizer.param_groups();
  MG_CHECK(max_lrs.size() == groups.size(), "OneCycleLR: expected ", groups.size(),
           " values for max_lr, got ", max_lrs.size());
  const double T = static_cast<double>(total_steps);
  enum { kInitial, kMax, kMin };
  enum { kMaxMomentum, kBaseMomentum };
  if (o.three_phase) {
    phases_ = {{o.pct_start * T - 1, kInitial, kMax, kMaxMomentum, kBaseMomentum},
               {2 * o.pct_start * T - 2, kMax, kInitial, kBaseMomentum, kMaxMomentum},
               {T - 1, kInitial, kMin, kMaxMomentum, kMaxMomentum}};
  } else {
    phases_ = {{o.pct_start * T - 1, kInitial, kMax, kMaxMomentum, kBaseMomentum},
               {T - 1, kMax, kMin, kBaseMomentum, kMaxMomentum}};
  }
  for (size_t g = 0; g < groups.size(); ++g) {
    const double initial = max_lrs[g] / o.div_factor;
    lr_anchors_.push_back({initial, max_lrs[g], initial / o.final_div_factor});
    momentum_anchors_.push_back({o.max_momentum, o.base_momentum});
    if (o.cycle_momentum) groups[g].options().set_momentum(o.max_momentum);
  }
  for (size_t g = 0; g < groups.size(); ++g) base_lrs_[g] = lr_anchors_[g][kInitial];
  initial_step();
}

double OneCycleLR::anneal(double start, double end, double pct) const {
  if (options_.anneal_strategy == "linear") return (end - start) * pct + start;
  return end + (start - end) / 2.0 * (std::cos(std::numbers::pi * pct) + 1);
}

std::pair<double, double> OneCycleLR::at(size_t g, int64_t t) const {
  double start_step = 0;
  for (size_t i = 0; i < phases_.size(); ++i) {
    const Phase& ph = phases_[i];
    if (static_cast<double>(t) <= ph.end_step || i + 1 == phases_.size()) {
      MG_CHECK(ph.end_step != start_step, "OneCycleLR: a phase of zero length (total_steps ",
               total_steps_, ", pct_start ", options_.pct_start, ")");
      const double pct = (static_cast<double>(t) - start_step) / (ph.end_step - start_step);
      return {anneal(lr_anchors_[g][ph.start_lr], lr_anchors_[g][ph.end_lr], pct),
              anneal(momentum_anchors_[g][ph.start_momentum], momentum_anchors_[g][ph.end_momentum], pct)};
    }
    start_step = ph.end_step;
  }
  return {0.0, 0.0};  // unreachable: the last phase always matches
}

std::vector<double> OneCycleLR::get_lr() {
  MG_CHECK(last_epoch_ <= total_steps_, "OneCycleLR: tried to step ", last_epoch_ + 1,
           " times; the specified number of total steps is ", total_steps_);
  auto& groups = optimizer_.param_groups();
  std::vector<double> lrs;
  for (size_t g = 0; g < groups.size(); ++g) {
    const auto [lr, momentum] = at(g, last_epoch_);
    lrs.push_back(lr);
    if (options_.cycle_momentum) groups[g].options().set_momentum(momentum);
  }
  return lrs;
}

void OneCycleLR::after_load() {
  if (!options_.cycle_momentum) return;
  auto& groups = optimizer_.param_groups();
  for (size_t g = 0; g < groups.size(); ++g) groups[g].options().set_momentum(at(g, last_epoch_).second);
}

}  // namespace mg::nn
