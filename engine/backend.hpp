// The narrow interface between ops and devices (after ggml's backends). An op validates its
// arguments, allocates its outputs and records autograd in engine/ops; the arithmetic happens
// behind this interface, so the CPU and CUDA backends implement the same short list of kernels
// and can be run side by side and compared. Ops never branch on the device themselves.
//
// Conventions: every `out` argument is a freshly allocated contiguous tensor of the right shape
// and dtype unless a line says otherwise; inputs may have any strides (a broadcast input has
// stride 0 in the broadcast dims). Tensors are passed as handles (const Tensor&) even when
// written to.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "engine/math/elementwise_math.hpp"
#include "engine/tensor.hpp"

namespace mg {

// The weights of one group of grouped_mlp (engine/ops/grouped_mlp.hpp): w1 [H, D], b1 [H], w2
// [D_out, H], b2 [D_out]; the biases may be undefined. As gradient outputs, undefined = not wanted.
struct GroupedMlpWeights {
  Tensor w1, b1, w2, b2;
};

// Where each group's rows live: group g owns rows [offset[g], offset[g + 1]) of x [P, D] and y
// [P, D_out], and its hidden activations [n_g, H_g] start at hidden_offset[g] of one flat buffer.
struct GroupedMlpLayout {
  std::vector<int64_t> offset;         // [G + 1]
  std::vector<int64_t> hidden;         // H_g
  std::vector<int64_t> hidden_offset;  // [G + 1]
  int64_t D = 0, D_out = 0;
  int64_t rows(int64_t g) const { return offset[g + 1] - offset[g]; }
};

// The whole error text for a bad index value: the op words it (naming itself, the valid range and
// its operands), a backend only finds the value, perhaps long after the op has returned.
using IndexErrorMessage = std::function<std::string(int32_t value)>;

enum class ReduceOp { Sum, Max, Min };
enum class RandomDist { Uniform, Normal };

// A 2-d sliding window (conv2d, max_pool2d): output row oh reads input rows
// oh * stride_h - pad_h + i * dilation_h for i in [0, kernel_h), and likewise for columns. Rows and
// columns outside the input read as zero (conv) or are skipped (pooling).
struct Window2d {
  int64_t kernel_h = 1, kernel_w = 1;
  int64_t stride_h = 1, stride_w = 1;
  int64_t pad_h = 0, pad_w = 0;
  int64_t dilation_h = 1, dilation_w = 1;
  int64_t out_h = 0, out_w = 0;
};

// Separable averaging windows (avg_pool2d, adaptive_avg_pool2d): output (oh, ow) is the sum of
// input rows [row_begin[oh], row_end[oh]) x columns [col_begin[ow], col_end[ow]), divided by
// row_div[oh] * col_div[ow]. The ops compute these with torch's formulas, so every backend shares
// one definition of padding, ceil_mode and count_include_pad.
struct AvgWindows {
  std::vector<int64_t> row_begin, row_end, col_begin, col_end;
  std::vector<double> row_div, col_div;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual const char* name() const = 0;

  // ---- memory
  virtual void* allocate(size_t nbytes) = 0;
  virtual void deallocate(void* ptr) = 0;

  // ---- data movement. copy: same shape, any strides, dtype cast allowed; dst may be strided.
  virtual void copy(const Tensor& src, const Tensor& dst) = 0;
  virtual void fill(const Tensor& dst, double value) = 0;  // dst may be strided

  // ---- element-wise: inputs already broadcast (expanded) to out's shape
  virtual void unary(math::UnaryOp op, math::UnaryParams params, const Tensor& x,
                     const Tensor& out) = 0;
  // out = grad * f'(x), given x and y = f(x)
  virtual void unary_backward(math::UnaryOp op, math::UnaryParams params, const Tensor& x,
                              const Tensor& y, const Tensor& grad, const Tensor& out) = 0;
  virtual void binary(math::BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out) = 0;
  // out = cond != 0 ? a : b
  virtual void where(const Tensor& cond, const Tensor& a, const Tensor& b, const Tensor& out) = 0;

  // ---- reductions of each row of a contiguous [rows, cols] tensor into values [rows];
  // indices [rows] (int32, first occurrence) is filled for Max/Min when defined. For Sum, x may
  // instead have adjacent rows (stride(0) == 1, any stride(1)): the column sums of a matrix.
  virtual void reduce_rows(ReduceOp op, const Tensor& x, const Tensor& values,
                           const Tensor& indices) = 0;

  // ---- out[i] = a[i] @ b[i] for a [batch, M, K], b [batch, K, N] with any strides
  virtual void matmul(const Tensor& a, const Tensor& b, const Tensor& out) = 0;

  // ---- 2-d convolution on contiguous NCHW tensors: x [N, C, H, W], weight [O, C/groups, kh, kw],
  // bias [O] or undefined, out/grad [N, O, out_h, out_w]. Implementations must not hold the
  // unfolded input of the whole batch at once (a CNN batch would need hundreds of MB).
  virtual void conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias,
                      const Window2d& window, int64_t groups, const Tensor& out) = 0;
  virtual void conv2d_backward_input(const Tensor& grad, const Tensor& weight,
                                     const Window2d& window, int64_t groups,
                                     const Tensor& grad_x) = 0;
  virtual void conv2d_backward_weight(const Tensor& x, const Tensor& grad, const Window2d& window,
                                      int64_t groups, const Tensor& grad_weight) = 0;

  // ---- 2-d pooling on contiguous [N, C, H, W] -> [N, C, out_h, out_w]. max_pool2d's indices
  // (int32) are flat positions ih * W + iw in the input plane, the first maximum on ties, a NaN
  // winning as in torch. The backward kernels write every element of grad_x.
  virtual void max_pool2d(const Tensor& x, const Window2d& window, const Tensor& out,
                          const Tensor& indices) = 0;
  virtual void max_pool2d_backward(const Tensor& grad, const Tensor& indices,
                                   const Tensor& grad_x) = 0;
  virtual void avg_pool2d(const Tensor& x, const AvgWindows& windows, const Tensor& out) = 0;
  virtual void avg_pool2d_backward(const Tensor& grad, const AvgWindows& windows,
                                   const Tensor& grad_x) = 0;

  // ---- batch normalization of a contiguous x [N, C, S] (S: the trailing dims flattened), per
  // channel C, with torch's formulas (ATen/native/cpu/batch_norm_kernel.cpp):
  // stats: mean [C], biased var [C] and invstd = 1 / sqrt(var + eps) [C], accumulated in double.
  virtual void batch_norm_stats(const Tensor& x, double eps, const Tensor& mean, const Tensor& var,
                                const Tensor& invstd) = 0;
  // out = x * alpha + beta with alpha = invstd * weight, beta = bias - mean * alpha; weight and
  // bias [C] may be undefined (1 and 0).
  virtual void batch_norm_forward(const Tensor& x, const Tensor& mean, const Tensor& invstd,
                                  const Tensor& weight, const Tensor& bias, const Tensor& out) = 0;
  // From grad [N, C, S]: with sum = sum(grad), dotp = sum((x - mean) * grad) per channel,
  //   grad_x = (grad - sum / M - (x - mean) * dotp * invstd^2 / M) * invstd * weight  (batch stats,
  //            M = N * S) or grad * invstd * weight (running stats),
  //   grad_weight = dotp * invstd, grad_bias = sum.
  // Each output may be undefined (not needed); weight may be undefined (1).
  virtual void batch_norm_backward(const Tensor& grad, const Tensor& x, const Tensor& mean,
                                   const Tensor& invstd, const Tensor& weight, bool batch_stats,
                                   const Tensor& grad_x, const Tensor& grad_weight,
                                   const Tensor& grad_bias) = 0;

  // ---- softmax / log_softmax of each row of a contiguous [rows, cols] tensor, and backward
  // from the output y: out = y * (g - sum(g*y)) or g - exp(y) * sum(g) for log.
  virtual void softmax_rows(const Tensor& x, const Tensor& out, bool log) = 0;
  virtual void softmax_rows_backward(const Tensor& y, const Tensor& grad, const Tensor& out,
                                     bool log) = 0;

  // ---- index validation: every value of `index` (int32, contiguous) must be in [0, size) or
  // equal `ignore`. The CPU throws mg::Error(message(v)) at once for the first bad v in index
  // order. A GPU checks on the device instead, so that no index travels to the host: the error of
  // the first failing check (its first bad value) is thrown at the device's next synchronization
  // with the host (a copy to the host, mg::cuda::synchronize()), with a note saying so.
  virtual void check_index_range(const Tensor& index, int64_t size, std::optional<int32_t> ignore,
                                 IndexErrorMessage message) = 0;

  // ---- indexing on contiguous tensors; index tensors are int32 and passed check_index_range.
  // Where that check reports later, the kernels skip out-of-range values (a bad index must not
  // touch memory outside the tensor before its error is thrown).
  virtual void index_select(const Tensor& x, int64_t dim, const Tensor& index,
                            const Tensor& out) = 0;
  // out (contiguous, in place) .index_add_(dim, index, src)
  virtual void index_add(const Tensor& out, int64_t dim, const Tensor& index,
                         const Tensor& src) = 0;
  virtual void gather(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& out) = 0;
  // out (contiguous, in place) .scatter_add_(dim, index, src)
  virtual void scatter_add(const Tensor& out, int64_t dim, const Tensor& index,
                           const Tensor& src) = 0;
  // per row of a contiguous [rows, cols] tensor: the k largest (or smallest), ties by lower index
  virtual void topk_rows(const Tensor& x, int64_t k, bool largest, const Tensor& values,
                         const Tensor& indices) = 0;
  // per row, stable
  virtual void sort_rows(const Tensor& x, bool descending, const Tensor& values,
                         const Tensor& indices) = 0;

  // ---- stable counting sort of a contiguous int32 `keys` [n] into buckets 0 .. B-1 (B =
  // num_buckets): writes to out [n] (int32) the positions i, bucket by bucket, each bucket in
  // increasing i and cut after its first `limit` keys, and returns how many keys each bucket got
  // before the cut, [B + 1], the last entry counting keys outside [0, B) (not placed). The counts
  // come back to the host because they size every bucket's slice (the MoE experts' batches).
  virtual std::vector<int64_t> bucket_sort(const Tensor& keys, int64_t num_buckets, int64_t limit,
                                           const Tensor& out) = 0;

  // ---- grouped Linear -> ReLU -> Linear on contiguous tensors (the MoE experts' FFN): for each
  // group's rows, h = relu(x W1^T + b1) (kept for the backward) and y = h W2^T + b2. The backward
  // writes every defined output: grad_x [P, D] and the groups' weight gradients.
  virtual void grouped_mlp_forward(const GroupedMlpLayout& layout,
                                   const std::vector<GroupedMlpWeights>& weights, const Tensor& x,
                                   const Tensor& h, const Tensor& y) = 0;
  virtual void grouped_mlp_backward(const GroupedMlpLayout& layout,
                                    const std::vector<GroupedMlpWeights>& weights, const Tensor& x,
                                    const Tensor& h, const Tensor& grad_y, const Tensor& grad_x,
                                    const std::vector<GroupedMlpWeights>& grads) = 0;

  // ---- random: element i of `out` (contiguous) draws from Philox counter `offset + i` of `seed`,
  // so the stream does not depend on the thread count or the device: uniform and integer draws are
  // bit-identical everywhere; normal draws go through each device's log and cos and agree to a few
  // float64 ulp (float32 normals agree unless a value falls on a float rounding boundary).
  virtual void fill_random(const Tensor& out, RandomDist dist, uint64_t seed, uint64_t offset,
                           double a, double b) = 0;
};

// The backend that owns memory and kernels for `device`; throws a clear mg::Error for a device
// this build or this machine cannot serve.
Backend& backend_for(Device device);
inline Backend& backend_of(const Tensor& t) { return backend_for(t.device()); }

}  // namespace mg
