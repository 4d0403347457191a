// Study 6: sparse scaling. The MoE layer alone (router, sorted dispatch, FFN experts, combine; the
// workload of bench/bench_moe_layer.cpp) on random tokens, forward + backward, as the number of
// experts E grows at fixed top-k, next to a dense FFN of equal compute: hidden size k * H, the
// expert FLOPs of top-k with perfect dispatch. Parameters grow with E while the FLOPs per token
// stay those of k experts, so with enough tokens per expert the step time stays nearly flat: that
// is what makes sparse models cheap (Shazeer et al. 2017; Switch Transformer, Fedus et al. 2021).
// With few tokens per expert (a small batch, many experts) the per-expert work becomes tiny GEMMs
// while the per-expert costs (weight gradients the size of each expert, one GEMM launch per
// expert, routing over E) stay, and the MoE falls behind the dense layer.
//
// Two dense layers are timed: the reference runs the FFN through the same grouped kernel as the
// experts (grouped_mlp with one group: equal compute, equal kernel, so the difference is routing,
// dispatch and the per-expert costs); the other is the same FFN as nn modules (Linear, ReLU,
// Linear), what a dense model would use.
//
// Timing follows the bench: untimed warmup steps, then rounds of one timed step per
// configuration with the order rotated every round, so a change in the machine's load hits all
// configurations alike; medians per configuration, and the median of same-round ratios for the
// comparisons the check makes. docs/study-sparse-scaling.md explains what to look at and the numbers.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "engine/autograd.hpp"
#include "engine/generator.hpp"
#include "engine/ops.hpp"
#include "examples/common/svg.hpp"
#include "examples/common/table.hpp"
#include "examples/studies/support/study_output.hpp"
#include "moe/expert.hpp"
#include "moe/layer.hpp"
#include "nn/layers.hpp"

namespace {

using namespace mg;
using namespace mg::study;

struct Config {
  int64_t d = 256, hidden = 1024, top_k = 1;
  std::vector<int64_t> experts = {1, 2, 4, 8, 16, 32, 64};
  std::vector<int64_t> batch_tokens = {4096, 64};  // many tokens per expert, then few
  int warmup = 2;
  // Rounds per batch size: small batches take milliseconds, where one preemption by another
  // process is a large error, so they get more samples (cheap at that size).
  int rounds_large = 9, rounds_small = 41;
  // The check: at the largest batch, time at E = check_experts over the smallest E's (paired median).
  int64_t check_experts = 16;
  double max_time_ratio = 2.5;  // E = 16 has 16x the parameters; ~1.0-1.3x the time is typical
};

Config make_config(bool smoke) {
  Config c;
  if (smoke) {
    c.d = 128;
    c.hidden = 512;
    c.experts = {1, 2, 4, 8, 16};
    c.batch_tokens = {2048, 32};
    c.warmup = 1;
    c.rounds_large = 15;
    c.rounds_small = 21;
  }
  return c;
}

int64_t parameter_count(const nn::Module& module) {
  int64_t n = 0;
  for (const Tensor& p : module.parameters()) n += p.numel();
  return n;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n == 0 ? NAN : n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

double minimum(const std::vector<double>& v) { return v.empty() ? NAN : *std::min_element(v.begin(), v.end()); }

// The dense FFN through the experts' kernel: grouped_mlp over one group holding every row.
class FusedDenseFFN : public nn::Module {
 public:
  explicit FusedDenseFFN(const moe::FFNExpertConfig& config)
      : nn::Module("FusedDenseFFN"), ffn_(register_module("ffn", std::make_shared<moe::FFNExpert>(config))) {}
  Tensor forward(const Tensor& x) override {
    const auto& first = static_cast<const nn::Linear&>(*ffn_->children()[0]);
    const auto& second = static_cast<const nn::Linear&>(*ffn_->children()[2]);
    return grouped_mlp(x, {0, x.size(0)}, {{first.weight, first.bias, second.weight, second.bias}});
  }

 private:
  std::shared_ptr<moe::FFNExpert> ffn_;
};

struct Case {
  std::string name;
  int64_t experts = 0;  // 0: a dense FFN
  std::shared_ptr<nn::Module> module;
  int64_t params = 0, active_params = 0;  // active: used by one token
  std::vector<double> samples_ms;         // one per round, in round order
  int64_t min_tokens = 0, max_tokens = 0;  // per expert, on the timed batch
};

std::shared_ptr<moe::MoELayer> make_moe(const Config& c, int64_t E, uint64_t seed) {
  manual_seed(seed);  // the experts' initial weights
  moe::MoEConfig config;
  config.router.input_dim = c.d;
  config.router.num_experts = E;
  config.router.top_k = c.top_k;
  config.router.seed = seed;
  std::vector<nn::ModulePtr> experts;
  for (int64_t e = 0; e < E; ++e)
    experts.push_back(std::make_shared<moe::FFNExpert>(moe::FFNExpertConfig{.input_dim = c.d, .hidden = {c.hidden}}));
  return std::make_shared<moe::MoELayer>(config, experts);
}

// All configurations at one batch size, timed in rotated rounds.
std::vector<Case> time_batch(const Config& c, int64_t tokens, int rounds, uint64_t seed) {
  Generator gen(seed);
  Tensor x = randn({tokens, c.d}, kFloat32, &gen).requires_grad_();
  const Tensor upstream = randn({tokens, c.d}, kFloat32, &gen);  // the gradient arriving from above

  std::vector<Case> cases;  // the reference first
  const moe::FFNExpertConfig dense_config{.input_dim = c.d, .hidden = {c.top_k * c.hidden}};
  manual_seed(seed);
  cases.push_back({"dense, grouped kernel", 0, std::make_shared<FusedDenseFFN>(dense_config)});
  manual_seed(seed);
  cases.push_back({"dense, nn modules", 0, std::make_shared<moe::FFNExpert>(dense_config)});
  for (Case& dense : cases) dense.params = dense.active_params = parameter_count(*dense.module);
  for (int64_t E : c.experts) {
    if (E < c.top_k) continue;
    Case moe_case;
    moe_case.name = std::to_string(E);
    moe_case.experts = E;
    auto layer = make_moe(c, E, seed);
    moe_case.params = parameter_count(*layer);
    const int64_t router_params = parameter_count(layer->router());
    moe_case.active_params = router_params + c.top_k * parameter_count(*layer->expert(0));
    moe_case.module = layer;
    cases.push_back(std::move(moe_case));
  }

  auto step = [&](Case& k) {
    const auto start = std::chrono::steady_clock::now();
    for (Tensor& p : k.module->parameters()) p.set_grad(Tensor());  // gradients to none, as the bench
    x.set_grad(Tensor());
    k.module->forward(x).backward(upstream);
    return 1e3 * seconds_since(start);
  };
  for (Case& k : cases)
    for (int i = 0; i < c.warmup; ++i) step(k);
  for (int round = 0; round < rounds; ++round)
    for (size_t j = 0; j < cases.size(); ++j) {
      Case& k = cases[(j + round) % cases.size()];
      k.samples_ms.push_back(step(k));
    }
  for (Case& k : cases) {
    auto* layer = dynamic_cast<moe::MoELayer*>(k.module.get());
    if (!layer) continue;
    const std::vector<int64_t>& loads = layer->last_stats().tokens_per_expert;
    k.min_tokens = *std::min_element(loads.begin(), loads.end());
    k.max_tokens = *std::max_element(loads.begin(), loads.end());
  }
  return cases;
}

// Median over rounds of numerator / denominator measured in the same round.
double paired_ratio(const Case& numerator, const Case& denominator) {
  std::vector<double> ratios;
  for (size_t r = 0; r < numerator.samples_ms.size(); ++r)
    ratios.push_back(numerator.samples_ms[r] / denominator.samples_ms[r]);
  return median(ratios);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Study 6: sparse scaling, step time and parameters vs number of experts (docs/study-sparse-scaling.md)"};
  StudyOptions options;
  add_common_flags(app, options, "study_sparse_scaling");
  std::vector<int64_t> experts, batch_tokens;
  int64_t top_k = 1;
  app.add_option("--experts", experts, "numbers of experts (default 1 2 4 8 16 32 64)");
  app.add_option("--tokens", batch_tokens, "batch sizes in tokens, largest first (default 4096 64)");
  app.add_option("--top-k", top_k, "experts per token")->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  try {
    Config c = make_config(options.smoke);
    c.top_k = top_k;
    if (!experts.empty()) c.experts = experts;
    if (!batch_tokens.empty()) c.batch_tokens = batch_tokens;
    MG_CHECK(c.top_k >= 1 && !c.batch_tokens.empty(), "study_sparse_scaling: need --top-k >= 1 and at least one "
             "batch size, got ", c.top_k, " and ", c.batch_tokens.size(), " sizes");
    for (int64_t E : c.experts) MG_CHECK(E >= 1, "study_sparse_scaling: --experts must be >= 1, got ", E);
    for (int64_t T : c.batch_tokens) MG_CHECK(T >= 1, "study_sparse_scaling: --tokens must be >= 1, got ", T);
    StudyReport out("study_sparse_scaling", "Sparse scaling: parameters vs step time as experts grow", options);

    std::vector<std::vector<Case>> by_batch;
    for (size_t b = 0; b < c.batch_tokens.size(); ++b)
      by_batch.push_back(time_batch(c, c.batch_tokens[b], b == 0 ? c.rounds_large : c.rounds_small, options.seed));

    // ---- table: one row per E, the time at each batch size and its ratio to the dense FFN
    std::vector<std::string> header = {"experts", "params", "active/token"};
    for (int64_t tokens : c.batch_tokens) {
      header.push_back("ms T=" + std::to_string(tokens));
      header.push_back("min");
      header.push_back("x dense");
      header.push_back("tokens/expert");
    }
    std::vector<std::vector<std::string>> rows;
    for (size_t i = 0; i < by_batch.front().size(); ++i) {
      const Case& k = by_batch.front()[i];
      std::vector<std::string> row = {k.name,
                                      report::fmt_compact(static_cast<double>(k.params)),
                                      report::fmt_compact(static_cast<double>(k.active_params))};
      for (size_t b = 0; b < by_batch.size(); ++b) {
        const Case& at = by_batch[b][i];
        row.push_back(report::fmt(median(at.samples_ms), 2));
        row.push_back(report::fmt(minimum(at.samples_ms), 2));
        row.push_back(report::fmt(paired_ratio(at, by_batch[b].front()), 2));
        row.push_back(at.experts ? std::to_string(at.min_tokens) + "-" + std::to_string(at.max_tokens) : "-");
        nlohmann::ordered_json& j = out.summary()["T=" + std::to_string(c.batch_tokens[b])]
                                                 [at.experts ? "E=" + std::to_string(at.experts) : at.name];
        j["experts"] = at.experts;
        j["params"] = at.params;
        j["active_params_per_token"] = at.active_params;
        j["ms_median"] = median(at.samples_ms);
        j["ms_min"] = minimum(at.samples_ms);
        j["over_dense_paired_median"] = paired_ratio(at, by_batch[b].front());
        j["tokens_per_expert_min"] = at.min_tokens;
        j["tokens_per_expert_max"] = at.max_tokens;
        j["samples_ms"] = at.samples_ms;
      }
      rows.push_back(row);
    }
    out.add_table("Forward + backward of one layer: d = " + std::to_string(c.d) + ", expert hidden H = " +
                      std::to_string(c.hidden) + ", top-" + std::to_string(c.top_k) +
                      "; ms per step (median, min), paired ratio to the dense FFN of hidden k*H through the "
                      "grouped kernel, tokens per expert (min-max)",
                  header, rows);

    // ---- plots: x is log2(E), so 1, 2, 4 ... 64 are evenly spaced
    auto log2_experts = [](const Case& k) { return std::log2(static_cast<double>(k.experts)); };
    std::vector<report::Series> times, ratios;
    for (size_t b = 0; b < by_batch.size(); ++b) {
      const std::string tokens = "T=" + std::to_string(c.batch_tokens[b]);
      report::Series moe_line{"MoE, " + tokens, {}, {}, false}, dense_line{"dense, " + tokens, {}, {}, true};
      report::Series ratio_line{"MoE / dense, " + tokens, {}, {}, false};
      const Case& dense = by_batch[b].front();
      for (const Case& k : by_batch[b]) {
        if (k.experts == 0) continue;
        moe_line.x.push_back(log2_experts(k));
        moe_line.y.push_back(median(k.samples_ms));
        dense_line.x.push_back(log2_experts(k));
        dense_line.y.push_back(median(dense.samples_ms));
        ratio_line.x.push_back(log2_experts(k));
        ratio_line.y.push_back(paired_ratio(k, dense));
      }
      times.push_back(moe_line);
      times.push_back(dense_line);
      ratios.push_back(ratio_line);
    }
    report::AxisOptions axes;
    axes.x_label = "log2(experts): 0 = 1 expert ... 6 = 64";
    axes.title = "Step time (forward + backward) vs experts";
    axes.y_label = "ms (median, log scale)";
    axes.log_y = true;
    out.add_plot("step_time.svg", report::line_chart_svg(times, axes),
                 "Median step time of the MoE layer and of the dense FFN of equal compute (dashed), per batch size");
    axes.log_y = false;
    axes.title = "MoE step time over the dense FFN's";
    axes.y_label = "MoE / dense (paired median)";
    axes.y_min = 0;
    out.add_plot("time_ratio.svg", report::line_chart_svg(ratios, axes),
                 "How much slower than the dense layer of equal compute: flat-ish with many tokens per expert, "
                 "growing with E when each expert gets only a few");
    report::Series total{"MoE: all parameters", {}, {}, false}, active{"MoE: active per token", {}, {}, true},
        dense_params{"dense FFN (k*H)", {}, {}, true};
    for (const Case& k : by_batch.front()) {
      if (k.experts == 0) continue;
      total.x.push_back(log2_experts(k));
      total.y.push_back(static_cast<double>(k.params));
      active.x.push_back(log2_experts(k));
      active.y.push_back(static_cast<double>(k.active_params));
      dense_params.x.push_back(log2_experts(k));
      dense_params.y.push_back(static_cast<double>(by_batch.front().front().params));
    }
    axes.title = "Parameters vs experts";
    axes.y_label = "parameters (log scale)";
    axes.y_min = NAN;
    axes.log_y = true;
    out.add_plot("params.svg", report::line_chart_svg({total, active, dense_params}, axes),
                 "All parameters grow linearly with E; those one token uses stay k experts plus the router");
    out.add_text(
        "Each configuration is one MoE layer (or the dense FFN) doing forward and backward on the same random "
        "tokens; x requires grad, as inside a network. Ratios are medians over rounds of the same-round ratio, "
        "which a change of the machine's load during the run cancels out of.");

    // ---- the check: parameters exactly linear in E; at the largest batch, the time at
    // check_experts (or the largest E run, when that is smaller) within a multiple of the smallest E's
    const std::vector<Case>& large = by_batch.front();
    std::vector<const Case*> moe_cases;
    for (const Case& k : large)
      if (k.experts > 0) moe_cases.push_back(&k);
    MG_CHECK(moe_cases.size() >= 2, "study_sparse_scaling: need at least two values of --experts >= --top-k, got ",
             moe_cases.size());
    bool linear = true;
    const Case &first = *moe_cases[0], &second = *moe_cases[1];
    const double per_expert =
        static_cast<double>(second.params - first.params) / static_cast<double>(second.experts - first.experts);
    for (const Case* k : moe_cases) {
      const double predicted = static_cast<double>(first.params) + per_expert * static_cast<double>(k->experts - first.experts);
      linear = linear && std::abs(predicted - static_cast<double>(k->params)) <= 1e-9 * predicted;
    }
    const Case* compared = moe_cases.back();
    for (const Case* k : moe_cases)
      if (k->experts <= c.check_experts) compared = k;
    const double time_ratio = paired_ratio(*compared, first);
    out.summary()["check_time_ratio"] = time_ratio;
    out.summary()["params_linear_in_experts"] = linear;
    const bool passed = linear && time_ratio < c.max_time_ratio;
    const std::string pair = "E=" + std::to_string(compared->experts) + " over E=" + std::to_string(first.experts);
    std::printf("\nT=%lld: %s step time (paired median) %.2f, min over min %.2f; parameters linear in E: %s\n",
                static_cast<long long>(c.batch_tokens.front()), pair.c_str(), time_ratio,
                minimum(compared->samples_ms) / minimum(first.samples_ms), linear ? "yes" : "no");
    return out.finish(passed, "parameters exactly linear in E, and at T=" + std::to_string(c.batch_tokens.front()) +
                                  " the step time of " + pair + " below " + report::fmt(c.max_time_ratio, 1) +
                                  "x (median of same-round ratios)");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "study_sparse_scaling: %s\n", e.what());
    return 2;
  }
}
