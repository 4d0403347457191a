// Attention composed from matmul and the fused softmax: the backward that autograd assembles from
// them (two GEMMs per product plus softmax's row formula) is exactly the hand-written one, so no
// separate backward is kept here.
#include "engine/ops/attention.hpp"

#include <cmath>
#include <limits>

#include "engine/autograd.hpp"
#include "engine/profiler.hpp"
#include "engine/ops/elementwise.hpp"
#include "engine/ops/linalg.hpp"
#include "engine/ops/loss.hpp"
#include "engine/ops/norm.hpp"

namespace mg {

Tensor scaled_dot_product_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                                    const AttentionOptions& options, Tensor* weights_out) {
  MG_PROFILE("scaled_dot_product_attention");
  MG_CHECK(q.dim() >= 2 && k.dim() >= 2 && v.dim() >= 2, "scaled_dot_product_attention: q, k, v need "
           "at least 2 dims, got ", shape_str(q.sizes()), ", ", shape_str(k.sizes()), ", ", shape_str(v.sizes()));
  MG_CHECK(q.size(-1) == k.size(-1), "scaled_dot_product_attention: q ", shape_str(q.sizes()),
           " and k ", shape_str(k.sizes()), " differ in the embedding dim");
  MG_CHECK(k.size(-2) == v.size(-2), "scaled_dot_product_attention: k ", shape_str(k.sizes()),
           " and v ", shape_str(v.sizes()), " differ in the sequence dim");
  const double scale = options.scale > 0 ? options.scale : 1.0 / std::sqrt(static_cast<double>(q.size(-1)));
  const int64_t L = q.size(-2), S = k.size(-2);
  Tensor scores = matmul(q, k.transpose(-2, -1)) * scale;
  if (options.is_causal) {
    std::vector<double> causal(L * S, 0.0);
    for (int64_t i = 0; i < L; ++i)
      for (int64_t j = i + 1; j < S; ++j) causal[i * S + j] = -std::numeric_limits<double>::infinity();
    scores = scores + from_vector(causal, {L, S}, q.options());
  }
  if (options.attn_mask.defined()) {
    MG_CHECK(options.attn_mask.is_floating_point(), "scaled_dot_product_attention: attn_mask must be an "
             "additive float mask, got ", dtype_name(options.attn_mask.dtype()));
    scores = scores + options.attn_mask.to(scores.dtype());
  }
  Tensor weights = softmax(scores, -1);
  if (options.dropout_p > 0) weights = dropout(weights, options.dropout_p, true, options.generator);
  if (weights_out) *weights_out = weights;
  return matmul(weights, v);
}

}  // namespace mg
