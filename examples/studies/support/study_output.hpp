// What every study program shares around its experiment: the common flags (--out, --seed,
// --smoke), and its output: the result tables printed to the terminal, the SVG plots and a
// summary.json in --out, and a report.html that shows both offline. The summary records how the
// run was made (seed, smoke, threads, wall time, load average of the machine) beside the results,
// and the verdict of the study's check: whether the effect it demonstrates really showed, which
// is also its exit status (what the `--smoke` ctest asserts).
#pragma once
#include <chrono>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "examples/common/html.hpp"

namespace mg::study {

struct StudyOptions {
  std::string out;     // output folder; default runs/study_<name>
  uint64_t seed = 0;   // fixes every random choice of the run
  bool smoke = false;  // the tiny configuration of the ctest
};

// Adds --out, --seed and --smoke to `app`, with study_name's default folder.
void add_common_flags(CLI::App& app, StudyOptions& options, const std::string& study_name);

// A name as a file name part: letters and digits lower-cased, every other run of characters one
// '_' ("synthetic, no domains" -> "synthetic_no_domains").
std::string file_slug(const std::string& name);

// Seconds since a steady-clock start, for per-variant timings.
double seconds_since(std::chrono::steady_clock::time_point start);

class StudyReport {
 public:
  // Creates options.out (and parents) and starts the wall clock.
  StudyReport(std::string study_name, std::string title, const StudyOptions& options);

  // Writes <out>/<file> and shows it in report.html with its caption.
  void add_plot(const std::string& file, const std::string& svg, const std::string& caption);
  // Prints the table to stdout (after its title) and keeps it for report.html and summary.json.
  void add_table(const std::string& title, const std::vector<std::string>& header,
                 const std::vector<std::vector<std::string>>& rows);
  // Free-form results for summary.json (key order kept).
  nlohmann::ordered_json& summary() { return summary_["results"]; }
  // A paragraph shown at the top of report.html (what the study shows and how to read it).
  void add_text(const std::string& text) { text_ += text_.empty() ? text : "\n\n" + text; }

  // Records the check (`passed` and what was required), the run facts and the outputs; writes
  // summary.json and report.html; prints the verdict. Returns the exit status: 0 when passed.
  int finish(bool passed, const std::string& requirement);

 private:
  std::string name_, title_;
  StudyOptions options_;
  std::chrono::steady_clock::time_point start_;
  double load_at_start_;
  nlohmann::ordered_json summary_;
  std::string text_;
  std::vector<report::ReportTable> tables_;
  std::vector<report::ReportSection> plots_;
};

// The 1-minute load average of the machine (/proc/loadavg), NaN where unavailable.
double load_average();

}  // namespace mg::study
