// What a run leaves for people: the metrics.jsonl records, the per-epoch text printed to the
// terminal, and at the end the SVG plots and report.html (through examples/common), all made from
// the records, so a resumed run's report covers its whole history.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "data/dataset.hpp"
#include "examples/trainer/config.hpp"
#include "examples/trainer/evaluation.hpp"
#include "examples/trainer/models.hpp"

namespace mg::trainer {

// The "test" part of an epoch record (accuracies, and per MoE layer where the test set was routed).
nlohmann::ordered_json evaluation_json(const Evaluation& eval);

// The lines printed after an epoch, from its metrics record.
std::string epoch_text(const nlohmann::ordered_json& record, const data::ImageDataset& test, int64_t epochs);

// Text of an evaluation (--eval-only).
std::string evaluation_text(const Evaluation& eval, const data::ImageDataset& test);

struct ReportContext {
  std::string run_dir;
  TrainConfig config;
  std::string data_source;
  const data::ImageDataset* test = nullptr;
  const MoEClassifier* model = nullptr;
  const Evaluation* last_eval = nullptr;  // the model's last test evaluation
  double train_seconds = 0.0;
};

// Writes the SVG plots and report.html into ctx.run_dir from the metrics records; returns the
// files written.
std::vector<std::string> write_report(const ReportContext& ctx, const std::vector<nlohmann::json>& records);

}  // namespace mg::trainer
