// Test-set evaluation and the per-expert summary (see evaluation.hpp). Routing statistics come from
// each MoE layer's last_stats() / last_routing() after every batch, aggregated by
// moe::StatsAccumulator; nothing here re-derives what the MoE module already measures.
#include "examples/trainer/evaluation.hpp"

#include <algorithm>

#include "data/loader.hpp"
#include "engine/autograd.hpp"
#include "engine/ops.hpp"
#include "examples/common/table.hpp"
#include "examples/trainer/datasets.hpp"
#include "moe/expert.hpp"

namespace mg::trainer {
namespace {

// Accumulates one layer's routing over the set.
struct LayerTally {
  moe::StatsAccumulator by_class, by_superclass;
  std::vector<int32_t> oracle_map;
  std::vector<int64_t> expert_inputs, expert_correct;
  LayerTally(int64_t experts, int64_t classes, int64_t superclasses, std::vector<int32_t> oracle)
      : by_class(experts, classes),
        by_superclass(experts, superclasses),
        oracle_map(std::move(oracle)),
        expert_inputs(experts, 0),
        expert_correct(experts, 0) {}
};

}  // namespace

double aligned_agreement(const std::vector<std::vector<int64_t>>& superclass_by_expert,
                         const std::vector<int32_t>& oracle_map) {
  if (superclass_by_expert.empty() || oracle_map.size() < superclass_by_expert.size()) return NAN;
  const size_t E = superclass_by_expert.front().size();
  // counts[o][e]: inputs the oracle sends to expert o that the router sent to expert e
  std::vector<std::vector<double>> counts(E, std::vector<double>(E, 0.0));
  double total = 0;
  for (size_t s = 0; s < superclass_by_expert.size(); ++s) {
    const auto o = static_cast<size_t>(oracle_map[s]);
    if (o >= E) return NAN;  // a map for more experts than the layer has now (after a prune)
    for (size_t e = 0; e < E; ++e) {
      counts[o][e] += static_cast<double>(superclass_by_expert[s][e]);
      total += static_cast<double>(superclass_by_expert[s][e]);
    }
  }
  if (total == 0) return NAN;
  return moe::best_assignment(counts).agreement;
}

Evaluation evaluate(MoEClassifier& model, const data::ImageDataset& set, const data::TransformPtr& transform,
                    int64_t batch_size, int64_t workers) {
  const bool was_training = model.is_training();
  model.eval();
  NoGradGuard no_grad;
  const bool superclasses = has_superclasses(set);
  const int64_t classes = set.num_classes(), top = std::min<int64_t>(5, classes);
  std::vector<LayerTally> tallies;
  for (const auto& layer : model.moe_layers()) {
    const int64_t experts = layer->num_experts();
    tallies.emplace_back(experts, classes, superclasses ? set.num_coarse() : 0,
                         superclasses ? oracle_map_for(model.spec().config, set.num_coarse(), experts)
                                      : std::vector<int32_t>{});
  }

  data::LoaderOptions options;
  options.batch_size = batch_size;
  options.shuffle = false;
  options.workers = workers;
  data::DataLoader loader(set, options, transform);
  loader.start_epoch(0);
  Evaluation eval;
  double loss_sum = 0;
  int64_t correct = 0, correct_top = 0;
  std::vector<int64_t> class_total(classes, 0), class_correct(classes, 0);
  std::vector<int64_t> super_total(set.num_coarse(), 0), super_correct(set.num_coarse(), 0);
  const Device device = model.device();
  while (auto batch = loader.next()) {
    to_device(*batch, device);
    const Tensor routing_labels = superclasses ? batch->coarse_labels : batch->labels;
    const Tensor logits = model.forward(batch->images, routing_labels);
    const int64_t B = logits.size(0);
    loss_sum += cross_entropy(logits, batch->labels, CrossEntropyOptions().reduction(kSum)).item();
    const std::vector<int32_t> labels = batch->labels.to_vector<int32_t>();
    const std::vector<int32_t> ranked = std::get<1>(topk(logits, top, 1)).to_vector<int32_t>();
    std::vector<uint8_t> right(B);
    for (int64_t i = 0; i < B; ++i) {
      right[i] = ranked[i * top] == labels[i];
      correct += right[i];
      correct_top += std::find(ranked.begin() + i * top, ranked.begin() + (i + 1) * top, labels[i]) !=
                     ranked.begin() + (i + 1) * top;
      ++class_total[labels[i]];
      class_correct[labels[i]] += right[i];
      if (superclasses) {
        const int32_t s = set.coarse_labels[batch->indices[i]];
        ++super_total[s];
        super_correct[s] += right[i];
      }
    }
    for (size_t l = 0; l < tallies.size(); ++l) {
      const moe::MoELayer& layer = *model.moe_layers()[l];
      LayerTally& t = tallies[l];
      const Tensor& indices = layer.last_routing().indices;
      t.by_class.add(layer.last_stats(), indices, batch->labels);
      if (superclasses) t.by_superclass.add(layer.last_stats(), indices, batch->coarse_labels, t.oracle_map);
      const std::vector<int32_t> chosen = indices.to_vector<int32_t>();
      const int64_t k = indices.size(1), inputs_per_image = indices.size(0) / B;
      for (int64_t r = 0; r < indices.size(0); ++r) {
        ++t.expert_inputs[chosen[r * k]];
        t.expert_correct[chosen[r * k]] += right[r / inputs_per_image];
      }
    }
    eval.examples += B;
  }
  const double n = static_cast<double>(std::max<int64_t>(1, eval.examples));
  eval.loss = loss_sum / n;
  eval.top1 = correct / n;
  if (classes >= 5) eval.top5 = correct_top / n;
  for (int64_t c = 0; c < classes; ++c)
    eval.class_accuracy.push_back(class_total[c] > 0 ? double(class_correct[c]) / class_total[c] : NAN);
  if (superclasses)
    for (int64_t s = 0; s < set.num_coarse(); ++s)
      eval.superclass_accuracy.push_back(super_total[s] > 0 ? double(super_correct[s]) / super_total[s]
                                                            : NAN);
  for (size_t l = 0; l < tallies.size(); ++l) {
    LayerEvaluation le;
    le.name = model.moe_layer_names()[l];
    le.stats = tallies[l].by_class.epoch();
    le.class_by_expert = tallies[l].by_class.class_by_expert();
    le.expert_inputs = tallies[l].expert_inputs;
    le.expert_correct = tallies[l].expert_correct;
    if (superclasses) {
      le.superclass_by_expert = tallies[l].by_superclass.class_by_expert();
      le.router_accuracy = tallies[l].by_superclass.router_accuracy();
      le.aligned_router_accuracy = aligned_agreement(le.superclass_by_expert, tallies[l].oracle_map);
    }
    eval.layers.push_back(std::move(le));
  }
  model.train(was_training);
  return eval;
}

std::vector<std::string> expert_summary_header() {
  return {"layer", "expert", "hidden", "parameters", "frozen", "share", "accuracy"};
}

std::vector<std::vector<std::string>> expert_summary_rows(const MoEClassifier& model,
                                                          const Evaluation& eval) {
  std::vector<std::vector<std::string>> rows;
  for (size_t l = 0; l < model.moe_layers().size(); ++l) {
    const moe::MoELayer& layer = *model.moe_layers()[l];
    const LayerEvaluation& le = eval.layers.at(l);
    int64_t routed = 0;
    for (int64_t n : le.expert_inputs) routed += n;
    for (int64_t e = 0; e < layer.num_experts(); ++e) {
      const auto& ffn = dynamic_cast<const moe::FFNExpert&>(*layer.expert(e));
      std::string hidden;
      for (int64_t h : ffn.config().hidden) {
        if (!hidden.empty()) hidden += ',';
        hidden += std::to_string(h);
      }
      int64_t parameters = 0;
      for (const Tensor& p : ffn.parameters()) parameters += p.numel();
      const int64_t inputs = le.expert_inputs.at(e);
      rows.push_back({le.name, std::to_string(e), hidden.empty() ? "-" : hidden, std::to_string(parameters),
                      layer.expert_frozen(e) ? "yes" : "no",
                      report::fmt(routed > 0 ? 100.0 * inputs / routed : NAN, 1) + "%",
                      inputs > 0 ? report::fmt(100.0 * le.expert_correct.at(e) / inputs, 1) + "%" : "-"});
    }
  }
  return rows;
}

}  // namespace mg::trainer
