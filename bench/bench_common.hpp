// Shared timing method of the benchmarks, the same as the reference GEMM bench
// (shared/reference/torch/gemm_cpp.cpp): a >= 100 ms warm-up of >= 2 calls, a calibration (median
// of 9 single calls) that picks `inner` so one sample lasts >= `sample_s`, then 7 samples of
// `inner` back-to-back calls; the figure is the median sample.
//
// The difference: several implementations are calibrated first and then sampled in turns (round
// r times one sample of every implementation, in an order rotated by one each round), so slow
// drift of the machine's clock or load hits all of them alike and the ratio between them taken in
// one run is meaningful. Besides the ratio of the medians, paired_ratio() gives the median over
// rounds of the per-round ratio, which cancels drift common to a round (this VM's throughput moves
// by 10-20% within seconds).
#pragma once
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace bench {

using Clock = std::chrono::steady_clock;

inline double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

struct Case {
  Case(std::string name, std::function<void()> fn) : name(std::move(name)), fn(std::move(fn)) {}
  std::string name;
  std::function<void()> fn;
  int inner = 1;
  std::vector<double> rounds;            // seconds per call of each sample, in round order
  std::vector<double> seconds_per_call;  // the same, sorted
  double median() const { return seconds_per_call[seconds_per_call.size() / 2]; }
  double min() const { return seconds_per_call.front(); }
  double max() const { return seconds_per_call.back(); }
};

// Median over rounds of base's time / c's time: > 1 when c is faster.
inline double paired_ratio(const Case& base, const Case& c) {
  std::vector<double> r;
  for (size_t i = 0; i < c.rounds.size(); ++i) r.push_back(base.rounds[i] / c.rounds[i]);
  std::sort(r.begin(), r.end());
  return r[r.size() / 2];
}

inline constexpr int kSamples = 7;

inline void calibrate(Case& c, double sample_s) {
  int calls = 0;
  const auto t0 = Clock::now();
  while (calls < 2 || seconds_since(t0) < 0.1) {
    c.fn();
    ++calls;
  }
  std::vector<double> one;
  for (int i = 0; i < 9; ++i) {
    const auto c0 = Clock::now();
    c.fn();
    one.push_back(seconds_since(c0));
  }
  std::sort(one.begin(), one.end());
  c.inner = std::max(1, static_cast<int>(sample_s / one[4]));
}

// Calibrates every case, then takes kSamples rounds of one sample per case.
inline void run(std::vector<Case>& cases, double sample_s = 0.06) {
  for (Case& c : cases) calibrate(c, sample_s);
  for (int r = 0; r < kSamples; ++r) {
    // rotate the order each round so that no case always runs first (or right after another)
    for (size_t j = 0; j < cases.size(); ++j) {
      Case& c = cases[(j + r) % cases.size()];
      const auto s0 = Clock::now();
      for (int i = 0; i < c.inner; ++i) c.fn();
      c.rounds.push_back(seconds_since(s0) / c.inner);
    }
  }
  for (Case& c : cases) {
    c.seconds_per_call = c.rounds;
    std::sort(c.seconds_per_call.begin(), c.seconds_per_call.end());
  }
}

// The 1-minute load average, printed with the results: numbers taken on a busy machine are noise.
inline double load_average() {
  double load = -1;
  if (FILE* f = std::fopen("/proc/loadavg", "r")) {
    if (std::fscanf(f, "%lf", &load) != 1) load = -1;
    std::fclose(f);
  }
  return load;
}

}  // namespace bench
