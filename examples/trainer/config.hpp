// The trainer's configuration: one struct holding every choice of a run (data, model, MoE, training,
// outputs), the CLI11 flags that set it, and its JSON form (config.json, and the copy inside every
// checkpoint that lets `--resume`, `--eval-only` and `--expert-summary` rebuild the run without the
// original command line). The MoE fields map one to one onto moe::RouterConfig / BalanceConfig /
// FFNExpertConfig / ControllerConfig, which do the work; this file only names and checks them.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "engine/dtype.hpp"

namespace CLI {
class App;
}

namespace mg::trainer {

struct TrainConfig {
  // ---- data
  std::string dataset = "auto";    // auto | cifar100 | cifar10 | fashion-mnist | mnist | folder
  std::string data_dir = "datasets";  // holds cifar-100-binary/, cifar-10-batches-bin/, mnist/, ...
  std::string folder;              // dataset "folder": <folder>/train and <folder>/test
  int64_t image_size = 32;         // dataset "folder": images are resized to this square
  int64_t channels = 3;            // dataset "folder": 1 (gray) or 3 (RGB)
  bool download = false;           // fetch CIFAR-100 when it is missing
  int64_t max_train_examples = 0;  // 0: all
  int64_t max_test_examples = 0;
  bool augment = false;  // random crop and flip (short runs learn faster without)
  int64_t workers = 2;

  // ---- model
  std::string backbone = "cnn";  // cnn | vit
  int64_t width = 16;            // CNN: channels of the first stage (then 2x, 4x)
  int64_t vit_dim = 192, vit_depth = 6, vit_heads = 3, vit_mlp_dim = 384, patch_size = 4;
  std::string moe_placement = "head";  // head | blocks
  std::vector<int64_t> moe_blocks;     // blocks: which transformer blocks get an MoE MLP (empty: every other,
                                       // ending with the last)

  // ---- experts and routing
  int64_t experts = 4;
  std::string expert_hidden = "128";  // "256,128" for all experts, "256,128;512,256,128" per expert
  std::string expert_norm = "none";   // none | layernorm | batchnorm
  std::string expert_activation = "relu";
  int64_t top_k = 1;
  std::string gate = "linear";  // linear | mlp
  std::vector<int64_t> gate_hidden = {64};
  std::string scoring = "softmax-topk";  // softmax-topk | topk-softmax | sigmoid
  double temperature = 1.0;
  std::string noise = "none";  // none | scaled | learned | jitter
  double noise_std = 1.0;
  int64_t warmup_random_steps = 0;
  double switch_coef = 0.05, variance_coef = 0.0, importance_coef = 0.0, load_coef = 0.0, z_coef = 0.0;
  double bias_rate = 0.0;           // auxiliary-loss-free balancing (DeepSeek-V3)
  double capacity_factor = 0.0;     // 0: dropless
  std::string routing = "learned";  // learned | oracle | random
  std::vector<int32_t> oracle_map;  // superclass (or class) -> expert; empty: label % experts

  // ---- grow / prune controller (moe::ControllerConfig)
  bool controller = false;
  double prune_below = 0.02, grow_above = 0.5, grow_entropy = -1.0, clone_noise = 0.01;
  int64_t controller_patience = 2, min_experts = 1, max_experts = 16;

  // ---- training
  int64_t epochs = 6;
  int64_t batch_size = 128;
  std::string optimizer = "sgd";     // sgd | adam | adamw
  double lr = 0.1, router_lr = 0.0;  // router_lr 0: the same as lr
  double momentum = 0.9;
  std::string schedule = "onecycle";  // cosine | onecycle | step | none
  double warmup_epochs = 0.5;         // cosine: linear warmup length
  int64_t step_epochs = 2;            // step: multiply the lr by 0.1 every this many epochs
  double weight_decay = 5e-4;         // not on norms, biases, position embeddings or the router
  double label_smoothing = 0.0;
  uint64_t seed = 0;
  int64_t threads = 0;  // 0: MG_NUM_THREADS or every core
  std::string device = "cpu";  // cpu | cuda | cuda:N

  // ---- outputs
  std::string out;                // run folder; empty: runs/<dataset>-seed<seed>
  int64_t log_every = 50;         // a metrics.jsonl line every this many steps
  int64_t stop_after_epochs = 0;  // stop (as if interrupted) after this many epochs of the run
};

// Registers every flag on `app`, writing into `config` (whose values are the shown defaults).
void add_flags(CLI::App& app, TrainConfig& config);

// Throws mg::Error naming the first inconsistent setting (e.g. "--moe blocks needs --backbone vit").
void validate(const TrainConfig& config);

// Fields in struct order.
nlohmann::ordered_json to_json(const TrainConfig& config);
// Reads what to_json wrote; missing keys keep their defaults, unknown keys are errors (a
// configuration from another version).
TrainConfig config_from_json(const nlohmann::ordered_json& j);

// --device: "cpu", "cuda" or "cuda:N", the benchmarks' spelling. Throws mg::Error on anything else;
// whether this build and machine can use the device is not its concern (usable_device, trainer.hpp).
Device parse_device(const std::string& text);

// "256,128" -> {{256, 128}} (every expert alike); "256,128;512,256,128" -> one list per expert.
// An empty list ("" or "256;") means an expert with no hidden layer (a single Linear).
std::vector<std::vector<int64_t>> parse_expert_hidden(const std::string& text);
// The hidden sizes of each of `experts` experts: the one list repeated, or the per-expert lists
// (which must then number `experts`).
std::vector<std::vector<int64_t>> expert_hidden_per_expert(const std::string& text, int64_t experts);

}  // namespace mg::trainer
