// Evaluating a model on a test set: accuracy (top-1, top-5, per class and per superclass) and, for
// every MoE layer, where the test inputs were routed (class-by-expert and superclass-by-expert
// counts, the router's agreement with the superclass oracle, each expert's share and accuracy),
// through moe::StatsAccumulator.
#pragma once
#include <cmath>
#include <string>
#include <vector>

#include "data/dataset.hpp"
#include "data/transforms.hpp"
#include "examples/trainer/models.hpp"
#include "moe/stats.hpp"

namespace mg::trainer {

struct LayerEvaluation {
  std::string name;      // "head", "block3"
  moe::StepStats stats;  // routing of the whole set (eval mode)
  // [class][expert] and [superclass][expert]: inputs whose top-1 expert it was (tokens, for blocks)
  std::vector<std::vector<int64_t>> class_by_expert, superclass_by_expert;
  // Per expert: inputs whose top-1 expert it is, and how many of those belong to images the model
  // classified correctly.
  std::vector<int64_t> expert_inputs, expert_correct;
  // top-1 expert == the oracle's expert for the superclass (--oracle-map, else superclass % E); NaN
  // without superclasses
  double router_accuracy = NAN;
  // The same agreement up to a relabelling of the experts: a learned router may give a superclass
  // any expert; what counts is that it keeps the superclasses apart as the oracle does.
  double aligned_router_accuracy = NAN;
};

struct Evaluation {
  int64_t examples = 0;
  double loss = 0, top1 = 0, top5 = NAN;  // top5: NaN with fewer than 5 classes
  std::vector<double> class_accuracy;
  std::vector<double> superclass_accuracy;  // empty without superclasses
  std::vector<LayerEvaluation> layers;
};

// Runs `model` in eval mode without gradients over `set` (in order, all examples) on the model's
// device, restoring its training flag afterwards.
Evaluation evaluate(MoEClassifier& model, const data::ImageDataset& set, const data::TransformPtr& transform,
                    int64_t batch_size, int64_t workers);

// The largest share of inputs whose top-1 expert is perm(oracle_map[superclass]) over permutations
// perm of the E experts (moe::best_assignment, exact); superclass_by_expert [S][E] counts. NaN when
// the map names an expert >= E.
double aligned_agreement(const std::vector<std::vector<int64_t>>& superclass_by_expert,
                         const std::vector<int32_t>& oracle_map);

// The per-expert table (`--expert-summary`): sizes, parameters, frozen, share and accuracy of the
// inputs each expert takes, as rows of strings under the returned header.
std::vector<std::string> expert_summary_header();
std::vector<std::vector<std::string>> expert_summary_rows(const MoEClassifier& model, const Evaluation& eval);

}  // namespace mg::trainer
