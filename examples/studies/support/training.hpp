// Training and evaluation of a MoEClassifier on a TensorDataset, the loop every study runs:
//   loss = cross_entropy(logits, labels) + the MoE layer's balancing loss; backward; step;
//   the router's auxiliary-loss-free bias update (a no-op when that is off)
// recording one StepRecord per step: the loss, the batch accuracy and the layer's moe::StepStats
// (expert loads, shares, router entropy, balancing losses), from which the studies draw their
// curves. Evaluation runs in eval mode (deterministic routing) and aggregates the routing with
// moe::StatsAccumulator (class-by-expert counts, agreement with an oracle map).
#pragma once
#include <cmath>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "examples/studies/support/moe_classifier.hpp"
#include "examples/studies/support/tensor_dataset.hpp"
#include "moe/stats.hpp"
#include "nn/optim.hpp"

namespace mg::study {

// Adam over the classifier's parameters, the router's at lr * router_lr_scale (group 1), the
// others at lr (group 0, where MoELayer::add_expert puts new experts).
std::unique_ptr<nn::Adam> make_adam(const MoEClassifier& model, double lr, double router_lr_scale = 1.0);

struct TrainOptions {
  int64_t epochs = 1;
  int64_t first_epoch = 0;   // shuffle order of epoch e is fixed by (seed, first_epoch + e)
  int64_t max_steps = 0;     // > 0: stop after this many steps
  int64_t batch_size = 128;
  uint64_t seed = 0;         // the batch order
  bool pass_labels = false;  // hand the labels to the MoE layer (Oracle routing needs them)
  std::string progress;      // label of a progress bar on stderr; empty: none
  // Called after each optimizer step with the number of steps done so far (1, 2, ...).
  std::function<void(int64_t step)> after_step;
};

struct StepRecord {
  int64_t step = 0;          // 1-based, counting from the start of this train() call
  double loss = 0;           // task loss (cross-entropy) of the batch
  double aux_loss = 0;       // the balancing loss added to it
  double accuracy = 0;       // share of the batch classified correctly, before the step
  moe::StepStats routing;    // the MoE layer's statistics of the step
};

std::vector<StepRecord> train(MoEClassifier& model, nn::Optimizer& optimizer, const TensorDataset& data,
                              const TrainOptions& options);

struct EvalOptions {
  int64_t batch_size = 512;
  bool pass_labels = false;           // Oracle routing needs the labels
  std::vector<int32_t> oracle_map;    // label -> expert: measures the router's agreement with it
};

struct Evaluation {
  double accuracy = 0, loss = 0;
  moe::StepStats routing;                           // aggregated over the set
  std::vector<std::vector<int64_t>> class_by_expert;  // [class][expert]: top-1 expert counts
  double router_accuracy = NAN;                     // agreement with options.oracle_map
  std::vector<int32_t> predictions;                 // per example
  std::vector<int32_t> top1_expert;                 // per example
};

// Runs in eval mode and restores the training flag afterwards.
Evaluation evaluate(MoEClassifier& model, const TensorDataset& data, const EvalOptions& options = {});

// Accuracy of `logits` [N, classes] against int32 labels [N].
double accuracy_of(const Tensor& logits, const Tensor& labels);

// The routing of steps [begin, end) of `records` taken together (moe::StatsAccumulator over their
// StepStats): pooled loads, fractions, load entropy.
moe::StepStats pooled_routing(const std::vector<StepRecord>& records, size_t begin, size_t end);

// The expert shares of the records pooled over `points` equal windows of steps, with the step at
// each window's end: what a stacked-area plot of shares over time needs.
struct ShareCurve {
  std::vector<double> step;
  std::vector<std::vector<double>> shares;  // [point][expert]
};
ShareCurve share_curve(const std::vector<StepRecord>& records, int64_t points);

}  // namespace mg::study
