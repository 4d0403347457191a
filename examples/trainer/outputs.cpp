// The trainer's records, terminal text, plots and report.html (see outputs.hpp). Plots and the page
// come from examples/common (svg.hpp, html.hpp); this file only decides what to show.
#include "examples/trainer/outputs.hpp"

#include <filesystem>
#include <sstream>

#include "examples/common/html.hpp"
#include "examples/common/progress.hpp"
#include "examples/common/svg.hpp"
#include "examples/common/table.hpp"

namespace mg::trainer {
namespace {

namespace fs = std::filesystem;
using ojson = nlohmann::ordered_json;
using json = nlohmann::json;

std::string percent(double share, int decimals = 1) { return report::fmt(100 * share, decimals) + "%"; }

double number(const json& j) { return j.is_number() ? j.get<double>() : NAN; }

// Items joined by ", ", broken into indented lines of about `width` characters.
std::string wrapped(const std::string& head, const std::vector<std::string>& items, size_t width = 100) {
  std::string out = head, line = head;
  for (size_t i = 0; i < items.size(); ++i) {
    const std::string piece = items[i] + (i + 1 < items.size() ? ", " : "");
    if (line.size() + piece.size() > width && line.size() > head.size()) {
      line.assign(head.size(), ' ');
      out += '\n';
      out += line;
    }
    out += piece;
    line += piece;
  }
  return out + "\n";
}

std::string shares_text(const std::vector<double>& fraction) {
  std::string s;
  for (double f : fraction) {
    if (!s.empty()) s += ' ';
    s += report::fmt(100 * f, 0);
    s += '%';
  }
  return s;
}

// Superclasses without test images (NaN accuracy) are left out.
std::vector<std::string> superclass_items(const std::vector<double>& accuracy,
                                          const data::ImageDataset& test) {
  std::vector<std::string> items;
  for (size_t s = 0; s < accuracy.size(); ++s)
    if (std::isfinite(accuracy[s])) items.push_back(test.coarse_names.at(s) + " " + percent(accuracy[s]));
  return items;
}

std::string layer_routing_text(const std::string& name, const ojson& test_layer) {
  std::string s = "  moe " + name + " (test): router entropy " +
                  report::fmt(number(test_layer["stats"]["router_entropy"]), 3) + " nats";
  if (!test_layer["router_accuracy"].is_null())
    s += ", router vs oracle " + percent(number(test_layer["router_accuracy"])) + " (" +
         percent(number(test_layer["aligned_router_accuracy"])) + " with the experts relabelled)";
  return s + "\n";
}

std::vector<std::string> expert_names(size_t n) {
  std::vector<std::string> names;
  for (size_t i = 0; i < n; ++i) names.push_back(std::string(1, 'e').append(std::to_string(i)));
  return names;
}

std::vector<std::vector<double>> as_double(const std::vector<std::vector<int64_t>>& counts) {
  std::vector<std::vector<double>> out;
  for (const auto& row : counts) out.emplace_back(row.begin(), row.end());
  return out;
}

}  // namespace

ojson evaluation_json(const Evaluation& eval) {
  ojson layers = ojson::array();
  for (const LayerEvaluation& l : eval.layers)
    layers.push_back(
        {{"layer", l.name},
         {"stats", ojson::parse(l.stats.to_json())},
         {"router_accuracy", std::isfinite(l.router_accuracy) ? ojson(l.router_accuracy) : ojson()},
         {"aligned_router_accuracy",
          std::isfinite(l.aligned_router_accuracy) ? ojson(l.aligned_router_accuracy) : ojson()},
         {"class_by_expert", l.class_by_expert},
         {"superclass_by_expert", l.superclass_by_expert},
         {"expert_inputs", l.expert_inputs},
         {"expert_correct", l.expert_correct}});
  return {{"examples", eval.examples},
          {"loss", eval.loss},
          {"top1", eval.top1},
          {"top5", std::isfinite(eval.top5) ? ojson(eval.top5) : ojson()},
          {"class_accuracy", eval.class_accuracy},
          {"superclass_accuracy", eval.superclass_accuracy},
          {"layers", layers}};
}

std::string epoch_text(const ojson& r, const data::ImageDataset& test, int64_t epochs) {
  std::ostringstream os;
  const ojson& train = r["train"];
  const ojson& t = r["test"];
  os << "epoch " << r["epoch"].get<int64_t>() << "/" << epochs << ": train loss "
     << report::fmt(number(train["loss"]), 4) << " acc " << percent(number(train["acc"])) << " | test loss "
     << report::fmt(number(t["loss"]), 4) << " top-1 " << percent(number(t["top1"]), 2);
  if (!t["top5"].is_null()) os << " top-5 " << percent(number(t["top5"]), 2);
  os << " | " << report::format_duration(number(train["seconds"])) << ", "
     << report::fmt(number(train["img_per_s"]), 0) << " img/s, lr " << report::fmt(number(r["lr"]), 4)
     << "\n";
  if (!t["superclass_accuracy"].empty())
    os << wrapped("  superclasses: ",
                  superclass_items(t["superclass_accuracy"].get<std::vector<double>>(), test));
  for (const ojson& layer : r["moe"]) {
    const std::string name = layer["layer"].get<std::string>();
    const ojson& s = layer["train"];
    os << "  moe " << name << " (train): " << layer["experts"].get<int64_t>() << " experts, shares "
       << shares_text(s["fraction"].get<std::vector<double>>()) << ", router entropy "
       << report::fmt(number(s["router_entropy"]), 3) << " nats, dropped " << s["dropped"].get<int64_t>()
       << "\n";
    os << layer_routing_text(name, layer["test"]);
    for (const ojson& d : layer["controller"])
      os << "  controller " << name << ": " << d["action"].get<std::string>() << ": "
         << d["reason"].get<std::string>() << "\n";
    if (!layer["stuck_warning"].get<std::string>().empty())
      os << "  warning " << name << ": " << layer["stuck_warning"].get<std::string>() << "\n";
  }
  return os.str();
}

std::string evaluation_text(const Evaluation& eval, const data::ImageDataset& test) {
  std::ostringstream os;
  os << "test: " << eval.examples << " images, loss " << report::fmt(eval.loss, 4) << ", top-1 "
     << percent(eval.top1, 2);
  if (std::isfinite(eval.top5)) os << ", top-5 " << percent(eval.top5, 2);
  os << "\n";
  if (!eval.superclass_accuracy.empty())
    os << wrapped("  superclasses: ", superclass_items(eval.superclass_accuracy, test));
  const ojson j = evaluation_json(eval);
  for (const ojson& layer : j["layers"]) {
    os << layer_routing_text(layer["layer"].get<std::string>(), layer);
    os << "    shares " << shares_text(layer["stats"]["fraction"].get<std::vector<double>>()) << "\n";
  }
  return os.str();
}

std::vector<std::string> write_report(const ReportContext& ctx, const std::vector<json>& records) {
  std::vector<json> steps, epochs;
  for (const json& r : records) (r.value("type", "") == "step" ? steps : epochs).push_back(r);
  MG_CHECK(!epochs.empty(), "train_moe: no epoch records to report in ", ctx.run_dir);
  std::vector<std::string> written;
  auto save = [&](const std::string& file, const std::string& svg) {
    const std::string path = (fs::path(ctx.run_dir) / file).string();
    report::write_text_file(path, svg);
    written.push_back(path);
    return svg;
  };

  // ---- curves
  report::Series train_loss{"train (every " + std::to_string(ctx.config.log_every) + " steps)", {}, {}};
  report::Series train_acc = train_loss;
  for (const json& s : steps) {
    train_loss.x.push_back(number(s["step"]));
    train_loss.y.push_back(number(s["loss"]));
    train_acc.x.push_back(number(s["step"]));
    train_acc.y.push_back(100 * number(s["acc"]));
  }
  report::Series epoch_loss{"train (epoch)", {}, {}}, test_loss{"test", {}, {}};
  report::Series test_top1{"test top-1", {}, {}}, test_top5{"test top-5", {}, {}, true};
  for (const json& e : epochs) {
    const double x = number(e["step"]);
    epoch_loss.x.push_back(x);
    epoch_loss.y.push_back(number(e["train"]["loss"]));
    test_loss.x.push_back(x);
    test_loss.y.push_back(number(e["test"]["loss"]));
    test_top1.x.push_back(x);
    test_top1.y.push_back(100 * number(e["test"]["top1"]));
    test_top5.x.push_back(x);
    test_top5.y.push_back(100 * number(e["test"]["top5"]));
  }
  std::vector<std::string> curve_svgs;
  curve_svgs.push_back(save("loss.svg", report::line_chart_svg({train_loss, epoch_loss, test_loss},
                                                               {"Loss (cross-entropy)", "step", "loss"})));
  std::vector<report::Series> accuracy{train_acc, test_top1};
  if (ctx.test->num_classes() >= 5) accuracy.push_back(test_top5);
  curve_svgs.push_back(save("accuracy.svg", report::line_chart_svg(accuracy, {"Accuracy", "step", "%"})));

  std::vector<report::ReportSection> sections;
  sections.push_back({"Training curves",
                      "Training loss and accuracy every " + std::to_string(ctx.config.log_every) +
                          " steps (on augmented images), test loss and accuracy after each epoch.",
                      curve_svgs, ""});

  // ---- routing, per MoE layer
  const Evaluation& eval = *ctx.last_eval;
  const json& last = epochs.back();
  for (size_t l = 0; l < eval.layers.size(); ++l) {
    const LayerEvaluation& le = eval.layers[l];
    std::vector<double> x;
    std::vector<std::vector<double>> shares;
    size_t most = 0;
    const std::vector<json>& source = steps.size() >= 2 ? steps : epochs;
    for (const json& r : source) {
      const json& m = r["moe"].at(l);
      const std::vector<double> f =
          (m.contains("fraction") ? m["fraction"] : m["train"]["fraction"]).get<std::vector<double>>();
      x.push_back(number(r["step"]));
      shares.push_back(f);
      most = std::max(most, f.size());
    }
    for (auto& row : shares) row.resize(most, 0.0);  // grow/prune: experts that did not exist yet take 0
    std::vector<std::string> svgs;
    svgs.push_back(save("expert_share_" + le.name + ".svg",
                        report::stacked_area_svg(
                            x, shares, expert_names(most),
                            {"Expert share of the training inputs (" + le.name + ")", "step", "share"})));
    svgs.push_back(
        save("routing_" + le.name + "_classes.svg",
             report::heatmap_svg(
                 as_double(le.class_by_expert), ctx.test->class_names, expert_names(le.expert_inputs.size()),
                 {"Test routing: class by expert (" + le.name + ", row shares)", "expert", "class"}, true)));
    if (!le.superclass_by_expert.empty())
      svgs.push_back(save(
          "routing_" + le.name + "_superclasses.svg",
          report::heatmap_svg(
              as_double(le.superclass_by_expert), ctx.test->coarse_names,
              expert_names(le.expert_inputs.size()),
              {"Test routing: superclass by expert (" + le.name + ", row shares)", "expert", "superclass"},
              true)));
    std::string text =
        "Where the inputs went: expert shares of the training inputs over time, and the top-1 expert "
        "of every test input (per token for MoE blocks) by class";
    if (!le.superclass_by_expert.empty())
      text +=
          " and by superclass. Router agreement with the superclass oracle (--oracle-map, else superclass % "
          "experts): " +
          percent(le.router_accuracy) +
          "; with the experts relabelled to match the oracle best: " + percent(le.aligned_router_accuracy);
    sections.push_back({"Routing: " + le.name, text + ".", svgs, ""});
  }

  // ---- accuracy by superclass (or class)
  const bool superclasses = !eval.superclass_accuracy.empty();
  std::vector<double> acc;
  for (double a : superclasses ? eval.superclass_accuracy : eval.class_accuracy) acc.push_back(100 * a);
  sections.push_back(
      {superclasses ? "Accuracy by superclass" : "Accuracy by class",
       "On the test set, last epoch.",
       {save(superclasses ? "superclass_accuracy.svg" : "class_accuracy.svg",
             report::bar_chart_svg(superclasses ? ctx.test->coarse_names : ctx.test->class_names, acc,
                                   {"Test accuracy", "", "%"}))},
       ""});

  // ---- tables
  report::ReportTable epoch_table{
      "Epochs",
      {"epoch", "train loss", "train acc", "test loss", "top-1", "top-5", "lr", "time", "img/s"},
      {}};
  report::ReportTable decisions{"Grow/prune decisions", {"epoch", "layer", "action", "reason"}, {}};
  for (const json& e : epochs) {
    epoch_table.rows.push_back(
        {std::to_string(e["epoch"].get<int64_t>()), report::fmt(number(e["train"]["loss"]), 4),
         percent(number(e["train"]["acc"])), report::fmt(number(e["test"]["loss"]), 4),
         percent(number(e["test"]["top1"]), 2), percent(number(e["test"]["top5"]), 2),
         report::fmt(number(e["lr"]), 4), report::format_duration(number(e["train"]["seconds"])),
         report::fmt(number(e["train"]["img_per_s"]), 0)});
    for (const json& layer : e["moe"])
      for (const json& d : layer["controller"])
        decisions.rows.push_back({std::to_string(e["epoch"].get<int64_t>()),
                                  layer["layer"].get<std::string>(), d["action"].get<std::string>(),
                                  d["reason"].get<std::string>()});
  }
  std::vector<report::ReportTable> tables{
      epoch_table,
      {"Experts (test set, last epoch)", expert_summary_header(), expert_summary_rows(*ctx.model, eval)}};
  if (!decisions.rows.empty()) tables.push_back(decisions);

  int64_t parameters = 0;
  for (const Tensor& p : ctx.model->parameters()) parameters += p.numel();
  const TrainConfig& c = ctx.config;
  const std::vector<std::pair<std::string, std::string>> summary{
      {"data", ctx.data_source},
      {"model",
       c.backbone +
           (c.backbone == "cnn" ? " width " + std::to_string(c.width) : " dim " + std::to_string(c.vit_dim)) +
           ", MoE " + c.moe_placement + ", " + std::to_string(parameters) + " parameters"},
      {"routing", c.routing + ", top-" + std::to_string(c.top_k) + ", " + c.scoring + ", gate " + c.gate},
      {"training", std::to_string(last["epoch"].get<int64_t>()) + " of " + std::to_string(c.epochs) +
                       " epochs, batch " + std::to_string(c.batch_size) + ", " + c.optimizer + " lr " +
                       report::fmt(c.lr, 4) + ", " + c.schedule},
      {"test top-1 (last epoch)", percent(eval.top1, 2)},
      {"test top-5 (last epoch)", std::isfinite(eval.top5) ? percent(eval.top5, 2) : "-"},
      {"best test top-1", percent(number(last["best_top1"]), 2) + " (epoch " +
                              std::to_string(last["best_epoch"].get<int64_t>()) + ")"},
      {"training time", report::format_duration(ctx.train_seconds) + " on " + ctx.model->device().str()},
      {"files", "config.json, metrics.jsonl, last.safetensors, best.safetensors"}};
  const std::string html = (fs::path(ctx.run_dir) / "report.html").string();
  report::write_report_html(html, "MoE training run: " + fs::path(ctx.run_dir).filename().string(), summary,
                            tables, sections);
  written.push_back(html);
  return written;
}

}  // namespace mg::trainer
