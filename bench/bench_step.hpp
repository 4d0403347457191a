// What the training-step benches (bench_cnn_step, bench_attn) share with the peer scripts in
// shared/reference/torch: benchutil.time_fn's method (`warmup` untimed calls, then `steps` timed
// calls of one sample each; median, min, max), ru_maxrss as peak RSS, and the flags. With
// `--device cuda` the model and data live on the GPU and a timed step waits for the device
// (mg::cuda::synchronize) before its time is read; without a usable device the bench exits
// with the engine's error.
#pragma once
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "engine/cuda_device.hpp"
#include "engine/tensor.hpp"

namespace step_bench {

using Clock = std::chrono::steady_clock;

inline double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// The 1-minute load average: figures taken while other builds run are noise.
inline double load_average() {
  double load = -1;
  if (FILE* f = std::fopen("/proc/loadavg", "r")) {
    if (std::fscanf(f, "%lf", &load) != 1) load = -1;
    std::fclose(f);
  }
  return load;
}

inline double peak_rss_mb() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss / 1024.0;  // KiB on Linux
}

// "cpu", "cuda" or "cuda:N"; a device this build or machine cannot serve ends the program with
// the engine's clear error (exit code 1).
inline mg::Device parse_device(const std::string& name, const char* program) {
  mg::Device device = mg::Device::cpu();
  if (name.rfind("cuda", 0) == 0)
    device = mg::Device::cuda(name.size() > 5 && name[4] == ':' ? std::atoi(name.c_str() + 5) : 0);
  else if (name != "cpu") {
    std::fprintf(stderr, "%s: --device must be cpu, cuda or cuda:N, got %s\n", program,
                 name.c_str());
    std::exit(2);
  }
  try {
    mg::Tensor::empty({1}, mg::TensorOptions().device(device));
  } catch (const mg::Error& e) {
    std::fprintf(stderr, "%s: %s\n", program, e.what());
    std::exit(1);
  }
  return device;
}

// Waits for the device's queued kernels, so that a step's time includes them.
inline void synchronize(mg::Device device) {
  if (device.is_cuda()) mg::cuda::synchronize();
}

struct Args {
  int threads = 2, warmup = 3, steps = 7, batch = 0;
  bool profile = false;
  mg::Device device = mg::Device::cpu();
};

// --threads N --warmup W --steps S (alias --repeats, the peer's name) --batch B --profile
// --device cpu|cuda[:N]
inline Args parse_args(int argc, char** argv, Args defaults) {
  Args a = defaults;
  auto usage = [&] {
    std::fprintf(stderr, "usage: %s [--threads N] [--warmup W] [--steps S] [--batch B] [--profile]"
                 " [--device cpu|cuda]\n",
                 argv[0]);
    std::exit(2);
  };
  for (int i = 1; i < argc; ++i) {
    const std::string s = argv[i];
    auto value = [&] {
      if (i + 1 >= argc) usage();
      return std::atoi(argv[++i]);
    };
    if (s == "--threads") a.threads = value();
    else if (s == "--warmup") a.warmup = value();
    else if (s == "--steps" || s == "--repeats") a.steps = value();
    else if (s == "--batch") a.batch = value();
    else if (s == "--profile") a.profile = true;
    else if (s == "--device" && i + 1 < argc) a.device = parse_device(argv[++i], argv[0]);
    else usage();
  }
  if (a.threads < 1 || a.warmup < 0 || a.steps < 1 || a.batch < 1) usage();
  return a;
}

struct Timing {
  std::vector<double> samples_ms;  // in call order
  double median = 0, min = 0, max = 0;
  std::string samples_json() const {
    std::string s;
    char buf[32];
    for (double m : samples_ms) {
      std::snprintf(buf, sizeof buf, "%s%.3f", s.empty() ? "" : ",", m);
      s += buf;
    }
    return "[" + s + "]";
  }
};

// statistics.median of the samples, as the peer (the mean of the middle two for an even count).
template <class F>
Timing time_fn(const F& fn, int warmup, int steps) {
  for (int i = 0; i < warmup; ++i) fn();
  Timing t;
  for (int i = 0; i < steps; ++i) {
    const auto t0 = Clock::now();
    fn();
    t.samples_ms.push_back(1e3 * seconds_since(t0));
  }
  std::vector<double> s = t.samples_ms;
  std::sort(s.begin(), s.end());
  const size_t n = s.size();
  t.median = n % 2 ? s[n / 2] : 0.5 * (s[n / 2 - 1] + s[n / 2]);
  t.min = s.front();
  t.max = s.back();
  return t;
}

}  // namespace step_bench
