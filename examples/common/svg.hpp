// Self-contained SVG plots for the example programs: line charts (loss/accuracy curves), stacked
// areas (expert share over time), heatmaps (class-by-expert routing) and bar charts. Each is one
// standalone <svg> with xmlns and viewBox, no scripts, no external fonts/CSS and no element ids (so
// many can be inlined into one HTML page). Axes use "nice" 1-2-5 tick values, labels are formatted
// compactly (1.2k, 0.35), the legend sits outside the plot area, and colours follow Okabe-Ito
// (colour-blind safe) with Tableau 20 / viridis samples for many series; NaN points are skipped.
#pragma once
#include <cmath>
#include <cstddef>
#include <string>
#include <vector>

namespace mg::report {

struct Series {
  std::string name;
  std::vector<double> x, y;  // x empty: 0, 1, 2, ...
  bool dashed = false;
};

struct AxisOptions {
  std::string title, x_label, y_label;
  bool log_y = false;
  double y_min = NAN, y_max = NAN;  // NaN: automatic
  int width = 640, height = 400;    // pixels of the whole picture
};

// Lines through the finite points of each series (a NaN point is skipped, the line joins its
// neighbours); markers are drawn when a series has few points. log_y skips values <= 0.
std::string line_chart_svg(const std::vector<Series>& series, const AxisOptions& axes);

// shares[t][e] = share of expert e at x[t]; drawn as a stacked area chart (each step is normalized
// to sum 1; a step whose shares are all zero or not finite is skipped).
std::string stacked_area_svg(const std::vector<double>& x, const std::vector<std::vector<double>>& shares,
                             const std::vector<std::string>& names, const AxisOptions& axes);

// values[r][c] (e.g. class-by-expert counts); row_normalize shows each row as shares; cells are
// annotated with the value when the grid is small enough to read. The colour range is
// [axes.y_min, axes.y_max] when given, else [0, largest value]. Rows are at least 8 px tall
// (the picture grows) up to 150 rows; row labels are thinned out when they would overlap.
std::string heatmap_svg(const std::vector<std::vector<double>>& values, const std::vector<std::string>& row_names,
                        const std::vector<std::string>& col_names, const AxisOptions& axes, bool row_normalize);

std::string bar_chart_svg(const std::vector<std::string>& categories, const std::vector<double>& values,
                          const AxisOptions& axes);

// Writes to path.tmp then renames (atomic); creates missing parent directories; an mg::Error names
// the path on failure.
void write_text_file(const std::string& path, const std::string& content);

// --- the pieces the charts are made of, public for tests and for callers drawing their own ---

// Tick values at a 1-2-5 step (1, 2, 5 times a power of ten) covering [lo, hi] with at most
// max_ticks ticks: the first tick is <= lo and the last >= hi, so the axis can span them.
std::vector<double> nice_ticks(double lo, double hi, int max_ticks = 7);
// Powers of ten covering [lo, hi] (lo > 0), with 2 and 5 in between when there are few decades.
std::vector<double> log_ticks(double lo, double hi);
// A tick label: decimals chosen from the step, k/M/G suffixes for large values ("15k", "0.25").
std::string format_tick(double value, double step);
// Colour i of n as "#rrggbb": Okabe-Ito for n <= 8, Tableau 20 for n <= 20, else viridis samples
// ordered so that neighbours differ.
std::string series_color(std::size_t i, std::size_t n);
// Viridis (perceptually uniform, colour-blind safe) at t in [0, 1].
std::string viridis(double t);
// ColorBrewer "Blues", near-white to dark blue, at t in [0, 1]: the heatmap scale (single hue, so
// colour-blind safe; empty cells fade into the background and strong routing stands out).
std::string blues(double t);
// Each row divided by its sum (rows summing to zero stay zero; NaN cells stay NaN).
std::vector<std::vector<double>> row_normalized(const std::vector<std::vector<double>>& values);
// bounds[t][e] = sum of the normalized shares of experts 0..e-1 at step t, e = 0..E (so bounds[t][0]
// is 0 and bounds[t][E] is 1); an empty row for a skipped step.
std::vector<std::vector<double>> stacked_bounds(const std::vector<std::vector<double>>& shares);
// Escapes & < > " ' for SVG/XML text and attribute values.
std::string xml_escape(const std::string& text);

}  // namespace mg::report
