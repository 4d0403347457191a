// Line charts (training curves), stacked areas (expert share over time) and bar charts, drawn on the
// shared frame of svg_draw.hpp. Long series are thinned to the first, lowest, highest and last
// point of each pixel column, which keeps the picture identical and the file small.
#include <algorithm>
#include <cmath>
#include <limits>

#include "engine/error.hpp"
#include "examples/common/svg_draw.hpp"
#include "examples/common/table.hpp"

namespace mg::report {
namespace {

using namespace detail;
using Point = std::pair<double, double>;

constexpr std::size_t kMaxMarkedPoints = 40;  // series this short get a marker at every point

// Per run of points in the same pixel column: the first, lowest, highest and last, in their order.
std::vector<Point> thin_to_pixels(const std::vector<Point>& points, const Scale& x) {
  std::vector<Point> kept;
  std::size_t begin = 0;
  while (begin < points.size()) {
    const long column = std::lround(x(points[begin].first));
    std::size_t end = begin + 1;
    while (end < points.size() && std::lround(x(points[end].first)) == column) ++end;
    std::size_t lowest = begin, highest = begin;
    for (std::size_t i = begin; i < end; ++i) {
      if (points[i].second < points[lowest].second) lowest = i;
      if (points[i].second > points[highest].second) highest = i;
    }
    std::vector<std::size_t> picks = {begin, lowest, highest, end - 1};
    std::sort(picks.begin(), picks.end());
    picks.erase(std::unique(picks.begin(), picks.end()), picks.end());
    for (std::size_t i : picks) kept.push_back(points[i]);
    begin = end;
  }
  return kept;
}

struct Range {
  double lo = std::numeric_limits<double>::infinity(), hi = -std::numeric_limits<double>::infinity();
  void add(double v) {
    lo = std::min(lo, v);
    hi = std::max(hi, v);
  }
  bool empty() const { return lo > hi; }
};

std::vector<double> indices_if_empty(const std::vector<double>& x, std::size_t count) {
  if (!x.empty()) return x;
  std::vector<double> indices(count);
  for (std::size_t i = 0; i < count; ++i) indices[i] = static_cast<double>(i);
  return indices;
}

}  // namespace

std::string line_chart_svg(const std::vector<Series>& series, const AxisOptions& axes) {
  std::vector<std::vector<Point>> points(series.size());
  Range x_range, y_range;
  bool any_named = false;
  for (std::size_t s = 0; s < series.size(); ++s) {
    const std::vector<double> x = indices_if_empty(series[s].x, series[s].y.size());
    MG_CHECK(x.size() == series[s].y.size(), "line_chart_svg: series '", series[s].name, "' has ", x.size(),
             " x values but ", series[s].y.size(), " y values");
    for (std::size_t i = 0; i < x.size(); ++i) {
      const double y = series[s].y[i];
      if (!std::isfinite(x[i]) || !std::isfinite(y) || (axes.log_y && y <= 0)) continue;
      points[s].emplace_back(x[i], y);
      x_range.add(x[i]);
      y_range.add(y);
    }
    any_named = any_named || !series[s].name.empty();
  }
  std::vector<LegendEntry> legend;
  for (std::size_t s = 0; any_named && s < series.size(); ++s) {
    const std::string name = series[s].name.empty() ? "series " + std::to_string(s) : series[s].name;
    legend.push_back({name, series_color(s, series.size()), series[s].dashed, false});
  }
  const AxisTicks x_ticks = make_ticks(x_range.lo, x_range.hi, NAN, NAN, false, true);
  const AxisTicks y_ticks = make_ticks(y_range.lo, y_range.hi, axes.y_min, axes.y_max, axes.log_y, false);
  const Frame frame = layout_frame(axes, y_ticks.labels, kTickFont + 10, legend);
  const Scale x{x_ticks.lo, x_ticks.hi, frame.left, frame.right};
  const Scale y{y_ticks.lo, y_ticks.hi, frame.bottom, frame.top, axes.log_y};

  SvgDoc doc(axes.width, axes.height, axes.title);
  draw_y_axis(doc, frame, y, y_ticks);
  draw_x_axis(doc, frame, x, x_ticks);
  doc.raw(plot_clip_open(frame));
  for (std::size_t s = 0; s < series.size(); ++s) {
    if (points[s].empty()) continue;
    const std::string color = series_color(s, series.size());
    const std::vector<Point> drawn = points[s].size() > 4 * static_cast<std::size_t>(frame.right - frame.left)
                                         ? thin_to_pixels(points[s], x)
                                         : points[s];
    std::string path;
    for (const auto& [px, py] : drawn) path += (path.empty() ? "M" : " L") + num(x(px)) + " " + num(y(py));
    doc.raw("<path d=\"" + path + "\" fill=\"none\" stroke=\"" + color +
            "\" stroke-width=\"1.8\" stroke-linejoin=\"round\" stroke-linecap=\"round\"" +
            (series[s].dashed ? " stroke-dasharray=\"6 4\"" : "") + "/>\n");
    if (points[s].size() <= kMaxMarkedPoints) {
      for (const auto& [px, py] : points[s]) {
        doc.raw("<circle cx=\"" + num(x(px)) + "\" cy=\"" + num(y(py)) + "\" r=\"2.6\" fill=\"" + color + "\"/>\n");
      }
    }
  }
  doc.raw("</svg>\n");
  if (x_range.empty()) draw_no_data(doc, frame);
  draw_axis_lines(doc, frame);
  draw_title_and_axis_labels(doc, axes, frame);
  draw_legend(doc, frame, legend);
  return doc.finish();
}

std::string stacked_area_svg(const std::vector<double>& x_values, const std::vector<std::vector<double>>& shares,
                             const std::vector<std::string>& names, const AxisOptions& axes) {
  const std::vector<double> x_at = indices_if_empty(x_values, shares.size());
  MG_CHECK(x_at.size() == shares.size(), "stacked_area_svg: ", x_at.size(), " x values but ", shares.size(),
           " steps of shares");
  const std::size_t experts = names.size();
  for (std::size_t t = 0; t < shares.size(); ++t) {
    MG_CHECK(shares[t].size() == experts, "stacked_area_svg: step ", t, " has ", shares[t].size(),
             " shares but there are ", experts, " names");
  }
  const std::vector<std::vector<double>> bounds = stacked_bounds(shares);
  std::vector<std::size_t> steps;  // the steps drawn: finite x and a non-empty share row
  Range x_range;
  for (std::size_t t = 0; t < shares.size(); ++t) {
    if (bounds[t].empty() || !std::isfinite(x_at[t])) continue;
    steps.push_back(t);
    x_range.add(x_at[t]);
  }
  // The top band first, so the legend reads in the order of the picture. Beyond 20 bands colours
  // no longer identify experts: the legend then shows the order of the stack, its ends named.
  constexpr std::size_t kMaxLegendBands = 20;
  std::vector<LegendEntry> legend;
  auto add_band = [&](std::size_t e) { legend.push_back({names[e], series_color(e, experts), false, true}); };
  if (experts <= kMaxLegendBands) {
    for (std::size_t e = experts; e-- > 0;) add_band(e);
  } else {
    add_band(experts - 1);
    add_band(experts - 2);
    legend.push_back({"(" + std::to_string(experts - 4) + " more)", "", false, true});
    add_band(1);
    add_band(0);
  }
  const AxisTicks x_ticks = make_ticks(x_range.lo, x_range.hi, NAN, NAN, false, true);
  const AxisTicks y_ticks = make_ticks(0.0, 1.0, 0.0, 1.0, false, false);
  const Frame frame = layout_frame(axes, y_ticks.labels, kTickFont + 10, legend);
  const Scale x{x_ticks.lo, x_ticks.hi, frame.left, frame.right};
  const Scale y{0.0, 1.0, frame.bottom, frame.top};

  // More steps than pixels cannot be seen: keep about two per pixel column, and the last.
  const auto max_steps = static_cast<std::size_t>(2 * (frame.right - frame.left));
  if (steps.size() > max_steps) {
    const std::size_t stride = (steps.size() + max_steps - 1) / max_steps;
    std::vector<std::size_t> kept;
    for (std::size_t i = 0; i < steps.size(); i += stride) kept.push_back(steps[i]);
    if (kept.back() != steps.back()) kept.push_back(steps.back());
    steps = std::move(kept);
  }

  SvgDoc doc(axes.width, axes.height, axes.title);
  doc.raw(plot_clip_open(frame));
  for (std::size_t e = 0; e < experts && !steps.empty(); ++e) {
    std::string polygon;
    for (std::size_t t : steps) polygon += num(x(x_at[t])) + "," + num(y(bounds[t][e + 1])) + " ";
    for (auto t = steps.rbegin(); t != steps.rend(); ++t) polygon += num(x(x_at[*t])) + "," + num(y(bounds[*t][e])) + " ";
    polygon.pop_back();
    // A hairline of white between bands keeps neighbours of similar colour apart.
    doc.raw("<polygon points=\"" + polygon + "\" fill=\"" + series_color(e, experts) +
            "\" stroke=\"#ffffff\" stroke-width=\"0.4\" stroke-linejoin=\"round\"/>\n");
  }
  doc.raw("</svg>\n");
  // The grid goes over the areas, faintly, so shares can be read off at the ticks.
  for (std::size_t i = 0; i < y_ticks.values.size(); ++i) {
    const double py = y(y_ticks.values[i]);
    doc.line(frame.left, py, frame.right, py, "#ffffff", 0.6, "stroke-opacity=\"0.5\"");
    doc.line(frame.left - 4, py, frame.left, py, kAxisColor, 1);
    doc.text(frame.left - 7, py + 0.35 * kTickFont, y_ticks.labels[i], kTickFont, "end");
  }
  for (std::size_t i = 0; i < x_ticks.values.size(); ++i) {
    const double px = x(x_ticks.values[i]);
    doc.line(px, frame.bottom, px, frame.bottom + 4, kAxisColor, 1);
    doc.text(px, frame.bottom + 6 + kTickFont, x_ticks.labels[i], kTickFont, "middle");
  }
  if (steps.empty()) draw_no_data(doc, frame);
  draw_axis_lines(doc, frame);
  draw_title_and_axis_labels(doc, axes, frame);
  draw_legend(doc, frame, legend);
  return doc.finish();
}

std::string bar_chart_svg(const std::vector<std::string>& categories, const std::vector<double>& values,
                          const AxisOptions& axes) {
  MG_CHECK(categories.size() == values.size(), "bar_chart_svg: ", categories.size(), " categories but ",
           values.size(), " values");
  Range y_range;
  if (!axes.log_y) y_range.add(0.0);  // bars start at zero
  for (double v : values) {
    if (std::isfinite(v) && (!axes.log_y || v > 0)) y_range.add(v);
  }
  const AxisTicks y_ticks = make_ticks(y_range.lo, y_range.hi, axes.y_min, axes.y_max, axes.log_y, false);

  // Category labels: horizontal when they fit their slot, else rotated; thinned when still too dense.
  const double plot_width_estimate = axes.width - 80.0;
  const double slot_estimate = plot_width_estimate / static_cast<double>(std::max<std::size_t>(1, values.size()));
  constexpr std::size_t kMaxLabelChars = 20;
  double widest_label = 0;
  for (const auto& c : categories) widest_label = std::max(widest_label, text_width(shorten(c, kMaxLabelChars), kTickFont));
  const bool rotate = widest_label > slot_estimate - 4;
  const double label_height = rotate ? widest_label * 0.64 + kTickFont + 10 : kTickFont + 10;
  // Rotated labels are parallel lines: anchors d apart lie d * sin(40 deg) apart across the text.
  const double label_spacing = rotate ? (kTickFont + 2) / 0.64 : widest_label + 6;
  const auto label_stride = static_cast<std::size_t>(std::max(1.0, std::ceil(label_spacing / slot_estimate)));

  const Frame frame = layout_frame(axes, y_ticks.labels, label_height, {});
  const Scale y{y_ticks.lo, y_ticks.hi, frame.bottom, frame.top, axes.log_y};
  const double slot = (frame.right - frame.left) / static_cast<double>(std::max<std::size_t>(1, values.size()));
  const double base = y(std::clamp(axes.log_y ? y_ticks.lo : 0.0, y_ticks.lo, y_ticks.hi));

  SvgDoc doc(axes.width, axes.height, axes.title);
  draw_y_axis(doc, frame, y, y_ticks);
  doc.raw(plot_clip_open(frame));
  const std::string color = series_color(0, 1);
  for (std::size_t i = 0; i < values.size(); ++i) {
    if (!std::isfinite(values[i]) || (axes.log_y && values[i] <= 0)) continue;
    const double top = y(values[i]);
    const double bar_width = std::min(slot * 0.7, 80.0);
    doc.rect(frame.left + slot * (static_cast<double>(i) + 0.5) - bar_width / 2, std::min(top, base), bar_width,
             std::fabs(base - top), color);
  }
  doc.raw("</svg>\n");
  const bool value_labels = values.size() <= 30;
  for (std::size_t i = 0; i < values.size(); ++i) {
    const double centre = frame.left + slot * (static_cast<double>(i) + 0.5);
    const std::string value_text = fmt_compact(values[i]);
    const bool drawn = std::isfinite(values[i]) && (!axes.log_y || values[i] > 0);
    if (value_labels && drawn && text_width(value_text, 10) < slot) {
      const double top = std::clamp(y(values[i]), frame.top, frame.bottom);
      doc.text(centre, values[i] >= 0 || axes.log_y ? top - 4 : top + 12, value_text, 10, "middle");
    } else if (value_labels && !drawn) {  // say why a bar is missing rather than show an empty slot
      doc.text(centre, base - 4, "n/a", 10, "middle", "fill-opacity=\"0.6\"");
    }
    if (i % label_stride != 0) continue;
    const double label_y = frame.bottom + 6 + kTickFont;
    if (rotate) {
      doc.text(centre, label_y, shorten(categories[i], kMaxLabelChars), kTickFont, "end",
               "transform=\"rotate(-40 " + num(centre) + " " + num(label_y) + ")\"");
    } else {
      doc.text(centre, label_y, shorten(categories[i], kMaxLabelChars), kTickFont, "middle");
    }
  }
  if (values.empty()) draw_no_data(doc, frame);
  draw_axis_lines(doc, frame);
  draw_title_and_axis_labels(doc, axes, frame);
  return doc.finish();
}

}  // namespace mg::report
