// TrainConfig's flags (CLI11), checks and JSON form. The JSON fields are listed once, in
// visit_fields, which both directions walk, so config.json and the checkpoints cannot drift apart
// from the struct.
#include "examples/trainer/config.hpp"

#include <CLI/CLI.hpp>
#include <charconv>
#include <set>
#include <sstream>

#include "engine/error.hpp"

namespace mg::trainer {
namespace {

// Every field of TrainConfig under its JSON name, in struct order.
template <class Config, class Visitor>
void visit_fields(Config& c, Visitor&& v) {
  v("dataset", c.dataset);
  v("data_dir", c.data_dir);
  v("folder", c.folder);
  v("image_size", c.image_size);
  v("channels", c.channels);
  v("download", c.download);
  v("max_train_examples", c.max_train_examples);
  v("max_test_examples", c.max_test_examples);
  v("augment", c.augment);
  v("workers", c.workers);
  v("backbone", c.backbone);
  v("width", c.width);
  v("vit_dim", c.vit_dim);
  v("vit_depth", c.vit_depth);
  v("vit_heads", c.vit_heads);
  v("vit_mlp_dim", c.vit_mlp_dim);
  v("patch_size", c.patch_size);
  v("moe_placement", c.moe_placement);
  v("moe_blocks", c.moe_blocks);
  v("experts", c.experts);
  v("expert_hidden", c.expert_hidden);
  v("expert_norm", c.expert_norm);
  v("expert_activation", c.expert_activation);
  v("top_k", c.top_k);
  v("gate", c.gate);
  v("gate_hidden", c.gate_hidden);
  v("scoring", c.scoring);
  v("temperature", c.temperature);
  v("noise", c.noise);
  v("noise_std", c.noise_std);
  v("warmup_random_steps", c.warmup_random_steps);
  v("switch_coef", c.switch_coef);
  v("variance_coef", c.variance_coef);
  v("importance_coef", c.importance_coef);
  v("load_coef", c.load_coef);
  v("z_coef", c.z_coef);
  v("bias_rate", c.bias_rate);
  v("capacity_factor", c.capacity_factor);
  v("routing", c.routing);
  v("oracle_map", c.oracle_map);
  v("controller", c.controller);
  v("prune_below", c.prune_below);
  v("grow_above", c.grow_above);
  v("grow_entropy", c.grow_entropy);
  v("clone_noise", c.clone_noise);
  v("controller_patience", c.controller_patience);
  v("min_experts", c.min_experts);
  v("max_experts", c.max_experts);
  v("epochs", c.epochs);
  v("batch_size", c.batch_size);
  v("optimizer", c.optimizer);
  v("lr", c.lr);
  v("router_lr", c.router_lr);
  v("momentum", c.momentum);
  v("schedule", c.schedule);
  v("warmup_epochs", c.warmup_epochs);
  v("step_epochs", c.step_epochs);
  v("weight_decay", c.weight_decay);
  v("label_smoothing", c.label_smoothing);
  v("seed", c.seed);
  v("threads", c.threads);
  v("device", c.device);
  v("out", c.out);
  v("log_every", c.log_every);
  v("stop_after_epochs", c.stop_after_epochs);
}

// The comma-separated sizes in `text` (one expert's part of --expert-hidden `whole`).
std::vector<int64_t> parse_sizes(const std::string& text, const std::string& whole) {
  std::vector<int64_t> sizes;
  std::stringstream stream(text);
  std::string item;
  while (std::getline(stream, item, ',')) {
    size_t used = 0;
    int64_t value = 0;
    try {
      value = std::stoll(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    MG_CHECK(used > 0 && used == item.size() && value > 0, "train_moe: --expert-hidden '", whole, "': '",
             item, "' is not a positive integer");
    sizes.push_back(value);
  }
  return sizes;
}

void check_one_of(const std::string& flag, const std::string& value, const std::set<std::string>& allowed) {
  if (allowed.count(value)) return;
  std::string list;
  for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
  throw Error("train_moe: " + flag + " must be one of " + list + ", got '" + value + "'");
}

}  // namespace

Device parse_device(const std::string& text) {
  if (text == "cpu") return Device::cpu();
  if (text == "cuda") return Device::cuda();
  const std::string prefix = "cuda:";
  int index = -1;
  if (text.size() > prefix.size() && text.rfind(prefix, 0) == 0) {
    const char *first = text.data() + prefix.size(), *last = text.data() + text.size();
    const auto [end, error] = std::from_chars(first, last, index);
    if (error != std::errc() || end != last) index = -1;
  }
  MG_CHECK(index >= 0, "train_moe: --device must be cpu, cuda or cuda:N, got '", text, "'");
  return Device::cuda(index);
}

std::vector<std::vector<int64_t>> parse_expert_hidden(const std::string& text) {
  std::vector<std::vector<int64_t>> per_expert;
  std::stringstream stream(text);
  std::string item;
  while (std::getline(stream, item, ';')) per_expert.push_back(parse_sizes(item, text));
  if (per_expert.empty() || (!text.empty() && text.back() == ';')) per_expert.emplace_back();
  return per_expert;
}

std::vector<std::vector<int64_t>> expert_hidden_per_expert(const std::string& text, int64_t experts) {
  std::vector<std::vector<int64_t>> lists = parse_expert_hidden(text);
  if (lists.size() == 1) return std::vector<std::vector<int64_t>>(experts, lists.front());
  MG_CHECK(static_cast<int64_t>(lists.size()) == experts, "train_moe: --expert-hidden '", text, "' gives ",
           lists.size(), " per-expert lists (';'-separated) for --experts ", experts,
           "; give one list for all experts or one per expert");
  return lists;
}

void add_flags(CLI::App& app, TrainConfig& c) {
  app.option_defaults()->always_capture_default();
  const std::string data = "Data", model = "Model", moe = "MoE", ctrl = "Grow/prune controller",
                    train = "Training", out = "Outputs";
  app.add_option("--dataset", c.dataset,
                 "auto: CIFAR-100 when <data-dir>/cifar-100-binary exists (or "
                 "--download), else Fashion-MNIST; or cifar100, cifar10, fashion-mnist, mnist, folder")
      ->check(CLI::IsMember({"auto", "cifar100", "cifar10", "fashion-mnist", "mnist", "folder"}))
      ->group(data);
  app.add_option("--data-dir", c.data_dir,
                 "folder holding cifar-100-binary/, cifar-10-batches-bin/, "
                 "mnist/ or fashion-mnist/ (Fashion-MNIST falls back to the Debian package's folder)")
      ->group(data);
  app.add_option("--folder", c.folder,
                 "--dataset folder: a folder with train/ and test/, one subfolder "
                 "per class in each")
      ->group(data);
  app.add_option("--image-size", c.image_size, "--dataset folder: images are resized to this square")
      ->group(data);
  app.add_option("--channels", c.channels, "--dataset folder: 1 (gray) or 3 (RGB)")->group(data);
  app.add_flag("--download", c.download,
               "download CIFAR-100 (curl, MD5-checked) into --data-dir when "
               "it is missing")
      ->group(data);
  app.add_option("--max-train-examples", c.max_train_examples,
                 "use only the first N training "
                 "examples (0: all)")
      ->group(data);
  app.add_option("--max-test-examples", c.max_test_examples, "use only the first N test examples (0: all)")
      ->group(data);
  app.add_flag("--augment,!--no-augment", c.augment,
               "random crop with padding and horizontal flip "
               "(not for MNIST digits) of the training images; off by default, as short runs learn "
               "faster without it")
      ->group(data);
  app.add_option("--workers", c.workers,
                 "loader threads preparing batches ahead (0: none; results "
                 "do not depend on it)")
      ->group(data);

  app.add_option("--backbone", c.backbone, "cnn: a small ResNet-style CNN; vit: a small ViT")
      ->check(CLI::IsMember({"cnn", "vit"}))
      ->group(model);
  app.add_option("--width", c.width, "cnn: channels of the first stage (the later stages have 2x and 4x)")
      ->group(model);
  app.add_option("--vit-dim", c.vit_dim, "vit: token dimension")->group(model);
  app.add_option("--vit-depth", c.vit_depth, "vit: number of transformer blocks")->group(model);
  app.add_option("--vit-heads", c.vit_heads, "vit: attention heads")->group(model);
  app.add_option("--vit-mlp-dim", c.vit_mlp_dim, "vit: hidden size of the dense blocks' MLP")->group(model);
  app.add_option("--patch-size", c.patch_size, "vit: patch side in pixels")->group(model);
  app.add_option("--moe", c.moe_placement,
                 "head: an MoE layer on the pooled features before the "
                 "classifier; blocks: MoE MLPs in transformer blocks, routing each token (V-MoE)")
      ->check(CLI::IsMember({"head", "blocks"}))
      ->group(model);
  app.add_option("--moe-blocks", c.moe_blocks,
                 "--moe blocks: indices of the blocks with an MoE MLP "
                 "(default: every other block, ending with the last)")
      ->delimiter(',')
      ->group(model);

  app.add_option("--experts", c.experts, "number of experts")->group(moe);
  app.add_option("--expert-hidden", c.expert_hidden,
                 "hidden sizes of every expert ('256,128'), or of "
                 "each expert ('256,128;512,256,128')")
      ->group(moe);
  app.add_option("--expert-norm", c.expert_norm, "normalization after each expert hidden layer")
      ->check(CLI::IsMember({"none", "layernorm", "batchnorm"}))
      ->group(moe);
  app.add_option("--expert-activation", c.expert_activation, "activation of the experts")
      ->check(CLI::IsMember({"relu", "gelu", "silu", "tanh"}))
      ->group(moe);
  app.add_option("--top-k", c.top_k, "experts per input")->group(moe);
  app.add_option("--gate", c.gate, "router gate: linear or mlp")
      ->check(CLI::IsMember({"linear", "mlp"}))
      ->group(moe);
  app.add_option("--gate-hidden", c.gate_hidden, "--gate mlp: hidden sizes")->delimiter(',')->group(moe);
  app.add_option("--scoring", c.scoring,
                 "softmax-topk (Switch/Mixtral; k = 1 keeps the raw "
                 "probability), topk-softmax (Shazeer) or sigmoid (DeepSeek-V3)")
      ->check(CLI::IsMember({"softmax-topk", "topk-softmax", "sigmoid"}))
      ->group(moe);
  app.add_option("--temperature", c.temperature, "router logits are divided by this")->group(moe);
  app.add_option("--noise", c.noise,
                 "training noise on the router: none, scaled, learned (Shazeer) "
                 "or jitter (Switch)")
      ->check(CLI::IsMember({"none", "scaled", "learned", "jitter"}))
      ->group(moe);
  app.add_option("--noise-std", c.noise_std, "--noise scaled: std as a multiple of the logits' std")
      ->group(moe);
  app.add_option("--warmup-random-steps", c.warmup_random_steps,
                 "route at random for the first N "
                 "training steps")
      ->group(moe);
  app.add_option("--switch-coef", c.switch_coef, "Switch load-balancing loss weight")->group(moe);
  app.add_option("--variance-coef", c.variance_coef, "usage-variance loss weight")->group(moe);
  app.add_option("--importance-coef", c.importance_coef, "importance CV^2 loss weight (Shazeer)")->group(moe);
  app.add_option("--load-coef", c.load_coef, "load CV^2 loss weight (Shazeer; smooth with --noise learned)")
      ->group(moe);
  app.add_option("--z-coef", c.z_coef, "router z-loss weight (ST-MoE)")->group(moe);
  app.add_option("--bias-rate", c.bias_rate,
                 "auxiliary-loss-free balancing bias update rate "
                 "(DeepSeek-V3; 0: off)")
      ->group(moe);
  app.add_option("--capacity-factor", c.capacity_factor, "expert capacity factor (0: dropless)")->group(moe);
  app.add_option("--routing", c.routing,
                 "learned; oracle (superclass -> expert, or class -> expert "
                 "for sets without superclasses); random")
      ->check(CLI::IsMember({"learned", "oracle", "random"}))
      ->group(moe);
  app.add_option("--oracle-map", c.oracle_map,
                 "--routing oracle: expert of each superclass "
                 "(default: superclass % experts)")
      ->delimiter(',')
      ->group(moe);

  app.add_flag("--controller,!--no-controller", c.controller,
               "grow/prune experts at epoch ends "
               "from their routing shares")
      ->group(ctrl);
  app.add_option("--prune-below", c.prune_below, "prune an expert whose share stays below this")->group(ctrl);
  app.add_option("--grow-above", c.grow_above, "split an expert whose share stays above this")->group(ctrl);
  app.add_option("--grow-entropy", c.grow_entropy,
                 "split the busiest expert when router entropy / "
                 "log(E) stays above this (< 0: off)")
      ->group(ctrl);
  app.add_option("--controller-patience", c.controller_patience, "epochs a condition must hold")->group(ctrl);
  app.add_option("--min-experts", c.min_experts, "never prune below this many experts")->group(ctrl);
  app.add_option("--max-experts", c.max_experts, "never grow beyond this many experts")->group(ctrl);
  app.add_option("--clone-noise", c.clone_noise, "std of the noise added to a split expert's copy")
      ->group(ctrl);

  app.add_option("--epochs", c.epochs, "training epochs")->group(train);
  app.add_option("--batch-size", c.batch_size, "examples per step")->group(train);
  app.add_option("--optimizer", c.optimizer, "sgd (momentum, Nesterov), adam or adamw")
      ->check(CLI::IsMember({"sgd", "adam", "adamw"}))
      ->group(train);
  app.add_option("--lr", c.lr, "learning rate (the peak of the schedule)")->group(train);
  app.add_option("--router-lr", c.router_lr, "learning rate of the routers (0: --lr)")->group(train);
  app.add_option("--momentum", c.momentum, "sgd momentum")->group(train);
  app.add_option("--schedule", c.schedule,
                 "cosine (with linear warmup), onecycle, step or none; "
                 "updated every step")
      ->check(CLI::IsMember({"cosine", "onecycle", "step", "none"}))
      ->group(train);
  app.add_option("--warmup-epochs", c.warmup_epochs, "--schedule cosine: warmup length in epochs")
      ->group(train);
  app.add_option("--step-epochs", c.step_epochs, "--schedule step: lr x 0.1 every this many epochs")
      ->group(train);
  app.add_option("--weight-decay", c.weight_decay,
                 "weight decay (none on norms, biases, position "
                 "embeddings and routers)")
      ->group(train);
  app.add_option("--label-smoothing", c.label_smoothing, "cross-entropy label smoothing")->group(train);
  app.add_option("--seed", c.seed, "fixes every random choice (init, shuffling, augmentation, routing)")
      ->group(train);
  app.add_option("--threads", c.threads, "compute threads (0: MG_NUM_THREADS or every core)")->group(train);
  app.add_option("--device", c.device,
                 "where the model trains: cpu, cuda or cuda:N (a GPU; needs a CUDA-enabled "
                 "build)")
      ->group(train);

  app.add_option("--out", c.out, "run folder (default runs/<dataset>-seed<seed>)")->group(out);
  app.add_option("--log-every", c.log_every, "a training line in metrics.jsonl every N steps")->group(out);
  app.add_option("--stop-after-epochs", c.stop_after_epochs,
                 "stop after N epochs of this invocation, "
                 "as if interrupted; --resume continues (0: run to the end)")
      ->group(out);
}

void validate(const TrainConfig& c) {
  check_one_of("--dataset", c.dataset, {"auto", "cifar100", "cifar10", "fashion-mnist", "mnist", "folder"});
  check_one_of("--backbone", c.backbone, {"cnn", "vit"});
  check_one_of("--moe", c.moe_placement, {"head", "blocks"});
  check_one_of("--expert-norm", c.expert_norm, {"none", "layernorm", "batchnorm"});
  check_one_of("--gate", c.gate, {"linear", "mlp"});
  check_one_of("--scoring", c.scoring, {"softmax-topk", "topk-softmax", "sigmoid"});
  check_one_of("--noise", c.noise, {"none", "scaled", "learned", "jitter"});
  check_one_of("--routing", c.routing, {"learned", "oracle", "random"});
  check_one_of("--optimizer", c.optimizer, {"sgd", "adam", "adamw"});
  check_one_of("--schedule", c.schedule, {"cosine", "onecycle", "step", "none"});
  parse_device(c.device);  // throws on a misspelt device
  MG_CHECK(c.dataset != "folder" || !c.folder.empty(), "train_moe: --dataset folder needs --folder DIR");
  MG_CHECK(c.channels == 1 || c.channels == 3, "train_moe: --channels must be 1 or 3, got ", c.channels);
  MG_CHECK(c.image_size >= 4, "train_moe: --image-size must be at least 4, got ", c.image_size);
  MG_CHECK(c.max_train_examples >= 0 && c.max_test_examples >= 0,
           "train_moe: --max-train-examples / --max-test-examples must be >= 0");
  MG_CHECK(c.workers >= 0, "train_moe: --workers must be >= 0, got ", c.workers);
  MG_CHECK(c.width >= 1, "train_moe: --width must be positive, got ", c.width);
  MG_CHECK(c.vit_dim >= 1 && c.vit_depth >= 1 && c.vit_heads >= 1 && c.vit_mlp_dim >= 1 && c.patch_size >= 1,
           "train_moe: --vit-dim, --vit-depth, --vit-heads, --vit-mlp-dim and --patch-size must be positive");
  MG_CHECK(c.backbone != "vit" || c.vit_dim % c.vit_heads == 0, "train_moe: --vit-dim ", c.vit_dim,
           " is not a multiple of --vit-heads ", c.vit_heads);
  MG_CHECK(c.moe_placement != "blocks" || c.backbone == "vit",
           "train_moe: --moe blocks replaces the MLP "
           "of transformer blocks and needs --backbone vit (the CNN takes --moe head)");
  for (int64_t b : c.moe_blocks)
    MG_CHECK(b >= 0 && b < c.vit_depth, "train_moe: --moe-blocks ", b, " is not a block in [0, ", c.vit_depth,
             ")");
  MG_CHECK(c.experts >= 1, "train_moe: --experts must be at least 1, got ", c.experts);
  expert_hidden_per_expert(c.expert_hidden, c.experts);  // throws on a malformed list
  MG_CHECK(c.top_k >= 1 && c.top_k <= c.experts, "train_moe: --top-k ", c.top_k, " must be in [1, --experts ",
           c.experts, "]");
  for (int32_t e : c.oracle_map)
    MG_CHECK(e >= 0 && e < c.experts, "train_moe: --oracle-map entry ", e, " is not an expert in [0, ",
             c.experts, ")");
  MG_CHECK(!(c.controller && c.routing == "oracle"),
           "train_moe: --controller changes the experts, "
           "which a fixed --routing oracle map cannot follow; use one or the other");
  MG_CHECK(c.epochs >= 1, "train_moe: --epochs must be at least 1, got ", c.epochs);
  MG_CHECK(c.batch_size >= 2, "train_moe: --batch-size must be at least 2 (BatchNorm), got ", c.batch_size);
  MG_CHECK(c.lr > 0 && c.router_lr >= 0, "train_moe: --lr must be positive and --router-lr >= 0");
  MG_CHECK(c.warmup_epochs >= 0 && c.step_epochs >= 1,
           "train_moe: --warmup-epochs must be >= 0 and "
           "--step-epochs >= 1");
  MG_CHECK(c.label_smoothing >= 0 && c.label_smoothing < 1, "train_moe: --label-smoothing must be in [0, 1)");
  MG_CHECK(c.threads >= 0 && c.log_every >= 1 && c.stop_after_epochs >= 0,
           "train_moe: --threads and --stop-after-epochs must be >= 0, --log-every >= 1");
}

nlohmann::ordered_json to_json(const TrainConfig& config) {
  nlohmann::ordered_json j;
  visit_fields(config, [&](const char* name, const auto& value) { j[name] = value; });
  return j;
}

TrainConfig config_from_json(const nlohmann::ordered_json& j) {
  MG_CHECK(j.is_object(), "train_moe: a configuration must be a JSON object, got ", j.dump());
  TrainConfig config;
  std::set<std::string> known;
  visit_fields(config, [&](const char* name, auto& value) {
    known.insert(name);
    if (!j.contains(name)) return;
    try {
      j.at(name).get_to(value);
    } catch (const nlohmann::ordered_json::exception& e) {
      throw Error(std::string("train_moe: configuration field '") + name + "': " + e.what());
    }
  });
  for (const auto& [key, value] : j.items())
    MG_CHECK(known.count(key), "train_moe: unknown configuration field '", key, "'");
  return config;
}

}  // namespace mg::trainer
