#include "engine/profiler.hpp"

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <map>
#include <mutex>

namespace mg::profiler {
namespace {

std::atomic<bool> enabled{false};
std::mutex mutex;
std::map<std::string, OpStats>& table() {
  static std::map<std::string, OpStats> t;
  return t;
}
thread_local Scope* current = nullptr;

}  // namespace

void enable(bool on) { enabled = on; }
bool is_enabled() { return enabled; }

void reset() {
  std::lock_guard<std::mutex> lock(mutex);
  table().clear();
}

// Ops that a backward runs internally are charged to that backward, not listed as forward ops.
Scope::Scope(const char* name, bool backward)
    : name_(name), backward_(backward), active_(enabled && !(current && current->backward_)) {
  if (!active_) return;
  parent_ = current;
  current = this;
  start_ = std::chrono::steady_clock::now();
}

Scope::~Scope() {
  if (!active_) return;
  const double total = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  current = parent_;
  if (parent_) parent_->child_seconds_ += total;
  std::lock_guard<std::mutex> lock(mutex);
  const std::string key = backward_ ? std::string(name_) + " (backward)" : std::string(name_);
  OpStats& s = table()[key];
  s.name = key;
  s.calls += 1;
  s.self_seconds += total - child_seconds_;
  s.total_seconds += total;
}

std::vector<OpStats> stats() {
  std::vector<OpStats> out;
  {
    std::lock_guard<std::mutex> lock(mutex);
    for (const auto& kv : table()) out.push_back(kv.second);
  }
  std::sort(out.begin(), out.end(), [](const OpStats& a, const OpStats& b) { return a.self_seconds > b.self_seconds; });
  return out;
}

std::string report() {
  const auto all = stats();
  double total = 0;
  for (const auto& s : all) total += s.self_seconds;
  std::string out;
  char line[200];
  std::snprintf(line, sizeof line, "%-36s %9s %11s %7s %11s %10s\n", "op", "calls", "self ms", "self%",
                "total ms", "ms/call");
  out += line;
  for (const auto& s : all) {
    std::snprintf(line, sizeof line, "%-36s %9lld %11.3f %6.1f%% %11.3f %10.4f\n", s.name.c_str(),
                  static_cast<long long>(s.calls), 1e3 * s.self_seconds,
                  total > 0 ? 100.0 * s.self_seconds / total : 0.0, 1e3 * s.total_seconds,
                  1e3 * s.total_seconds / std::max<int64_t>(s.calls, 1));
    out += line;
  }
  std::snprintf(line, sizeof line, "%-36s %9s %11.3f\n", "total", "", 1e3 * total);
  out += line;
  return out;
}

}  // namespace mg::profiler
