// Element-wise throughput of the engine beside a plain memcpy in the same run.
//
// 16M float32 elements (64 MiB per operand, far beyond the caches), for each thread count:
//   memcpy         the baseline: one std::memcpy of 64 MiB on 1 thread; on T > 1 threads T
//                  memcpy calls over contiguous chunks in the same OpenMP pool the engine uses,
//                  so the baseline gets as many cores as the engine;
//   add, mul       c = a + b, c = a * b            bytes counted: 3 x 4 x N (read a, b; write c)
//   relu           c = relu(a)                     bytes counted: 2 x 4 x N
//   add_broadcast  [4096, 4096] + [4096]           bytes counted: 2 x 4 x N + 4 x 4096
// memcpy counts 2 x 4 x N. Bytes a write-allocate cache also reads (the destination's lines) are
// not counted for anyone. The engine ops run under NoGradGuard and allocate their output on
// every call, as a user's code does; the previous output is freed when it is replaced.
// Samples of all cases are taken in turns (bench_common.hpp), median of 7.
// Output: one JSON object per line per (op, threads) with GB/s and the ratio to memcpy's GB/s,
// the median of the per-round ratios (target: >= 0.70).
//
// Usage: bench_elementwise [threads...]   (default: 1 2)
#include <omp.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "bench_common.hpp"
#include "moegrad.hpp"

namespace {

constexpr int64_t kRows = 4096, kCols = 4096, kN = kRows * kCols;  // 16M elements

// memcpy split into `threads` contiguous chunks, one per thread of the OpenMP pool.
void parallel_memcpy(void* dst, const void* src, size_t bytes, int threads) {
  if (threads <= 1) {
    std::memcpy(dst, src, bytes);
    return;
  }
#pragma omp parallel num_threads(threads)
  {
    const size_t t = omp_get_thread_num(), nt = omp_get_num_threads();
    // chunk edges on 64-byte lines
    const size_t lines = bytes / 64;
    const size_t begin = lines * t / nt * 64;
    const size_t end = t + 1 == nt ? bytes : lines * (t + 1) / nt * 64;
    std::memcpy(static_cast<char*>(dst) + begin, static_cast<const char*>(src) + begin,
                end - begin);
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<int> thread_counts;
  for (int i = 1; i < argc; ++i) thread_counts.push_back(std::atoi(argv[i]));
  if (thread_counts.empty()) thread_counts = {1, 2};
  mg::NoGradGuard no_grad;

  mg::Tensor a = mg::randn({kRows, kCols}), b = mg::randn({kRows, kCols});
  mg::Tensor row = mg::randn({kCols});
  mg::Tensor c;  // each op's result; replaced (and the old one freed) on every call
  std::vector<float> src(a.to_vector<float>()), dst(kN);

  for (int threads : thread_counts) {
    mg::set_num_threads(threads);
    omp_set_num_threads(threads);
    struct Op {
      const char* name;
      double bytes;
    };
    const double elem = sizeof(float);
    const std::vector<Op> ops = {{"memcpy", 2 * elem * kN},
                                 {"add", 3 * elem * kN},
                                 {"mul", 3 * elem * kN},
                                 {"relu", 2 * elem * kN},
                                 {"add_broadcast", 2 * elem * kN + elem * kCols}};
    std::vector<bench::Case> cases;
    cases.push_back({"memcpy", [&] { parallel_memcpy(dst.data(), src.data(), kN * sizeof(float), threads); }});
    cases.push_back({"add", [&] { c = a + b; }});
    cases.push_back({"mul", [&] { c = a * b; }});
    cases.push_back({"relu", [&] { c = mg::relu(a); }});
    cases.push_back({"add_broadcast", [&] { c = a + row; }});
    bench::run(cases);
    const double load = bench::load_average();
    for (size_t i = 0; i < cases.size(); ++i) {
      const bench::Case& k = cases[i];
      const double gbs = ops[i].bytes / k.median() / 1e9;
      // GB/s over memcpy's GB/s in the same round, median over rounds (bench_common.hpp)
      const double ratio = bench::paired_ratio(cases[0], k) * ops[i].bytes / ops[0].bytes;
      std::printf(
          "{\"bench\":\"elementwise\",\"op\":\"%s\",\"impl\":\"%s\",\"elements\":%lld,"
          "\"threads\":%d,\"gbps_median\":%.2f,\"gbps_min\":%.2f,\"gbps_max\":%.2f,"
          "\"ms_median\":%.3f,\"bytes_counted\":%.0f,\"repeats\":%d,\"inner\":%d,"
          "\"ratio_to_memcpy\":%.3f,\"target\":0.70,\"met\":%s,%s\"load1\":%.2f}\n",
          k.name.c_str(), i == 0 ? "libc" : "moegrad", static_cast<long long>(kN), threads, gbs,
          ops[i].bytes / k.max() / 1e9, ops[i].bytes / k.min() / 1e9, k.median() * 1e3,
          ops[i].bytes, bench::kSamples, k.inner, ratio, i == 0 || ratio >= 0.70 ? "true" : "false",
          i == 0 ? (threads > 1 ? "\"baseline\":\"parallel memcpy, one contiguous chunk per thread\","
                                : "\"baseline\":\"single memcpy\",")
                 : "\"output\":\"allocated per call\",",
          load);
    }
    std::fflush(stdout);
  }
  return 0;
}
