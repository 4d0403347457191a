// Study 2: gate collapse and its cures. A top-1 MoE of 8 experts with a linear gate on
// Fashion-MNIST, whose router learns 10x faster than the experts, is trained with no noise and no
// balancing: the experts that get ahead early receive more inputs, learn faster, are preferred
// more, and within about 60 steps two of them take every input while the other six never train
// again. The same model and data are then trained with each remedy the literature proposes: noisy
// gating, warmup random routing, each balancing loss (Switch, usage variance, Shazeer's
// importance + load CV^2), the router z-loss alone and auxiliary-loss-free bias balancing. Per
// variant: expert shares over training (stacked area), max share, load entropy and experts used
// over the second half of training, and test accuracy. docs/study-gate-collapse.md discusses the
// numbers.
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "examples/common/svg.hpp"
#include "examples/common/table.hpp"
#include "examples/studies/support/routing_metrics.hpp"
#include "examples/studies/support/study_output.hpp"
#include "examples/studies/support/training.hpp"

namespace {

using namespace mg;
using namespace mg::study;

struct Config {
  int64_t train_size = 20000, test_size = 10000, epochs = 5;
  int64_t experts = 8, expert_hidden = 32;
  double lr = 1e-3;
  double router_lr_scale = 10;  // the router learns faster than the experts: collapse comes early
  int64_t curve_points = 60;
};

Config make_config(bool smoke) {
  Config c;
  if (smoke) {
    c.train_size = 5000;
    c.test_size = 1000;
    c.epochs = 4;
    c.curve_points = 20;
  }
  return c;
}

// One remedy: what it changes in the MoE config, and how it is described.
struct Variant {
  std::string name, setting;
  bool checked;  // a balancing loss: the check expects it to end the collapse
  void (*apply)(moe::MoEConfig&);
};

const std::vector<Variant>& variants() {
  static const std::vector<Variant> all = {
      {"baseline", "no noise, no balancing", false, [](moe::MoEConfig&) {}},
      {"noisy gating", "learned noise std (Shazeer 2017)", false,
       [](moe::MoEConfig& m) { m.router.noise = moe::NoiseType::Learned; }},
      {"warmup", "random routing, first 100 steps", false,
       [](moe::MoEConfig& m) { m.router.warmup_random_steps = 100; }},
      {"switch", "switch loss 0.3", true, [](moe::MoEConfig& m) { m.balance.switch_coef = 0.3; }},
      {"variance", "usage variance loss 10", true, [](moe::MoEConfig& m) { m.balance.variance_coef = 10.0; }},
      {"cv2", "importance + load CV^2 0.1 each, learned noise", true,
       [](moe::MoEConfig& m) {
         m.router.noise = moe::NoiseType::Learned;
         m.balance.importance_coef = 0.1;
         m.balance.load_coef = 0.1;
       }},
      {"z-loss", "router z-loss 0.001 alone", false, [](moe::MoEConfig& m) { m.balance.z_coef = 1e-3; }},
      {"aux-free bias", "sigmoid scores, bias rate 0.001 (DeepSeek-V3)", false,
       [](moe::MoEConfig& m) {
         m.router.scoring = moe::Scoring::Sigmoid;
         m.router.bias_update_rate = 1e-3;
       }},
  };
  return all;
}

struct VariantResult {
  double late_max_share = 0, late_entropy = 0;  // over the second half of training
  int64_t late_experts_used = 0;                // experts with at least 1% of its inputs
  double test_max_share = 0, test_accuracy = 0, seconds = 0;
  ShareCurve curve;
};

VariantResult run_variant(const Variant& v, const Config& c, const TensorDataset& train_set,
                          const TensorDataset& test_set, uint64_t seed) {
  const auto start = std::chrono::steady_clock::now();
  MoEClassifierConfig mc;
  mc.input_dim = train_set.dim();
  mc.num_classes = train_set.num_classes();
  mc.expert.hidden = {c.expert_hidden};
  mc.moe.router.num_experts = c.experts;
  mc.moe.router.top_k = 1;
  mc.moe.router.seed = seed;
  mc.init_seed = seed;
  v.apply(mc.moe);
  MoEClassifier model(mc);
  auto optimizer = make_adam(model, c.lr, c.router_lr_scale);
  TrainOptions options;
  options.epochs = c.epochs;
  options.seed = seed;
  options.progress = v.name;
  const std::vector<StepRecord> records = train(model, *optimizer, train_set, options);
  const Evaluation test = evaluate(model, test_set);

  VariantResult r;
  const moe::StepStats late = pooled_routing(records, records.size() / 2, records.size());
  r.late_max_share = max_share(late.fraction);
  r.late_entropy = late.load_entropy;
  for (double share : late.fraction) r.late_experts_used += share >= 0.01;
  r.test_max_share = max_share(test.routing.fraction);
  r.test_accuracy = test.accuracy;
  r.curve = share_curve(records, c.curve_points);
  r.seconds = seconds_since(start);
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Study 2: gate collapse and its cures (docs/study-gate-collapse.md)"};
  StudyOptions options;
  add_common_flags(app, options, "study_gate_collapse");
  std::string fashion_dir;
  app.add_option("--fashion-mnist-dir", fashion_dir, "Fashion-MNIST folder (default: Debian's)");
  CLI11_PARSE(app, argc, argv);

  try {
    const Config c = make_config(options.smoke);
    StudyReport out("study_gate_collapse", "Gate collapse and its cures", options);
    const TensorDataset train_set = load_fashion_mnist(fashion_dir, data::Split::Train, c.train_size);
    const TensorDataset test_set = load_fashion_mnist(fashion_dir, data::Split::Test, c.test_size);

    std::vector<std::string> expert_names;
    for (int64_t e = 0; e < c.experts; ++e) expert_names.push_back("expert " + std::to_string(e));
    std::vector<std::vector<std::string>> rows;
    std::vector<report::Series> max_share_curves;
    double baseline_share = 0, worst_balanced_share = 0;
    for (const Variant& v : variants()) {
      const VariantResult r = run_variant(v, c, train_set, test_set, options.seed);
      rows.push_back({v.name, v.setting, report::fmt(r.late_max_share, 3), report::fmt(r.late_entropy, 3),
                      report::fmt(std::exp(r.late_entropy), 2), std::to_string(r.late_experts_used),
                      report::fmt(r.test_max_share, 3), report::fmt(100 * r.test_accuracy, 2),
                      report::fmt(r.seconds, 1)});
      report::AxisOptions axes;
      axes.title = v.name + ": expert shares over training";
      axes.x_label = "training step";
      axes.y_label = "share";
      out.add_plot("shares_" + file_slug(v.name) + ".svg", report::stacked_area_svg(r.curve.step, r.curve.shares,
                                                                               expert_names, axes),
                   v.name + " (" + v.setting + "): the share of each step's inputs that each expert took");
      report::Series s{v.name, r.curve.step, {}, !v.checked && v.name != "baseline"};
      for (const auto& shares : r.curve.shares) s.y.push_back(max_share(shares));
      max_share_curves.push_back(s);

      nlohmann::ordered_json& j = out.summary()[v.name];
      j["setting"] = v.setting;
      j["second_half_max_share"] = r.late_max_share;
      j["second_half_load_entropy"] = r.late_entropy;
      j["second_half_effective_experts"] = std::exp(r.late_entropy);
      j["second_half_experts_used"] = r.late_experts_used;
      j["test_max_share"] = r.test_max_share;
      j["test_accuracy"] = r.test_accuracy;
      j["seconds"] = r.seconds;
      j["share_curve_steps"] = r.curve.step;
      j["share_curve"] = r.curve.shares;
      if (v.name == "baseline") baseline_share = r.late_max_share;
      if (v.checked) worst_balanced_share = std::max(worst_balanced_share, r.late_max_share);
    }
    out.add_table("Routing over the second half of training (its steps pooled; load entropy in nats, ln 8 = "
                  "2.079 is even; effective experts = exp(entropy); used: at least 1% of the inputs) and on the "
                  "test set",
                  {"variant", "setting", "max share", "load entropy", "effective experts", "experts used",
                   "test max share", "test accuracy %", "seconds"},
                  rows);
    report::AxisOptions axes;
    axes.title = "Largest expert share (1/8 = even, 1 = collapsed)";
    axes.x_label = "training step";
    axes.y_label = "max share";
    axes.y_min = 0;
    axes.y_max = 1;
    out.add_plot("max_share.svg", report::line_chart_svg(max_share_curves, axes),
                 "The largest expert share over training, every variant (dashed: not a balancing loss)");
    out.add_text(
        "Setup: top-1 routing (the gate's probability weights the chosen expert, as in Switch), a linear "
        "gate, and a router learning rate 10x the experts': the conditions under which the rich-get-richer "
        "loop closes fastest. Balancing losses and the bias act on the loads; noise, warmup and the "
        "z-loss do not, and the table shows what that means here.");
    return out.finish(baseline_share > 0.5 && worst_balanced_share < baseline_share - 0.25,
                      "over the second half of training the baseline's max share is above 0.5 and each balancing "
                      "loss's (switch, variance, cv2) at least 0.25 below it");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "study_gate_collapse: %s\n", e.what());
    return 2;
  }
}
