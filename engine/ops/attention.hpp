// Scaled dot-product attention, as torch.nn.functional.scaled_dot_product_attention:
// softmax(q k^T * scale + mask) v with q [..., L, E], k [..., S, E], v [..., S, Ev].
#pragma once
#include "engine/generator.hpp"
#include "engine/tensor.hpp"

namespace mg {

struct AttentionOptions {
  Tensor attn_mask;         // additive float mask broadcastable to [..., L, S] (-inf blocks)
  bool is_causal = false;   // position i attends to j <= i
  double dropout_p = 0.0;   // on the attention weights, training only
  double scale = 0.0;       // 0 means 1/sqrt(E)
  Generator* generator = nullptr;
};

// Returns the output [..., L, Ev]; when `weights_out` is given it receives the attention
// weights [..., L, S] (after dropout), e.g. for need_weights.
Tensor scaled_dot_product_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                                    const AttentionOptions& options = {}, Tensor* weights_out = nullptr);

}  // namespace mg
