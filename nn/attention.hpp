// MultiheadAttention (batch_first, need_weights), a pre-norm TransformerEncoderLayer for ViTs,
// and the ViT patch embedding. Parameter names and initialization follow torch.nn.
#pragma once
#include "engine/ops/attention.hpp"
#include "nn/layers.hpp"
#include "nn/normalization.hpp"

namespace mg::nn {

class MultiheadAttention : public Module {
 public:
  MultiheadAttention(int64_t embed_dim, int64_t num_heads, double dropout = 0.0, bool bias = true,
                     bool batch_first = true);
  // query [B, L, E], key/value [B, S, E] (batch_first) or [L, B, E] otherwise. Returns the output
  // and, when need_weights, the attention weights [B, L, S] averaged over heads.
  std::pair<Tensor, Tensor> forward(const Tensor& query, const Tensor& key, const Tensor& value,
                                    bool need_weights = true, const Tensor& attn_mask = {},
                                    bool is_causal = false);
  Tensor forward(const Tensor& x) override;  // self-attention, output only
  std::string extra_repr() const override;

  int64_t embed_dim, num_heads, head_dim;
  double dropout;
  bool batch_first;
  Tensor in_proj_weight;  // [3E, E]
  Tensor in_proj_bias;    // [3E]
  std::shared_ptr<Linear> out_proj;
};

// x + attn(norm1(x)), then x + mlp(norm2(x)) (norm_first=True in torch terms).
class TransformerEncoderLayer : public Module {
 public:
  TransformerEncoderLayer(int64_t d_model, int64_t nhead, int64_t dim_feedforward = 2048,
                          double dropout = 0.1, const std::string& activation = "gelu");
  Tensor forward(const Tensor& x) override;
  std::shared_ptr<MultiheadAttention> self_attn;
  std::shared_ptr<LayerNorm> norm1, norm2;
  std::shared_ptr<Linear> linear1, linear2;
  std::shared_ptr<Dropout> dropout1, dropout2, dropout_ff;
  std::string activation;
};

// [B, C, H, W] -> [B, (H/p)*(W/p), D]: non-overlapping p x p patches, flattened and projected
// (equivalent to a stride-p convolution).
class PatchEmbedding : public Module {
 public:
  PatchEmbedding(int64_t image_size, int64_t patch_size, int64_t in_channels, int64_t embed_dim);
  Tensor forward(const Tensor& x) override;
  std::string extra_repr() const override;
  int64_t image_size, patch_size, in_channels, embed_dim;
  std::shared_ptr<Linear> proj;  // [C*p*p] -> D
};

}  // namespace mg::nn
