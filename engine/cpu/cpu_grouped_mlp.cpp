// The CPU kernels of grouped_mlp (engine/ops/grouped_mlp.hpp): every group's Linear -> ReLU ->
// Linear on its rows, the MoE experts' FFN. The groups' GEMMs are split into tasks run concurrently
// on the engine's threads, each task single-threaded: many small groups (E = 64 experts gives ~128
// rows each) then run as fast as a few large ones, where one after another each small GEMM would
// run far below speed (the MoE reference's E = 64 slowdown, shared/reference/README.md). The task
// cuts do not depend on the thread count, nor do the results.
#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "engine/cpu/cpu_backend.hpp"
#include "engine/cpu/gemm_f32.hpp"
#include "engine/math/elementwise_math.hpp"
#include "engine/parallel.hpp"

namespace mg::cpu {
namespace {

// A piece of one group's work: rows [begin, end) of its slice.
struct Task {
  int64_t group = 0, begin = 0, end = 0;
  double cost = 0;
};

// Splits [0, n) of group e into `pieces` near-equal tasks of `cost_per_row` per row.
void add_tasks(std::vector<Task>& tasks, int64_t e, int64_t n, double cost_per_row, int64_t pieces) {
  if (n <= 0) return;
  pieces = std::clamp<int64_t>(pieces, 1, n);
  for (int64_t i = 0; i < pieces; ++i) {
    const int64_t begin = n * i / pieces, end = n * (i + 1) / pieces;
    tasks.push_back({e, begin, end, (end - begin) * cost_per_row});
  }
}

// How the work is cut, independent of the thread count (a GEMM's rounding can depend on its shape,
// so fixed cuts keep results identical for any number of threads). Row tasks take at most
// kTaskRows inputs: a backward task re-packs the group's weights, so larger is cheaper, while E = 4
// still gets 16 tasks for 2 threads (512 measured ~4% faster than 256 at E = 4 and 16 here).
// Weight gradients are cut into 2-d tiles of about kTileMacs multiply-adds, as square as the
// matrix allows: a task re-packs its operands, and a square tile packs the least for its work.
constexpr int64_t kTaskRows = 512;
constexpr double kTileMacs = 64.0 * (1 << 20);
constexpr int64_t kMinTileSide = 16;
int64_t row_pieces(int64_t n) { return (n + kTaskRows - 1) / kTaskRows; }

// A tile [r0, r1) x [c0, c1) of weight gradient `job`.
struct Tile {
  int64_t job = 0, r0 = 0, r1 = 0, c0 = 0, c1 = 0;
  double cost = 0;
};

// Tiles of an [R, C] gradient whose every element sums n products.
void add_tiles(std::vector<Tile>& tiles, int64_t job, int64_t R, int64_t C, int64_t n) {
  const double macs = double(R) * C * n;
  const int64_t wanted = std::max<int64_t>(1, std::llround(macs / kTileMacs));
  int64_t rt = 1, ct = 1;
  while (rt * ct < wanted) {
    const bool rows_longer = double(R) / rt >= double(C) / ct;
    if (rows_longer && R / (rt + 1) >= kMinTileSide) ++rt;
    else if (C / (ct + 1) >= kMinTileSide) ++ct;
    else if (R / (rt + 1) >= kMinTileSide) ++rt;
    else break;
  }
  for (int64_t i = 0; i < rt; ++i)
    for (int64_t j = 0; j < ct; ++j) {
      Tile t{job, R * i / rt, R * (i + 1) / rt, C * j / ct, C * (j + 1) / ct, 0};
      t.cost = double(t.r1 - t.r0) * (t.c1 - t.c0) * n;
      tiles.push_back(t);
    }
}

// Runs fn(task) for every task on the engine's threads, heaviest first (longest-processing-time
// order keeps the threads' loads even). Each task writes its own outputs and runs single-threaded,
// so the result does not depend on the thread count or on which thread took which task.
template <class TaskT, class F>
void run_tasks(std::vector<TaskT>& tasks, const F& fn) {
  std::stable_sort(tasks.begin(), tasks.end(), [](const TaskT& a, const TaskT& b) { return a.cost > b.cost; });
  const int64_t n = static_cast<int64_t>(tasks.size());
  const int threads = static_cast<int>(std::min<int64_t>(get_num_threads(), n));
  if (threads <= 1 || omp_in_parallel()) {
    for (const TaskT& t : tasks) fn(t);
    return;
  }
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
  for (int64_t i = 0; i < n; ++i) fn(tasks[i]);
}

// C [M, N] (rows ldc apart) = A [M, K] @ B [K, N], A and B given by element strides; on the
// calling thread only. Every element of C is one sum over k in order, so a result does not depend
// on how the work was cut, on the thread or on memory alignment. Float32 takes the engine's own
// GEMM (engine/cpu/gemm_f32.hpp, the one every matmul uses, which sums that way); other dtypes
// (float64: gradient checks and exact comparisons) a plain loop.
template <class T>
void gemm(int64_t M, int64_t N, int64_t K, const T* A, int64_t a_row, int64_t a_col, const T* B,
          int64_t b_row, int64_t b_col, T* C, int64_t ldc) {
  if constexpr (std::is_same_v<T, float>) {
    if (cpu::gemm_f32_available()) {
      cpu::gemm_f32(M, N, K, A, a_row, a_col, B, b_row, b_col, C, ldc, /*parallel=*/false);
      return;
    }
  }
  for (int64_t i = 0; i < M; ++i) {
    T* c = C + i * ldc;
    const T* a = A + i * a_row;
    if (b_col == 1) {  // rows of B contiguous: accumulate whole rows of C
      std::fill_n(c, N, T(0));
      for (int64_t k = 0; k < K; ++k) {
        const T ak = a[k * a_col];
        const T* b = B + k * b_row;
        for (int64_t j = 0; j < N; ++j) c[j] += ak * b[j];
      }
    } else {
      for (int64_t j = 0; j < N; ++j) {
        T sum = 0;
        for (int64_t k = 0; k < K; ++k) sum += a[k * a_col] * B[k * b_row + j * b_col];
        c[j] = sum;
      }
    }
  }
}

template <class T>
const T* data_or_null(const Tensor& t) {
  return t.defined() ? t.data_ptr<T>() : nullptr;
}

// Inputs per GEMM call in the forward: within a task, inputs go kChunk at a time through a
// feature-major scratch (see grouped_mlp_forward_impl) that stays in L2.
constexpr int64_t kChunk = 128;

// out[j * ld_out + d] = in[d * m + j] (+ bias[d]) for d < rows, j < m: a feature-major [rows, m]
// block written input-major, in 32 x 32 blocks so that both sides stay in cache.
template <class T>
void transpose_out(const T* in, int64_t rows, int64_t m, const T* bias, T* out, int64_t ld_out) {
  constexpr int64_t kBlock = 32;
  for (int64_t d0 = 0; d0 < rows; d0 += kBlock)
    for (int64_t j0 = 0; j0 < m; j0 += kBlock)
      for (int64_t j = j0; j < std::min(m, j0 + kBlock); ++j)
        for (int64_t d = d0; d < std::min(rows, d0 + kBlock); ++d)
          out[j * ld_out + d] = bias ? in[d * m + j] + bias[d] : in[d * m + j];
}

// h = relu(xs W1^T + b1) (saved for backward), ys = h W2^T + b2, for every group's slice.
// Computed feature-major, h^T = W1 xs^T and ys^T = W2 h^T: the GEMMs then read the group's
// weights in place and pack only the inputs' side, small when E is large (input-major, each small
// GEMM re-packs a whole weight matrix, transposed: ~20% slower per group at E = 64). h is saved
// input-major, which the backward's GEMMs prefer.
template <class T>
void grouped_mlp_forward_impl(const GroupedMlpLayout& g, const std::vector<GroupedMlpWeights>& w, const Tensor& xs,
                         const Tensor& h, const Tensor& ys) {
  const int64_t E = static_cast<int64_t>(w.size());
  std::vector<Task> tasks;
  for (int64_t e = 0; e < E; ++e)
    add_tasks(tasks, e, g.rows(e), g.hidden[e] * (g.D + g.D_out), row_pieces(g.rows(e)));
  const T* x = xs.data_ptr<T>();
  T* hp = h.data_ptr<T>();
  T* y = ys.data_ptr<T>();
  run_tasks(tasks, [&](const Task& t) {
    const int64_t e = t.group, H = g.hidden[e];
    const T* w1 = w[e].w1.data_ptr<T>();
    const T* w2 = w[e].w2.data_ptr<T>();
    const T* b1 = data_or_null<T>(w[e].b1);
    const T* b2 = data_or_null<T>(w[e].b2);
    std::vector<T> ht(H * kChunk), yt(g.D_out * kChunk);
    for (int64_t j0 = t.begin; j0 < t.end; j0 += kChunk) {
      const int64_t m = std::min(kChunk, t.end - j0);
      // h^T = W1 xs^T: the input rows read as columns, (k, j) at j * D + k
      gemm<T>(H, m, g.D, w1, g.D, 1, x + (g.offset[e] + j0) * g.D, 1, g.D, ht.data(), m);
      for (int64_t r = 0; r < H; ++r) {
        T* row = ht.data() + r * m;
        for (int64_t j = 0; j < m; ++j) row[j] = math::ReluOp{}(b1 ? row[j] + b1[r] : row[j], {});
      }
      gemm<T>(g.D_out, m, H, w2, H, 1, ht.data(), m, 1, yt.data(), m);
      transpose_out<T>(yt.data(), g.D_out, m, b2, y + (g.offset[e] + j0) * g.D_out, g.D_out);
      transpose_out<T>(ht.data(), H, m, nullptr, hp + g.hidden_offset[e] + j0 * H, H);
    }
  });
}

// Which gradients the backward computes (frozen groups and a constant input need none): the
// defined outputs.
struct NeedGrad {
  bool xs = false;
  std::vector<uint8_t> w1, b1, w2, b2;  // per group
  NeedGrad(const Tensor& grad_x, const std::vector<GroupedMlpWeights>& grads) : xs(grad_x.defined()) {
    for (const GroupedMlpWeights& g : grads) {
      w1.push_back(g.w1.defined());
      b1.push_back(g.b1.defined());
      w2.push_back(g.w2.defined());
      b2.push_back(g.b2.defined());
    }
  }
};

// Column sums of the [n, cols] block at p (row stride `stride`), into out[0, cols); summed in
// double, as the engine's reductions.
template <class T>
void column_sums(const T* p, int64_t n, int64_t cols, int64_t stride, T* out) {
  std::vector<double> acc(cols, 0.0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < cols; ++j) acc[j] += p[i * stride + j];
  for (int64_t j = 0; j < cols; ++j) out[j] = static_cast<T>(acc[j]);
}

// gh = (gy W2) * relu'(h) and gxs = gh W1 by rows; gW2 = gy^T h, gb2, gW1 = gh^T xs and gb1 by
// 2-d tiles of each weight gradient. A large group runs as row tasks, then (once its gh is
// complete) tile tasks. A small one (at most kTaskRows inputs) runs as a single task, so its gh,
// h and inputs are still in cache when its weight gradients read them: with 64 groups the layer
// is otherwise bound by memory traffic.
template <class T>
void grouped_mlp_backward_impl(const GroupedMlpLayout& g, const std::vector<GroupedMlpWeights>& w,
                               const Tensor& xs, const Tensor& h, const Tensor& gy, const Tensor& gxs,
                               const std::vector<GroupedMlpWeights>& grads) {
  const NeedGrad need(gxs, grads);
  const int64_t E = static_cast<int64_t>(w.size());
  const T* x = xs.data_ptr<T>();
  const T* hp = h.data_ptr<T>();
  const T* gyp = gy.data_ptr<T>();
  // gh is needed for the input gradient and for group e's first layer.
  std::vector<uint8_t> need_gh(E);
  for (int64_t e = 0; e < E; ++e) need_gh[e] = need.xs || need.w1[e] || need.b1[e];
  Tensor gh = Tensor::empty({h.numel()}, h.options());
  T* ghp = gh.data_ptr<T>();

  auto rows_backward = [&](int64_t e, int64_t begin, int64_t end) {
    const int64_t m = end - begin, H = g.hidden[e], row0 = g.offset[e] + begin;
    T* ghrows = ghp + g.hidden_offset[e] + begin * H;
    const T* hrows = hp + g.hidden_offset[e] + begin * H;
    gemm<T>(m, H, g.D_out, gyp + row0 * g.D_out, g.D_out, 1, w[e].w2.data_ptr<T>(), H, 1, ghrows, H);
    for (int64_t i = 0; i < m * H; ++i) ghrows[i] = math::ReluOp{}.grad(hrows[i], hrows[i], ghrows[i], {});
    if (need.xs) gemm<T>(m, g.D, H, ghrows, H, 1, w[e].w1.data_ptr<T>(), g.D, 1, gxs.data_ptr<T>() + row0 * g.D, g.D);
  };

  // Weight gradients: grad [R, C] = A^T B and bias [R] = column sums of A, where A [n, R] and
  // B [n, C] are group e's rows of (gy, h) for gW2 and of (gh, xs) for gW1. Job 2e is gW2, 2e + 1
  // is gW1.
  struct WeightGrad {
    const T *a = nullptr, *b = nullptr;
    int64_t lda = 0, ldb = 0, n = 0;
    T *grad = nullptr, *bias = nullptr;  // null where not wanted
  };
  std::vector<WeightGrad> jobs(2 * E);
  auto tile_backward = [&](const Tile& t) {
    const WeightGrad& j = jobs[t.job];
    const int64_t rows = t.r1 - t.r0, cols = t.c1 - t.c0, C = j.ldb;
    // grad[r0:r1, c0:c1] = A[:, r0:r1]^T B[:, c0:c1]: A's transpose has (r, i) at i * lda + r
    if (j.grad) gemm<T>(rows, cols, j.n, j.a + t.r0, 1, j.lda, j.b + t.c0, j.ldb, 1, j.grad + t.r0 * C + t.c0, C);
    if (j.bias && t.c0 == 0) column_sums(j.a + t.r0, j.n, rows, j.lda, j.bias + t.r0);
  };

  // First pass: row tasks of large groups and whole small groups (group = -1 - e). Second
  // pass: the tiles of the large groups, whose gh is then complete.
  std::vector<Task> first;
  std::vector<Tile> second;
  std::vector<std::vector<Tile>> small_tiles(E);
  for (int64_t e = 0; e < E; ++e) {
    const int64_t n = g.rows(e), H = g.hidden[e];
    if (n == 0) continue;
    std::vector<Tile> tiles;
    if (need.w2[e] || need.b2[e]) {
      jobs[2 * e] = {gyp + g.offset[e] * g.D_out, hp + g.hidden_offset[e], g.D_out, H, n,
                     need.w2[e] ? grads[e].w2.data_ptr<T>() : nullptr, need.b2[e] ? grads[e].b2.data_ptr<T>() : nullptr};
      add_tiles(tiles, 2 * e, g.D_out, H, n);
    }
    if (need.w1[e] || need.b1[e]) {
      jobs[2 * e + 1] = {ghp + g.hidden_offset[e], x + g.offset[e] * g.D, H, g.D, n,
                         need.w1[e] ? grads[e].w1.data_ptr<T>() : nullptr, need.b1[e] ? grads[e].b1.data_ptr<T>() : nullptr};
      add_tiles(tiles, 2 * e + 1, H, g.D, n);
    }
    const double row_cost = H * (g.D_out + (need.xs ? g.D : 0));
    if (row_pieces(n) == 1) {
      double cost = need_gh[e] ? n * row_cost : 0;
      for (const Tile& t : tiles) cost += t.cost;
      first.push_back({-1 - e, 0, n, cost});
      small_tiles[e] = std::move(tiles);
    } else {
      if (need_gh[e]) add_tasks(first, e, n, row_cost, row_pieces(n));
      second.insert(second.end(), tiles.begin(), tiles.end());
    }
  }
  run_tasks(first, [&](const Task& t) {
    if (t.group >= 0) return rows_backward(t.group, t.begin, t.end);
    const int64_t e = -1 - t.group;
    if (need_gh[e]) rows_backward(e, 0, g.rows(e));
    // gW1 first: it reads the gh just written
    for (auto it = small_tiles[e].rbegin(); it != small_tiles[e].rend(); ++it) tile_backward(*it);
  });
  run_tasks(second, tile_backward);
}

}  // namespace

void CpuBackend::grouped_mlp_forward(const GroupedMlpLayout& layout,
                                     const std::vector<GroupedMlpWeights>& weights, const Tensor& x,
                                     const Tensor& h, const Tensor& y) {
  MG_DISPATCH_FLOATING_TYPES(x.dtype(), "grouped_mlp", [&] {
    grouped_mlp_forward_impl<scalar_t>(layout, weights, x, h, y);
  });
}

void CpuBackend::grouped_mlp_backward(const GroupedMlpLayout& layout,
                                      const std::vector<GroupedMlpWeights>& weights, const Tensor& x,
                                      const Tensor& h, const Tensor& grad_y, const Tensor& grad_x,
                                      const std::vector<GroupedMlpWeights>& grads) {
  MG_DISPATCH_FLOATING_TYPES(x.dtype(), "grouped_mlp backward", [&] {
    grouped_mlp_backward_impl<scalar_t>(layout, weights, x, h, grad_y, grad_x, grads);
  });
}

}  // namespace mg::cpu
