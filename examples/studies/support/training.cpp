// The studies' train and evaluate loops (see training.hpp).
#include "examples/studies/support/training.hpp"

#include <algorithm>
#include <cmath>

#include "engine/autograd.hpp"
#include "engine/error.hpp"
#include "engine/ops.hpp"
#include "examples/common/progress.hpp"
#include "examples/common/table.hpp"

namespace mg::study {

std::unique_ptr<nn::Adam> make_adam(const MoEClassifier& model, double lr, double router_lr_scale) {
  std::vector<nn::ParamGroup> groups;
  groups.emplace_back(model.non_router_parameters(), nn::AdamOptions(lr));
  groups.emplace_back(model.router_parameters(), nn::AdamOptions(lr * router_lr_scale));
  return std::make_unique<nn::Adam>(std::move(groups), nn::AdamOptions(lr));
}

double accuracy_of(const Tensor& logits, const Tensor& labels) {
  NoGradGuard no_grad;
  MG_CHECK(logits.dim() == 2 && labels.dim() == 1 && logits.size(0) == labels.size(0),
           "accuracy_of: expected logits [N, classes] and labels [N], got ", shape_str(logits.sizes()), " and ",
           shape_str(labels.sizes()));
  return eq(argmax(logits, 1), labels).to(kFloat64).mean().item();
}

std::vector<StepRecord> train(MoEClassifier& model, nn::Optimizer& optimizer, const TensorDataset& data,
                              const TrainOptions& options) {
  MG_CHECK(options.epochs >= 1, "train: epochs must be at least 1, got ", options.epochs);
  model.train();
  const int64_t batches_per_epoch = (data.size() + options.batch_size - 1) / options.batch_size;
  int64_t total = options.epochs * batches_per_epoch;
  if (options.max_steps > 0) total = std::min(total, options.max_steps);
  std::unique_ptr<report::ProgressBar> bar;
  if (!options.progress.empty()) bar = std::make_unique<report::ProgressBar>(options.progress, total);

  std::vector<StepRecord> records;
  records.reserve(total);
  for (int64_t epoch = 0; epoch < options.epochs && static_cast<int64_t>(records.size()) < total; ++epoch) {
    for (const Tensor& index : shuffled_batches(data.size(), options.batch_size, options.seed,
                                                options.first_epoch + epoch)) {
      if (static_cast<int64_t>(records.size()) == total) break;
      const Tensor x = index_select(data.inputs, 0, index);
      const Tensor y = index_select(data.labels, 0, index);
      const Tensor logits = model.forward(x, options.pass_labels ? y : Tensor());
      const Tensor task_loss = cross_entropy(logits, y);
      const Tensor aux = model.moe().aux_loss();
      optimizer.zero_grad();
      (task_loss + aux).backward();
      optimizer.step();
      model.moe().update_router_bias();

      StepRecord r;
      r.step = static_cast<int64_t>(records.size()) + 1;
      r.loss = task_loss.item();
      r.aux_loss = aux.item();
      r.accuracy = accuracy_of(logits, y);
      r.routing = model.moe().last_stats();
      records.push_back(std::move(r));
      if (options.after_step) options.after_step(records.back().step);
      if (bar)
        bar->update(records.back().step, {{"loss", report::fmt(records.back().loss, 3)},
                                          {"acc", report::fmt(100 * records.back().accuracy, 1) + "%"}});
    }
  }
  if (bar) bar->finish();
  return records;
}

Evaluation evaluate(MoEClassifier& model, const TensorDataset& data, const EvalOptions& options) {
  NoGradGuard no_grad;
  const bool was_training = model.is_training();
  model.eval();
  const int64_t E = model.moe().num_experts();
  moe::StatsAccumulator stats(E, data.num_classes());
  Evaluation out;
  double loss_sum = 0;
  int64_t correct = 0;
  for (int64_t begin = 0; begin < data.size(); begin += options.batch_size) {
    const int64_t count = std::min(options.batch_size, data.size() - begin);
    const Tensor x = data.inputs.narrow(0, begin, count);
    const Tensor y = data.labels.narrow(0, begin, count).contiguous();
    const Tensor logits = model.forward(x, options.pass_labels ? y : Tensor());
    loss_sum += cross_entropy(logits, y, CrossEntropyOptions().reduction(kSum)).item();
    const std::vector<int32_t> predicted = argmax(logits, 1).to_vector<int32_t>();
    const std::vector<int32_t> truth = y.to_vector<int32_t>();
    for (int64_t i = 0; i < count; ++i) correct += predicted[i] == truth[i];
    out.predictions.insert(out.predictions.end(), predicted.begin(), predicted.end());
    const moe::Routing& routing = model.moe().last_routing();
    const std::vector<int32_t> chosen = routing.indices.to_vector<int32_t>();
    const int64_t k = routing.indices.size(1);
    for (int64_t i = 0; i < count; ++i) out.top1_expert.push_back(chosen[i * k]);
    stats.add(model.moe().last_stats(), routing.indices, y, options.oracle_map);
  }
  model.train(was_training);
  out.accuracy = static_cast<double>(correct) / data.size();
  out.loss = loss_sum / data.size();
  out.routing = stats.epoch();
  out.class_by_expert = stats.class_by_expert();
  out.router_accuracy = stats.router_accuracy();
  return out;
}

moe::StepStats pooled_routing(const std::vector<StepRecord>& records, size_t begin, size_t end) {
  MG_CHECK(begin < end && end <= records.size(), "pooled_routing: steps [", begin, ", ", end, ") of ",
           records.size());
  moe::StatsAccumulator pooled(records[begin].routing.num_experts);
  for (size_t i = begin; i < end; ++i) pooled.add(records[i].routing);
  return pooled.epoch();
}

ShareCurve share_curve(const std::vector<StepRecord>& records, int64_t points) {
  ShareCurve curve;
  const int64_t n = static_cast<int64_t>(records.size());
  if (n == 0) return curve;
  points = std::clamp<int64_t>(points, 1, n);
  for (int64_t p = 0; p < points; ++p) {
    const int64_t begin = n * p / points, end = n * (p + 1) / points;
    curve.step.push_back(static_cast<double>(records[end - 1].step));
    curve.shares.push_back(pooled_routing(records, begin, end).fraction);
  }
  return curve;
}

}  // namespace mg::study
