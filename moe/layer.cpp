// MoELayer: routing, sorted dispatch, the experts, the weighted combine, the balancing loss and the
// step statistics (the expert lifecycle is in lifecycle.cpp). Dispatch follows the "sorted" form
// of shared/reference/torch/moe_layer.py (and MegaBlocks' grouping of tokens by expert): a stable
// counting sort of the (input, slot) pairs by expert, one index_select that gathers every kept
// input, each expert run once on its contiguous slice, and one index_add that scatters the
// gate-weighted outputs back.
//
// The experts run one of two ways, with the same results up to the order of floating-point sums:
//   module path   expert->forward(slice) for each expert in turn, recorded op by op. Any module.
//   grouped path  when every expert is a plain Linear -> ReLU -> Linear on the CPU (FFNExpert
//                 without norm and dropout, or such a Sequential): one autograd node whose forward
//                 and backward split the experts' GEMMs into tasks run concurrently on the
//                 engine's threads, each task single-threaded. Many small experts (E = 64 gives
//                 ~128 inputs each) are then as fast as a few large ones; one after another, each
//                 small GEMM would run far below speed (the reference README's E = 64 slowdown).
//                 Its task cuts do not depend on the thread count, nor do its results.
#include "moe/layer.hpp"

#include <algorithm>
#include <cmath>
#include <optional>
#include <type_traits>
#include <typeinfo>

#include "engine/autograd.hpp"
#include "engine/cpu/gemm_f32.hpp"
#include "engine/math/elementwise_math.hpp"
#include "engine/ops.hpp"
#include "engine/parallel.hpp"
#include "engine/profiler.hpp"
#include "moe/expert.hpp"
#include "nn/layers.hpp"

namespace mg::moe {
namespace {

// ---------------------------------------------------------------- dispatch plan (host side)

// The kept (input, slot) pairs grouped by expert: expert e's pairs are [offset[e], offset[e+1]),
// in input order (the counting sort is stable), so capacity keeps each expert's first inputs.
struct DispatchPlan {
  std::vector<int32_t> token;           // [P] input of each kept pair
  std::vector<int32_t> pair;            // [P] its flat position t * k + j in indices / weights
  std::vector<int64_t> offset;          // [E + 1]
  std::vector<int64_t> tokens_per_expert;
  int64_t dropped = 0;
};

// At most ceil(c * T * k / E) pairs per expert; c = 0: no limit. The small slack keeps a product
// that is an integer up to rounding (0.1 * 30 = 3.0000000000000004) from gaining a slot.
int64_t expert_capacity(double capacity_factor, int64_t T, int64_t k, int64_t E) {
  if (capacity_factor <= 0) return T * k;
  const double exact = capacity_factor * static_cast<double>(T * k) / static_cast<double>(E);
  return static_cast<int64_t>(std::ceil(exact - 1e-9 * std::max(1.0, exact)));
}

DispatchPlan plan_dispatch(const Tensor& indices, int64_t E, double capacity_factor) {
  const int64_t T = indices.size(0), k = indices.size(1);
  const Tensor idx = indices.contiguous();
  const int32_t* expert_of = idx.data_ptr<int32_t>();
  std::vector<int64_t> routed(E, 0);
  for (int64_t p = 0; p < T * k; ++p) {
    const int32_t e = expert_of[p];
    MG_CHECK(e >= 0 && e < E, "MoELayer: the router chose expert ", e, " of ", E);
    ++routed[e];
  }
  const int64_t capacity = expert_capacity(capacity_factor, T, k, E);
  DispatchPlan plan;
  plan.offset.assign(E + 1, 0);
  plan.tokens_per_expert.resize(E);
  for (int64_t e = 0; e < E; ++e) {
    plan.tokens_per_expert[e] = std::min(routed[e], capacity);
    plan.offset[e + 1] = plan.offset[e] + plan.tokens_per_expert[e];
    plan.dropped += routed[e] - plan.tokens_per_expert[e];
  }
  const int64_t P = plan.offset[E];
  plan.token.resize(P);
  plan.pair.resize(P);
  std::vector<int64_t> next(plan.offset.begin(), plan.offset.end() - 1);
  for (int64_t p = 0; p < T * k; ++p) {
    const int32_t e = expert_of[p];
    if (next[e] == plan.offset[e + 1]) continue;  // over capacity: dropped
    plan.token[next[e]] = static_cast<int32_t>(p / k);
    plan.pair[next[e]] = static_cast<int32_t>(p);
    ++next[e];
  }
  return plan;
}

// ---------------------------------------------------------------- grouped Linear-ReLU-Linear

struct FfnWeights {
  Tensor w1, b1;  // [H, D], [H] or undefined
  Tensor w2, b2;  // [D_out, H], [D_out] or undefined
};

// Dropout is the identity when p = 0 or in eval mode, Identity always.
bool is_identity(const nn::Module& m) {
  if (typeid(m) == typeid(nn::Identity)) return true;
  if (typeid(m) != typeid(nn::Dropout)) return false;
  return static_cast<const nn::Dropout&>(m).p == 0.0 || !m.is_training();
}

// The experts' weights when every one computes exactly Linear -> ReLU -> Linear on CPU tensors of
// x's dtype; nullopt otherwise (the module path then runs them). Exact types only: a subclass
// may override forward.
std::optional<std::vector<FfnWeights>> linear_relu_linear(const std::vector<nn::ModulePtr>& experts,
                                                          const Tensor& x) {
  if (!x.device().is_cpu()) return std::nullopt;
  std::vector<FfnWeights> all;
  for (const nn::ModulePtr& expert : experts) {
    const std::type_info& type = typeid(*expert);
    if (type != typeid(nn::Sequential) && type != typeid(FFNExpert)) return std::nullopt;
    std::vector<nn::ModulePtr> layers;
    for (const nn::ModulePtr& child : expert->children())
      if (!is_identity(*child)) layers.push_back(child);
    if (layers.size() != 3 || typeid(*layers[0]) != typeid(nn::Linear) ||
        typeid(*layers[1]) != typeid(nn::ReLU) || typeid(*layers[2]) != typeid(nn::Linear))
      return std::nullopt;
    const auto& l1 = static_cast<const nn::Linear&>(*layers[0]);
    const auto& l2 = static_cast<const nn::Linear&>(*layers[2]);
    FfnWeights w{l1.weight, l1.bias, l2.weight, l2.bias};
    for (const Tensor* t : {&w.w1, &w.b1, &w.w2, &w.b2})
      if (t->defined() && (t->dtype() != x.dtype() || !t->device().is_cpu() || !t->is_contiguous()))
        return std::nullopt;
    if (w.w1.size(1) != x.size(1) || w.w2.size(1) != w.w1.size(0)) return std::nullopt;
    if (!all.empty() && w.w2.size(0) != all.front().w2.size(0)) return std::nullopt;
    all.push_back(std::move(w));
  }
  return all;
}

// A piece of one expert's work: rows [begin, end) of its slice.
struct Task {
  int64_t expert = 0, begin = 0, end = 0;
  double cost = 0;
};

// Splits [0, n) of expert e into `pieces` near-equal tasks of `cost_per_row` per row.
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
// kTaskRows inputs: a backward task re-packs the expert's weights, so larger is cheaper, while E = 4
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

// Geometry shared by the grouped forward and backward.
struct Groups {
  std::vector<int64_t> offset;         // [E + 1] slice of each expert in xs / ys
  std::vector<int64_t> hidden;         // H_e
  std::vector<int64_t> hidden_offset;  // [E + 1] start of expert e's [n_e, H_e] block in h
  int64_t D = 0, D_out = 0;
  int64_t rows(int64_t e) const { return offset[e + 1] - offset[e]; }
};

// Inputs per GEMM call in the forward: within a task, inputs go kChunk at a time through a
// feature-major scratch (see grouped_ffn_forward) that stays in L2.
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

// h = relu(xs W1^T + b1) (saved for backward), ys = h W2^T + b2, for every expert's slice.
// Computed feature-major, h^T = W1 xs^T and ys^T = W2 h^T: the GEMMs then read the expert's
// weights in place and pack only the inputs' side, small when E is large (input-major, each small
// GEMM re-packs a whole weight matrix, transposed: ~20% slower per expert at E = 64). h is saved
// input-major, which the backward's GEMMs prefer.
template <class T>
void grouped_ffn_forward(const Groups& g, const std::vector<FfnWeights>& w, const Tensor& xs,
                         const Tensor& h, const Tensor& ys) {
  const int64_t E = static_cast<int64_t>(w.size());
  std::vector<Task> tasks;
  for (int64_t e = 0; e < E; ++e)
    add_tasks(tasks, e, g.rows(e), g.hidden[e] * (g.D + g.D_out), row_pieces(g.rows(e)));
  const T* x = xs.data_ptr<T>();
  T* hp = h.data_ptr<T>();
  T* y = ys.data_ptr<T>();
  run_tasks(tasks, [&](const Task& t) {
    const int64_t e = t.expert, H = g.hidden[e];
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

// Which gradients the backward computes (frozen experts and a constant input need none).
struct NeedGrad {
  bool xs = false;
  std::vector<uint8_t> w1, b1, w2, b2;  // per expert
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
// 2-d tiles of each weight gradient. A large expert runs as row tasks, then (once its gh is
// complete) tile tasks. A small one (at most kTaskRows inputs) runs as a single task, so its gh,
// h and inputs are still in cache when its weight gradients read them: with 64 experts the layer
// is otherwise bound by memory traffic.
template <class T>
void grouped_ffn_backward(const Groups& g, const std::vector<FfnWeights>& w, const NeedGrad& need,
                          const Tensor& xs, const Tensor& h, const Tensor& gy, const Tensor& gxs,
                          const std::vector<Tensor>& gw1, const std::vector<Tensor>& gb1,
                          const std::vector<Tensor>& gw2, const std::vector<Tensor>& gb2) {
  const int64_t E = static_cast<int64_t>(w.size());
  const T* x = xs.data_ptr<T>();
  const T* hp = h.data_ptr<T>();
  const T* gyp = gy.data_ptr<T>();
  // gh is needed for the input gradient and for expert e's first layer.
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
  // B [n, C] are expert e's rows of (gy, h) for gW2 and of (gh, xs) for gW1. Job 2e is gW2, 2e + 1
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

  // First pass: row tasks of large experts and whole small experts (expert = -1 - e). Second
  // pass: the tiles of the large experts, whose gh is then complete.
  std::vector<Task> first;
  std::vector<Tile> second;
  std::vector<std::vector<Tile>> small_tiles(E);
  for (int64_t e = 0; e < E; ++e) {
    const int64_t n = g.rows(e), H = g.hidden[e];
    if (n == 0) continue;
    std::vector<Tile> tiles;
    if (need.w2[e] || need.b2[e]) {
      jobs[2 * e] = {gyp + g.offset[e] * g.D_out, hp + g.hidden_offset[e], g.D_out, H, n,
                     need.w2[e] ? gw2[e].data_ptr<T>() : nullptr, need.b2[e] ? gb2[e].data_ptr<T>() : nullptr};
      add_tiles(tiles, 2 * e, g.D_out, H, n);
    }
    if (need.w1[e] || need.b1[e]) {
      jobs[2 * e + 1] = {ghp + g.hidden_offset[e], x + g.offset[e] * g.D, H, g.D, n,
                         need.w1[e] ? gw1[e].data_ptr<T>() : nullptr, need.b1[e] ? gb1[e].data_ptr<T>() : nullptr};
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
    if (t.expert >= 0) return rows_backward(t.expert, t.begin, t.end);
    const int64_t e = -1 - t.expert;
    if (need_gh[e]) rows_backward(e, 0, g.rows(e));
    // gW1 first: it reads the gh just written
    for (auto it = small_tiles[e].rbegin(); it != small_tiles[e].rend(); ++it) tile_backward(*it);
  });
  run_tasks(second, tile_backward);
}

// ys [P, D_out]: every expert's Linear-ReLU-Linear applied to its slice of xs [P, D], as one
// differentiable op in xs and the experts' weights. Experts with an empty slice take no part (no
// gradient, as on the module path).
Tensor grouped_ffn(const Tensor& xs_in, const std::vector<int64_t>& offset, const std::vector<FfnWeights>& w) {
  MG_PROFILE("moe_grouped_ffn");
  const int64_t E = static_cast<int64_t>(w.size());
  const Tensor xs = xs_in.contiguous();
  auto g = std::make_shared<Groups>();
  g->offset = offset;
  g->D = xs.size(1);
  g->D_out = w.front().w2.size(0);
  g->hidden_offset.assign(E + 1, 0);
  for (int64_t e = 0; e < E; ++e) {
    g->hidden.push_back(w[e].w1.size(0));
    g->hidden_offset[e + 1] = g->hidden_offset[e] + g->rows(e) * g->hidden[e];
  }
  Tensor h = Tensor::empty({g->hidden_offset[E]}, xs.options());
  Tensor ys = Tensor::empty({xs.size(0), g->D_out}, xs.options());
  MG_DISPATCH_FLOATING_TYPES(xs.dtype(), "moe_grouped_ffn", [&] { grouped_ffn_forward<scalar_t>(*g, w, xs, h, ys); });

  TensorList inputs{xs_in};
  for (int64_t e = 0; e < E; ++e)
    if (g->rows(e) > 0) inputs.insert(inputs.end(), {w[e].w1, w[e].b1, w[e].w2, w[e].b2});
  if (!any_requires_grad(inputs)) return ys;

  auto need = std::make_shared<NeedGrad>();
  need->xs = xs_in.requires_grad();
  auto saved = std::make_shared<std::vector<FfnWeights>>();
  for (const FfnWeights& we : w) {
    auto wants = [](const Tensor& t) { return uint8_t(t.defined() && t.requires_grad()); };
    need->w1.push_back(wants(we.w1));
    need->b1.push_back(wants(we.b1));
    need->w2.push_back(wants(we.w2));
    need->b2.push_back(wants(we.b2));
    saved->push_back({we.w1.detach(), we.b1.defined() ? we.b1.detach() : Tensor(), we.w2.detach(),
                      we.b2.defined() ? we.b2.detach() : Tensor()});
  }
  return record("moe_grouped_ffn", ys, inputs,
                [g, need, saved, xs = xs.detach(), h](const TensorList& grads) {
    const std::vector<FfnWeights>& w = *saved;
    const int64_t E = static_cast<int64_t>(w.size());
    const Tensor gy = grads[0].contiguous();
    Tensor gxs = need->xs ? Tensor::empty(xs.sizes(), xs.options()) : Tensor();
    std::vector<Tensor> gw1(E), gb1(E), gw2(E), gb2(E);
    for (int64_t e = 0; e < E; ++e) {
      if (g->rows(e) == 0) continue;
      if (need->w1[e]) gw1[e] = Tensor::empty(w[e].w1.sizes(), xs.options());
      if (need->b1[e]) gb1[e] = Tensor::empty(w[e].b1.sizes(), xs.options());
      if (need->w2[e]) gw2[e] = Tensor::empty(w[e].w2.sizes(), xs.options());
      if (need->b2[e]) gb2[e] = Tensor::empty(w[e].b2.sizes(), xs.options());
    }
    MG_DISPATCH_FLOATING_TYPES(xs.dtype(), "moe_grouped_ffn backward", [&] {
      grouped_ffn_backward<scalar_t>(*g, w, *need, xs, h, gy, gxs, gw1, gb1, gw2, gb2);
    });
    TensorList out{gxs};
    for (int64_t e = 0; e < E; ++e)
      if (g->rows(e) > 0) out.insert(out.end(), {gw1[e], gb1[e], gw2[e], gb2[e]});
    return out;
  });
}

// ---------------------------------------------------------------- statistics

// Entropy in nats of a distribution given by non-negative weights (normalized here).
double entropy_of(const std::vector<double>& weights) {
  double total = 0, h = 0;
  for (double v : weights) total += v;
  if (total <= 0) return 0.0;
  for (double v : weights)
    if (v > 0) h -= v / total * std::log(v / total);
  return h;
}

// mean_gate_prob and router_entropy from scores [T, E]. Each row is normalized before its entropy
// is taken, so Sigmoid scores (which need not sum to 1) get the entropy of their shares. Rows are
// summed in fixed blocks combined in order, so the figures do not depend on the thread count.
template <class T>
void score_stats(const Tensor& scores, StepStats& s) {
  const int64_t rows = scores.size(0), E = scores.size(1);
  constexpr int64_t kBlock = 256;
  const int64_t blocks = (rows + kBlock - 1) / kBlock;
  std::vector<double> column_sums(blocks * E, 0.0), entropy_sums(blocks, 0.0);
  const T* p = scores.data_ptr<T>();
  parallel_for(blocks, rows * E * 8, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      double* column = column_sums.data() + b * E;
      for (int64_t t = b * kBlock; t < std::min(rows, (b + 1) * kBlock); ++t) {
        const T* row = p + t * E;
        T total = 0, plogp = 0;
        for (int64_t e = 0; e < E; ++e) {
          column[e] += row[e];
          total += row[e];
          if (row[e] > 0) plogp += row[e] * std::log(row[e]);
        }
        // H = -sum (p/Z) log(p/Z) = log Z - (sum p log p) / Z
        if (total > 0) entropy_sums[b] += std::log(total) - plogp / total;
      }
    }
  });
  s.mean_gate_prob.assign(E, 0.0);
  double entropy = 0;
  for (int64_t b = 0; b < blocks; ++b) {
    entropy += entropy_sums[b];
    for (int64_t e = 0; e < E; ++e) s.mean_gate_prob[e] += column_sums[b * E + e];
  }
  for (double& m : s.mean_gate_prob) m = rows > 0 ? m / rows : 0.0;
  s.router_entropy = rows > 0 ? entropy / rows : 0.0;
}

StepStats step_stats(const Routing& routing, const DispatchPlan& plan, int64_t E, int64_t k,
                     const Router& router, const BalanceLosses& losses) {
  NoGradGuard no_grad;
  StepStats s;
  s.inputs = routing.indices.size(0);
  s.num_experts = E;
  s.top_k = k;
  s.tokens_per_expert = plan.tokens_per_expert;
  s.dropped = plan.dropped;
  int64_t kept = 0, most = 0;
  for (int64_t n : plan.tokens_per_expert) {
    kept += n;
    most = std::max(most, n);
  }
  s.fraction.resize(E);
  for (int64_t e = 0; e < E; ++e) s.fraction[e] = kept > 0 ? double(plan.tokens_per_expert[e]) / kept : 0.0;
  s.load_entropy = entropy_of(s.fraction);
  s.max_over_mean_load = kept > 0 ? double(most) / (double(kept) / E) : 0.0;
  if (routing.scores.defined() && routing.scores.numel() > 0) {
    const Tensor scores = routing.scores.detach().contiguous();
    MG_DISPATCH_FLOATING_TYPES(scores.dtype(), "MoELayer stats", [&] { score_stats<scalar_t>(scores, s); });
  } else {
    s.mean_gate_prob.assign(E, 0.0);
  }
  if (router.config().bias_update_rate > 0 && router.expert_bias.defined())
    s.bias = router.expert_bias.to_vector<double>();
  s.losses = losses;
  return s;
}

}  // namespace

// ---------------------------------------------------------------- MoELayer

MoELayer::MoELayer(MoEConfig config, std::vector<nn::ModulePtr> experts,
                   std::vector<nn::ModulePtr> shared_experts, ExpertFactory factory)
    : Module("MoELayer"),
      config_(std::move(config)),
      experts_(std::move(experts)),
      shared_experts_(std::move(shared_experts)),
      factory_(std::move(factory)) {
  const RouterConfig& rc = config_.router;
  MG_CHECK(!experts_.empty(), "MoELayer: needs at least one expert");
  MG_CHECK(static_cast<int64_t>(experts_.size()) == rc.num_experts, "MoELayer: ", experts_.size(),
           " experts but config.router.num_experts = ", rc.num_experts);
  MG_CHECK(rc.input_dim > 0, "MoELayer: config.router.input_dim must be set (the model dim), got ",
           rc.input_dim);
  MG_CHECK(rc.top_k >= 1 && rc.top_k <= rc.num_experts, "MoELayer: top_k = ", rc.top_k,
           " must be in [1, ", rc.num_experts, "]");
  MG_CHECK(config_.capacity_factor >= 0, "MoELayer: capacity_factor must be >= 0 (0: dropless), got ",
           config_.capacity_factor);
  for (size_t i = 0; i < experts_.size(); ++i) MG_CHECK(experts_[i] != nullptr, "MoELayer: expert ", i, " is null");
  for (size_t i = 0; i < shared_experts_.size(); ++i)
    MG_CHECK(shared_experts_[i] != nullptr, "MoELayer: shared expert ", i, " is null");
  router_ = register_module("router", std::make_shared<Router>(config_.router));
  rebuild_expert_registration();
}

// Children "experts" (a ModuleList: "experts.<i>.<...>") and, when there are any,
// "shared_experts", re-registered after the router in that order whenever experts come or go,
// so parameter order and state_dict names always follow experts_.
void MoELayer::rebuild_expert_registration() {
  for (const char* name : {"experts", "shared_experts"})
    for (const auto& [child, module] : named_children())
      if (child == name) {
        unregister_module(name);
        break;
      }
  auto list = std::make_shared<nn::ModuleList>();
  for (const nn::ModulePtr& e : experts_) list->push_back(e);
  register_module("experts", list);
  if (!shared_experts_.empty()) {
    auto shared = std::make_shared<nn::ModuleList>();
    for (const nn::ModulePtr& e : shared_experts_) shared->push_back(e);
    register_module("shared_experts", shared);
  }
}

nn::ModulePtr MoELayer::expert(int64_t i) const {
  MG_CHECK(i >= 0 && i < num_experts(), "MoELayer: expert ", i, " out of range [0, ", num_experts(), ")");
  return experts_[i];
}

Tensor MoELayer::forward(const Tensor& x) { return forward(x, Tensor()); }

Tensor MoELayer::forward(const Tensor& x, const Tensor& labels) {
  MG_PROFILE("moe_layer");
  const int64_t D = config_.router.input_dim;
  MG_CHECK((x.dim() == 2 || x.dim() == 3) && x.size(-1) == D, "MoELayer: expected input [B, ", D,
           "] or [B, N, ", D, "], got ", shape_str(x.sizes()));
  const int64_t B = x.size(0), N = x.dim() == 3 ? x.size(1) : 1, T = B * N;
  const int64_t E = num_experts(), k = config_.router.top_k;
  MG_CHECK(router_->num_experts() == E, "MoELayer: the router has ", router_->num_experts(),
           " rows but the layer ", E, " experts");
  const Tensor tokens = x.reshape({T, D});

  // Per-example labels become per-token labels (V-MoE routes tokens; the label is the image's).
  Tensor token_labels;
  if (labels.defined()) {
    MG_CHECK(labels.dtype() == kInt32 && (labels.numel() == B || labels.numel() == T),
             "MoELayer: labels must be int32 [B] (or one per token, [B, N]), got ",
             dtype_name(labels.dtype()), " ", shape_str(labels.sizes()), " for input ", shape_str(x.sizes()));
    if (labels.numel() == T) {
      token_labels = labels.reshape({T});
    } else {
      const std::vector<int32_t> per_example = labels.to_vector<int32_t>();
      std::vector<int32_t> per_token(T);
      for (int64_t t = 0; t < T; ++t) per_token[t] = per_example[t / N];
      token_labels = from_vector(per_token, {T}, kInt32);
    }
  }

  Routing routing;
  {
    MG_PROFILE("moe_route");
    routing = router_->route(tokens, token_labels);
  }
  DispatchPlan plan;
  Tensor token_index, xs;
  {
    MG_PROFILE("moe_dispatch");
    plan = plan_dispatch(routing.indices, E, config_.capacity_factor);
    const int64_t P = static_cast<int64_t>(plan.token.size());
    token_index = from_vector(plan.token, {P}, kInt32);
    xs = index_select(tokens, 0, token_index);
  }

  Tensor expert_out;  // [P, D_out], grouped by expert
  int64_t D_out = D;
  {
    MG_PROFILE("moe_experts");
    const auto grouped = linear_relu_linear(experts_, tokens);
    if (grouped) {
      D_out = grouped->front().w2.size(0);
      expert_out = grouped_ffn(xs, plan.offset, *grouped);
    } else {
      TensorList outs;
      for (int64_t e = 0; e < E; ++e) {
        const int64_t n = plan.tokens_per_expert[e];
        if (n == 0) continue;  // skipped: no NaN from an empty batch, no gradient
        outs.push_back(experts_[e]->forward(xs.narrow(0, plan.offset[e], n)));
      }
      if (!outs.empty()) {
        expert_out = outs.size() == 1 ? outs.front() : cat(outs, 0);
        D_out = expert_out.size(1);
      }
    }
  }

  Tensor out;
  {
    MG_PROFILE("moe_combine");
    out = zeros({T, D_out}, x.options());
    if (expert_out.defined()) {
      const int64_t P = expert_out.size(0);
      Tensor pair_weight = index_select(routing.weights.reshape({-1}), 0, from_vector(plan.pair, {P}, kInt32));
      if (pair_weight.dtype() != expert_out.dtype()) pair_weight = pair_weight.to(expert_out.dtype());
      out = index_add(out, 0, token_index, expert_out * pair_weight.unsqueeze(1));
    }
    for (const nn::ModulePtr& shared : shared_experts_) out = out + shared->forward(tokens);
  }

  BalanceLosses losses;
  {
    MG_PROFILE("moe_balance");
    losses = balance_losses(config_.balance, routing, E, k);
  }
  last_aux_loss_ = losses.total;
  {
    MG_PROFILE("moe_stats");
    last_stats_ = step_stats(routing, plan, E, k, *router_, losses);
  }
  last_routing_ = std::move(routing);
  return x.dim() == 3 ? out.reshape({B, N, out.size(1)}) : out;
}

void MoELayer::update_router_bias() {
  if (config_.router.bias_update_rate <= 0 || last_stats_.tokens_per_expert.empty()) return;
  router_->update_bias(last_stats_.tokens_per_expert);
}

}  // namespace mg::moe
