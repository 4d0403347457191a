// Learning-rate schedules, after torch.optim.lr_scheduler (PyTorch 1.13): a scheduler sets the lr
// of every parameter group of its optimizer. Construction applies the value for step 0; call
// step() once after each optimizer.step(). last_epoch counts those calls (0 after construction).
//
// StepLR and MultiStepLR are torch's "chainable" form: they multiply each group's current lr by
// gamma at their boundaries, so other changes to the lr compose with them.
// CosineWarmupLR has no torch equivalent. With t = last_epoch, W = warmup_steps, T = total_steps,
// f = warmup_start_factor, base = the group's lr at construction:
//   t < W:       lr = base * (f + (1 - f) * t / W)                          linear warmup
//   W <= t < T:  lr = min_lr + (base - min_lr) * (1 + cos(pi * (t - W) / (T - W))) / 2
//   t >= T:      lr = min_lr
// so lr(0) = f * base, lr(W) = base, lr(T) = min_lr; min_lr is absolute, the same for every group.
// OneCycleLR (Smith & Topin, 2017) also cycles SGD's momentum or Adam's beta1, as torch does by
// default (OneCycleOptions::cycle_momentum).
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "nn/optim.hpp"

namespace mg::nn {

class LRScheduler {
 public:
  virtual ~LRScheduler() = default;
  LRScheduler(const LRScheduler&) = delete;
  LRScheduler& operator=(const LRScheduler&) = delete;

  void step();
  const std::vector<double>& get_last_lr() const { return last_lr_; }
  int64_t last_epoch() const { return last_epoch_; }
  // "last_epoch", "base_lr.<g>", "last_lr.<g>": numbers for a checkpoint's JSON. The schedule's
  // settings (step sizes, milestones, ...) are not state: construct the same scheduler, then load.
  std::map<std::string, double> state_dict() const;
  // Restores the position in the schedule and sets the groups' lrs (and cycled momentum) to it.
  void load_state_dict(const std::map<std::string, double>& state);

 protected:
  explicit LRScheduler(Optimizer& optimizer);
  // Every concrete constructor ends with this: the base constructor cannot call get_lr().
  void initial_step();
  // The groups' lrs for last_epoch_.
  virtual std::vector<double> get_lr() = 0;
  virtual void after_load() {}
  std::vector<double> group_lrs() const;

  Optimizer& optimizer_;
  std::vector<double> base_lrs_;
  int64_t last_epoch_ = -1;

 private:
  std::vector<double> last_lr_;
};

// lr *= gamma every step_size steps.
class StepLR : public LRScheduler {
 public:
  StepLR(Optimizer& optimizer, int64_t step_size, double gamma = 0.1);

 protected:
  std::vector<double> get_lr() override;

 private:
  int64_t step_size_;
  double gamma_;
};

// lr *= gamma at each milestone; a milestone listed twice multiplies by gamma^2.
class MultiStepLR : public LRScheduler {
 public:
  MultiStepLR(Optimizer& optimizer, std::vector<int64_t> milestones, double gamma = 0.1);

 protected:
  std::vector<double> get_lr() override;

 private:
  std::map<int64_t, int> milestone_counts_;
  double gamma_;
};

class CosineWarmupLR : public LRScheduler {
 public:
  CosineWarmupLR(Optimizer& optimizer, int64_t warmup_steps, int64_t total_steps, double min_lr = 0.0,
                 double warmup_start_factor = 0.0);

 protected:
  std::vector<double> get_lr() override;

 private:
  int64_t warmup_steps_, total_steps_;
  double min_lr_, warmup_start_factor_;
};

struct OneCycleOptions {
  double pct_start = 0.3;
  std::string anneal_strategy = "cos";  // or "linear"
  bool cycle_momentum = true;
  double base_momentum = 0.85;
  double max_momentum = 0.95;
  double div_factor = 25.0;        // initial lr = max_lr / div_factor
  double final_div_factor = 1e4;   // min lr = initial lr / final_div_factor
  bool three_phase = false;
};

class OneCycleLR : public LRScheduler {
 public:
  OneCycleLR(Optimizer& optimizer, double max_lr, int64_t total_steps, OneCycleOptions options = {});
  // One max_lr per parameter group.
  OneCycleLR(Optimizer& optimizer, std::vector<double> max_lrs, int64_t total_steps,
             OneCycleOptions options = {});

 protected:
  std::vector<double> get_lr() override;
  void after_load() override;

 private:
  struct Phase {
    double end_step;
    int start_lr, end_lr, start_momentum, end_momentum;  // indices into Anchors below
  };
  // For group g at step t: (lr, momentum).
  std::pair<double, double> at(size_t g, int64_t t) const;
  double anneal(double start, double end, double pct) const;

  int64_t total_steps_;
  OneCycleOptions options_;
  std::vector<Phase> phases_;
  // Per group: {initial_lr, max_lr, min_lr} and {max_momentum, base_momentum}.
  std::vector<std::vector<double>> lr_anchors_, momentum_anchors_;
};

}  // namespace mg::nn
