// GrowPruneController: streaks of per-expert routing shares (and of the normalized router
// entropy), counted over evaluations; a condition that holds for `patience` evaluations in a row
// fires at most one prune and one grow. Rules, not a learned head (see controller.hpp).
//
// Order within one evaluation: update every streak from the statistics, prune, then grow, so a
// grow sees the experts that survived. Streak vectors are indexed like the layer's experts and
// follow each removal (the entry is erased, later experts shift down) and insertion (the clone
// starts with empty streaks). The expert that was split, and the entropy streak, restart from
// zero after a grow: the split halves the share that triggered it, and the next grow should be
// earned by the new layout.
#include "moe/controller.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>

#include "engine/error.hpp"

namespace mg::moe {

namespace {

std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out += c;
        }
    }
  }
  return out + "\"";
}

// JSON has no NaN or infinity.
std::string json_number(double v) {
  if (!std::isfinite(v)) return "null";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

std::string fmt(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.4g", v);
  return buf;
}

}  // namespace

std::string ControllerDecision::to_json() const {
  std::ostringstream os;
  os << "{\"evaluation\":" << evaluation << ",\"action\":" << json_string(action)
     << ",\"expert\":" << expert << ",\"new_expert\":" << new_expert
     << ",\"share\":" << json_number(share) << ",\"router_entropy\":" << json_number(router_entropy)
     << ",\"reason\":" << json_string(reason) << "}";
  return os.str();
}

std::vector<ControllerDecision> GrowPruneController::evaluate(MoELayer& layer, const StepStats& stats,
                                                             nn::Optimizer* optimizer) {
  MG_CHECK(config_.patience >= 1, "GrowPruneController: patience must be >= 1, got ", config_.patience);
  MG_CHECK(config_.min_experts >= 1 && config_.max_experts >= config_.min_experts,
           "GrowPruneController: need 1 <= min_experts <= max_experts, got ", config_.min_experts, " and ",
           config_.max_experts);
  int64_t num_experts = layer.num_experts();

  // Shares of the routed assignments; from the counts when `fraction` was not filled in.
  std::vector<double> share = stats.fraction;
  if (share.empty() && !stats.tokens_per_expert.empty()) {
    double total = 0.0;
    for (int64_t n : stats.tokens_per_expert) total += static_cast<double>(n);
    for (int64_t n : stats.tokens_per_expert) share.push_back(total > 0 ? n / total : 0.0);
  }
  MG_CHECK(static_cast<int64_t>(share.size()) == num_experts, "GrowPruneController::evaluate: the "
           "statistics cover ", share.size(), " experts, the layer has ", num_experts,
           " (statistics from before a grow or prune?)");

  ++evaluations_;
  // Streaks are per expert index; if the layer changed behind the controller's back the old
  // entries no longer name the same experts, so they start over.
  if (static_cast<int64_t>(low_streak_.size()) != num_experts) {
    low_streak_.assign(num_experts, 0);
    high_streak_.assign(num_experts, 0);
  }
  for (int64_t i = 0; i < num_experts; ++i) {
    low_streak_[i] = share[i] < config_.prune_below_share ? low_streak_[i] + 1 : 0;
    high_streak_[i] = share[i] > config_.grow_above_share ? high_streak_[i] + 1 : 0;
  }
  const double entropy = stats.router_entropy;
  auto normalized_entropy = [&](int64_t e) { return e > 1 ? entropy / std::log(static_cast<double>(e)) : 0.0; };
  const double entropy_ratio = normalized_entropy(num_experts);
  const bool entropy_high = config_.grow_above_entropy >= 0 && entropy_ratio > config_.grow_above_entropy;
  entropy_streak_ = entropy_high ? entropy_streak_ + 1 : 0;

  std::vector<ControllerDecision> decisions;
  auto decide = [&](std::string action, int64_t expert, double expert_share, std::string reason) {
    ControllerDecision d;
    d.evaluation = evaluations_;
    d.action = std::move(action);
    d.expert = expert;
    d.share = expert_share;
    d.router_entropy = entropy;
    d.reason = std::move(reason);
    decisions.push_back(std::move(d));
    return &decisions.back();
  };

  // ---- prune: the lowest-share unfrozen expert whose low streak reached patience.
  // The floor also keeps top_k experts, which routing needs.
  const int64_t floor = std::max(config_.min_experts, layer.router().config().top_k);
  if (num_experts > floor) {
    int64_t victim = -1;
    for (int64_t i = 0; i < num_experts; ++i) {
      if (low_streak_[i] < config_.patience || layer.expert_frozen(i)) continue;
      if (victim < 0 || share[i] < share[victim]) victim = i;
    }
    if (victim >= 0) {
      std::ostringstream why;
      why << "expert " << victim << " share " << fmt(share[victim]) << " < prune_below_share "
          << fmt(config_.prune_below_share) << " for " << low_streak_[victim] << " evaluations (patience "
          << config_.patience << "); " << num_experts << " -> " << num_experts - 1 << " experts";
      const double victim_share = share[victim];
      layer.remove_expert(victim, optimizer);
      low_streak_.erase(low_streak_.begin() + victim);
      high_streak_.erase(high_streak_.begin() + victim);
      share.erase(share.begin() + victim);
      --num_experts;
      decide("prune", victim, victim_share, why.str());
    }
  }

  // ---- grow: split the busiest expert whose high streak reached patience, or, when the router
  // has been close to uniform for patience evaluations, the busiest expert overall.
  if (num_experts < config_.max_experts && num_experts > 0) {
    int64_t busiest = -1, busiest_streaked = -1;
    for (int64_t i = 0; i < num_experts; ++i) {
      if (busiest < 0 || share[i] > share[busiest]) busiest = i;
      if (high_streak_[i] >= config_.patience && (busiest_streaked < 0 || share[i] > share[busiest_streaked]))
        busiest_streaked = i;
    }
    std::ostringstream why;
    int64_t split = -1;
    if (busiest_streaked >= 0) {
      split = busiest_streaked;
      why << "expert " << split << " share " << fmt(share[split]) << " > grow_above_share "
          << fmt(config_.grow_above_share) << " for " << high_streak_[split] << " evaluations (patience "
          << config_.patience << ")";
    } else if (entropy_streak_ >= config_.patience) {
      split = busiest;
      why << "router entropy / log(E) " << fmt(entropy_ratio) << " > grow_above_entropy "
          << fmt(config_.grow_above_entropy) << " for " << entropy_streak_ << " evaluations (patience "
          << config_.patience << "); splitting the busiest expert " << split << " (share "
          << fmt(share[split]) << ")";
    }
    if (split >= 0) {
      why << "; " << num_experts << " -> " << num_experts + 1 << " experts, clone noise std "
          << fmt(config_.clone_noise_std);
      const int64_t clone = layer.add_expert_cloned_from(split, config_.clone_noise_std, optimizer);
      high_streak_[split] = 0;
      low_streak_.insert(low_streak_.begin() + clone, 0);
      high_streak_.insert(high_streak_.begin() + clone, 0);
      entropy_streak_ = 0;
      ControllerDecision* d = decide("grow", split, share[split], why.str());
      d->new_expert = clone;
    }
  }

  history_.insert(history_.end(), decisions.begin(), decisions.end());
  return decisions;
}

}  // namespace mg::moe
