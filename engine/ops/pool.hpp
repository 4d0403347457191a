// 2-d pooling with PyTorch's semantics (torch.nn.functional.max_pool2d, avg_pool2d,
// adaptive_avg_pool2d) on [N, C, H, W] or unbatched [C, H, W] inputs. A stride left out equals the
// kernel size, as in torch.
#pragma once
#include <optional>

#include "engine/ops/conv.hpp"  // Size2
#include "engine/tensor.hpp"

namespace mg {

// The maximum of each window; the backward routes each gradient to the window's first maximum.
Tensor max_pool2d(const Tensor& x, Size2 kernel, std::optional<Size2> stride = std::nullopt,
                  Size2 padding = 0, Size2 dilation = 1, bool ceil_mode = false);

// The mean of each window. count_include_pad: padding counts in the divisor (torch's default).
Tensor avg_pool2d(const Tensor& x, Size2 kernel, std::optional<Size2> stride = std::nullopt,
                  Size2 padding = 0, bool ceil_mode = false, bool count_include_pad = true);

// Means over output_size windows: output row o averages input rows
// [floor(o * H / out_h), ceil((o + 1) * H / out_h)), windows that overlap when H % out_h != 0.
Tensor adaptive_avg_pool2d(const Tensor& x, Size2 output_size);

}  // namespace mg
