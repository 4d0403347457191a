// Routing statistics as JSON lines, their aggregation over an epoch, and the stuck-gate warning.
// JSON through nlohmann::ordered_json, so keys keep the order of the struct; values that were not
// computed (NaN) are written as null, since JSON has no NaN.
#include "moe/stats.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <limits>

namespace mg::moe {
namespace {

using json = nlohmann::ordered_json;

json number_or_null(double v) { return std::isfinite(v) ? json(v) : json(nullptr); }

json losses_json(const BalanceLosses& l) {
  return json{{"switch", number_or_null(l.switch_value)},
              {"variance", number_or_null(l.variance_value)},
              {"importance", number_or_null(l.importance_value)},
              {"load", number_or_null(l.load_value)},
              {"z", number_or_null(l.z_value)}};
}

json step_json(const StepStats& s) {
  return json{{"inputs", s.inputs},
              {"num_experts", s.num_experts},
              {"top_k", s.top_k},
              {"tokens_per_expert", s.tokens_per_expert},
              {"fraction", s.fraction},
              {"mean_gate_prob", s.mean_gate_prob},
              {"router_entropy", number_or_null(s.router_entropy)},
              {"load_entropy", number_or_null(s.load_entropy)},
              {"max_over_mean_load", number_or_null(s.max_over_mean_load)},
              {"dropped", s.dropped},
              {"bias", s.bias},
              {"losses", losses_json(s.losses)}};
}

// Entropy (nats) of the shares in `fraction`.
double entropy_of_shares(const std::vector<double>& fraction) {
  double h = 0;
  for (double f : fraction)
    if (f > 0) h -= f * std::log(f);
  return h;
}

}  // namespace

std::string StepStats::to_json() const { return step_json(*this).dump(); }

// ---------------------------------------------------------------- StatsAccumulator

StatsAccumulator::StatsAccumulator(int64_t num_experts, int64_t num_classes)
    : num_experts_(num_experts), num_classes_(num_classes) {
  MG_CHECK(num_experts > 0, "StatsAccumulator: num_experts must be positive, got ", num_experts);
  MG_CHECK(num_classes >= 0, "StatsAccumulator: num_classes must be >= 0, got ", num_classes);
  sum_.num_experts = num_experts;
  sum_.tokens_per_expert.assign(num_experts, 0);
  sum_.mean_gate_prob.assign(num_experts, 0.0);
  class_by_expert_.assign(num_classes, std::vector<int64_t>(num_experts, 0));
}

void StatsAccumulator::add(const StepStats& step, const Tensor& indices, const Tensor& labels,
                           const std::vector<int32_t>& oracle_map) {
  MG_CHECK(step.num_experts == num_experts_, "StatsAccumulator: a step with ", step.num_experts,
           " experts in an epoch of ", num_experts_, " (start a new accumulator when experts change)");
  MG_CHECK(static_cast<int64_t>(step.tokens_per_expert.size()) == num_experts_,
           "StatsAccumulator: tokens_per_expert has ", step.tokens_per_expert.size(), " entries, expected ",
           num_experts_);
  ++steps_;
  sum_.inputs += step.inputs;
  sum_.top_k = step.top_k;
  sum_.dropped += step.dropped;
  for (int64_t e = 0; e < num_experts_; ++e) sum_.tokens_per_expert[e] += step.tokens_per_expert[e];
  // Per-input means are weighted by the step's inputs, so a short last batch counts for less.
  for (int64_t e = 0; e < num_experts_ && e < static_cast<int64_t>(step.mean_gate_prob.size()); ++e)
    sum_.mean_gate_prob[e] += step.mean_gate_prob[e] * step.inputs;
  sum_.router_entropy += step.router_entropy * step.inputs;
  sum_.bias = step.bias;  // a state, not a count: the epoch reports the latest
  // Losses are per batch: the epoch reports their mean over steps. A layer's balance config is
  // fixed, so a loss is computed on every step or on none (NaN, kept as NaN).
  auto add_loss = [](double& sum, double v) {
    if (!std::isnan(v)) sum = std::isnan(sum) ? v : sum + v;
  };
  add_loss(sum_.losses.switch_value, step.losses.switch_value);
  add_loss(sum_.losses.variance_value, step.losses.variance_value);
  add_loss(sum_.losses.importance_value, step.losses.importance_value);
  add_loss(sum_.losses.load_value, step.losses.load_value);
  add_loss(sum_.losses.z_value, step.losses.z_value);

  if (!labels.defined() || !indices.defined()) return;
  MG_CHECK(indices.dtype() == kInt32 && indices.dim() == 2 && labels.dtype() == kInt32,
           "StatsAccumulator: expected indices int32 [T, k] and labels int32, got ",
           dtype_name(indices.dtype()), " ", shape_str(indices.sizes()), " and ",
           dtype_name(labels.dtype()), " ", shape_str(labels.sizes()));
  const int64_t T = indices.size(0), k = indices.size(1);
  const int64_t L = labels.numel();
  // Per-example labels with per-token routing ([B] against T = B * N): each label covers N inputs.
  MG_CHECK(L > 0 && T % L == 0, "StatsAccumulator: ", L, " labels for ", T, " routed inputs");
  const int64_t per_label = T / L;
  const std::vector<int32_t> idx = indices.to_vector<int32_t>();
  const std::vector<int32_t> lab = labels.to_vector<int32_t>();
  for (int64_t t = 0; t < T; ++t) {
    const int32_t c = lab[t / per_label], top1 = idx[t * k];
    MG_CHECK(c >= 0, "StatsAccumulator: negative label ", c);
    if (num_classes_ > 0) {
      MG_CHECK(c < num_classes_, "StatsAccumulator: label ", c, " out of range [0, ", num_classes_, ")");
    } else if (c >= static_cast<int64_t>(class_by_expert_.size())) {
      class_by_expert_.resize(c + 1, std::vector<int64_t>(num_experts_, 0));  // classes as they appear
    }
    MG_CHECK(top1 >= 0 && top1 < num_experts_, "StatsAccumulator: expert index ", top1, " out of range");
    ++class_by_expert_[c][top1];
    if (!oracle_map.empty()) {
      MG_CHECK(c < static_cast<int64_t>(oracle_map.size()), "StatsAccumulator: label ", c,
               " has no entry in the oracle map of ", oracle_map.size());
      ++oracle_total_;
      if (oracle_map[c] == top1) ++oracle_agree_;
    }
  }
}

StepStats StatsAccumulator::epoch() const {
  StepStats s = sum_;
  s.fraction.assign(num_experts_, 0.0);
  int64_t kept = 0, most = 0;
  for (int64_t n : s.tokens_per_expert) {
    kept += n;
    most = std::max(most, n);
  }
  for (int64_t e = 0; e < num_experts_; ++e)
    s.fraction[e] = kept > 0 ? double(s.tokens_per_expert[e]) / kept : 0.0;
  s.load_entropy = entropy_of_shares(s.fraction);
  s.max_over_mean_load = kept > 0 ? double(most) / (double(kept) / num_experts_) : 0.0;
  for (double& p : s.mean_gate_prob) p = s.inputs > 0 ? p / s.inputs : 0.0;
  s.router_entropy = s.inputs > 0 ? s.router_entropy / s.inputs : 0.0;
  for (double* loss : {&s.losses.switch_value, &s.losses.variance_value, &s.losses.importance_value,
                       &s.losses.load_value, &s.losses.z_value})
    if (steps_ > 0) *loss /= steps_;
  s.losses.total = Tensor();
  return s;
}

double StatsAccumulator::router_accuracy() const {
  return oracle_total_ > 0 ? double(oracle_agree_) / oracle_total_ : NAN;
}

std::string StatsAccumulator::to_json() const {
  json j = step_json(epoch());
  j["steps"] = steps_;
  j["class_by_expert"] = class_by_expert_;
  j["router_accuracy"] = number_or_null(router_accuracy());
  return j.dump();
}

// ---------------------------------------------------------------- StuckGateDetector

bool StuckGateDetector::update(const StepStats& step) {
  int64_t total = 0, top = -1, top_count = -1;
  for (int64_t e = 0; e < static_cast<int64_t>(step.tokens_per_expert.size()); ++e) {
    total += step.tokens_per_expert[e];
    if (step.tokens_per_expert[e] > top_count) {
      top_count = step.tokens_per_expert[e];
      top = e;
    }
  }
  const bool over = total > 0 && double(top_count) / total > max_share_;
  if (!over) {
    expert_ = -1;
    run_ = 0;
    reported_ = false;
    return false;
  }
  if (top != expert_) {  // a different expert took over: its run starts now
    expert_ = top;
    run_ = 0;
    reported_ = false;
  }
  ++run_;
  if (run_ >= patience_ && !reported_) {
    reported_ = true;
    return true;
  }
  return false;
}

std::string StuckGateDetector::message() const {
  if (expert_ < 0) return "";
  char buf[256];
  std::snprintf(buf, sizeof buf,
                "MoE gate stuck: expert %lld took more than %.1f%% of the assignments for %lld "
                "consecutive steps (the gate has collapsed onto it)",
                static_cast<long long>(expert_), 100.0 * max_share_, static_cast<long long>(run_));
  return buf;
}

namespace {

// Minimum-cost assignment (the Hungarian algorithm in its O(n^2 m) potentials form, as in
// e-maxx's write-up of Kuhn-Munkres) of each of the n rows to a distinct column of cost[n][m], n <= m.
// Returns the column of each row.
std::vector<int64_t> hungarian(const std::vector<std::vector<double>>& cost) {
  const int64_t n = static_cast<int64_t>(cost.size()), m = n ? static_cast<int64_t>(cost[0].size()) : 0;
  const double inf = std::numeric_limits<double>::infinity();
  // 1-based potentials u (rows), v (columns); row_of[j] is the row matched to column j (0: none).
  std::vector<double> u(n + 1, 0.0), v(m + 1, 0.0);
  std::vector<int64_t> row_of(m + 1, 0), previous(m + 1, 0);
  for (int64_t i = 1; i <= n; ++i) {
    row_of[0] = i;
    int64_t j0 = 0;
    std::vector<double> min_slack(m + 1, inf);
    std::vector<bool> used(m + 1, false);
    do {  // grow an alternating tree from row i until it reaches a free column
      used[j0] = true;
      const int64_t i0 = row_of[j0];
      double delta = inf;
      int64_t j1 = 0;
      for (int64_t j = 1; j <= m; ++j) {
        if (used[j]) continue;
        const double slack = cost[i0 - 1][j - 1] - u[i0] - v[j];
        if (slack < min_slack[j]) {
          min_slack[j] = slack;
          previous[j] = j0;
        }
        if (min_slack[j] < delta) {
          delta = min_slack[j];
          j1 = j;
        }
      }
      for (int64_t j = 0; j <= m; ++j) {
        if (used[j]) {
          u[row_of[j]] += delta;
          v[j] -= delta;
        } else {
          min_slack[j] -= delta;
        }
      }
      j0 = j1;
    } while (row_of[j0] != 0);
    do {  // flip the augmenting path
      const int64_t j1 = previous[j0];
      row_of[j0] = row_of[j1];
      j0 = j1;
    } while (j0 != 0);
  }
  std::vector<int64_t> column_of(n, -1);
  for (int64_t j = 1; j <= m; ++j)
    if (row_of[j] > 0) column_of[row_of[j] - 1] = j - 1;
  return column_of;
}

}  // namespace

GroupAssignment best_assignment(const std::vector<std::vector<double>>& counts) {
  const int64_t G = static_cast<int64_t>(counts.size()), E = G ? static_cast<int64_t>(counts[0].size()) : 0;
  GroupAssignment out;
  out.expert_of_group.assign(G, -1);
  double total = 0;
  for (const auto& row : counts) {
    MG_CHECK(static_cast<int64_t>(row.size()) == E, "best_assignment: rows of different lengths");
    for (double c : row) total += c;
  }
  if (G == 0 || E == 0 || total <= 0) return out;
  // The solver needs rows <= columns: with more groups than experts, assign experts to groups.
  const bool transpose = G > E;
  std::vector<std::vector<double>> cost(transpose ? E : G, std::vector<double>(transpose ? G : E));
  for (int64_t g = 0; g < G; ++g)
    for (int64_t e = 0; e < E; ++e) (transpose ? cost[e][g] : cost[g][e]) = -counts[g][e];
  const std::vector<int64_t> match = hungarian(cost);
  for (int64_t r = 0; r < static_cast<int64_t>(match.size()); ++r) {
    if (match[r] < 0) continue;
    if (transpose) out.expert_of_group[match[r]] = r;
    else out.expert_of_group[r] = match[r];
  }
  double agreed = 0;
  for (int64_t g = 0; g < G; ++g)
    if (out.expert_of_group[g] >= 0) agreed += counts[g][out.expert_of_group[g]];
  out.agreement = agreed / total;
  return out;
}

}  // namespace mg::moe
