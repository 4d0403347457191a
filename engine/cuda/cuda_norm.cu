// Batch normalization kernels with torch's formulas (backend.hpp), after cpu_norm.cpp: one block
// per channel for the statistics and the backward sums, accumulated in double in the block order
// of cuda_block_reduce.cuh; the statistics take two passes (mean, then squared deviations from
// it) where the CPU merges per-plane moments, which is as exact. The element-wise parts run one
// thread per element with the CPU's expressions in the tensor's dtype.
#include <cmath>

#include "engine/cuda/cuda_block_reduce.cuh"

namespace mg::cuda {
namespace {

struct Planes {
  int64_t N, C, S;  // x viewed as [N, C, S]
  explicit Planes(const Tensor& x)
      : N(x.size(0)), C(x.size(1)), S(N * C == 0 ? 0 : x.numel() / (N * C)) {}
};

// The element i of channel c's N * S elements: sample i / S, position i % S.
__device__ inline int64_t channel_element(int64_t c, int64_t i, int64_t C, int64_t S) {
  return ((i / S) * C + c) * S + i % S;
}

template <class T>
__global__ void stats_kernel(const T* x, T* mean, T* var, T* invstd, int64_t N, int64_t C,
                             int64_t S, double eps) {
  const int64_t M = N * S;
  for (int64_t c = blockIdx.x; c < C; c += gridDim.x) {
    double sum = 0;
    for (int64_t i = threadIdx.x; i < M; i += blockDim.x) sum += x[channel_element(c, i, C, S)];
    const double m = M > 0 ? block_reduce(sum, SumOp{}) / static_cast<double>(M) : 0.0;
    double m2 = 0;
    for (int64_t i = threadIdx.x; i < M; i += blockDim.x) {
      const double d = x[channel_element(c, i, C, S)] - m;
      m2 += d * d;
    }
    m2 = block_reduce(m2, SumOp{});
    if (threadIdx.x == 0) {
      const double v = M > 0 ? m2 / static_cast<double>(M) : 0.0;
      mean[c] = static_cast<T>(m);
      var[c] = static_cast<T>(v);
      invstd[c] = static_cast<T>(1.0 / sqrt(v + eps));
    }
  }
}

template <class T>
__global__ void affine_kernel(const T* x, const T* mean, const T* invstd, const T* weight,
                              const T* bias, T* out, int64_t C, int64_t S, int64_t n) {
  MG_GRID_STRIDE(i, n) {
    const int64_t c = (i / S) % C;
    // torch's batch_norm_cpu_collect_linear_and_constant_terms, in the parameters' dtype
    const T alpha = invstd[c] * (weight ? weight[c] : T(1));
    const T beta = (bias ? bias[c] : T(0)) - mean[c] * alpha;
    out[i] = x[i] * alpha + beta;
  }
}

// Per channel: sum = sum(grad) and dotp = sum((x - mean) * grad), kept in double.
template <class T>
__global__ void backward_sums_kernel(const T* grad, const T* x, const T* mean, double* sums,
                                     double* dotps, int64_t N, int64_t C, int64_t S) {
  const int64_t M = N * S;
  for (int64_t c = blockIdx.x; c < C; c += gridDim.x) {
    double sum = 0, dotp = 0;
    const T m = mean[c];
    for (int64_t i = threadIdx.x; i < M; i += blockDim.x) {
      const int64_t at = channel_element(c, i, C, S);
      sum += grad[at];
      dotp += static_cast<double>((x[at] - m) * grad[at]);
    }
    sum = block_reduce(sum, SumOp{});
    dotp = block_reduce(dotp, SumOp{});
    if (threadIdx.x == 0) {
      sums[c] = sum;
      dotps[c] = dotp;
    }
  }
}

template <class T>
__global__ void backward_params_kernel(const double* sums, const double* dotps, const T* invstd,
                                       T* grad_weight, T* grad_bias, int64_t C) {
  MG_GRID_STRIDE(c, C) {
    if (grad_weight) grad_weight[c] = static_cast<T>(dotps[c] * static_cast<double>(invstd[c]));
    if (grad_bias) grad_bias[c] = static_cast<T>(sums[c]);
  }
}

template <class T>
__global__ void backward_input_kernel(const T* grad, const T* x, const T* mean, const T* invstd,
                                      const T* weight, const double* sums, const double* dotps,
                                      bool batch_stats, double M, T* grad_x, int64_t C, int64_t S,
                                      int64_t n) {
  MG_GRID_STRIDE(i, n) {
    const int64_t c = (i / S) % C;
    const double inv = static_cast<double>(invstd[c]);
    const T scale = static_cast<T>(inv * (weight ? static_cast<double>(weight[c]) : 1.0));
    if (!batch_stats) {
      grad_x[i] = grad[i] * scale;
      continue;
    }
    const T k = static_cast<T>(dotps[c] * inv * inv / M);
    const T grad_mean = static_cast<T>(sums[c] / M);
    grad_x[i] = (grad[i] - grad_mean - (x[i] - mean[c]) * k) * scale;
  }
}

template <class T>
const T* ptr(const Tensor& t) {
  return t.defined() ? static_cast<const T*>(t.raw_data()) : nullptr;
}
template <class T>
T* mut(const Tensor& t) { return t.defined() ? static_cast<T*>(t.raw_data()) : nullptr; }

unsigned channel_blocks(int64_t C) {
  return static_cast<unsigned>(std::clamp<int64_t>(C, 1, 1 << 20));
}

}  // namespace

void CudaBackend::batch_norm_stats(const Tensor& x, double eps, const Tensor& mean,
                                   const Tensor& var, const Tensor& invstd) {
  DeviceGuard guard(device_);
  const Planes d(x);
  if (d.C == 0) return;
  MG_DISPATCH_FLOATING_TYPES(x.dtype(), "batch_norm_stats", [&] {
    using T = scalar_t;
    stats_kernel<<<channel_blocks(d.C), kThreads, 0, stream_for(device_)>>>(
        ptr<T>(x), mut<T>(mean), mut<T>(var), mut<T>(invstd), d.N, d.C, d.S, eps);
  });
  MG_CUDA_CHECK_LAUNCH("batch_norm_stats");
}

void CudaBackend::batch_norm_forward(const Tensor& x, const Tensor& mean, const Tensor& invstd,
                                     const Tensor& weight, const Tensor& bias, const Tensor& out) {
  DeviceGuard guard(device_);
  const Planes d(x);
  const int64_t n = x.numel();
  if (n == 0) return;
  MG_DISPATCH_FLOATING_TYPES(x.dtype(), "batch_norm_forward", [&] {
    using T = scalar_t;
    affine_kernel<<<blocks_for(n), kThreads, 0, stream_for(device_)>>>(
        ptr<T>(x), ptr<T>(mean), ptr<T>(invstd), ptr<T>(weight), ptr<T>(bias), mut<T>(out), d.C,
        d.S, n);
  });
  MG_CUDA_CHECK_LAUNCH("batch_norm_forward");
}

void CudaBackend::batch_norm_backward(const Tensor& grad, const Tensor& x, const Tensor& mean,
                                      const Tensor& invstd, const Tensor& weight, bool batch_stats,
                                      const Tensor& grad_x, const Tensor& grad_weight,
                                      const Tensor& grad_bias) {
  DeviceGuard guard(device_);
  const Planes d(x);
  if (d.C == 0) return;
  cudaStream_t stream = stream_for(device_);
  const bool need_sums =
      grad_weight.defined() || grad_bias.defined() || (grad_x.defined() && batch_stats);
  const Tensor sums = scratch({d.C}, kFloat64, device_), dotps = scratch({d.C}, kFloat64, device_);
  MG_DISPATCH_FLOATING_TYPES(x.dtype(), "batch_norm_backward", [&] {
    using T = scalar_t;
    double* ps = mut<double>(sums);
    double* pd = mut<double>(dotps);
    if (need_sums) {
      backward_sums_kernel<<<channel_blocks(d.C), kThreads, 0, stream>>>(
          ptr<T>(grad), ptr<T>(x), ptr<T>(mean), ps, pd, d.N, d.C, d.S);
      if (grad_weight.defined() || grad_bias.defined())
        backward_params_kernel<<<blocks_for(d.C), kThreads, 0, stream>>>(
            ps, pd, ptr<T>(invstd), mut<T>(grad_weight), mut<T>(grad_bias), d.C);
    }
    const int64_t n = x.numel();
    if (grad_x.defined() && n > 0)
      backward_input_kernel<<<blocks_for(n), kThreads, 0, stream>>>(
          ptr<T>(grad), ptr<T>(x), ptr<T>(mean), ptr<T>(invstd), ptr<T>(weight), ps, pd,
          batch_stats, static_cast<double>(d.N * d.S), mut<T>(grad_x), d.C, d.S, n);
  });
  MG_CUDA_CHECK_LAUNCH("batch_norm_backward");
}

}  // namespace mg::cuda
