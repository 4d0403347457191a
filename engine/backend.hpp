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

#include "engine/math/elementwise_math.hpp"
#include "engine/tensor.hpp"

namespace mg {

enum class ReduceOp { Sum, Max, Min };
enum class RandomDist { Uniform, Normal };

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
  // indices [rows] (int32, first occurrence) is filled for Max/Min when defined.
  virtual void reduce_rows(ReduceOp op, const Tensor& x, const Tensor& values,
                           const Tensor& indices) = 0;

  // ---- out[i] = a[i] @ b[i] for a [batch, M, K], b [batch, K, N] with any strides
  virtual void matmul(const Tensor& a, const Tensor& b, const Tensor& out) = 0;

  // ---- softmax / log_softmax of each row of a contiguous [rows, cols] tensor, and backward
  // from the output y: out = y * (g - sum(g*y)) or g - exp(y) * sum(g) for log.
  virtual void softmax_rows(const Tensor& x, const Tensor& out, bool log) = 0;
  virtual void softmax_rows_backward(const Tensor& y, const Tensor& grad, const Tensor& out,
                                     bool log) = 0;

  // ---- indexing on contiguous tensors; index tensors are int32 and already bounds-checked
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

  // ---- random: element i of `out` (contiguous) draws from Philox counter `offset + i` of `seed`,
  // so the stream does not depend on the thread count or the device.
  virtual void fill_random(const Tensor& out, RandomDist dist, uint64_t seed, uint64_t offset,
                           double a, double b) = 0;
};

// The backend that owns memory and kernels for `device`; throws a clear mg::Error for a device
// this build or this machine cannot serve.
Backend& backend_for(Device device);
inline Backend& backend_of(const Tensor& t) { return backend_for(t.device()); }

}  // namespace mg
