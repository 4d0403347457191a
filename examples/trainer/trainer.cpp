// The training loop of a run (see trainer.hpp): per step forward with routing labels, cross-entropy
// plus every MoE layer's auxiliary loss, backward, optimizer and schedule step, then the routers'
// auxiliary-loss-free bias update; per epoch a test evaluation, the grow/prune controllers, a
// metrics record and the checkpoints. Checkpointing and resuming are in checkpointing.cpp.
#include "examples/trainer/trainer.hpp"

#include <chrono>
#include <ctime>
#include <filesystem>
#include <iostream>

#include "engine/cuda_device.hpp"
#include "engine/ops.hpp"
#include "engine/parallel.hpp"
#include "examples/common/progress.hpp"
#include "examples/common/svg.hpp"
#include "examples/common/table.hpp"
#include "examples/trainer/outputs.hpp"

namespace mg::trainer {

namespace fs = std::filesystem;

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

std::string default_run_dir(const TrainConfig& c) {
  const std::time_t now = std::time(nullptr);
  char stamp[32];
  std::strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", std::localtime(&now));
  return (fs::path("runs") / (c.dataset + "-" + stamp + "-seed" + std::to_string(c.seed))).string();
}

// Sums over the steps of a window (a log interval, or an epoch).
struct Tally {
  double loss = 0, aux = 0;
  int64_t correct = 0, images = 0, steps = 0;
  void add(double step_loss, double step_aux, int64_t step_correct, int64_t batch) {
    loss += step_loss * batch;
    aux += step_aux;
    correct += step_correct;
    images += batch;
    ++steps;
  }
  double mean_loss() const { return images > 0 ? loss / images : NAN; }
  double accuracy() const { return images > 0 ? double(correct) / images : NAN; }
  double mean_aux() const { return steps > 0 ? aux / steps : NAN; }
};

}  // namespace

void apply_threads(int64_t threads) {
  if (threads > 0) set_num_threads(static_cast<int>(threads));
}

Device usable_device(const std::string& name) {
  const Device device = parse_device(name);
  if (device.is_cpu()) return device;
  MG_CHECK(cuda::is_available(), "train_moe: --device ", name,
           " is not available: ", cuda::unavailable_reason());
  MG_CHECK(device.index < cuda::device_count(), "train_moe: --device ", name,
           " is not available: this machine has ", cuda::device_count(), " CUDA device(s)");
  return device;
}

Trainer::Trainer(TrainConfig config, std::ostream& log, std::ostream* progress)
    : config_(std::move(config)), log_(log), progress_(progress) {
  validate(config_);
  const Device device = usable_device(config_.device);
  apply_threads(config_.threads);
  data_ = load_training_data(config_);
  run_dir_ = config_.out.empty() ? default_run_dir(config_) : config_.out;
  config_.out = run_dir_;
  manual_seed(config_.seed);
  // Built on the CPU, so that its initial weights do not depend on the device.
  model_ = std::make_shared<MoEClassifier>(initial_spec(config_, data_.train.channels, data_.train.height,
                                                        data_.train.width, data_.train.num_classes(),
                                                        num_routing_labels(data_.train)));
  model_->to(device);
  setup(/*fresh=*/true);
}

// What a new and a resumed run share: transforms, loader, optimizer (over the parameters where they
// now are, so its state is created beside them), controllers, metrics file.
void Trainer::setup(bool fresh) {
  train_transform_ = train_transform(config_, data_.train);
  test_transform_ = test_transform(data_.train);
  data::LoaderOptions options;
  options.batch_size = config_.batch_size;
  options.shuffle = true;
  options.drop_last = true;  // equal batches: BatchNorm and the balancing losses see full ones
  options.seed = config_.seed;
  options.workers = config_.workers;
  train_loader_ = std::make_unique<data::DataLoader>(data_.train, options, train_transform_);
  optimization_ = std::make_unique<Optimization>(*model_, config_, train_loader_->num_batches());
  moe::ControllerConfig cc;
  cc.prune_below_share = config_.prune_below;
  cc.grow_above_share = config_.grow_above;
  cc.grow_above_entropy = config_.grow_entropy;
  cc.patience = config_.controller_patience;
  cc.min_experts = config_.min_experts;
  cc.max_experts = config_.max_experts;
  cc.clone_noise_std = config_.clone_noise;
  controllers_.assign(model_->moe_layers().size(), moe::GrowPruneController(cc));
  stuck_detectors_.assign(model_->moe_layers().size(), moe::StuckGateDetector());
  if (fresh) {
    controller_inputs_ = nlohmann::ordered_json::array();
    for (size_t l = 0; l < controllers_.size(); ++l)
      controller_inputs_.push_back(nlohmann::ordered_json::array());
    fs::create_directories(run_dir_);
    report::write_text_file((fs::path(run_dir_) / "config.json").string(), to_json(config_).dump(2) + "\n");
    metrics_ = std::make_unique<report::JsonlWriter>((fs::path(run_dir_) / "metrics.jsonl").string(), false);
  }
  int64_t parameters = 0;
  for (const Tensor& p : model_->parameters()) parameters += p.numel();
  log_ << "data: " << data_.source << "\n      " << data_.train.size() << " train / " << data_.test.size()
       << " test images " << data_.train.channels << "x" << data_.train.height << "x" << data_.train.width
       << ", " << data_.train.num_classes() << " classes"
       << (has_superclasses(data_.train) ? ", " + std::to_string(data_.train.num_coarse()) + " superclasses"
                                         : "")
       << "\nmodel: " << config_.backbone << " backbone, MoE " << config_.moe_placement << " ("
       << model_->moe_layers().size() << " layer(s) of " << model_->moe_layers().front()->num_experts()
       << " experts, top-" << config_.top_k << ", " << config_.routing << " routing), " << parameters
       << " parameters on " << model_->device().str() << "; " << get_num_threads()
       << " threads\nrun folder: " << run_dir_ << "\n";
}

Trainer::~Trainer() = default;

Evaluation Trainer::evaluate_test() {
  return evaluate(*model_, data_.test, test_transform_, config_.batch_size, config_.workers);
}

void Trainer::run() {
  const int64_t last_epoch = config_.stop_after_epochs > 0
                                 ? std::min(config_.epochs, epochs_done_ + config_.stop_after_epochs)
                                 : config_.epochs;
  while (epochs_done_ < last_epoch) train_epoch();
  if (epochs_done_ < config_.epochs)
    log_ << "stopped after epoch " << epochs_done_ << " of " << config_.epochs << " (--stop-after-epochs); "
         << "continue with: train_moe --resume " << run_dir_ << "\n";
  finish();
}

void Trainer::train_epoch() {
  const int64_t epoch = epochs_done_ + 1;
  const auto& layers = model_->moe_layers();
  std::vector<moe::StatsAccumulator> routing;
  for (const auto& layer : layers) routing.emplace_back(layer->num_experts());
  std::vector<moe::StatsAccumulator> window_routing = routing;
  std::vector<std::string> stuck_warnings(layers.size());
  Tally epoch_tally, window;
  const bool superclasses = has_superclasses(data_.train);
  const CrossEntropyOptions ce = CrossEntropyOptions().label_smoothing(config_.label_smoothing);
  const Device device = model_->device();

  model_->train();
  train_loader_->start_epoch(epochs_done_);
  report::ProgressBar bar("epoch " + std::to_string(epoch) + "/" + std::to_string(config_.epochs),
                          train_loader_->num_batches(), progress_);
  const auto start = Clock::now();
  auto window_start = start;
  int64_t done = 0;
  while (auto batch = train_loader_->next()) {
    to_device(*batch, device);
    const Tensor routing_labels = superclasses ? batch->coarse_labels : batch->labels;
    optimization_->optimizer().zero_grad();
    const Tensor logits = model_->forward(batch->images, routing_labels);
    const Tensor task_loss = cross_entropy(logits, batch->labels, ce);
    Tensor aux_loss = zeros({}, device);
    for (const auto& layer : layers) aux_loss = aux_loss + layer->aux_loss();
    (task_loss + aux_loss).backward();
    optimization_->step();
    for (const auto& layer : layers) layer->update_router_bias();
    ++step_;
    ++done;

    const int64_t B = logits.size(0);
    const int64_t correct = eq(logits.argmax(1), batch->labels).sum().item<int32_t>();
    const double loss_value = task_loss.item(), aux_value = aux_loss.item();
    epoch_tally.add(loss_value, aux_value, correct, B);
    window.add(loss_value, aux_value, correct, B);
    for (size_t l = 0; l < layers.size(); ++l) {
      routing[l].add(layers[l]->last_stats());
      window_routing[l].add(layers[l]->last_stats());
      if (stuck_detectors_[l].update(layers[l]->last_stats()))
        stuck_warnings[l] = "step " + std::to_string(step_) + ": " + stuck_detectors_[l].message();
    }
    const double rate = epoch_tally.images / std::max(1e-9, seconds_since(start));
    bar.update(done, {{"loss", report::fmt(epoch_tally.mean_loss(), 3)},
                      {"acc", report::fmt(100 * epoch_tally.accuracy(), 1) + "%"},
                      {"", report::fmt(rate, 0) + " img/s"}});
    if (step_ % config_.log_every == 0) {
      nlohmann::ordered_json moe = nlohmann::ordered_json::array();
      for (size_t l = 0; l < layers.size(); ++l)
        moe.push_back(
            {{"layer", model_->moe_layer_names()[l]}, {"fraction", window_routing[l].epoch().fraction}});
      metrics_->write_line(nlohmann::ordered_json{
          {"type", "step"},
          {"epoch", epoch},
          {"step", step_},
          {"loss", window.mean_loss()},
          {"acc", window.accuracy()},
          {"aux_loss", window.mean_aux()},
          {"lr", optimization_->lr()},
          {"img_per_s", window.images / std::max(1e-9, seconds_since(window_start))},
          {"moe", moe}}.dump());
      window = Tally();
      for (size_t l = 0; l < layers.size(); ++l)
        window_routing[l] = moe::StatsAccumulator(layers[l]->num_experts());
      window_start = Clock::now();
    }
  }
  const double seconds = seconds_since(start);
  bar.finish({{"loss", report::fmt(epoch_tally.mean_loss(), 3)},
              {"acc", report::fmt(100 * epoch_tally.accuracy(), 1) + "%"},
              {"", report::fmt(epoch_tally.images / std::max(1e-9, seconds), 0) + " img/s"}});
  train_seconds_ += seconds;

  nlohmann::ordered_json train{{"loss", epoch_tally.mean_loss()},
                               {"acc", epoch_tally.accuracy()},
                               {"aux_loss", epoch_tally.mean_aux()},
                               {"images", epoch_tally.images},
                               {"seconds", seconds},
                               {"img_per_s", epoch_tally.images / std::max(1e-9, seconds)}};
  std::vector<moe::StepStats> epoch_routing;
  for (const auto& r : routing) epoch_routing.push_back(r.epoch());
  const nlohmann::ordered_json record = end_of_epoch(train, epoch_routing, stuck_warnings);
  log_ << epoch_text(record, data_.test, config_.epochs) << std::flush;
}

// Evaluation, best checkpoint, controllers, the epoch's metrics record, the last checkpoint.
nlohmann::ordered_json Trainer::end_of_epoch(const nlohmann::ordered_json& train,
                                             const std::vector<moe::StepStats>& routing,
                                             const std::vector<std::string>& stuck_warnings) {
  last_eval_ = evaluate_test();
  ++epochs_done_;
  const bool best = last_eval_.top1 > best_top1_;
  if (best) {
    best_top1_ = last_eval_.top1;
    best_epoch_ = epochs_done_;
  }
  // The best checkpoint holds the model that was just evaluated, before any grow/prune changes it.
  if (best) save_checkpoint((fs::path(run_dir_) / "best.safetensors").string());

  const auto& layers = model_->moe_layers();
  const nlohmann::ordered_json test = evaluation_json(last_eval_);
  const ModelSpec spec = model_->spec();
  nlohmann::ordered_json moe = nlohmann::ordered_json::array();
  for (size_t l = 0; l < layers.size(); ++l) {
    nlohmann::ordered_json hidden = nlohmann::ordered_json::array();
    for (const ExpertSpec& e : spec.moe_layers[l]) hidden.push_back(e.hidden);
    moe.push_back({{"layer", model_->moe_layer_names()[l]},
                   {"experts", layers[l]->num_experts()},
                   {"expert_hidden", hidden},
                   {"train", nlohmann::ordered_json::parse(routing[l].to_json())},
                   {"stuck_warning", stuck_warnings[l]},
                   {"test", test["layers"][l]},
                   {"controller", nlohmann::ordered_json::array()}});
  }
  if (config_.controller) {
    bool changed = false;
    for (size_t l = 0; l < layers.size(); ++l) {
      controller_inputs_[l].push_back(
          {{"fraction", routing[l].fraction}, {"router_entropy", routing[l].router_entropy}});
      for (const moe::ControllerDecision& d :
           controllers_[l].evaluate(*layers[l], routing[l], &optimization_->optimizer())) {
        moe[l]["controller"].push_back(nlohmann::ordered_json::parse(d.to_json()));
        changed = true;
      }
    }
    if (changed) optimization_->rebuild(*model_);
  }
  nlohmann::ordered_json record{{"type", "epoch"},
                                {"epoch", epochs_done_},
                                {"step", step_},
                                {"lr", optimization_->lr()},
                                {"train", train}};
  record["test"] = test;
  record["test"].erase("layers");
  record["moe"] = moe;
  record["best_top1"] = best_top1_;
  record["best_epoch"] = best_epoch_;
  record["train_seconds_total"] = train_seconds_;
  metrics_->write_line(record.dump());
  save_checkpoint((fs::path(run_dir_) / "last.safetensors").string());
  return record;
}

void Trainer::finish() {
  if (epochs_done_ == 0) return;
  if (last_eval_.examples == 0) last_eval_ = evaluate_test();  // resumed a finished run
  ReportContext ctx;
  ctx.run_dir = run_dir_;
  ctx.config = config_;
  ctx.data_source = data_.source;
  ctx.test = &data_.test;
  ctx.model = model_.get();
  ctx.last_eval = &last_eval_;
  ctx.train_seconds = train_seconds_;
  const std::vector<std::string> files =
      write_report(ctx, report::read_jsonl((fs::path(run_dir_) / "metrics.jsonl").string()));
  log_ << "\nbest test top-1 " << report::fmt(100 * best_top1_, 2) << "% (epoch " << best_epoch_ << "); "
       << "training time " << report::format_duration(train_seconds_) << " on " << model_->device().str()
       << "\n";
  log_ << "run folder " << run_dir_ << ":\n";
  for (const std::string& f : files) log_ << "  " << f << "\n";
  for (const char* ckpt : {"last.safetensors", "best.safetensors"})
    log_ << "  " << (fs::path(run_dir_) / ckpt).string() << "\n";
}

}  // namespace mg::trainer
