// grouped_mlp: a Linear -> ReLU -> Linear per group of rows, as one differentiable op — the FFN of
// every MoE expert over the inputs sorted by expert, in one call. Equal, up to the order of
// floating-point sums, to narrowing x to each group's rows and applying
// linear(relu(linear(x_g, w1, b1)), w2, b2) (torch.nn.functional.linear semantics); the backward
// is hand-written (gradients of x and of every group's weights). It exists because a loop over
// many small groups runs each small GEMM far below speed; the backend runs all of them together.
#pragma once
#include <cstdint>
#include <vector>

#include "engine/backend.hpp"
#include "engine/tensor.hpp"

namespace mg {

// x [P, D]; group g owns rows [offsets[g], offsets[g + 1]) (offsets[0] = 0, non-decreasing,
// offsets.back() = P) and weights[g] (w1 [H_g, D], b1 [H_g] or undefined, w2 [D_out, H_g], b2
// [D_out] or undefined; H_g may differ between groups, D_out may not) -> y [P, D_out]. A group with
// no rows takes no part: its weights get no gradient. Every tensor must share x's dtype (float32
// or float64) and device.
Tensor grouped_mlp(const Tensor& x, const std::vector<int64_t>& offsets,
                   const std::vector<GroupedMlpWeights>& weights);

}  // namespace mg
