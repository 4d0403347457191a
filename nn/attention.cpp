#include "nn/attention.hpp"

#include "engine/ops/elementwise.hpp"
#include "engine/ops/index.hpp"
#include "engine/ops/linalg.hpp"
#include "nn/init.hpp"

namespace mg::nn {

MultiheadAttention::MultiheadAttention(int64_t e, int64_t h, double p, bool bias, bool bf)
    : Module("MultiheadAttention"), embed_dim(e), num_heads(h), head_dim(e / std::max<int64_t>(h, 1)),
      dropout(p), batch_first(bf) {
  MG_CHECK(h > 0 && e % h == 0, "MultiheadAttention: embed_dim ", e, " must be divisible by num_heads ", h);
  in_proj_weight = register_parameter("in_proj_weight", empty({3 * e, e}));
  init::xavier_uniform_(in_proj_weight);
  if (bias) in_proj_bias = register_parameter("in_proj_bias", zeros({3 * e}));
  out_proj = register_module("out_proj", std::make_shared<Linear>(e, e, bias));
  if (bias) init::zeros_(out_proj->bias);
}

std::pair<Tensor, Tensor> MultiheadAttention::forward(const Tensor& query, const Tensor& key,
                                                      const Tensor& value, bool need_weights,
                                                      const Tensor& attn_mask, bool is_causal) {
  for (const Tensor* t : {&query, &key, &value})
    MG_CHECK(t->dim() == 3 && t->size(-1) == embed_dim, "MultiheadAttention: expected [B, L, ", embed_dim,
             "] inputs, got ", shape_str(t->sizes()));
  Tensor q_in = batch_first ? query : query.transpose(0, 1);
  Tensor k_in = batch_first ? key : key.transpose(0, 1);
  Tensor v_in = batch_first ? value : value.transpose(0, 1);
  const int64_t B = q_in.size(0), L = q_in.size(1);
  auto project = [&](const Tensor& x, int64_t which) {
    Tensor w = in_proj_weight.narrow(0, which * embed_dim, embed_dim);
    Tensor b = in_proj_bias.defined() ? in_proj_bias.narrow(0, which * embed_dim, embed_dim) : Tensor();
    // [B, T, E] -> [B, heads, T, head_dim]
    return linear(x, w, b).reshape({B, x.size(1), num_heads, head_dim}).transpose(1, 2);
  };
  Tensor q, k, v;
  if (query.is_same(key) && key.is_same(value)) {
    // Self-attention: one [E] -> [3E] GEMM instead of three.
    Tensor qkv = linear(q_in, in_proj_weight, in_proj_bias).reshape({B, L, 3, num_heads, head_dim});
    const TensorList parts = unbind(qkv, 2);  // its backward writes the three gradients in one pass
    q = parts[0].transpose(1, 2);
    k = parts[1].transpose(1, 2);
    v = parts[2].transpose(1, 2);
  } else {
    q = project(q_in, 0);
    k = project(k_in, 1);
    v = project(v_in, 2);
  }
  AttentionOptions opt;
  opt.attn_mask = attn_mask;
  opt.is_causal = is_causal;
  opt.dropout_p = is_training() ? dropout : 0.0;
  Tensor weights;
  Tensor ctx = scaled_dot_product_attention(q, k, v, opt, need_weights ? &weights : nullptr);
  Tensor out = out_proj->forward(ctx.transpose(1, 2).reshape({B, L, embed_dim}));
  if (!batch_first) out = out.transpose(0, 1);
  Tensor avg = need_weights ? weights.mean({1}) : Tensor();
  return {out, avg};
}

Tensor MultiheadAttention::forward(const Tensor& x) { return forward(x, x, x, false).first; }

std::string MultiheadAttention::extra_repr() const {
  return detail::concat("embed_dim=", embed_dim, ", num_heads=", num_heads, ", dropout=", dropout,
                        ", batch_first=", batch_first ? "True" : "False");
}

TransformerEncoderLayer::TransformerEncoderLayer(int64_t d_model, int64_t nhead, int64_t dim_ff,
                                                 double p, const std::string& act)
    : Module("TransformerEncoderLayer"), activation(act) {
  MG_CHECK(act == "gelu" || act == "relu", "TransformerEncoderLayer: activation must be 'gelu' or "
           "'relu', got '", act, "'");
  self_attn = register_module("self_attn", std::make_shared<MultiheadAttention>(d_model, nhead, p));
  linear1 = register_module("linear1", std::make_shared<Linear>(d_model, dim_ff));
  dropout_ff = register_module("dropout", std::make_shared<Dropout>(p));
  linear2 = register_module("linear2", std::make_shared<Linear>(dim_ff, d_model));
  norm1 = register_module("norm1", std::make_shared<LayerNorm>(Shape{d_model}));
  norm2 = register_module("norm2", std::make_shared<LayerNorm>(Shape{d_model}));
  dropout1 = register_module("dropout1", std::make_shared<Dropout>(p));
  dropout2 = register_module("dropout2", std::make_shared<Dropout>(p));
}

Tensor TransformerEncoderLayer::forward(const Tensor& x) {
  Tensor h = norm1->forward(x);
  Tensor y = x + dropout1->forward(self_attn->forward(h, h, h, false).first);
  Tensor f = linear1->forward(norm2->forward(y));
  f = activation == "gelu" ? gelu(f) : relu(f);
  return y + dropout2->forward(linear2->forward(dropout_ff->forward(f)));
}

PatchEmbedding::PatchEmbedding(int64_t image, int64_t patch, int64_t channels, int64_t dim)
    : Module("PatchEmbedding"), image_size(image), patch_size(patch), in_channels(channels), embed_dim(dim) {
  MG_CHECK(patch > 0 && image % patch == 0, "PatchEmbedding: image size ", image,
           " is not a multiple of patch size ", patch);
  proj = register_module("proj", std::make_shared<Linear>(channels * patch * patch, dim));
}

Tensor PatchEmbedding::forward(const Tensor& x) {
  MG_CHECK(x.dim() == 4 && x.size(1) == in_channels && x.size(2) == image_size && x.size(3) == image_size,
           "PatchEmbedding: expected [B, ", in_channels, ", ", image_size, ", ", image_size, "], got ",
           shape_str(x.sizes()));
  const int64_t B = x.size(0), p = patch_size, g = image_size / p;
  // [B, C, g, p, g, p] -> [B, g, g, C, p, p] -> [B, g*g, C*p*p]
  Tensor patches = x.reshape({B, in_channels, g, p, g, p}).permute({0, 2, 4, 1, 3, 5})
                       .reshape({B, g * g, in_channels * p * p});
  return proj->forward(patches);
}

std::string PatchEmbedding::extra_repr() const {
  return detail::concat("image_size=", image_size, ", patch_size=", patch_size, ", in_channels=",
                        in_channels, ", embed_dim=", embed_dim);
}

}  // namespace mg::nn
