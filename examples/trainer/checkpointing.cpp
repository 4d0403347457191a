// Checkpoints of a run and resuming it exactly (see trainer.hpp), on nn/checkpoint.hpp: the model's
// tensors, the optimizer and schedule state, the generators, and in the JSON fields the model spec
// (each expert's current sizes) and the trainer's own counters. Also --eval-only and
// --expert-summary, which rebuild a model from a checkpoint alone.
#include <filesystem>
#include <fstream>
#include <iostream>

#include "examples/common/svg.hpp"
#include "examples/common/table.hpp"
#include "examples/trainer/outputs.hpp"
#include "examples/trainer/trainer.hpp"
#include "moe/expert.hpp"

namespace mg::trainer {
namespace {

namespace fs = std::filesystem;
using ojson = nlohmann::ordered_json;

constexpr const char* kLastCheckpoint = "last.safetensors";

ModelSpec spec_of(const nn::TrainingState& state) {
  return spec_from_json(ojson::parse(state.model_config_json));
}

void check_data_matches(const ModelSpec& spec, const TrainingData& data, const std::string& checkpoint) {
  MG_CHECK(data.train.channels == spec.channels && data.train.height == spec.height &&
               data.train.width == spec.width && data.train.num_classes() == spec.num_classes,
           "train_moe: ", checkpoint, " was trained on ", spec.channels, "x", spec.height, "x", spec.width,
           " images of ", spec.num_classes, " classes, but ", data.source, " has ", data.train.channels, "x",
           data.train.height, "x", data.train.width, " images of ", data.train.num_classes(), " classes");
}

// Keeps the lines of metrics.jsonl up to the checkpoint's step, as they were written: a crash after
// the last checkpoint may have left later records (or half a line), which the resumed run writes
// again.
void truncate_metrics(const std::string& path, int64_t step) {
  std::ifstream in(path);
  std::string line, kept;
  while (std::getline(in, line)) {
    const ojson record = ojson::parse(line, nullptr, /*allow_exceptions=*/false);
    if (record.is_discarded()) break;
    if (record.value("step", int64_t{0}) <= step) kept += line + "\n";
  }
  report::write_text_file(path, kept);
}

}  // namespace

std::string checkpoint_path(const std::string& run_dir_or_checkpoint) {
  const fs::path p(run_dir_or_checkpoint);
  const fs::path file = fs::is_directory(p) ? p / kLastCheckpoint : p;
  MG_CHECK(fs::is_regular_file(file), "train_moe: no checkpoint at ", file.string(),
           " (give a run folder holding ", kLastCheckpoint, ", or a .safetensors checkpoint)");
  return file.string();
}

LoadedModel load_model(const std::string& checkpoint) {
  LoadedModel out;
  const ModelSpec spec = spec_of(nn::read_checkpoint_metadata(checkpoint));
  out.config = spec.config;
  manual_seed(spec.config.seed);
  out.model = std::make_shared<MoEClassifier>(spec);
  out.state = nn::load_checkpoint(checkpoint, *out.model);
  return out;
}

std::map<std::string, Generator*> Trainer::router_generators() const {
  std::map<std::string, Generator*> named;
  for (size_t l = 0; l < model_->moe_layers().size(); ++l)
    named["router." + std::to_string(l)] = &model_->moe_layers()[l]->router().generator();
  return named;
}

void Trainer::save_checkpoint(const std::string& path) const {
  nn::TrainingState state;
  state.step = step_;
  state.epoch = epochs_done_;
  ModelSpec spec = model_->spec();
  spec.config = config_;
  state.model_config_json = spec_to_json(spec).dump();
  nn::capture_optimizer_state(state, optimization_->optimizer(), optimization_->scheduler());
  nn::capture_rng_states(state, router_generators());
  ojson router_steps = ojson::array();
  for (const auto& layer : model_->moe_layers()) router_steps.push_back(layer->router().steps());
  state.extra_json = ojson{{"best_top1", best_top1_},
                           {"best_epoch", best_epoch_},
                           {"train_seconds", train_seconds_},
                           {"router_steps", router_steps},
                           {"controller_inputs", controller_inputs_}}
                         .dump();
  nn::save_checkpoint(path, *model_, state);
}

std::unique_ptr<Trainer> Trainer::resume(const std::string& run_dir_or_checkpoint,
                                         const ResumeOverrides& overrides, std::ostream& log,
                                         std::ostream* progress) {
  return std::unique_ptr<Trainer>(
      new Trainer(ResumeTag{}, checkpoint_path(run_dir_or_checkpoint), overrides, log, progress));
}

Trainer::Trainer(ResumeTag, const std::string& checkpoint, const ResumeOverrides& overrides,
                 std::ostream& log, std::ostream* progress)
    : log_(log), progress_(progress) {
  const ModelSpec spec = spec_of(nn::read_checkpoint_metadata(checkpoint));
  config_ = spec.config;
  config_.threads = overrides.threads.value_or(config_.threads);
  config_.workers = overrides.workers.value_or(config_.workers);
  config_.stop_after_epochs = overrides.stop_after_epochs.value_or(0);
  config_.device = overrides.device.value_or(config_.device);
  validate(config_);
  const Device device = usable_device(config_.device);
  apply_threads(config_.threads);
  run_dir_ = fs::path(checkpoint).parent_path().string();
  if (run_dir_.empty()) run_dir_ = ".";
  config_.out = run_dir_;
  data_ = load_training_data(config_);
  check_data_matches(spec, data_, checkpoint);
  manual_seed(config_.seed);
  model_ = std::make_shared<MoEClassifier>(spec);
  const nn::TrainingState state = nn::load_checkpoint(checkpoint, *model_);
  model_->to(device);
  setup(/*fresh=*/false);
  restore(state);
  log_ << "resumed " << checkpoint << " after epoch " << epochs_done_ << " (step " << step_ << ")\n";
}

void Trainer::restore(const nn::TrainingState& state) {
  nn::restore_optimizer_state(state, optimization_->optimizer(), optimization_->scheduler());
  nn::restore_rng_states(state, router_generators());
  const ojson extra = ojson::parse(state.extra_json);
  const auto router_steps = extra.at("router_steps").get<std::vector<int64_t>>();
  MG_CHECK(router_steps.size() == model_->moe_layers().size(),
           "train_moe: the checkpoint has router step "
           "counters for ",
           router_steps.size(), " MoE layers, the model ", model_->moe_layers().size());
  for (size_t l = 0; l < router_steps.size(); ++l)
    model_->moe_layers()[l]->router().set_steps(router_steps[l]);
  best_top1_ = extra.at("best_top1").get<double>();
  best_epoch_ = extra.at("best_epoch").get<int64_t>();
  train_seconds_ = extra.at("train_seconds").get<double>();
  controller_inputs_ = extra.at("controller_inputs");
  replay_controllers(controller_inputs_);
  epochs_done_ = state.epoch;
  step_ = state.step;
  const std::string metrics_path = (fs::path(run_dir_) / "metrics.jsonl").string();
  truncate_metrics(metrics_path, step_);
  metrics_ = std::make_unique<report::JsonlWriter>(metrics_path, true);
}

// Each controller sees again the statistics of every evaluation it made, on a stand-in layer that
// starts with the run's initial experts: its decisions, and so its streaks, come out as they were.
// The stand-in's experts are single-unit FFNs: only their number matters to the controller.
void Trainer::replay_controllers(const ojson& inputs) {
  if (!config_.controller) return;
  MG_CHECK(inputs.size() == controllers_.size(), "train_moe: the checkpoint has controller inputs for ",
           inputs.size(), " MoE layers, the model ", controllers_.size());
  for (size_t l = 0; l < controllers_.size(); ++l) {
    moe::MoEConfig mc;
    mc.router.input_dim = 1;
    mc.router.num_experts = config_.experts;
    mc.router.top_k = config_.top_k;
    std::vector<nn::ModulePtr> experts;
    for (int64_t e = 0; e < config_.experts; ++e)
      experts.push_back(std::make_shared<moe::FFNExpert>(moe::FFNExpertConfig{1, 1, {1}}));
    moe::MoELayer stand_in(mc, experts, {}, moe::make_ffn_expert_like);
    for (const ojson& seen : inputs[l]) {
      moe::StepStats stats;
      stats.fraction = seen.at("fraction").get<std::vector<double>>();
      stats.router_entropy = seen.at("router_entropy").get<double>();
      controllers_[l].evaluate(stand_in, stats);
    }
    MG_CHECK(stand_in.num_experts() == model_->moe_layers()[l]->num_experts(),
             "train_moe: replaying the "
             "controller of ",
             model_->moe_layer_names()[l], " gives ", stand_in.num_experts(), " experts, the checkpoint has ",
             model_->moe_layers()[l]->num_experts());
  }
}

Evaluation evaluate_checkpoint(const std::string& run_dir_or_checkpoint, const ResumeOverrides& overrides,
                               bool expert_summary, std::ostream& log) {
  const std::string checkpoint = checkpoint_path(run_dir_or_checkpoint);
  LoadedModel loaded = load_model(checkpoint);
  TrainConfig config = loaded.config;
  config.workers = overrides.workers.value_or(config.workers);
  loaded.model->to(usable_device(overrides.device.value_or(config.device)));
  apply_threads(overrides.threads.value_or(config.threads));
  const TrainingData data = load_training_data(config);
  check_data_matches(loaded.model->spec(), data, checkpoint);
  log << checkpoint << ": epoch " << loaded.state.epoch << ", step " << loaded.state.step << ", evaluated on "
      << loaded.model->device().str() << "; " << data.source << "\n";
  const Evaluation eval =
      evaluate(*loaded.model, data.test, test_transform(data.train), config.batch_size, config.workers);
  log << evaluation_text(eval, data.test);
  if (expert_summary)
    log << report::format_table(expert_summary_header(), expert_summary_rows(*loaded.model, eval));
  return eval;
}

}  // namespace mg::trainer
