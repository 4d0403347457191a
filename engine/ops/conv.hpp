// 2-d convolution with PyTorch's semantics (torch.nn.functional.conv2d): zero padding, stride,
// dilation and groups (groups == C is depthwise). The backward is hand-written: gradients of the
// input and the weight come from the backend's unfold-and-GEMM kernels, not from a composed graph.
#pragma once
#include <cstdint>

#include "engine/tensor.hpp"

namespace mg {

// A pair of sizes (height, width) that a single number also converts to, as torch's
// ExpandingArray<2>: conv2d(x, w, b, /*stride=*/2) and conv2d(x, w, b, {2, 1}) both read naturally.
struct Size2 {
  int64_t h, w;
  Size2(int64_t both) : h(both), w(both) {}  // NOLINT: implicit on purpose
  Size2(int64_t h_, int64_t w_) : h(h_), w(w_) {}
  bool operator==(const Size2&) const = default;
};

// x [N, C, H, W] (or unbatched [C, H, W]), weight [O, C / groups, kh, kw], bias [O] or undefined
// -> [N, O, (H + 2 * pad - dilation * (kh - 1) - 1) / stride + 1, ...].
Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias = {}, Size2 stride = 1,
              Size2 padding = 0, Size2 dilation = 1, int64_t groups = 1);

}  // namespace mg
