// The CUDA kernels of grouped_mlp (engine/ops/grouped_mlp.hpp), after cpu_grouped_mlp.cpp: every
// group's Linear -> ReLU -> Linear on its rows, as cuBLAS GEMMs on the group's slices in place
// (x, h and y are one buffer each; a group is a row range), with the bias + ReLU and its
// derivative from engine/math's ReluOp. Groups run one after another on the device's stream.
//   forward   h = relu(xs W1^T + b1), ys = h W2^T + b2
//   backward  gh = (gy W2) * relu'(h), gxs = gh W1, gW2 = gy^T h, gb2 = colsum(gy),
//             gW1 = gh^T xs, gb1 = colsum(gh)
#include "engine/cuda/cuda_common.cuh"

namespace mg::cuda {
namespace {

// m [rows, cols] += bias per column, then ReLU when `relu`.
template <class T>
__global__ void bias_activation_kernel(T* m, const T* bias, int64_t cols, int64_t total,
                                       bool relu) {
  MG_GRID_STRIDE(i, total) {
    const T v = bias ? m[i] + bias[i % cols] : m[i];
    m[i] = relu ? math::ReluOp{}(v, {}) : v;
  }
}

// g *= relu'(h): h is the ReLU's output, positive exactly where its input was.
template <class T>
__global__ void relu_backward_kernel(T* g, const T* h, int64_t total) {
  MG_GRID_STRIDE(i, total) { g[i] = math::ReluOp{}.grad(h[i], h[i], g[i], {}); }
}

// out[c] = sum over rows of m[r, c], a thread per column adding rows in order (in double).
template <class T>
__global__ void column_sum_kernel(const T* m, T* out, int64_t rows, int64_t cols) {
  MG_GRID_STRIDE(c, cols) {
    double acc = 0;
    for (int64_t r = 0; r < rows; ++r) acc += m[r * cols + c];
    out[c] = static_cast<T>(acc);
  }
}

template <class T>
const T* in(const Tensor& t) { return t.defined() ? static_cast<const T*>(t.raw_data()) : nullptr; }
template <class T>
T* mut(const Tensor& t) { return t.defined() ? static_cast<T*>(t.raw_data()) : nullptr; }

template <class T>
void bias_activation(int device, T* m, const T* bias, int64_t rows, int64_t cols, bool relu) {
  if (rows * cols == 0 || (!bias && !relu)) return;
  bias_activation_kernel<<<blocks_for(rows * cols), kThreads, 0, stream_for(device)>>>(
      m, bias, cols, rows * cols, relu);
  MG_CUDA_CHECK_LAUNCH("grouped_mlp bias");
}

template <class T>
void column_sum(int device, const T* m, T* out, int64_t rows, int64_t cols) {
  column_sum_kernel<<<blocks_for(cols), kThreads, 0, stream_for(device)>>>(m, out, rows, cols);
  MG_CUDA_CHECK_LAUNCH("grouped_mlp column sum");
}

}  // namespace

void CudaBackend::grouped_mlp_forward(const GroupedMlpLayout& layout,
                                      const std::vector<GroupedMlpWeights>& weights,
                                      const Tensor& x, const Tensor& h, const Tensor& y) {
  DeviceGuard guard(device_);
  const int64_t D = layout.D, D_out = layout.D_out;
  MG_DISPATCH_FLOATING_TYPES(x.dtype(), "grouped_mlp", [&] {
    using T = scalar_t;
    for (size_t g = 0; g < weights.size(); ++g) {
      const int64_t n = layout.rows(static_cast<int64_t>(g)), H = layout.hidden[g];
      if (n == 0) continue;
      const GroupedMlpWeights& w = weights[g];
      const T* xs = in<T>(x) + layout.offset[g] * D;
      T* hs = mut<T>(h) + layout.hidden_offset[g];
      T* ys = mut<T>(y) + layout.offset[g] * D_out;
      gemm<T>(device_, false, true, n, H, D, T(1), xs, D, 0, in<T>(w.w1), D, 0, T(0), hs, H, 0);
      bias_activation(device_, hs, in<T>(w.b1), n, H, true);
      gemm<T>(device_, false, true, n, D_out, H, T(1), hs, H, 0, in<T>(w.w2), H, 0, T(0), ys,
              D_out, 0);
      bias_activation(device_, ys, in<T>(w.b2), n, D_out, false);
    }
  });
}

void CudaBackend::grouped_mlp_backward(const GroupedMlpLayout& layout,
                                       const std::vector<GroupedMlpWeights>& weights,
                                       const Tensor& x, const Tensor& h, const Tensor& grad_y,
                                       const Tensor& grad_x,
                                       const std::vector<GroupedMlpWeights>& grads) {
  DeviceGuard guard(device_);
  const int64_t D = layout.D, D_out = layout.D_out;
  MG_DISPATCH_FLOATING_TYPES(x.dtype(), "grouped_mlp_backward", [&] {
    using T = scalar_t;
    for (size_t g = 0; g < weights.size(); ++g) {
      const int64_t n = layout.rows(static_cast<int64_t>(g)), H = layout.hidden[g];
      const GroupedMlpWeights& w = weights[g];
      const GroupedMlpWeights& out = grads[g];
      if (n == 0) {  // no rows: every wanted gradient of this group is zero
        for (const Tensor* t : {&out.w1, &out.b1, &out.w2, &out.b2})
          if (t->defined()) fill(*t, 0.0);
        continue;
      }
      const T* xs = in<T>(x) + layout.offset[g] * D;
      const T* hs = in<T>(h) + layout.hidden_offset[g];
      const T* gy = in<T>(grad_y) + layout.offset[g] * D_out;
      if (out.w2.defined())
        gemm<T>(device_, true, false, D_out, H, n, T(1), gy, D_out, 0, hs, H, 0, T(0),
                mut<T>(out.w2), H, 0);
      if (out.b2.defined()) column_sum(device_, gy, mut<T>(out.b2), n, D_out);
      const bool need_gh = grad_x.defined() || out.w1.defined() || out.b1.defined();
      if (!need_gh) continue;
      const Tensor gh = scratch({n, H}, x.dtype(), device_);
      T* ghp = mut<T>(gh);
      gemm<T>(device_, false, false, n, H, D_out, T(1), gy, D_out, 0, in<T>(w.w2), H, 0, T(0), ghp,
              H, 0);
      relu_backward_kernel<<<blocks_for(n * H), kThreads, 0, stream_for(device_)>>>(ghp, hs, n * H);
      MG_CUDA_CHECK_LAUNCH("grouped_mlp relu backward");
      if (out.w1.defined())
        gemm<T>(device_, true, false, H, D, n, T(1), ghp, H, 0, xs, D, 0, T(0), mut<T>(out.w1), D,
                0);
      if (out.b1.defined()) column_sum(device_, ghp, mut<T>(out.b1), n, H);
      if (grad_x.defined())
        gemm<T>(device_, false, false, n, D, H, T(1), ghp, H, 0, in<T>(w.w1), D, 0, T(0),
                mut<T>(grad_x) + layout.offset[g] * D, D, 0);
    }
  });
}

}  // namespace mg::cuda
