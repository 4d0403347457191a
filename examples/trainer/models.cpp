// The trainer's CNN and ViT backbones, the V-MoE block and the classifier (see models.hpp), built
// from nn's modules and moe::MoELayer with moe::FFNExpert experts; and ModelSpec's JSON form.
#include "examples/trainer/models.hpp"

#include <algorithm>

#include "engine/ops.hpp"
#include "moe/expert.hpp"
#include "nn/containers.hpp"
#include "nn/conv.hpp"
#include "nn/init.hpp"
#include "nn/normalization.hpp"

namespace mg::trainer {
namespace {

// Conv2d 3x3 (stride 1, padding 1, no bias) -> BatchNorm2d -> ReLU, as cnn_step.py's cbr().
nn::ModulePtr conv_bn_relu(int64_t in_channels, int64_t out_channels) {
  return std::make_shared<nn::Sequential>(std::initializer_list<nn::ModulePtr>{
      std::make_shared<nn::Conv2d>(in_channels, out_channels, 3, 1, 1, 1, 1, /*bias=*/false),
      std::make_shared<nn::BatchNorm2d>(out_channels), std::make_shared<nn::ReLU>()});
}

// y = x + CBR(CBR(x)): the skip is added after the second ReLU, as in cnn_step.py.
class ResidualBlock : public nn::Module {
 public:
  explicit ResidualBlock(int64_t channels) : Module("ResidualBlock") {
    body = register_module("body", std::make_shared<nn::Sequential>(std::initializer_list<nn::ModulePtr>{
                                       conv_bn_relu(channels, channels), conv_bn_relu(channels, channels)}));
  }
  Tensor forward(const Tensor& x) override { return x + body->forward(x); }
  std::shared_ptr<nn::Sequential> body;
};

// The convolutional stages up to (not including) the global average pool.
nn::ModulePtr make_cnn(int64_t in_channels, int64_t w) {
  return std::make_shared<nn::Sequential>(std::initializer_list<nn::ModulePtr>{
      conv_bn_relu(in_channels, w), std::make_shared<ResidualBlock>(w), std::make_shared<nn::MaxPool2d>(2),
      conv_bn_relu(w, 2 * w), std::make_shared<ResidualBlock>(2 * w), std::make_shared<nn::MaxPool2d>(2),
      conv_bn_relu(2 * w, 4 * w)});
}

moe::Scoring scoring_of(const std::string& name) {
  if (name == "topk-softmax") return moe::Scoring::TopKSoftmax;
  if (name == "sigmoid") return moe::Scoring::Sigmoid;
  return moe::Scoring::SoftmaxTopK;
}

moe::NoiseType noise_of(const std::string& name) {
  if (name == "scaled") return moe::NoiseType::Scaled;
  if (name == "learned") return moe::NoiseType::Learned;
  if (name == "jitter") return moe::NoiseType::Jitter;
  return moe::NoiseType::None;
}

moe::RoutingMode mode_of(const std::string& name) {
  if (name == "oracle") return moe::RoutingMode::Oracle;
  if (name == "random") return moe::RoutingMode::Random;
  return moe::RoutingMode::Learned;
}

// One MoE layer of FFN experts over `dim` features, as the spec's layer `layer` describes it.
std::shared_ptr<moe::MoELayer> make_moe_layer(const ModelSpec& spec, size_t layer, int64_t dim) {
  const TrainConfig& c = spec.config;
  const std::vector<ExpertSpec>& experts_spec = spec.moe_layers[layer];
  const int64_t num_experts = static_cast<int64_t>(experts_spec.size());
  moe::MoEConfig mc;
  mc.router.input_dim = dim;
  mc.router.num_experts = num_experts;
  mc.router.top_k = c.top_k;
  if (c.gate == "mlp") mc.router.gate_hidden = c.gate_hidden;
  mc.router.scoring = scoring_of(c.scoring);
  mc.router.temperature = c.temperature;
  mc.router.noise = noise_of(c.noise);
  mc.router.noise_std = c.noise_std;
  mc.router.warmup_random_steps = c.warmup_random_steps;
  mc.router.mode = mode_of(c.routing);
  if (mc.router.mode == moe::RoutingMode::Oracle)
    mc.router.oracle_map = oracle_map_for(c, spec.num_routing_labels, num_experts);
  mc.router.bias_update_rate = c.bias_rate;
  // Each router draws from its own stream, apart from the default generator's (which inits the
  // rest of the model) and from the other layers' routers.
  mc.router.seed = c.seed * 1000003ull + 17 + layer;
  mc.capacity_factor = c.capacity_factor;
  mc.balance.switch_coef = c.switch_coef;
  mc.balance.variance_coef = c.variance_coef;
  mc.balance.importance_coef = c.importance_coef;
  mc.balance.load_coef = c.load_coef;
  mc.balance.z_coef = c.z_coef;

  std::vector<nn::ModulePtr> experts;
  for (const ExpertSpec& e : experts_spec) {
    moe::FFNExpertConfig fc;
    fc.input_dim = dim;
    fc.output_dim = dim;
    fc.hidden = e.hidden;
    fc.norm = c.expert_norm;
    fc.activation = c.expert_activation;
    experts.push_back(std::make_shared<moe::FFNExpert>(fc));
  }
  auto layer_module =
      std::make_shared<moe::MoELayer>(mc, experts, std::vector<nn::ModulePtr>{}, moe::make_ffn_expert_like);
  for (int64_t i = 0; i < num_experts; ++i)
    if (experts_spec[i].frozen) layer_module->freeze_expert(i);
  return layer_module;
}

}  // namespace

std::vector<int32_t> oracle_map_for(const TrainConfig& config, int64_t num_routing_labels,
                                    int64_t num_experts) {
  if (!config.oracle_map.empty()) {
    MG_CHECK(static_cast<int64_t>(config.oracle_map.size()) == num_routing_labels,
             "train_moe: --oracle-map has ", config.oracle_map.size(), " entries; the data set has ",
             num_routing_labels, " routing labels (superclasses, or classes when it has none)");
    return config.oracle_map;
  }
  std::vector<int32_t> map(num_routing_labels);
  for (int64_t label = 0; label < num_routing_labels; ++label)
    map[label] = static_cast<int32_t>(label % num_experts);
  return map;
}

std::vector<int64_t> moe_block_indices(const TrainConfig& config) {
  if (!config.moe_blocks.empty()) return config.moe_blocks;
  std::vector<int64_t> blocks;
  for (int64_t b = config.vit_depth % 2 == 0 ? 1 : 0; b < config.vit_depth; b += 2) blocks.push_back(b);
  return blocks;
}

ModelSpec initial_spec(const TrainConfig& config, int64_t channels, int64_t height, int64_t width,
                       int64_t num_classes, int64_t num_routing_labels) {
  validate(config);
  oracle_map_for(config, num_routing_labels, config.experts);  // an --oracle-map must fit the data
  ModelSpec spec;
  spec.config = config;
  spec.channels = channels;
  spec.height = height;
  spec.width = width;
  spec.num_classes = num_classes;
  spec.num_routing_labels = num_routing_labels;
  const size_t layers = config.moe_placement == "head" ? 1 : moe_block_indices(config).size();
  std::vector<ExpertSpec> experts;
  for (const auto& hidden : expert_hidden_per_expert(config.expert_hidden, config.experts))
    experts.push_back({hidden, false});
  spec.moe_layers.assign(layers, experts);
  return spec;
}

nlohmann::ordered_json spec_to_json(const ModelSpec& spec) {
  nlohmann::ordered_json layers = nlohmann::ordered_json::array();
  for (const auto& experts : spec.moe_layers) {
    nlohmann::ordered_json list = nlohmann::ordered_json::array();
    for (const ExpertSpec& e : experts) list.push_back({{"hidden", e.hidden}, {"frozen", e.frozen}});
    layers.push_back(list);
  }
  return {{"config", to_json(spec.config)},
          {"channels", spec.channels},
          {"height", spec.height},
          {"width", spec.width},
          {"num_classes", spec.num_classes},
          {"num_routing_labels", spec.num_routing_labels},
          {"moe_layers", layers}};
}

ModelSpec spec_from_json(const nlohmann::ordered_json& j) {
  ModelSpec spec;
  try {
    spec.config = config_from_json(j.at("config"));
    j.at("channels").get_to(spec.channels);
    j.at("height").get_to(spec.height);
    j.at("width").get_to(spec.width);
    j.at("num_classes").get_to(spec.num_classes);
    j.at("num_routing_labels").get_to(spec.num_routing_labels);
    for (const auto& layer : j.at("moe_layers")) {
      std::vector<ExpertSpec> experts;
      for (const auto& e : layer)
        experts.push_back({e.at("hidden").get<std::vector<int64_t>>(), e.at("frozen").get<bool>()});
      spec.moe_layers.push_back(std::move(experts));
    }
  } catch (const nlohmann::ordered_json::exception& e) {
    throw Error(std::string("train_moe: a checkpoint's model configuration is malformed: ") + e.what());
  }
  return spec;
}

MoEBlock::MoEBlock(int64_t dim, int64_t heads, std::shared_ptr<moe::MoELayer> moe_layer)
    : Module("MoEBlock") {
  norm1 = register_module("norm1", std::make_shared<nn::LayerNorm>(Shape{dim}));
  attn = register_module("attn", std::make_shared<nn::MultiheadAttention>(dim, heads));
  norm2 = register_module("norm2", std::make_shared<nn::LayerNorm>(Shape{dim}));
  moe = register_module("moe", std::move(moe_layer));
}

Tensor MoEBlock::forward(const Tensor& x, const Tensor& routing_labels) {
  const Tensor h = norm1->forward(x);
  const Tensor y = x + attn->forward(h, h, h, /*need_weights=*/false).first;
  return y + moe->forward(norm2->forward(y), routing_labels);
}

MoEClassifier::MoEClassifier(const ModelSpec& spec) : Module("MoEClassifier"), spec_(spec) {
  const TrainConfig& c = spec.config;
  int64_t feature_dim = 0;
  if (c.backbone == "cnn") {
    cnn_ = register_module("cnn", make_cnn(spec.channels, c.width));
    feature_dim = 4 * c.width;
  } else {
    MG_CHECK(spec.height == spec.width && spec.height % c.patch_size == 0,
             "train_moe: the ViT needs square "
             "images whose side is a multiple of --patch-size ",
             c.patch_size, "; the data are ", spec.height, "x", spec.width);
    const int64_t D = c.vit_dim, tokens = (spec.height / c.patch_size) * (spec.width / c.patch_size);
    patch_embed_ = register_module(
        "patch_embed", std::make_shared<nn::PatchEmbedding>(spec.height, c.patch_size, spec.channels, D));
    pos_embed_ = register_parameter("pos_embed", zeros({1, tokens, D}));
    nn::init::trunc_normal_(pos_embed_, 0.0, 0.02);
    const std::vector<int64_t> moe_blocks =
        c.moe_placement == "blocks" ? moe_block_indices(c) : std::vector<int64_t>{};
    auto blocks = std::make_shared<nn::ModuleList>();
    for (int64_t b = 0; b < c.vit_depth; ++b) {
      const auto it = std::find(moe_blocks.begin(), moe_blocks.end(), b);
      if (it == moe_blocks.end()) {
        blocks_.push_back(
            std::make_shared<nn::TransformerEncoderLayer>(D, c.vit_heads, c.vit_mlp_dim, 0.0, "gelu"));
      } else {
        const size_t layer = static_cast<size_t>(it - moe_blocks.begin());
        moe_layers_.push_back(make_moe_layer(spec, layer, D));
        moe_layer_names_.push_back("block" + std::to_string(b));
        blocks_.push_back(std::make_shared<MoEBlock>(D, c.vit_heads, moe_layers_.back()));
      }
      blocks->push_back(blocks_.back());
    }
    register_module("blocks", blocks);
    final_norm_ = register_module("norm", std::make_shared<nn::LayerNorm>(Shape{D}));
    feature_dim = D;
  }
  if (c.moe_placement == "head") {
    head_moe_ = register_module("moe", make_moe_layer(spec, 0, feature_dim));
    moe_layers_.push_back(head_moe_);
    moe_layer_names_.push_back("head");
  }
  classifier_ = register_module("classifier", std::make_shared<nn::Linear>(feature_dim, spec.num_classes));
}

Tensor MoEClassifier::features(const Tensor& images, const Tensor& routing_labels) {
  if (cnn_) return cnn_->forward(images).mean({2, 3});
  Tensor x = patch_embed_->forward(images) + pos_embed_;
  for (const nn::ModulePtr& block : blocks_) {
    if (auto* moe_block = dynamic_cast<MoEBlock*>(block.get()))
      x = moe_block->forward(x, routing_labels);
    else
      x = block->forward(x);
  }
  return final_norm_->forward(x).mean({1});
}

Tensor MoEClassifier::forward(const Tensor& images, const Tensor& routing_labels) {
  MG_CHECK(images.dim() == 4 && images.size(1) == spec_.channels && images.size(2) == spec_.height &&
               images.size(3) == spec_.width,
           "MoEClassifier: expected images [B, ", spec_.channels, ", ", spec_.height, ", ", spec_.width,
           "], got ", shape_str(images.sizes()));
  Tensor h = features(images, routing_labels);
  if (head_moe_) h = head_moe_->forward(h, routing_labels);
  return classifier_->forward(h);
}

ModelSpec MoEClassifier::spec() const {
  ModelSpec now = spec_;
  for (size_t l = 0; l < moe_layers_.size(); ++l) {
    const moe::MoELayer& layer = *moe_layers_[l];
    std::vector<ExpertSpec> experts;
    for (int64_t i = 0; i < layer.num_experts(); ++i) {
      const auto* ffn = dynamic_cast<const moe::FFNExpert*>(layer.expert(i).get());
      MG_CHECK(ffn != nullptr, "MoEClassifier::spec: expert ", i, " of ", moe_layer_names_[l],
               " is not an FFNExpert");
      experts.push_back({ffn->config().hidden, layer.expert_frozen(i)});
    }
    now.moe_layers[l] = std::move(experts);
  }
  return now;
}

}  // namespace mg::trainer
