// GEMM throughput of mg::matmul beside raw Eigen in the same run.
//
// For each thread count and n in {256, 512, 1024, 2048}: float32 [n, n] x [n, n] through
//   eigen        raw Eigen 3, `C.noalias() = A * B` on Eigen::MatrixXf (the reference method,
//                shared/reference/torch/gemm_cpp.cpp), threads via omp + Eigen::setNbThreads;
//   moegrad      `c = {}; c = mg::matmul(a, b)` under NoGradGuard. The op allocates its output on
//                every call; the previous result is dropped first, so the allocator hands back
//                the block just freed, as Eigen's C is reused. This pair carries the target.
//   moegrad_keep `c = mg::matmul(a, b)`: the previous result is still alive during the call, so the
//                output goes to the other of two alternating blocks, which has left the cache
//   eigen_2out   beside raw Eigen writing two C matrices in turn (the same cache effect: at
//                n = 1024 Eigen loses ~5-8% on this VM from it, which is no engine overhead);
//   moegrad_at   mg::matmul(a.t(), b): a transposed view, which the engine multiplies in place,
//   eigen_at     beside raw Eigen's `C.noalias() = A.transpose() * B`,
//   moegrad_at_copy  and beside mg::matmul(a.t().contiguous(), b), which does copy the operand:
//                moegrad_at keeping up with eigen_at and beating the copying variant shows that
//                the view is not copied. (Each side packs its transposed operand its own way, so
//                moegrad_at and eigen_at are not the identical computation.)
// Samples of all cases are taken in turns (bench_common.hpp), median of 7, flops = 2 n^3.
// Output: one JSON object per line per (impl, n, threads), then a ratio line per (n, threads):
// time of the Eigen case / time of the moegrad case, as the median of the per-round ratios
// (drift-free) and, for the target pair, also as the ratio of the medians. Target: moegrad within
// 5% of raw Eigen, i.e. moegrad_over_eigen_paired >= 0.95.
//
// Usage: bench_matmul [threads...] [--n N]...   (default: threads 1 2, n 256 512 1024 2048)
#include <Eigen/Core>
#include <omp.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "bench_common.hpp"
#include "moegrad.hpp"

namespace {

using RowMajorMap =
    Eigen::Map<const Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>;

void print_case(const bench::Case& c, int n, int threads, double load) {
  const double flop = 2.0 * n * n * n;
  std::printf(
      "{\"bench\":\"sgemm\",\"impl\":\"%s\",\"n\":%d,\"threads\":%d,\"gflops_median\":%.1f,"
      "\"gflops_min\":%.1f,\"gflops_max\":%.1f,\"ms_median\":%.3f,\"repeats\":%d,\"inner\":%d,"
      "\"eigen\":\"%d.%d.%d\",\"simd\":\"%s\",\"load1\":%.2f}\n",
      c.name.c_str(), n, threads, flop / c.median() / 1e9, flop / c.max() / 1e9,
      flop / c.min() / 1e9, c.median() * 1e3, bench::kSamples, c.inner, EIGEN_WORLD_VERSION,
      EIGEN_MAJOR_VERSION, EIGEN_MINOR_VERSION, Eigen::SimdInstructionSetsInUse(), load);
}

// Largest |difference| between the engine's product and Eigen's on the same data, relative to
// the largest |entry|: a guard that the timed code computes the right thing.
double check_error(const mg::Tensor& a, const mg::Tensor& b, bool transpose_a) {
  const int64_t n = a.size(0);
  mg::Tensor c = mg::matmul(transpose_a ? a.t() : a, b);
  RowMajorMap A(a.data_ptr<float>(), n, n), B(b.data_ptr<float>(), n, n),
      C(c.data_ptr<float>(), n, n);
  Eigen::MatrixXf ref = transpose_a ? Eigen::MatrixXf(A.transpose() * B) : Eigen::MatrixXf(A * B);
  return (ref - C).cwiseAbs().maxCoeff() / ref.cwiseAbs().maxCoeff();
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<int> thread_counts, sizes;
  for (int i = 1; i < argc; ++i) {
    if (std::string(argv[i]) == "--n" && i + 1 < argc) {
      sizes.push_back(std::atoi(argv[++i]));
    } else {
      thread_counts.push_back(std::atoi(argv[i]));
    }
  }
  if (thread_counts.empty()) thread_counts = {1, 2};
  if (sizes.empty()) sizes = {256, 512, 1024, 2048};
  mg::NoGradGuard no_grad;
  for (int threads : thread_counts) {
    // mg::set_num_threads sets omp_set_num_threads and Eigen::setNbThreads too; raw Eigen below
    // runs in the very same pool with the same count.
    mg::set_num_threads(threads);
    omp_set_num_threads(threads);
    Eigen::setNbThreads(threads);
    for (int n : sizes) {
      Eigen::MatrixXf A = Eigen::MatrixXf::Random(n, n), B = Eigen::MatrixXf::Random(n, n),
                      C = Eigen::MatrixXf::Zero(n, n);
      Eigen::MatrixXf C2 = Eigen::MatrixXf::Zero(n, n);
      int flip = 0;
      mg::Tensor a = mg::rand({n, n}) * 2.0 - 1.0, b = mg::rand({n, n}) * 2.0 - 1.0;
      mg::Tensor c;  // the engine's result
      const double err = std::max(check_error(a, b, false), check_error(a, b, true));
      std::vector<bench::Case> cases;
      cases.emplace_back("eigen", [&] { C.noalias() = A * B; });
      cases.emplace_back("moegrad", [&] { c = {}; c = mg::matmul(a, b); });
      cases.emplace_back("eigen_2out", [&] { (++flip % 2 ? C2 : C).noalias() = A * B; });
      cases.emplace_back("moegrad_keep", [&] { c = mg::matmul(a, b); });
      cases.emplace_back("eigen_at", [&] { C.noalias() = A.transpose() * B; });
      cases.emplace_back("moegrad_at", [&] { c = {}; c = mg::matmul(a.t(), b); });
      cases.emplace_back("moegrad_at_copy", [&] { c = {}; c = mg::matmul(a.t().contiguous(), b); });
      bench::run(cases);
      const double load = bench::load_average();
      for (const bench::Case& k : cases) print_case(k, n, threads, load);
      const double r = cases[0].median() / cases[1].median();
      const double rp = bench::paired_ratio(cases[0], cases[1]);
      std::printf(
          "{\"bench\":\"sgemm_ratio\",\"n\":%d,\"threads\":%d,\"moegrad_over_eigen\":%.3f,"
          "\"moegrad_over_eigen_paired\":%.3f,\"target\":0.95,\"met\":%s,"
          "\"moegrad_keep_over_eigen_2out_paired\":%.3f,\"moegrad_at_over_eigen_at_paired\":%.3f,"
          "\"moegrad_at_copy_over_eigen_at_paired\":%.3f,\"max_rel_err\":%.2e,\"load1\":%.2f}\n",
          n, threads, r, rp, rp >= 0.95 ? "true" : "false",
          bench::paired_ratio(cases[2], cases[3]), bench::paired_ratio(cases[4], cases[5]),
          bench::paired_ratio(cases[4], cases[6]), err, load);
      std::fflush(stdout);
    }
  }
  return 0;
}
