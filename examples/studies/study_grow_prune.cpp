// Study 5: grow and prune. A top-1 MoE starts with 2 small experts on synthetic data with 4
// domains (each with its own rule, visible in the input: the right number of experts is known),
// and moe::GrowPruneController decides at every epoch boundary, from the epoch's routing
// statistics, whether to split a busy expert (a copy of its weights and router row plus noise,
// MoELayer::add_expert_cloned_from) or to remove an idle one (MoELayer::remove_expert); Adam
// follows every change (new parameters join its group, the router rows' moments are resized).
// The study prints the timeline of decisions with the numbers that caused them, follows each
// expert's share through the splits, and compares the grown model with fixed-size models trained
// as long: the starting size and the size the controller ended at. docs/study-grow-prune.md
// explains what to look at and the numbers.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <string>
#include <unordered_set>
#include <vector>

#include <CLI/CLI.hpp>

#include "examples/common/svg.hpp"
#include "examples/common/table.hpp"
#include "examples/studies/support/domain_data.hpp"
#include "examples/studies/support/routing_metrics.hpp"
#include "examples/studies/support/study_output.hpp"
#include "examples/studies/support/training.hpp"
#include "moe/controller.hpp"

namespace {

using namespace mg;
using namespace mg::study;

struct Config {
  DomainDataConfig data;
  int64_t start_experts = 2, epochs = 16, batch_size = 128;
  int64_t expert_hidden = 8;  // small experts: one domain's rule fills one
  double lr = 3e-3;
  double switch_coef = 0.1;
  moe::ControllerConfig controller;
  int64_t share_points_per_epoch = 4;
};

Config make_config(bool smoke) {
  Config c;
  c.data.num_domains = 4;
  c.data.classes_per_domain = 4;
  c.data.dim = 32;
  c.data.teacher_hidden = 8;
  c.data.teacher_gain = 1.0;
  c.data.domain_separation = 4.0;
  c.data.train_size = 8000;
  c.data.test_size = 2000;
  // Grow an expert that carries more than 40% of the inputs: with 4 domains that is one serving
  // two or more of them (4 balanced experts have 25% each, 3 have 33%); prune one under 5%.
  c.controller.grow_above_share = 0.4;
  c.controller.prune_below_share = 0.05;
  c.controller.patience = 2;
  c.controller.min_experts = 1;
  c.controller.max_experts = 8;
  c.controller.clone_noise_std = 1e-2;
  if (smoke) {
    c.data.train_size = 3000;
    c.data.test_size = 1000;
    c.epochs = 8;
  }
  return c;
}

MoEClassifierConfig model_config(const TensorDataset& data, int64_t experts, const Config& c, uint64_t seed) {
  MoEClassifierConfig mc;
  mc.input_dim = data.dim();
  mc.num_classes = data.num_classes();
  mc.expert.hidden = {c.expert_hidden};
  mc.moe.router.num_experts = experts;
  mc.moe.router.top_k = 1;
  mc.moe.router.seed = seed;
  mc.moe.balance.switch_coef = c.switch_coef;
  mc.init_seed = seed;
  return mc;
}

int64_t parameter_count(const nn::Module& model) {
  int64_t n = 0;
  for (const Tensor& p : model.parameters()) n += p.numel();
  return n;
}

// True when the optimizer holds exactly the model's parameters: what "the optimizer follows the
// change" means (no parameter of a removed expert left in it, every new one added).
bool optimizer_matches(const nn::Optimizer& optimizer, const nn::Module& model) {
  std::unordered_set<const TensorImpl*> held, owned;
  size_t held_count = 0;
  for (const nn::ParamGroup& group : optimizer.param_groups())
    for (const Tensor& p : group.params()) {
      held.insert(p.impl().get());
      ++held_count;
    }
  for (const Tensor& p : model.parameters()) owned.insert(p.impl().get());
  return held == owned && held_count == owned.size();
}

struct EpochRow {
  int64_t epoch = 0;                 // 1-based: the epoch just trained
  int64_t experts = 0;               // during that epoch
  std::vector<double> shares;        // its routing shares, by current expert index
  double entropy_ratio = 0;          // mean router entropy / log(E)
  double train_loss = 0, test_accuracy = 0;
  std::vector<moe::ControllerDecision> decisions;  // taken at its end
  std::vector<std::string> subjects;  // each decision in stable expert names: "e0 -> e2", "e3"
  int64_t params_after = 0;
  bool optimizer_ok = true;          // after the decisions
};

// Share of test inputs routed to their domain's expert, under the best one-to-one map of domains
// to experts (routing_metrics.hpp): 1 when every domain has an expert of its own.
double domain_agreement(const Evaluation& test, const TensorDataset& data) {
  return best_assignment(group_by_expert(test.class_by_expert, data.class_to_domain, data.num_domains())).agreement;
}

// The grown model's run: epochs of training, each followed by the controller (except the last,
// so that every change is trained on). Experts keep a stable identity through splits and removals
// (expert indices shift when one is removed) so their shares can be followed over time.
struct GrowthRun {
  std::vector<EpochRow> rows;
  std::vector<std::string> expert_names;  // by stable identity
  std::vector<double> share_x;            // epochs (fractional)
  std::vector<std::vector<double>> shares_by_identity;
  double final_accuracy = 0;
  double domain_agreement = 0;            // of the final model's test routing
  int64_t final_experts = 0, final_params = 0;
  std::vector<double> test_accuracy;      // after each epoch
};

std::string shares_text(const std::vector<double>& shares) {
  std::string s;
  for (double v : shares) s += (s.empty() ? "" : " ") + report::fmt(v, 2);
  return s;
}

GrowthRun grow_and_prune(const DomainData& data, const Config& c, uint64_t seed) {
  MoEClassifier model(model_config(data.train, c.start_experts, c, seed));
  auto optimizer = make_adam(model, c.lr);
  moe::GrowPruneController controller(c.controller);
  moe::MoELayer& layer = model.moe();

  GrowthRun run;
  std::vector<int64_t> identity_of_index;
  for (int64_t e = 0; e < c.start_experts; ++e) {
    identity_of_index.push_back(e);
    run.expert_names.push_back("e" + std::to_string(e));
  }
  const int64_t steps_per_epoch = (data.train.size() + c.batch_size - 1) / c.batch_size;
  for (int64_t epoch = 0; epoch < c.epochs; ++epoch) {
    TrainOptions options;
    options.first_epoch = epoch;
    options.batch_size = c.batch_size;
    options.seed = seed;
    const std::vector<StepRecord> records = train(model, *optimizer, data.train, options);

    EpochRow row;
    row.epoch = epoch + 1;
    row.experts = layer.num_experts();
    moe::StatsAccumulator stats(row.experts);
    double loss_sum = 0;
    for (const StepRecord& r : records) {
      stats.add(r.routing);
      loss_sum += r.loss;
    }
    const moe::StepStats epoch_stats = stats.epoch();
    row.shares = epoch_stats.fraction;
    row.entropy_ratio = row.experts > 1 ? epoch_stats.router_entropy / std::log(static_cast<double>(row.experts)) : 0;
    row.train_loss = loss_sum / static_cast<double>(records.size());
    row.test_accuracy = evaluate(model, data.test).accuracy;
    run.test_accuracy.push_back(row.test_accuracy);

    // Shares over the epoch, a few points per epoch, by stable identity.
    for (int64_t p = 0; p < c.share_points_per_epoch; ++p) {
      const size_t begin = records.size() * p / c.share_points_per_epoch;
      const size_t end = records.size() * (p + 1) / c.share_points_per_epoch;
      std::vector<double> by_identity(run.expert_names.size(), 0.0);
      for (size_t i = begin; i < end; ++i)
        for (int64_t e = 0; e < row.experts; ++e)
          by_identity[identity_of_index[e]] += records[i].routing.fraction[e] / static_cast<double>(end - begin);
      run.share_x.push_back(epoch + static_cast<double>(end) / static_cast<double>(steps_per_epoch));
      run.shares_by_identity.push_back(std::move(by_identity));
    }

    if (epoch + 1 < c.epochs) {
      row.decisions = controller.evaluate(layer, epoch_stats, optimizer.get());
      // The controller is evaluated once per epoch boundary, so a decision's `evaluation` is the
      // epoch it followed.
      for (const moe::ControllerDecision& d : row.decisions) {
        const std::string subject = "e" + std::to_string(identity_of_index[d.expert]);
        if (d.action == "prune") {
          identity_of_index.erase(identity_of_index.begin() + d.expert);
          row.subjects.push_back(subject);
        } else {
          const std::string child = "e" + std::to_string(run.expert_names.size());
          identity_of_index.push_back(static_cast<int64_t>(run.expert_names.size()));
          run.expert_names.push_back(child + " (split from " + subject + ", epoch " + std::to_string(epoch + 1) + ")");
          row.subjects.push_back(subject + " -> " + child);
        }
      }
    }
    row.params_after = parameter_count(model);
    row.optimizer_ok = optimizer_matches(*optimizer, model);
    run.rows.push_back(std::move(row));
  }
  for (auto& shares : run.shares_by_identity) shares.resize(run.expert_names.size(), 0.0);
  const Evaluation final_test = evaluate(model, data.test);
  run.final_accuracy = final_test.accuracy;
  run.domain_agreement = domain_agreement(final_test, data.test);
  run.final_experts = layer.num_experts();
  run.final_params = parameter_count(model);
  return run;
}

struct FixedRun {
  int64_t experts = 0, params = 0;
  std::vector<double> test_accuracy;  // after each epoch
  double domain_agreement = 0;
};

FixedRun fixed_size(const DomainData& data, int64_t experts, const Config& c, uint64_t seed) {
  MoEClassifier model(model_config(data.train, experts, c, seed));
  auto optimizer = make_adam(model, c.lr);
  FixedRun run;
  run.experts = experts;
  run.params = parameter_count(model);
  for (int64_t epoch = 0; epoch < c.epochs; ++epoch) {
    TrainOptions options;
    options.first_epoch = epoch;
    options.batch_size = c.batch_size;
    options.seed = seed;
    train(model, *optimizer, data.train, options);
    const Evaluation test = evaluate(model, data.test);
    run.test_accuracy.push_back(test.accuracy);
    if (epoch + 1 == c.epochs) run.domain_agreement = domain_agreement(test, data.test);
  }
  return run;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Study 5: grow and prune experts during training (docs/study-grow-prune.md)"};
  StudyOptions options;
  add_common_flags(app, options, "study_grow_prune");
  // The controller's rules, to try other settings; defaults (0: keep) are make_config's.
  double grow_above = 0, prune_below = 0, clone_noise = 0;
  int64_t patience = 0, epochs = 0;
  app.add_option("--grow-above", grow_above, "split an expert whose share stays above this (default 0.4)");
  app.add_option("--prune-below", prune_below, "remove an expert whose share stays below this (default 0.05)");
  app.add_option("--patience", patience, "epochs a condition must hold (default 2)");
  app.add_option("--clone-noise", clone_noise, "std of the noise added to a split's copy (default 0.01)");
  app.add_option("--epochs", epochs, "training epochs (default 16; smoke 8)");
  CLI11_PARSE(app, argc, argv);

  try {
    Config c = make_config(options.smoke);
    c.data.seed = options.seed;
    if (grow_above > 0) c.controller.grow_above_share = grow_above;
    if (prune_below > 0) c.controller.prune_below_share = prune_below;
    if (patience > 0) c.controller.patience = patience;
    if (clone_noise > 0) c.controller.clone_noise_std = clone_noise;
    if (epochs > 0) c.epochs = epochs;
    StudyReport out("study_grow_prune", "Grow and prune experts at epoch boundaries", options);
    const DomainData data = make_domain_data(c.data);

    const GrowthRun grown = grow_and_prune(data, c, options.seed);
    std::vector<FixedRun> baselines = {fixed_size(data, c.start_experts, c, options.seed)};
    if (grown.final_experts != c.start_experts) baselines.push_back(fixed_size(data, grown.final_experts, c, options.seed));

    // ---- the timeline, one row per epoch, and the decisions with their reasons
    std::vector<std::vector<std::string>> timeline, decisions;
    nlohmann::ordered_json j_epochs = nlohmann::ordered_json::array(), j_decisions = nlohmann::ordered_json::array();
    bool decisions_logged = true, optimizer_followed = true, losses_finite = true;
    int64_t last_change_epoch = 0;
    for (const EpochRow& row : grown.rows) {
      std::string taken;
      for (size_t i = 0; i < row.decisions.size(); ++i) {
        const moe::ControllerDecision& d = row.decisions[i];
        taken += (taken.empty() ? "" : ", ") + d.action + " " + row.subjects[i];
        decisions.push_back({std::to_string(d.evaluation), d.action, std::to_string(d.expert),
                             d.new_expert >= 0 ? std::to_string(d.new_expert) : "", report::fmt(d.share, 3),
                             report::fmt(row.entropy_ratio, 3), d.reason});
        j_decisions.push_back(nlohmann::ordered_json::parse(d.to_json()));
        decisions_logged = decisions_logged && std::isfinite(d.share) && !d.reason.empty();
        last_change_epoch = row.epoch;
      }
      optimizer_followed = optimizer_followed && row.optimizer_ok;
      losses_finite = losses_finite && std::isfinite(row.train_loss);
      timeline.push_back({std::to_string(row.epoch), std::to_string(row.experts), shares_text(row.shares),
                          report::fmt(row.entropy_ratio, 3), report::fmt(row.train_loss, 3),
                          report::fmt(100 * row.test_accuracy, 2), taken.empty() ? "-" : taken,
                          std::to_string(row.params_after)});
      j_epochs.push_back({{"epoch", row.epoch},
                          {"experts", row.experts},
                          {"shares", row.shares},
                          {"router_entropy_over_log_e", row.entropy_ratio},
                          {"train_loss", row.train_loss},
                          {"test_accuracy", row.test_accuracy},
                          {"params_after", row.params_after},
                          {"optimizer_holds_exactly_the_model_parameters", row.optimizer_ok}});
    }
    out.summary()["epochs"] = j_epochs;
    out.summary()["decisions"] = j_decisions;
    out.add_table("Timeline: routing shares of each epoch (by expert index) and the controller's decision at its "
                  "end (experts by stable name: a split's copy gets the next name)",
                  {"epoch", "experts", "shares", "entropy/log E", "train loss", "test acc", "decision",
                   "params after"},
                  timeline);
    if (!decisions.empty())
      out.add_table("Decisions and the statistics that caused them (the controller's expert indices)",
                    {"epoch", "action", "expert", "new", "share", "entropy/log E", "reason"}, decisions);

    std::vector<std::vector<std::string>> comparison = {
        {"grown (controller)", std::to_string(c.start_experts) + " -> " + std::to_string(grown.final_experts),
         std::to_string(grown.final_params), report::fmt(100 * grown.final_accuracy, 2),
         report::fmt(100 * grown.domain_agreement, 1)}};
    out.summary()["grown"] = {{"experts", grown.final_experts},
                              {"params", grown.final_params},
                              {"test_accuracy", grown.final_accuracy},
                              {"domain_agreement", grown.domain_agreement}};
    for (const FixedRun& b : baselines) {
      comparison.push_back({"fixed " + std::to_string(b.experts) + " experts", std::to_string(b.experts),
                            std::to_string(b.params), report::fmt(100 * b.test_accuracy.back(), 2),
                            report::fmt(100 * b.domain_agreement, 1)});
      out.summary()["fixed_" + std::to_string(b.experts)] = {{"experts", b.experts},
                                                             {"params", b.params},
                                                             {"test_accuracy", b.test_accuracy.back()},
                                                             {"domain_agreement", b.domain_agreement}};
    }
    out.add_table("Grown model against fixed-size models trained as many epochs (test accuracy %, routing "
                  "agreement with the domains %)",
                  {"model", "experts", "params", "test acc", "domain agreement"}, comparison);

    // ---- plots
    int64_t most_experts = 0;
    for (const EpochRow& row : grown.rows) most_experts = std::max(most_experts, row.experts);
    const double top = static_cast<double>(most_experts + 1);
    std::vector<report::Series> count_series(1, report::Series{"experts", {}, {}, false});
    for (const EpochRow& row : grown.rows) {
      count_series[0].x.insert(count_series[0].x.end(), {static_cast<double>(row.epoch - 1), static_cast<double>(row.epoch)});
      count_series[0].y.insert(count_series[0].y.end(), 2, static_cast<double>(row.experts));
      for (size_t i = 0; i < row.decisions.size(); ++i)
        count_series.push_back({row.decisions[i].action + " " + row.subjects[i] + ", epoch " + std::to_string(row.epoch),
                                {static_cast<double>(row.epoch), static_cast<double>(row.epoch)},
                                {0.0, top},
                                true});
    }
    report::AxisOptions axes;
    axes.title = "Experts over training (dashed: decisions)";
    axes.x_label = "epoch";
    axes.y_label = "experts";
    axes.y_min = 0;
    out.add_plot("expert_count.svg", report::line_chart_svg(count_series, axes),
                 "Experts per epoch; each dashed line is a decision at that epoch boundary");
    axes = {};
    axes.title = "Routing share of each expert over training";
    axes.x_label = "epoch";
    axes.y_label = "share of inputs";
    out.add_plot("shares.svg", report::stacked_area_svg(grown.share_x, grown.shares_by_identity, grown.expert_names, axes),
                 "Shares by expert (stable names: a split gets a new name, a removed expert's band ends)");
    std::vector<report::Series> accuracy = {{"grown", {}, {}, false}};
    for (size_t e = 0; e < grown.test_accuracy.size(); ++e) {
      accuracy[0].x.push_back(static_cast<double>(e + 1));
      accuracy[0].y.push_back(100 * grown.test_accuracy[e]);
    }
    for (const FixedRun& b : baselines) {
      report::Series s{"fixed " + std::to_string(b.experts) + " experts", {}, {}, true};
      for (size_t e = 0; e < b.test_accuracy.size(); ++e) {
        s.x.push_back(static_cast<double>(e + 1));
        s.y.push_back(100 * b.test_accuracy[e]);
      }
      accuracy.push_back(s);
    }
    axes = {};
    axes.title = "Test accuracy: grown vs fixed-size";
    axes.x_label = "epoch";
    axes.y_label = "test accuracy (%)";
    out.add_plot("accuracy.svg", report::line_chart_svg(accuracy, axes), "Test accuracy after each epoch");
    out.add_text(
        "The controller reads each epoch's routing shares: an expert above " +
        report::fmt(100 * c.controller.grow_above_share, 0) + "% of the inputs for " +
        std::to_string(c.controller.patience) + " epochs in a row is split (a copy of its weights and router row "
        "plus N(0, " + report::fmt(c.controller.clone_noise_std, 2) + ") noise, so the two share its inputs "
        "until they drift apart); one below " + report::fmt(100 * c.controller.prune_below_share, 0) +
        "% for as long is removed. The data has " + std::to_string(c.data.num_domains) +
        " domains, each with its own rule, and the experts are too small to learn two rules well.");

    const double chance = 1.0 / static_cast<double>(data.train.num_classes());
    const bool changed = !decisions.empty();
    const bool trained_after = changed && last_change_epoch < static_cast<int64_t>(grown.rows.size());
    const bool above_chance = grown.final_accuracy > 2 * chance;
    const bool passed = changed && decisions_logged && optimizer_followed && losses_finite && trained_after && above_chance;
    return out.finish(passed, "at least one grow or prune, each logged with its share and reason; the optimizer holds "
                              "exactly the model's parameters after every change; training losses finite and the "
                              "final test accuracy above twice chance (" + report::fmt(200 * chance, 1) + "%) "
                              "after at least one more epoch");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "study_grow_prune: %s\n", e.what());
    return 2;
  }
}
