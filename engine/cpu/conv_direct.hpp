// Direct float32 convolution for the 'same' convs of CNNs (stride 1, dilation 1, one group,
// 2 * pad = kernel - 1 in both dims, so the output plane has the input's size), with AVX-512.
// Used by cpu_conv.cpp in place of im2col + GEMM where applicable() holds; internal to the CPU
// backend.
#pragma once
#include <cstdint>

#include "engine/backend.hpp"

namespace mg::cpu::direct {

// Whether this build has the kernels and the window and shapes qualify.
bool applicable(const Window2d& win, int64_t groups, int64_t H, int64_t W);

// x [N, C, H, W], w [O, C, kh, kw], bias [O] or null -> y [N, O, H, W].
void forward(const float* x, const float* w, const float* bias, float* y, int64_t N, int64_t C,
             int64_t O, int64_t H, int64_t W, const Window2d& win);
// gy [N, O, H, W], w [O, C, kh, kw] -> dx [N, C, H, W] (overwritten).
void backward_input(const float* gy, const float* w, float* dx, int64_t N, int64_t C, int64_t O,
                    int64_t H, int64_t W, const Window2d& win);
// x [N, C, H, W], gy [N, O, H, W] -> dw [O, C, kh, kw] (overwritten). Partial sums are taken per
// chunk of samples a thread owns and added in sample order: the result depends on the thread
// count only.
void backward_weight(const float* x, const float* gy, float* dw, int64_t N, int64_t C, int64_t O,
                     int64_t H, int64_t W, const Window2d& win);

}  // namespace mg::cpu::direct

// Winograd F(2x2, 3x3) (cpu_conv_winograd.cpp) for the 3x3 convs with padding 1 among them: even
// plane sizes up to 32 wide and at least 16 channels in and out. Same layouts as above.
namespace mg::cpu::winograd {

bool applicable(const Window2d& win, int64_t groups, int64_t C, int64_t O, int64_t H, int64_t W);
void forward(const float* x, const float* w, const float* bias, float* y, int64_t N, int64_t C,
             int64_t O, int64_t H, int64_t W);
void backward_input(const float* gy, const float* w, float* dx, int64_t N, int64_t C, int64_t O,
                    int64_t H, int64_t W);
// Needs C % 16 == 0 besides applicable(). Partial sums per thread, added in thread order: the
// result depends on the thread count only.
void backward_weight(const float* x, const float* gy, float* dw, int64_t N, int64_t C, int64_t O,
                     int64_t H, int64_t W);

}  // namespace mg::cpu::winograd
