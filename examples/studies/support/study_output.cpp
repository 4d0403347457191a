// StudyReport: tables on stdout, plots and summary.json in --out, report.html beside them.
#include "examples/studies/support/study_output.hpp"

#include <cctype>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>

#include "engine/error.hpp"
#include "engine/parallel.hpp"
#include "examples/common/svg.hpp"
#include "examples/common/table.hpp"

namespace mg::study {

void add_common_flags(CLI::App& app, StudyOptions& options, const std::string& study_name) {
  options.out = "runs/" + study_name;
  app.add_option("--out", options.out, "folder for the plots, summary.json and report.html")
      ->capture_default_str();
  app.add_option("--seed", options.seed, "fixes every random choice of the run")->capture_default_str();
  app.add_flag("--smoke", options.smoke,
               "tiny configuration (seconds); exits non-zero unless the effect shows");
}

std::string file_slug(const std::string& name) {
  std::string out;
  for (unsigned char ch : name) {
    if (std::isalnum(ch)) out += static_cast<char>(std::tolower(ch));
    else if (!out.empty() && out.back() != '_') out += '_';
  }
  while (!out.empty() && out.back() == '_') out.pop_back();
  return out;
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

double load_average() {
  std::ifstream in("/proc/loadavg");
  double load = NAN;
  if (!(in >> load)) return NAN;
  return load;
}

StudyReport::StudyReport(std::string study_name, std::string title, const StudyOptions& options)
    : name_(std::move(study_name)),
      title_(std::move(title)),
      options_(options),
      start_(std::chrono::steady_clock::now()),
      load_at_start_(load_average()) {
  std::error_code error;
  std::filesystem::create_directories(options_.out, error);
  MG_CHECK(!error, name_, ": cannot create the output folder '", options_.out, "': ", error.message());
  summary_["study"] = name_;
  summary_["results"] = nlohmann::ordered_json::object();
}

void StudyReport::add_plot(const std::string& file, const std::string& svg, const std::string& caption) {
  report::write_text_file((std::filesystem::path(options_.out) / file).string(), svg);
  plots_.push_back({caption, "", {svg}, ""});
  summary_["plots"].push_back(file);
}

void StudyReport::add_table(const std::string& title, const std::vector<std::string>& header,
                            const std::vector<std::vector<std::string>>& rows) {
  std::cout << "\n" << title << "\n" << report::format_table(header, rows) << std::flush;
  tables_.push_back({title, header, rows});
  nlohmann::ordered_json table;
  table["title"] = title;
  table["header"] = header;
  table["rows"] = rows;
  summary_["tables"].push_back(table);
}

int StudyReport::finish(bool passed, const std::string& requirement) {
  const double wall = seconds_since(start_);
  const double load_now = load_average();
  auto number_or_null = [](double v) {
    return std::isfinite(v) ? nlohmann::ordered_json(v) : nlohmann::ordered_json();
  };
  summary_["check"] = {{"passed", passed}, {"requirement", requirement}};
  summary_["run"] = {{"seed", options_.seed},
                     {"smoke", options_.smoke},
                     {"threads", get_num_threads()},
                     {"wall_seconds", wall},
                     {"load_average_start", number_or_null(load_at_start_)},
                     {"load_average_end", number_or_null(load_now)}};
  const std::filesystem::path out(options_.out);
  report::write_text_file((out / "summary.json").string(), summary_.dump(2) + "\n");

  const std::string verdict = std::string(passed ? "PASSED" : "FAILED") + ": " + requirement;
  std::vector<std::pair<std::string, std::string>> facts = {
      {"check", verdict},
      {"seed", std::to_string(options_.seed)},
      {"configuration", options_.smoke ? "smoke (tiny)" : "default"},
      {"threads", std::to_string(get_num_threads())},
      {"wall time", report::fmt(wall, 1) + " s"},
      {"load average (start, end)", report::fmt(load_at_start_, 2) + ", " + report::fmt(load_now, 2)}};
  std::vector<report::ReportSection> sections;
  if (!text_.empty()) sections.push_back({"What this shows", text_, {}, ""});
  sections.insert(sections.end(), plots_.begin(), plots_.end());
  report::write_report_html((out / "report.html").string(), title_, facts, tables_, sections);

  std::printf("\ncheck %s\nwall time %.1f s on %d threads (load average %.2f at start, %.2f at end)\n"
              "wrote %s/summary.json, report.html and %zu plots\n",
              verdict.c_str(), wall, get_num_threads(), load_at_start_, load_now, options_.out.c_str(),
              plots_.size());
  return passed ? 0 : 1;
}

}  // namespace mg::study
