// train_moe: the project's main program. Trains a Mixture-of-Experts image classifier (CIFAR-100
// when it is on disk, else the offline Fashion-MNIST), shows its progress, and leaves metrics,
// checkpoints, plots and report.html in a run folder. The work is in the moegrad_trainer library
// (trainer.hpp); this file only reads the command line.
//
//   train_moe                              the default run
//   train_moe --epochs 30 --experts 8      any setting: train_moe --help lists them all
//   train_moe --device cuda                the same run on the GPU
//   train_moe --resume runs/<run>          continue an interrupted run exactly
//   train_moe --eval-only runs/<run>       evaluate its last checkpoint (or a given .safetensors)
//   train_moe --expert-summary runs/<run>  per-expert sizes, parameters, share and accuracy
#include <CLI/CLI.hpp>
#include <iostream>
#include <set>

#include "examples/trainer/trainer.hpp"

int main(int argc, char** argv) {
  using namespace mg::trainer;
  TrainConfig config;
  CLI::App app{
      "train_moe: trains a Mixture-of-Experts image classifier and writes its run folder "
      "(metrics.jsonl, checkpoints, SVG plots, report.html)."};
  add_flags(app, config);
  std::string resume, eval_only, expert_summary;
  auto* resume_opt = app.add_option("--resume", resume,
                                    "continue the run in this folder (or from this "
                                    "checkpoint) exactly where it stopped; only --threads, --workers, "
                                    "--stop-after-epochs and --device may be given with it")
                         ->group("Runs");
  auto* eval_opt = app.add_option("--eval-only", eval_only,
                                  "evaluate a checkpoint (or a run folder's last "
                                  "one) on its test set")
                       ->group("Runs");
  auto* summary_opt = app.add_option("--expert-summary", expert_summary,
                                     "evaluate a checkpoint and print "
                                     "each expert's sizes, parameters, share, accuracy and frozen state")
                          ->group("Runs");
  resume_opt->excludes(eval_opt)->excludes(summary_opt);
  eval_opt->excludes(summary_opt);
  CLI11_PARSE(app, argc, argv);

  try {
    ResumeOverrides overrides;
    if (app.count("--threads")) overrides.threads = config.threads;
    if (app.count("--workers")) overrides.workers = config.workers;
    if (app.count("--stop-after-epochs")) overrides.stop_after_epochs = config.stop_after_epochs;
    if (app.count("--device")) overrides.device = config.device;
    if (!eval_only.empty() || !expert_summary.empty()) {
      evaluate_checkpoint(eval_only.empty() ? expert_summary : eval_only, overrides, !expert_summary.empty(),
                          std::cout);
      return 0;
    }
    if (!resume.empty()) {
      // The run's own configuration comes from its checkpoint; anything else would silently change it.
      const std::set<std::string> allowed{"--resume", "--threads", "--workers", "--stop-after-epochs",
                                          "--device"};
      for (const CLI::Option* opt : app.get_options())
        if (opt->count() > 0 && !allowed.count(opt->get_name()))
          throw mg::Error("--resume continues a run with the settings it was started with; " +
                          opt->get_name() + " cannot change (start a new run instead)");
      Trainer::resume(resume, overrides, std::cout)->run();
      return 0;
    }
    Trainer trainer(config, std::cout);
    trainer.run();
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
