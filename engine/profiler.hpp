// A per-op profile any program can switch on: calls, self time and total time per op, forward
// and backward separately (as torch.profiler's self/total CPU time). An op built from other ops
// (layer_norm from sub, mul, ...) shows its whole cost as total and only its own work as self.
// Backward time is each graph node's apply(), everything it runs included. Off by default; when
// off a scope costs one branch.
//
//   mg::profiler::enable();
//   ... train a few steps ...
//   std::cout << mg::profiler::report();   // a table, slowest first
#pragma once
#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace mg::profiler {

struct OpStats {
  std::string name;  // "matmul" or "matmul (backward)"
  int64_t calls = 0;
  double self_seconds = 0.0;   // excluding the ops it called
  double total_seconds = 0.0;  // including them
};

void enable(bool on = true);
bool is_enabled();
void reset();
std::vector<OpStats> stats();  // most self time first
std::string report();          // a table of stats(), with each op's share of the total

// Times one op; nested scopes subtract their time from the enclosing one.
class Scope {
 public:
  explicit Scope(const char* name, bool backward = false);
  ~Scope();
  Scope(const Scope&) = delete;
  Scope& operator=(const Scope&) = delete;

 private:
  const char* name_;
  bool backward_;
  bool active_;
  std::chrono::steady_clock::time_point start_;
  double child_seconds_ = 0.0;
  Scope* parent_ = nullptr;
};

}  // namespace mg::profiler

#define MG_PROFILE_CONCAT_(a, b) a##b
#define MG_PROFILE_CONCAT(a, b) MG_PROFILE_CONCAT_(a, b)
// Charges the rest of the enclosing block to op `name` (a string literal).
#define MG_PROFILE(name) ::mg::profiler::Scope MG_PROFILE_CONCAT(mg_profile_scope_, __LINE__)(name)
