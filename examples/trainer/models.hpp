// The trainer's models: a backbone (a small ResNet-style CNN, or a small ViT), one or more MoE
// layers and a linear classifier, all described by a ModelSpec that also travels inside every
// checkpoint, so a model whose experts were grown or pruned can be rebuilt before its weights load.
//
//   cnn   the residual CNN of shared/reference/torch/cnn_step.py with a width knob w:
//         CBR(C->w) | x + CBR(CBR(x)) | maxpool 2 | CBR(w->2w) | x + CBR(CBR(x)) | maxpool 2 |
//         CBR(2w->4w) | global average pool -> features [B, 4w]   (CBR = conv3x3-BN-ReLU)
//   vit   patch embedding + learned position embedding, pre-norm transformer blocks, final
//         LayerNorm, mean over tokens -> features [B, D] (Dosovitskiy et al. 2021, without the class
//         token: mean pooling trains as well on small images and keeps every token routed alike)
//   head  features -> MoE layer (one routing decision per image) -> Linear -> logits, as in the
//         CIFAR-100 studies this project grew out of
//   blocks  V-MoE (Riquelme et al. 2021): the MLP of chosen transformer blocks is an MoE layer that
//         routes every token of [B, N, D] on its own: x + attn(ln1(x)), then x + moe(ln2(x))
#pragma once
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "examples/trainer/config.hpp"
#include "moe/layer.hpp"
#include "nn/attention.hpp"

namespace mg::trainer {

struct ExpertSpec {
  std::vector<int64_t> hidden;  // hidden sizes of this FFN expert
  bool frozen = false;
};

// Everything needed to rebuild a model's architecture (not its weights).
struct ModelSpec {
  TrainConfig config;  // backbone and MoE settings are read from it
  int64_t channels = 0, height = 0, width = 0, num_classes = 0;
  // Routing labels (superclasses, or classes for sets without them): the oracle maps these.
  int64_t num_routing_labels = 0;
  std::vector<std::vector<ExpertSpec>> moe_layers;  // [layer][expert], as the experts are now
};

// The spec of a fresh model: every MoE layer with config.experts experts of the configured sizes.
ModelSpec initial_spec(const TrainConfig& config, int64_t channels, int64_t height, int64_t width,
                       int64_t num_classes, int64_t num_routing_labels);
nlohmann::ordered_json spec_to_json(const ModelSpec& spec);
ModelSpec spec_from_json(const nlohmann::ordered_json& j);

// The oracle's label -> expert map for `num_experts` experts: config.oracle_map when given (it must
// cover every label), else label % num_experts.
std::vector<int32_t> oracle_map_for(const TrainConfig& config, int64_t num_routing_labels,
                                    int64_t num_experts);

// The transformer blocks that hold an MoE MLP: config.moe_blocks, or every other block ending with
// the last (V-MoE's "every other layer").
std::vector<int64_t> moe_block_indices(const TrainConfig& config);

// x + attn(norm1(x)), then x + moe(norm2(x), labels): a pre-norm transformer block whose MLP is an
// MoE layer routing each token.
class MoEBlock : public nn::Module {
 public:
  MoEBlock(int64_t dim, int64_t heads, std::shared_ptr<moe::MoELayer> moe);
  Tensor forward(const Tensor& x) override { return forward(x, Tensor()); }
  Tensor forward(const Tensor& x, const Tensor& routing_labels);
  std::shared_ptr<nn::LayerNorm> norm1, norm2;
  std::shared_ptr<nn::MultiheadAttention> attn;
  std::shared_ptr<moe::MoELayer> moe;
};

class MoEClassifier : public nn::Module {
 public:
  // Parameters are drawn from the default generator (seed it first) and each router from its own,
  // seeded from config.seed and the layer's position.
  explicit MoEClassifier(const ModelSpec& spec);
  Tensor forward(const Tensor& images) override { return forward(images, Tensor()); }
  // images [B, C, H, W] -> logits [B, classes]; routing_labels int32 [B] feed oracle routing.
  Tensor forward(const Tensor& images, const Tensor& routing_labels);

  const std::vector<std::shared_ptr<moe::MoELayer>>& moe_layers() const { return moe_layers_; }
  // "head" or "block<i>", one per MoE layer.
  const std::vector<std::string>& moe_layer_names() const { return moe_layer_names_; }
  // The spec of the model as it is now (experts grown, pruned or frozen since construction).
  ModelSpec spec() const;
  // Where its parameters are: the trainer moves the whole model, so all are on one device.
  Device device() const { return parameters().front().device(); }

 private:
  Tensor features(const Tensor& images, const Tensor& routing_labels);
  ModelSpec spec_;
  nn::ModulePtr cnn_;                                // cnn backbone
  std::shared_ptr<nn::PatchEmbedding> patch_embed_;  // vit backbone
  Tensor pos_embed_;
  std::vector<nn::ModulePtr> blocks_;  // TransformerEncoderLayer or MoEBlock
  std::shared_ptr<nn::LayerNorm> final_norm_;
  std::shared_ptr<moe::MoELayer> head_moe_;
  std::shared_ptr<nn::Linear> classifier_;
  std::vector<std::shared_ptr<moe::MoELayer>> moe_layers_;
  std::vector<std::string> moe_layer_names_;
};

}  // namespace mg::trainer
