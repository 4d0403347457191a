// The public pieces of the SVG charts: 1-2-5 ticks (Heckbert, "Nice numbers for graph labels",
// Graphics Gems, 1990), tick labels, the colour-blind-safe palettes (Okabe & Ito 2008; Tableau 20;
// matplotlib's viridis; ColorBrewer "Blues"), the data transforms the charts draw, and the atomic
// file write every output goes through.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "engine/error.hpp"
#include "examples/common/svg.hpp"
#include "examples/common/table.hpp"

namespace mg::report {
namespace {

struct Rgb { double r, g, b; };

// Linear interpolation between evenly spaced anchor colours.
template <std::size_t N>
std::string interpolate(const std::array<Rgb, N>& anchors, double t) {
  if (std::isnan(t)) return "#cccccc";
  const double position = std::clamp(t, 0.0, 1.0) * static_cast<double>(N - 1);
  const auto i = std::min(static_cast<std::size_t>(position), N - 2);
  const double w = position - static_cast<double>(i);
  auto channel = [&](double a, double b) { return static_cast<int>(std::lround(a + (b - a) * w)); };
  char buffer[8];
  std::snprintf(buffer, sizeof buffer, "#%02x%02x%02x", channel(anchors[i].r, anchors[i + 1].r),
                channel(anchors[i].g, anchors[i + 1].g), channel(anchors[i].b, anchors[i + 1].b));
  return buffer;
}

constexpr std::array<Rgb, 11> kViridis = {{{68, 1, 84},    {72, 36, 117},  {65, 68, 135},  {53, 95, 141},
                                           {42, 120, 142}, {33, 145, 140}, {34, 168, 132}, {68, 191, 112},
                                           {122, 209, 81}, {189, 223, 38}, {253, 231, 37}}};
constexpr std::array<Rgb, 9> kBlues = {{{247, 251, 255}, {222, 235, 247}, {198, 219, 239}, {158, 202, 225},
                                        {107, 174, 214}, {66, 146, 198},  {33, 113, 181},  {8, 81, 156},
                                        {8, 48, 107}}};

// Okabe-Ito, blue first; yellow and black last (yellow is faint as a line, black heavy as an area).
constexpr const char* kOkabeIto[] = {"#0072B2", "#E69F00", "#009E73", "#D55E00",
                                     "#CC79A7", "#56B4E9", "#F0E442", "#000000"};
constexpr const char* kTableau20[] = {"#4E79A7", "#A0CBE8", "#F28E2B", "#FFBE7D", "#59A14F",
                                      "#8CD17D", "#B6992D", "#F1CE63", "#499894", "#86BCB6",
                                      "#E15759", "#FF9D9A", "#79706E", "#BAB0AC", "#D37295",
                                      "#FABFD2", "#B07AA1", "#D4A6C8", "#9D7660", "#D7B5A6"};

}  // namespace

std::vector<double> nice_ticks(double lo, double hi, int max_ticks) {
  MG_CHECK(std::isfinite(lo) && std::isfinite(hi) && lo <= hi, "nice_ticks: need finite lo <= hi, got [", lo, ", ",
           hi, "]");
  MG_CHECK(max_ticks >= 2, "nice_ticks: max_ticks must be >= 2, got ", max_ticks);
  if (lo == hi) {
    const double pad = lo == 0.0 ? 1.0 : std::fabs(lo) * 0.1;
    lo -= pad;
    hi += pad;
  }
  const double magnitude = std::pow(10.0, std::floor(std::log10((hi - lo) / (max_ticks - 1))));
  // The tolerance keeps 0.3 / 0.1 = 2.9999999999999996 from adding a tick below 0.3.
  constexpr double kTolerance = 1e-9;
  auto first_index = [&](double step) { return std::floor(lo / step + kTolerance); };
  auto last_index = [&](double step) { return std::ceil(hi / step - kTolerance); };
  double step = 10.0 * magnitude;  // always fits: the range is at most (max_ticks - 1) * 10 magnitudes
  for (double multiple : {5.0, 2.0, 1.0}) {
    if (last_index(multiple * magnitude) - first_index(multiple * magnitude) + 1 <= max_ticks) step = multiple * magnitude;
  }
  std::vector<double> ticks;
  for (double k = first_index(step); k <= last_index(step); ++k) ticks.push_back(k == 0.0 ? 0.0 : k * step);  // no "-0"
  return ticks;
}

std::vector<double> log_ticks(double lo, double hi) {
  MG_CHECK(lo > 0 && hi >= lo && std::isfinite(hi), "log_ticks: need 0 < lo <= hi, got [", lo, ", ", hi, "]");
  int first = static_cast<int>(std::floor(std::log10(lo) + 1e-9));
  int last = static_cast<int>(std::ceil(std::log10(hi) - 1e-9));
  if (last == first) ++last;
  const int decades = last - first;
  const int decade_step = std::max(1, (decades + 6) / 7);
  std::vector<double> ticks;
  for (int d = first; d <= last; d += decade_step) {
    const double power = std::pow(10.0, d);
    ticks.push_back(power);
    if (decades <= 2 && d < last) {
      ticks.push_back(2 * power);
      ticks.push_back(5 * power);
    }
  }
  return ticks;
}

std::string format_tick(double value, double step) {
  step = std::fabs(step);
  if (!std::isfinite(value) || !std::isfinite(step) || step == 0.0) return fmt_compact(value);
  if (std::fabs(value) < step * 1e-9) return "0";
  if (step < 1e-3) return fmt_compact(std::round(value / step) * step);
  static constexpr struct { double unit; const char* suffix; } units[] = {{1e9, "G"}, {1e6, "M"}, {1e3, "k"}};
  double unit = 1.0;
  const char* suffix = "";
  for (const auto& u : units) {
    if (step >= u.unit) {
      unit = u.unit;
      suffix = u.suffix;
      break;
    }
  }
  const int decimals = std::max(0, -static_cast<int>(std::floor(std::log10(step / unit) + 1e-9)));
  return fmt(value / unit, decimals) + suffix;
}

std::string series_color(std::size_t i, std::size_t n) {
  if (n <= 8) return kOkabeIto[i % 8];
  if (n <= 20) return kTableau20[i % 20];
  // Golden-ratio steps along viridis: neighbours (adjacent bands of a stacked area) differ strongly.
  const double t = std::fmod(static_cast<double>(i) * 0.6180339887498949, 1.0);
  return viridis(t);
}

std::string viridis(double t) { return interpolate(kViridis, t); }
std::string blues(double t) { return interpolate(kBlues, t); }

std::vector<std::vector<double>> row_normalized(const std::vector<std::vector<double>>& values) {
  std::vector<std::vector<double>> shares = values;
  for (auto& row : shares) {
    double sum = 0.0;
    for (double v : row) sum += std::isnan(v) ? 0.0 : v;
    for (double& v : row) {
      if (!std::isnan(v)) v = sum == 0.0 ? 0.0 : v / sum;
    }
  }
  return shares;
}

std::vector<std::vector<double>> stacked_bounds(const std::vector<std::vector<double>>& shares) {
  std::vector<std::vector<double>> bounds(shares.size());
  for (std::size_t t = 0; t < shares.size(); ++t) {
    double sum = 0.0;
    for (std::size_t e = 0; e < shares[t].size(); ++e) {
      const double v = shares[t][e];
      MG_CHECK(!(v < 0.0), "stacked_area_svg: share of expert ", e, " at step ", t, " is negative (", v, ")");
      if (std::isfinite(v)) sum += v;
    }
    if (!(sum > 0.0) || !std::isfinite(sum)) continue;  // nothing to show at this step
    bounds[t].push_back(0.0);
    double running = 0.0;
    for (double v : shares[t]) {
      running += std::isfinite(v) ? v : 0.0;
      bounds[t].push_back(running / sum);
    }
    bounds[t].back() = 1.0;  // exactly, whatever the rounding
  }
  return bounds;
}

std::string xml_escape(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default:
        // Control characters other than tab and newlines are not allowed in XML 1.0 at all.
        if (static_cast<unsigned char>(c) >= 0x20 || c == '\t' || c == '\n' || c == '\r') out += c;
    }
  }
  return out;
}

void write_text_file(const std::string& path, const std::string& content) {
  namespace fs = std::filesystem;
  const fs::path parent = fs::path(path).parent_path();
  std::error_code error;
  if (!parent.empty()) fs::create_directories(parent, error);
  MG_CHECK(!error, "write_text_file: cannot create the directory of ", path, ": ", error.message());
  const std::string temporary = path + ".tmp";
  {
    std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
    MG_CHECK(out.is_open(), "write_text_file: cannot open ", temporary, " for writing");
    out.write(content.data(), static_cast<std::streamsize>(content.size()));
    out.close();
    if (!out) {
      fs::remove(temporary, error);
      throw Error("write_text_file: writing " + temporary + " failed");
    }
  }
  // rename() replaces the target atomically on POSIX: a reader sees the old file or the new one.
  fs::rename(temporary, path, error);
  if (error) {
    std::error_code ignored;
    fs::remove(temporary, ignored);
    throw Error("write_text_file: cannot rename " + temporary + " to " + path + ": " + error.message());
  }
}

}  // namespace mg::report
