// The training run: data, model, optimizer, the epoch loop with its progress bar and per-epoch
// report, the grow/prune controllers, checkpoints and the run folder:
//   <run>/config.json        the configuration (the dataset `auto` resolved)
//   <run>/metrics.jsonl      a "step" line every --log-every steps, an "epoch" line per epoch
//   <run>/last.safetensors   the checkpoint to resume from (written atomically every epoch)
//   <run>/best.safetensors   the checkpoint of the best test top-1 so far
//   <run>/*.svg, report.html the plots and the page that ties them together (outputs.hpp)
//
// Resuming is exact: the checkpoint holds the model (with each expert's current sizes), optimizer
// and schedule state, the default and router generators, the routers' step counters, the best
// score so far and the controllers' inputs; the loader's order depends only on (seed, epoch). So
// 1 epoch + resume + 1 epoch gives the numbers of 2 epochs in one go.
#pragma once
#include <iosfwd>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "data/loader.hpp"
#include "engine/generator.hpp"
#include "examples/common/metrics.hpp"
#include "examples/trainer/config.hpp"
#include "examples/trainer/datasets.hpp"
#include "examples/trainer/evaluation.hpp"
#include "examples/trainer/models.hpp"
#include "examples/trainer/optimization.hpp"
#include "moe/controller.hpp"
#include "nn/checkpoint.hpp"

namespace mg::trainer {

// What may change when a run is resumed or a checkpoint evaluated. Threads and workers leave the
// numbers as they are; another device changes them by float rounding only (a run trained on a GPU
// continues, or is evaluated, where there is none).
struct ResumeOverrides {
  std::optional<int64_t> threads, workers, stop_after_epochs;
  std::optional<std::string> device;
};

// Applies --threads (0: leave MG_NUM_THREADS / the default).
void apply_threads(int64_t threads);

// The device --device names, once this build and machine can run on it; otherwise throws mg::Error
// naming the device and why not (the build has no CUDA backend, no GPU or driver, no such index).
// Runs call it before they read any data.
Device usable_device(const std::string& name);

// The checkpoint a --resume / --eval-only / --expert-summary argument names: a file as it is, a run
// folder's last.safetensors.
std::string checkpoint_path(const std::string& run_dir_or_checkpoint);

// A model rebuilt from a checkpoint (architecture from its metadata, then its weights), on the CPU,
// with the configuration it was trained with.
struct LoadedModel {
  std::shared_ptr<MoEClassifier> model;
  TrainConfig config;
  nn::TrainingState state;
};
LoadedModel load_model(const std::string& checkpoint);

// --eval-only / --expert-summary: evaluates a checkpoint on the test split of the data it was
// trained on, printing the accuracies (and the per-expert table) to `log`.
Evaluation evaluate_checkpoint(const std::string& run_dir_or_checkpoint, const ResumeOverrides& overrides,
                               bool expert_summary, std::ostream& log);

class Trainer {
 public:
  // A new run: reads the data, builds the model from config.seed, creates the run folder. Text goes
  // to `log`, the progress bar to `progress` (nullptr: stderr, redrawn in place on a terminal).
  Trainer(TrainConfig config, std::ostream& log, std::ostream* progress = nullptr);
  // Continues the run that `run_dir_or_checkpoint` belongs to, from its checkpoint.
  static std::unique_ptr<Trainer> resume(const std::string& run_dir_or_checkpoint,
                                         const ResumeOverrides& overrides, std::ostream& log,
                                         std::ostream* progress = nullptr);
  ~Trainer();
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;

  // Trains the remaining epochs (at most --stop-after-epochs of them), then writes the plots and
  // report.html and prints where everything is.
  void run();

  MoEClassifier& model() { return *model_; }
  const TrainingData& data() const { return data_; }
  int64_t epochs_done() const { return epochs_done_; }
  const Evaluation& last_evaluation() const { return last_eval_; }
  Evaluation evaluate_test();

 private:
  struct ResumeTag {};
  Trainer(ResumeTag, const std::string& checkpoint, const ResumeOverrides& overrides, std::ostream& log,
          std::ostream* progress);
  void setup(bool fresh);
  void train_epoch();
  nlohmann::ordered_json end_of_epoch(const nlohmann::ordered_json& train,
                                      const std::vector<moe::StepStats>& routing,
                                      const std::vector<std::string>& stuck_warnings);
  void save_checkpoint(const std::string& path) const;
  void restore(const nn::TrainingState& state);
  std::map<std::string, Generator*> router_generators() const;
  void replay_controllers(const nlohmann::ordered_json& inputs);
  void finish();

  TrainConfig config_;
  std::ostream& log_;
  std::ostream* progress_;
  TrainingData data_;
  data::TransformPtr train_transform_, test_transform_;
  std::unique_ptr<data::DataLoader> train_loader_;
  std::shared_ptr<MoEClassifier> model_;
  std::unique_ptr<Optimization> optimization_;
  std::vector<moe::GrowPruneController> controllers_;
  // Per layer, the (fraction, router_entropy) each controller evaluation saw: replayed on resume to
  // rebuild the controllers' streaks, which moe::GrowPruneController does not expose.
  nlohmann::ordered_json controller_inputs_;
  std::vector<moe::StuckGateDetector> stuck_detectors_;
  std::unique_ptr<report::JsonlWriter> metrics_;
  std::string run_dir_;
  int64_t epochs_done_ = 0, step_ = 0;
  double best_top1_ = -1.0, train_seconds_ = 0.0;
  int64_t best_epoch_ = 0;
  Evaluation last_eval_;
};

}  // namespace mg::trainer
