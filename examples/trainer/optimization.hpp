// The optimizer and learning-rate schedule of a run, over three parameter groups in a fixed order:
//   0  weights (conv / linear matrices): weight decay
//   1  norms, biases and the position embedding: no weight decay
//   2  the routers: --router-lr (or --lr), no weight decay
// The groups always list the model's parameters in registration order. When grow/prune changes the
// experts, rebuild() makes the same layout again and moves every parameter's state over, so a
// checkpoint (which names optimizer state by position) means the same thing in the live run and in a
// resumed one.
#pragma once
#include <memory>

#include "examples/trainer/config.hpp"
#include "examples/trainer/models.hpp"
#include "nn/lr_scheduler.hpp"
#include "nn/optim.hpp"

namespace mg::trainer {

class Optimization {
 public:
  Optimization(MoEClassifier& model, const TrainConfig& config, int64_t steps_per_epoch);
  nn::Optimizer& optimizer() { return *optimizer_; }
  nn::LRScheduler* scheduler() { return scheduler_.get(); }  // null for --schedule none
  void step();                                               // optimizer step, then schedule step
  double lr() const;                                         // group 0's current lr
  // After the model's parameters changed (experts added or removed): the canonical groups again,
  // with each parameter's state, the groups' current options and the schedule's position kept.
  void rebuild(MoEClassifier& model);

 private:
  std::unique_ptr<nn::LRScheduler> make_scheduler();
  TrainConfig config_;
  int64_t steps_per_epoch_;
  std::unique_ptr<nn::Optimizer> optimizer_;
  std::unique_ptr<nn::LRScheduler> scheduler_;
};

}  // namespace mg::trainer
