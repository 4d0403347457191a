// The CUDA backend: cuBLAS for GEMMs, small kernels for everything else, one stream and one
// caching allocator per device. Its kernels are split by family over cuda_*.cu files mirroring
// engine/cpu/; this header is the one place that lists them. It includes no CUDA header, so the
// C++ side (engine/backend.cpp) can name the class.
#pragma once
#include "engine/backend.hpp"

namespace mg::cuda {

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(int device) : device_(device) {}
  int device() const { return device_; }
  const char* name() const override { return "cuda"; }
  void* allocate(size_t nbytes) override;
  void deallocate(void* ptr) override;
  void copy(const Tensor& src, const Tensor& dst) override;
  void fill(const Tensor& dst, double value) override;
  void unary(math::UnaryOp op, math::UnaryParams params, const Tensor& x,
             const Tensor& out) override;
  void unary_backward(math::UnaryOp op, math::UnaryParams params, const Tensor& x,
                      const Tensor& y, const Tensor& grad, const Tensor& out) override;
  void binary(math::BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out) override;
  void where(const Tensor& cond, const Tensor& a, const Tensor& b, const Tensor& out) override;
  void reduce_rows(ReduceOp op, const Tensor& x, const Tensor& values,
                   const Tensor& indices) override;
  void matmul(const Tensor& a, const Tensor& b, const Tensor& out) override;
  void conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias, const Window2d& window,
              int64_t groups, const Tensor& out) override;
  void conv2d_backward_input(const Tensor& grad, const Tensor& weight, const Window2d& window,
                             int64_t groups, const Tensor& grad_x) override;
  void conv2d_backward_weight(const Tensor& x, const Tensor& grad, const Window2d& window,
                              int64_t groups, const Tensor& grad_weight) override;
  void max_pool2d(const Tensor& x, const Window2d& window, const Tensor& out,
                  const Tensor& indices) override;
  void max_pool2d_backward(const Tensor& grad, const Tensor& indices,
                           const Tensor& grad_x) override;
  void avg_pool2d(const Tensor& x, const AvgWindows& windows, const Tensor& out) override;
  void avg_pool2d_backward(const Tensor& grad, const AvgWindows& windows,
                           const Tensor& grad_x) override;
  void batch_norm_stats(const Tensor& x, double eps, const Tensor& mean, const Tensor& var,
                        const Tensor& invstd) override;
  void batch_norm_forward(const Tensor& x, const Tensor& mean, const Tensor& invstd,
                          const Tensor& weight, const Tensor& bias, const Tensor& out) override;
  void batch_norm_backward(const Tensor& grad, const Tensor& x, const Tensor& mean,
                           const Tensor& invstd, const Tensor& weight, bool batch_stats,
                           const Tensor& grad_x, const Tensor& grad_weight,
                           const Tensor& grad_bias) override;
  void softmax_rows(const Tensor& x, const Tensor& out, bool log) override;
  void softmax_rows_backward(const Tensor& y, const Tensor& grad, const Tensor& out,
                             bool log) override;
  void check_index_range(const Tensor& index, int64_t size, std::optional<int32_t> ignore,
                         IndexErrorMessage message) override;
  void index_select(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& out) override;
  void index_add(const Tensor& out, int64_t dim, const Tensor& index, const Tensor& src) override;
  void gather(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& out) override;
  void scatter_add(const Tensor& out, int64_t dim, const Tensor& index, const Tensor& src) override;
  void topk_rows(const Tensor& x, int64_t k, bool largest, const Tensor& values,
                 const Tensor& indices) override;
  void sort_rows(const Tensor& x, bool descending, const Tensor& values,
                 const Tensor& indices) override;
  std::vector<int64_t> bucket_sort(const Tensor& keys, int64_t num_buckets, int64_t limit,
                                   const Tensor& out) override;
  void grouped_mlp_forward(const GroupedMlpLayout& layout,
                           const std::vector<GroupedMlpWeights>& weights, const Tensor& x,
                           const Tensor& h, const Tensor& y) override;
  void grouped_mlp_backward(const GroupedMlpLayout& layout,
                            const std::vector<GroupedMlpWeights>& weights, const Tensor& x,
                            const Tensor& h, const Tensor& grad_y, const Tensor& grad_x,
                            const std::vector<GroupedMlpWeights>& grads) override;
  void fill_random(const Tensor& out, RandomDist dist, uint64_t seed, uint64_t offset, double a,
                   double b) override;

 private:
  int device_;
};

// The backend of CUDA device `index`; a clear mg::Error when no such device can be used.
Backend& backend_for_device(int index);

}  // namespace mg::cuda
