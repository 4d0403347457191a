// The engine's thread count: MG_NUM_THREADS at start-up, then mg::set_num_threads. Eigen is told
// the same number so that its GEMM and our loops share one OpenMP pool.
#include "engine/parallel.hpp"

#include <Eigen/Core>
#include <cstdlib>

#include "engine/error.hpp"

namespace mg {
namespace {

int initial_threads() {
  if (const char* env = std::getenv("MG_NUM_THREADS")) {
    const int n = std::atoi(env);
    if (n > 0) return n;
  }
  return omp_get_max_threads();
}

int& thread_count() {
  static int count = [] {
    const int n = initial_threads();
    omp_set_num_threads(n);
    Eigen::setNbThreads(n);
    return n;
  }();
  return count;
}

}  // namespace

void set_num_threads(int threads) {
  MG_CHECK(threads > 0, "set_num_threads: expected a positive count, got ", threads);
  thread_count() = threads;
  omp_set_num_threads(threads);
  Eigen::setNbThreads(threads);
}

int get_num_threads() { return thread_count(); }

}  // namespace mg
