// Matrix products, with torch.matmul's rules: 1-d operands are promoted and the added dim
// removed, batch dims broadcast.
#pragma once
#include "engine/tensor.hpp"

namespace mg {

Tensor matmul(const Tensor& a, const Tensor& b);
Tensor mm(const Tensor& a, const Tensor& b);   // 2-d only
Tensor bmm(const Tensor& a, const Tensor& b);  // 3-d only, equal batch
// x @ weight^T + bias, weight [out, in], as torch.nn.functional.linear
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias = {});

}  // namespace mg
