// One OpenMP thread pool for the whole engine (Eigen's GEMM runs in the same pool). The thread
// count comes from mg::set_num_threads or MG_NUM_THREADS; small work stays on one thread.
#pragma once
#include <algorithm>
#include <cstdint>

#include <omp.h>

namespace mg {

void set_num_threads(int threads);
int get_num_threads();

// Below this many elements a loop is not worth waking the pool for.
inline constexpr int64_t kParallelGrain = 32768;

// Calls fn(begin, end) on contiguous chunks of [0, n), in parallel when `work` (roughly the
// element count touched) exceeds the grain. Chunks depend only on n and the thread count.
template <class F>
void parallel_for(int64_t n, int64_t work, const F& fn) {
  if (n <= 0) return;
  const int threads = std::min<int64_t>(get_num_threads(), n);
  if (work < kParallelGrain || threads <= 1 || omp_in_parallel()) {
    fn(int64_t{0}, n);
    return;
  }
#pragma omp parallel num_threads(threads)
  {
    const int64_t tid = omp_get_thread_num(), nt = omp_get_num_threads();
    const int64_t begin = n * tid / nt, end = n * (tid + 1) / nt;
    if (begin < end) fn(begin, end);
  }
}

}  // namespace mg
