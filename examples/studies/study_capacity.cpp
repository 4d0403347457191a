// Study 4: capacity and dropped inputs. A top-1 MoE (Switch routing) is trained on Fashion-MNIST
// at capacity factors 0.5, 1.0, 1.25, 2.0 and dropless (moe::MoEConfig::capacity_factor; 0 is
// dropless): each expert takes at most ceil(c * T * k / E) of a batch's T * k assignments, in
// input order, and the rest are dropped. Two heads show what a dropped input becomes:
//   residual      h + MoE(h) -> Linear: a dropped input passes through unchanged (the transformer
//                 block's form, what GShard and Switch rely on);
//   no residual   the experts are the classifier: a dropped input gets zero logits.
// Measured per factor: the share of assignments dropped (training, last epoch, and test), test
// accuracy, and the median time of one training step (forward, backward, Adam) of each trained
// model, timed in rounds with the models' order rotated so the machine's drift hits all alike.
// docs/study-capacity.md explains what to look at and the numbers.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
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
  int64_t train_size = 20000, test_size = 5000, epochs = 3;
  int64_t batch_size = 128;           // T: the group over which capacity is counted
  int64_t trunk_hidden = 64, expert_hidden = 256, num_experts = 8;
  double lr = 2e-3;
  // Ten times Switch's 0.01: at 0.01 the no-residual model's router collapses onto one or two of
  // the 8 experts (busiest / mean load 6-8 dropless), and the factor then mostly measures that.
  double switch_coef = 0.1;
  std::vector<double> factors = {0.5, 1.0, 1.25, 2.0, 0.0};  // 0: dropless
  std::vector<Head> heads = {Head::Residual, Head::None};
  int timing_warmup = 2, timing_rounds = 41;
};

Config make_config(bool smoke) {
  Config c;
  if (smoke) {
    // The residual head alone, trained long enough (~190 steps) for the switch loss to even out
    // the loads: with fewer steps the routers of neighbouring factors (1.0 and 1.25) are still
    // unsettled enough for their drop rates to cross now and then.
    c.heads = {Head::Residual};
    c.train_size = 8000;
    c.test_size = 1000;
    c.epochs = 3;
    c.timing_rounds = 5;
  }
  return c;
}

std::string factor_name(double factor) { return factor > 0 ? report::fmt(factor, 2) : "dropless"; }
std::string head_name(Head head) { return head == Head::Residual ? "residual" : "no residual"; }

// Dropped share of the routed assignments (inputs * k) over some steps.
double dropped_share(const std::vector<moe::StepStats>& steps) {
  int64_t dropped = 0, assignments = 0;
  for (const moe::StepStats& s : steps) {
    dropped += s.dropped;
    assignments += s.inputs * s.top_k;
  }
  return assignments > 0 ? static_cast<double>(dropped) / assignments : 0.0;
}

struct Run {
  Head head = Head::Residual;
  double factor = 0;
  std::unique_ptr<MoEClassifier> model;
  std::unique_ptr<nn::Adam> optimizer;
  double train_dropped = 0, test_dropped = 0;  // shares of the assignments
  double test_accuracy = 0, last_epoch_loss = 0;
  double max_over_mean_load = 0;  // busiest expert over the mean, per training step (last epoch)
  std::vector<double> step_ms;    // timing phase
  double train_seconds = 0;
};

Run train_run(Head head, double factor, const TensorDataset& train_set, const TensorDataset& test_set,
              const Config& c, uint64_t seed) {
  const auto start = std::chrono::steady_clock::now();
  Run r;
  r.head = head;
  r.factor = factor;
  MoEClassifierConfig mc;
  mc.input_dim = train_set.dim();
  mc.num_classes = train_set.num_classes();
  mc.trunk_hidden = {c.trunk_hidden};
  mc.expert.hidden = {c.expert_hidden};
  mc.moe.router.num_experts = c.num_experts;
  mc.moe.router.top_k = 1;
  mc.moe.router.seed = seed;
  mc.moe.capacity_factor = factor;
  mc.moe.balance.switch_coef = c.switch_coef;
  mc.head = head;
  mc.init_seed = seed;  // every run starts from the same weights: the factor is the only difference
  r.model = std::make_unique<MoEClassifier>(mc);
  r.optimizer = make_adam(*r.model, c.lr);
  TrainOptions options;
  options.epochs = c.epochs;
  options.batch_size = c.batch_size;
  options.seed = seed;
  options.progress = head_name(head) + ", capacity " + factor_name(factor);
  const std::vector<StepRecord> records = train(*r.model, *r.optimizer, train_set, options);

  // The last epoch: the router has settled, so this is the drop rate the factor costs in steady state.
  const int64_t steps_per_epoch = (train_set.size() + c.batch_size - 1) / c.batch_size;
  std::vector<moe::StepStats> last_epoch;
  double loss_sum = 0, load_ratio_sum = 0;
  for (size_t i = records.size() - std::min<size_t>(records.size(), steps_per_epoch); i < records.size(); ++i) {
    last_epoch.push_back(records[i].routing);
    loss_sum += records[i].loss;
    load_ratio_sum += records[i].routing.max_over_mean_load;
  }
  r.train_dropped = dropped_share(last_epoch);
  r.last_epoch_loss = loss_sum / static_cast<double>(last_epoch.size());
  r.max_over_mean_load = load_ratio_sum / static_cast<double>(last_epoch.size());

  // Evaluated in batches of the training size: capacity is counted per batch, so this keeps the
  // same group size (and the same per-batch fluctuation of the loads) as in training.
  EvalOptions eval;
  eval.batch_size = c.batch_size;
  const Evaluation test = evaluate(*r.model, test_set, eval);
  r.test_accuracy = test.accuracy;
  r.test_dropped = dropped_share({test.routing});
  r.train_seconds = seconds_since(start);
  return r;
}

// One training step of every model on the same batch, in rounds whose order rotates, so a change in
// the machine's load during the phase hits every model alike.
void time_steps(std::vector<Run>& runs, const TensorDataset& data, const Config& c) {
  const Tensor x = data.inputs.narrow(0, 0, c.batch_size).contiguous();
  const Tensor y = data.labels.narrow(0, 0, c.batch_size).contiguous();
  auto step = [&](Run& r) {
    const auto start = std::chrono::steady_clock::now();
    r.optimizer->zero_grad();
    const Tensor logits = r.model->forward(x);  // before aux_loss(): it is this forward's
    (cross_entropy(logits, y) + r.model->moe().aux_loss()).backward();
    r.optimizer->step();
    return 1e3 * seconds_since(start);
  };
  for (Run& r : runs)
    for (int i = 0; i < c.timing_warmup; ++i) step(r);
  for (int round = 0; round < c.timing_rounds; ++round)
    for (size_t j = 0; j < runs.size(); ++j) {
      Run& r = runs[(j + round) % runs.size()];
      r.step_ms.push_back(step(r));
    }
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n == 0 ? NAN : n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

double minimum(const std::vector<double>& v) { return v.empty() ? NAN : *std::min_element(v.begin(), v.end()); }

// Assignments per batch (T * k, k = 1) and the capacity of one expert, ceil(c * T * k / E), as
// moe::MoELayer computes it (the slack keeps a product that is an integer up to rounding exact).
int64_t assignments_per_batch(const Config& c) { return c.batch_size; }
int64_t expert_capacity(double factor, const Config& c) {
  const double exact = factor * static_cast<double>(assignments_per_batch(c)) / static_cast<double>(c.num_experts);
  return static_cast<int64_t>(std::ceil(exact - 1e-9 * std::max(1.0, exact)));
}

// Expert slots per routed assignment that an implementation with static shapes (GShard and Switch
// on TPUs) computes whether they are filled or not: E buffers of `capacity` rows. Dropless with
// static shapes would need every buffer as large as the busiest expert's load.
double static_slots(const Run& r, const Config& c) {
  if (r.factor <= 0) return r.max_over_mean_load;
  return static_cast<double>(c.num_experts * expert_capacity(r.factor, c)) / assignments_per_batch(c);
}

// The drop share of a router that sends every input to an expert drawn uniformly at random: the
// part that batch-to-batch fluctuation alone costs. An expert's load is then Binomial(T, 1/E), and
// what exceeds its capacity is dropped: E * sum_{n > C} (n - C) P(n) / T.
double uniform_router_drop_share(double factor, const Config& c) {
  if (factor <= 0) return 0.0;
  const int64_t T = assignments_per_batch(c), C = expert_capacity(factor, c);
  const double p = 1.0 / static_cast<double>(c.num_experts);
  double overflow = 0;
  for (int64_t n = C + 1; n <= T; ++n) {
    const double log_probability = std::lgamma(T + 1.0) - std::lgamma(n + 1.0) - std::lgamma(T - n + 1.0) +
                                   n * std::log(p) + (T - n) * std::log1p(-p);
    overflow += static_cast<double>(n - C) * std::exp(log_probability);
  }
  return static_cast<double>(c.num_experts) * overflow / static_cast<double>(T);
}

// The training drop share (the last epoch: thousands of routed inputs per factor) strictly
// decreasing down to zero (it may stay at 0 once it is 0), and exactly 0 dropless, in training and
// on the test set. The test set's shares are not compared between factors: a few batches of
// routing are too few to order neighbouring factors reliably.
bool drops_decrease(const std::vector<const Run*>& by_factor) {
  for (size_t i = 1; i < by_factor.size(); ++i) {
    const double previous = by_factor[i - 1]->train_dropped, current = by_factor[i]->train_dropped;
    if (!(current < previous || (current == 0 && previous == 0))) return false;
  }
  const Run* dropless = by_factor.empty() ? nullptr : by_factor.back();
  return dropless && dropless->factor == 0 && dropless->train_dropped == 0 && dropless->test_dropped == 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Study 4: capacity and dropped inputs (docs/study-capacity.md)"};
  StudyOptions options;
  add_common_flags(app, options, "study_capacity");
  std::string fashion_dir;
  app.add_option("--fashion-mnist-dir", fashion_dir, "Fashion-MNIST folder (default: Debian's)");
  CLI11_PARSE(app, argc, argv);

  try {
    const Config c = make_config(options.smoke);
    StudyReport out("study_capacity", "Capacity factor and dropped inputs", options);
    const TensorDataset train_set = load_fashion_mnist(fashion_dir, data::Split::Train, c.train_size);
    const TensorDataset test_set = load_fashion_mnist(fashion_dir, data::Split::Test, c.test_size);

    std::vector<Run> runs;
    for (Head head : c.heads)
      for (double factor : c.factors) runs.push_back(train_run(head, factor, train_set, test_set, c, options.seed));
    time_steps(runs, train_set, c);

    std::vector<std::vector<std::string>> rows;
    for (const Run& r : runs) {
      rows.push_back({head_name(r.head), factor_name(r.factor), report::fmt(100 * r.train_dropped, 2),
                      report::fmt(100 * r.test_dropped, 2), report::fmt(100 * uniform_router_drop_share(r.factor, c), 2),
                      report::fmt(100 * r.test_accuracy, 2),
                      report::fmt(r.last_epoch_loss, 3), report::fmt(r.max_over_mean_load, 2),
                      report::fmt(static_slots(r, c), 2), report::fmt(median(r.step_ms), 2),
                      report::fmt(minimum(r.step_ms), 2)});
      nlohmann::ordered_json& j = out.summary()[head_name(r.head)][factor_name(r.factor)];
      j["capacity_factor"] = r.factor;
      j["train_dropped_share_last_epoch"] = r.train_dropped;
      j["test_dropped_share"] = r.test_dropped;
      j["uniform_router_dropped_share"] = uniform_router_drop_share(r.factor, c);
      j["test_accuracy"] = r.test_accuracy;
      j["train_loss_last_epoch"] = r.last_epoch_loss;
      j["train_max_over_mean_load"] = r.max_over_mean_load;
      j["static_slots_per_assignment"] = static_slots(r, c);
      j["step_ms_median"] = median(r.step_ms);
      j["step_ms_min"] = minimum(r.step_ms);
      j["step_ms_samples"] = r.step_ms;
      j["train_seconds"] = r.train_seconds;
    }
    out.add_table("Capacity factor: dropped assignments (%), test accuracy (%), step time (ms, median)",
                  {"head", "capacity", "dropped train", "dropped test", "uniform router", "test acc", "train loss",
                   "max/mean load", "static slots", "step ms", "min ms"},
                  rows);

    // Plots: one line per head over the finite factors, its dropless value as a dashed level.
    std::vector<double> finite_factors;
    for (double f : c.factors)
      if (f > 0) finite_factors.push_back(f);
    auto by_head = [&](Head head, auto value) {
      report::Series line{head_name(head), {}, {}, false}, level{head_name(head) + ", dropless", {}, {}, true};
      for (const Run& r : runs) {
        if (r.head != head) continue;
        if (r.factor > 0) {
          line.x.push_back(r.factor);
          line.y.push_back(value(r));
        } else {
          level.x = {finite_factors.front(), finite_factors.back()};
          level.y = {value(r), value(r)};
        }
      }
      return std::vector<report::Series>{line, level};
    };
    auto all_heads = [&](auto value) {
      std::vector<report::Series> lines, levels;
      for (Head head : c.heads) {
        std::vector<report::Series> pair = by_head(head, value);
        lines.push_back(pair[0]);
        levels.push_back(pair[1]);
      }
      lines.insert(lines.end(), levels.begin(), levels.end());
      return lines;
    };
    report::AxisOptions axes;
    axes.x_label = "capacity factor";

    std::vector<report::Series> dropped = all_heads([](const Run& r) { return 100 * r.train_dropped; });
    dropped.erase(std::remove_if(dropped.begin(), dropped.end(), [](const report::Series& s) { return s.dashed; }),
                  dropped.end());
    report::Series floor{"floor max(0, 1 - c)", {}, {}, true};
    for (double f : finite_factors) {
      floor.x.push_back(f);
      floor.y.push_back(100 * std::max(0.0, 1 - f));
    }
    dropped.push_back(floor);
    report::Series uniform{"uniform random router", {}, {}, true};
    for (double f : finite_factors) {
      uniform.x.push_back(f);
      uniform.y.push_back(100 * uniform_router_drop_share(f, c));
    }
    dropped.push_back(uniform);
    axes.title = "Dropped assignments (training, last epoch)";
    axes.y_label = "dropped (%)";
    axes.y_min = 0;
    out.add_plot("dropped_share.svg", report::line_chart_svg(dropped, axes),
                 "Share of assignments dropped in the last training epoch (dropless: 0). Dashed: the floor any "
                 "router hits, 1 - c, since the experts hold c * T * k in all; and what a perfectly balanced but "
                 "random router drops through batch-to-batch fluctuation of the loads alone");
    axes.y_min = NAN;

    axes.title = "Test accuracy (dashed: dropless)";
    axes.y_label = "test accuracy (%)";
    out.add_plot("accuracy.svg",
                 report::line_chart_svg(all_heads([](const Run& r) { return 100 * r.test_accuracy; }), axes),
                 "Test accuracy: a dropped input keeps its features with the residual, gets zero logits without");

    axes.title = "Training step time (dashed: dropless)";
    axes.y_label = "step time (ms, median)";
    axes.y_min = 0;
    out.add_plot("step_time.svg", report::line_chart_svg(all_heads([](const Run& r) { return median(r.step_ms); }), axes),
                 "Median time of one training step (forward, backward, Adam) on one batch");

    out.add_text(
        "Each expert takes at most ceil(c * T * k / E) of a batch's T * k assignments, in input order; the rest "
        "are dropped. With the residual head a dropped input passes through (h + 0), without it the input gets "
        "zero logits. Even a balanced router drops some at c = 1: the loads of one batch fluctuate around "
        "their mean. Step times: this dispatch is ragged (no padding), so capacity only saves the dropped "
        "inputs' expert work; on hardware with static shapes, compute grows with c instead.");

    bool passed = true;
    for (Head head : c.heads) {
      std::vector<const Run*> by_factor;
      for (const Run& r : runs)
        if (r.head == head) by_factor.push_back(&r);
      passed = passed && drops_decrease(by_factor);
    }
    return out.finish(passed, "dropped share (training, last epoch, every head trained) strictly decreases with the "
                              "capacity factor until it reaches 0, and is exactly 0 dropless (training and test)");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "study_capacity: %s\n", e.what());
    return 2;
  }
}
