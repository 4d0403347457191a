// Study 1: BatchNorm drift of a "frozen" expert. An MoE whose experts normalize with BatchNorm is
// trained on Fashion-MNIST; then expert 0 is frozen and training goes on for the others, twice
// from the same snapshot:
//   parameters only   what most frameworks offer (PyTorch: p.requires_grad_(False) for the
//                     expert's parameters, the module left in train mode): its weights stay put,
//                     but every batch routed to it still updates its BatchNorm running statistics,
//                     so what it computes on the very same inputs changes;
//   moegrad freeze    MoELayer::freeze_expert (Module::freeze): parameters AND running statistics,
//                     which no later train() undoes: its outputs stay bit-identical.
// Each runs in two settings: training goes on with the same data, and with a shifted stream (the
// same images at 1.5x the contrast, as from a new camera). Expert 0 is judged alone, on fixed
// inputs: the test images that the router sent to it at the moment of the freeze.
// docs/study-bn-drift.md explains the mechanism and the numbers.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "engine/autograd.hpp"
#include "engine/ops.hpp"
#include "examples/common/svg.hpp"
#include "examples/common/table.hpp"
#include "examples/studies/support/study_output.hpp"
#include "examples/studies/support/training.hpp"

namespace {

using namespace mg;
using namespace mg::study;

struct Config {
  int64_t train_size = 60000, test_size = 10000;
  int64_t phase1_epochs = 3, phase2_epochs = 2;
  int64_t experts = 4, top_k = 2, expert_hidden = 64;
  // Keeps every expert busy: in training an expert's BatchNorm needs at least 2 inputs per batch.
  double switch_coef = 0.1;
  double lr = 1e-3;
  int64_t batch_size = 128;
  double contrast = 1.5;  // of the shifted phase-2 stream
};

Config make_config(bool smoke) {
  Config c;
  if (smoke) {
    c.train_size = 3000;
    c.test_size = 1000;
    c.phase1_epochs = 1;
    c.phase2_epochs = 1;
  }
  return c;
}

MoEClassifierConfig model_config(const Config& c, int64_t input_dim, int64_t classes, uint64_t seed) {
  MoEClassifierConfig mc;
  mc.input_dim = input_dim;
  mc.num_classes = classes;
  mc.expert.hidden = {c.expert_hidden};
  mc.expert.norm = "batchnorm";
  mc.moe.router.num_experts = c.experts;
  mc.moe.router.top_k = c.top_k;
  mc.moe.router.seed = seed;
  mc.moe.balance.switch_coef = c.switch_coef;
  mc.init_seed = seed;
  return mc;
}

// Expert 0 alone, in eval mode (running statistics), on `inputs`; its training flag is restored.
Tensor expert0_outputs(MoEClassifier& model, const Tensor& inputs) {
  NoGradGuard no_grad;
  const nn::ModulePtr expert = model.moe().expert(0);
  const bool was_training = expert->is_training();
  expert->eval();
  const Tensor out = expert->forward(model.features(inputs));
  expert->train(was_training);
  return out;
}

// Deep copies (state_dict() shares storage with the module).
nn::NamedTensors copy_of(const nn::NamedTensors& tensors) {
  nn::NamedTensors copy;
  for (const auto& [name, tensor] : tensors) copy.push_back({name, tensor.clone()});
  return copy;
}

// Largest |after - before| over the tensors whose names end with `suffix` ("" for all).
double max_change(const nn::NamedTensors& before, const nn::NamedTensors& after, const std::string& suffix = "") {
  double change = 0;
  for (size_t i = 0; i < before.size(); ++i) {
    const std::string& name = before[i].first;
    if (name.size() >= suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0)
      change = std::max(change, (after[i].second - before[i].second).abs().max().item());
  }
  return change;
}

enum class Freeze { ParametersOnly, Moegrad };
const char* freeze_name(Freeze f) { return f == Freeze::ParametersOnly ? "parameters only" : "moegrad freeze"; }

// A phase-2 training stream: its name in the table, a short one for the plot legend, the data.
struct Stream {
  std::string name, tag;
  const TensorDataset* data;
};

// Expert 0 at the moment of the freeze: the fixed inputs it is judged on and what it computed.
struct Frozen {
  TensorDataset probe;               // test images whose top-1 expert is 0
  Tensor outputs;                    // its logits on them (eval mode)
  double accuracy = 0;               // alone, on them
  nn::NamedTensors parameters, buffers;
};

struct Phase2Result {
  std::string stream;
  Freeze freeze = Freeze::ParametersOnly;
  double weight_change = 0, running_mean_change = 0, running_var_change = 0;
  double output_change = 0;                  // max |delta| of expert 0's outputs on the probe
  double accuracy_after = 0;                 // expert 0 alone on the probe
  double model_accuracy = 0;                 // the whole model on the test set
  std::vector<double> drift_curve;           // expert-0 accuracy change (points) after each epoch
  int64_t fewest_inputs = INT64_MAX;         // fewest inputs expert 0 got in a phase-2 batch
};

// Phase 2 from the phase-1 snapshot: expert 0 frozen the `freeze` way, the rest trained on `stream`.
Phase2Result run_phase2(const MoEClassifierConfig& mc, const nn::NamedTensors& trained, const Stream& stream,
                        Freeze freeze, const Frozen& frozen, const TensorDataset& test_set, const Config& c,
                        uint64_t seed) {
  MoEClassifier model(mc);
  model.load_state_dict(trained);
  const nn::ModulePtr expert = model.moe().expert(0);
  if (freeze == Freeze::ParametersOnly) {
    for (Tensor& p : expert->parameters()) p.requires_grad_(false);  // what most frameworks offer
  } else {
    model.moe().freeze_expert(0);
  }
  auto optimizer = make_adam(model, c.lr);
  Phase2Result r;
  r.stream = stream.name;
  r.freeze = freeze;
  for (int64_t epoch = 0; epoch < c.phase2_epochs; ++epoch) {
    TrainOptions options;
    options.first_epoch = c.phase1_epochs + epoch;
    options.batch_size = c.batch_size;
    options.seed = seed;
    options.progress = "phase 2, " + stream.name + ", " + freeze_name(freeze) + ", epoch " + std::to_string(epoch + 1);
    options.after_step = [&](int64_t) {
      r.fewest_inputs = std::min(r.fewest_inputs, model.moe().last_stats().tokens_per_expert[0]);
    };
    train(model, *optimizer, *stream.data, options);
    const double accuracy = accuracy_of(expert0_outputs(model, frozen.probe.inputs), frozen.probe.labels);
    r.drift_curve.push_back(100 * (accuracy - frozen.accuracy));
  }
  const Tensor outputs = expert0_outputs(model, frozen.probe.inputs);
  r.accuracy_after = accuracy_of(outputs, frozen.probe.labels);
  r.output_change = (outputs - frozen.outputs).abs().max().item();
  r.weight_change = max_change(frozen.parameters, expert->named_parameters());
  r.running_mean_change = max_change(frozen.buffers, expert->named_buffers(), "running_mean");
  r.running_var_change = max_change(frozen.buffers, expert->named_buffers(), "running_var");
  r.model_accuracy = evaluate(model, test_set).accuracy;
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Study 1: BatchNorm drift of a frozen expert (docs/study-bn-drift.md)"};
  StudyOptions options;
  add_common_flags(app, options, "study_bn_drift");
  std::string fashion_dir;
  app.add_option("--fashion-mnist-dir", fashion_dir, "Fashion-MNIST folder (default: Debian's)");
  CLI11_PARSE(app, argc, argv);

  try {
    const Config c = make_config(options.smoke);
    StudyReport out("study_bn_drift", "BatchNorm drift of a frozen expert", options);
    const TensorDataset train_set = load_fashion_mnist(fashion_dir, data::Split::Train, c.train_size);
    const TensorDataset test_set = load_fashion_mnist(fashion_dir, data::Split::Test, c.test_size);
    // The shifted stream: the same images at higher contrast (x scaled around the data set's mean),
    // as from a new camera. The router is linear in x, so it ranks the experts nearly as before
    // and expert 0 keeps receiving inputs (in training, its BatchNorm needs 2 or more per batch).
    TensorDataset shifted_set = train_set;
    shifted_set.inputs = train_set.inputs * c.contrast;
    const std::vector<Stream> streams = {{"same data", "same data", &train_set},
                                         {"contrast x" + report::fmt(c.contrast, 1), "contrast", &shifted_set}};

    // Phase 1: every expert trains.
    const MoEClassifierConfig mc = model_config(c, train_set.dim(), train_set.num_classes(), options.seed);
    MoEClassifier model(mc);
    auto optimizer = make_adam(model, c.lr);
    TrainOptions phase1;
    phase1.epochs = c.phase1_epochs;
    phase1.batch_size = c.batch_size;
    phase1.seed = options.seed;
    phase1.progress = "phase 1 (all experts)";
    train(model, *optimizer, train_set, phase1);
    const Evaluation before = evaluate(model, test_set);
    const nn::NamedTensors trained = copy_of(model.state_dict());

    std::vector<int64_t> own;
    for (int64_t i = 0; i < test_set.size(); ++i)
      if (before.top1_expert[i] == 0) own.push_back(i);
    MG_CHECK(!own.empty(), "study_bn_drift: the router sends no test input to expert 0 after phase 1");
    Frozen frozen;
    frozen.probe = test_set.select(own);
    frozen.outputs = expert0_outputs(model, frozen.probe.inputs);
    frozen.accuracy = accuracy_of(frozen.outputs, frozen.probe.labels);
    frozen.parameters = copy_of(model.moe().expert(0)->named_parameters());
    frozen.buffers = copy_of(model.moe().expert(0)->named_buffers());

    std::vector<Phase2Result> results;
    for (const Stream& stream : streams)
      for (Freeze freeze : {Freeze::ParametersOnly, Freeze::Moegrad})
        results.push_back(run_phase2(mc, trained, stream, freeze, frozen, test_set, c, options.seed));

    std::vector<std::vector<std::string>> rows;
    std::vector<report::Series> curves;
    bool parameters_only_drifts = true, moegrad_exact = true;
    for (size_t i = 0; i < results.size(); ++i) {
      const Phase2Result& r = results[i];
      const Stream& stream = streams[i / 2];
      const double drift = 100 * (r.accuracy_after - frozen.accuracy);
      rows.push_back({r.stream, freeze_name(r.freeze), report::fmt(r.weight_change, 2),
                      report::fmt(r.running_mean_change, 4), report::fmt(r.running_var_change, 4),
                      report::fmt(r.output_change, 4),
                      report::fmt(100 * frozen.accuracy, 2) + " -> " + report::fmt(100 * r.accuracy_after, 2),
                      report::fmt(drift, 2), report::fmt(100 * r.model_accuracy, 2)});
      const bool moegrad = r.freeze == Freeze::Moegrad;
      report::Series s{stream.tag + (moegrad ? ": moegrad" : ": params only"), {}, {0.0}, moegrad};
      for (size_t e = 0; e <= r.drift_curve.size(); ++e) s.x.push_back(static_cast<double>(e));
      s.y.insert(s.y.end(), r.drift_curve.begin(), r.drift_curve.end());
      curves.push_back(s);
      if (!moegrad) {
        parameters_only_drifts = parameters_only_drifts && r.output_change > 0 && r.running_mean_change > 0;
      } else {
        moegrad_exact = moegrad_exact && r.output_change == 0 && r.running_mean_change == 0 &&
                        r.running_var_change == 0 && r.weight_change == 0 && drift == 0;
      }
      nlohmann::ordered_json& j = out.summary()[r.stream][freeze_name(r.freeze)];
      j["max_weight_change"] = r.weight_change;
      j["max_running_mean_change"] = r.running_mean_change;
      j["max_running_var_change"] = r.running_var_change;
      j["max_output_change"] = r.output_change;
      j["expert0_accuracy_before"] = frozen.accuracy;
      j["expert0_accuracy_after"] = r.accuracy_after;
      j["drift_points"] = drift;
      j["drift_points_per_epoch"] = r.drift_curve;
      j["model_accuracy_after"] = r.model_accuracy;
      j["expert0_fewest_inputs_per_batch"] = r.fewest_inputs;
    }
    out.summary()["model_accuracy_phase1"] = before.accuracy;
    out.summary()["expert0_inputs"] = frozen.probe.size();
    std::printf("\nafter phase 1: model test accuracy %.2f%%; expert 0 is the top-1 expert of %lld test images, "
                "%.2f%% of which it classifies correctly alone\n",
                100 * before.accuracy, static_cast<long long>(frozen.probe.size()), 100 * frozen.accuracy);
    out.add_table("Expert 0 after phase 2, by how it was frozen (max |change| since the freeze; accuracy in %)",
                  {"phase 2 data", "freeze", "weights", "running mean", "running var", "outputs",
                   "expert-0 accuracy", "drift (points)", "model accuracy"},
                  rows);
    report::AxisOptions axes;
    axes.title = "Accuracy drift of the frozen expert 0 on its inputs";
    axes.x_label = "phase-2 epoch";
    axes.y_label = "change in accuracy (points)";
    out.add_plot("drift.svg", report::line_chart_svg(curves, axes),
                 "Expert 0's accuracy on fixed inputs, relative to the moment it was frozen (dashed: moegrad freeze)");
    out.add_text(
        "Both freezes keep expert 0's weights bit-identical (weights column: 0). With parameters only, its "
        "BatchNorm layers stay in training mode, so every batch the router sends it moves their running "
        "statistics, and the statistics are what the expert normalizes with at evaluation: the same inputs "
        "give different outputs. moegrad's freeze also freezes the statistics: nothing about the expert "
        "changes.");
    return out.finish(parameters_only_drifts && moegrad_exact,
                      "with parameters-only freezing expert 0's running statistics and outputs drift (> 0); with "
                      "moegrad's freeze they stay bit-identical (drift exactly 0.00)");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "study_bn_drift: %s\n", e.what());
    return 2;
  }
}
