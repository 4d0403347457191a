// The heatmap: rows (e.g. classes) by columns (e.g. experts), coloured on ColorBrewer "Blues" with
// a colour scale beside it. Rows keep at least 8 px (the picture grows) so 100 classes stay
// legible; labels are thinned to every k-th row or column when they would overlap, and cells carry
// their value when they are large enough to hold it.
#include <algorithm>
#include <cmath>

#include "engine/error.hpp"
#include "examples/common/svg_draw.hpp"
#include "examples/common/table.hpp"

namespace mg::report {
namespace {

using namespace detail;

constexpr double kMinRowPixels = 8;
constexpr std::size_t kMaxGrownRows = 150;  // beyond this the picture keeps its height
constexpr int kScaleSteps = 64;             // the colour bar, as stacked rects (no gradient ids)
constexpr double kScaleWidth = 14;
constexpr double kMaxRowLabelPixels = 160;  // longer row names are shortened

std::size_t stride_for(double label_extent, double cell_extent) {
  return static_cast<std::size_t>(std::max(1.0, std::ceil(label_extent / cell_extent)));
}

}  // namespace

std::string heatmap_svg(const std::vector<std::vector<double>>& values, const std::vector<std::string>& row_names,
                        const std::vector<std::string>& col_names, const AxisOptions& axes, bool row_normalize) {
  const std::size_t rows = values.size(), cols = col_names.size();
  MG_CHECK(row_names.size() == rows, "heatmap_svg: ", rows, " rows of values but ", row_names.size(), " row names");
  for (std::size_t r = 0; r < rows; ++r) {
    MG_CHECK(values[r].size() == cols, "heatmap_svg: row ", r, " ('", row_names[r], "') has ", values[r].size(),
             " values but there are ", cols, " column names");
  }
  const std::vector<std::vector<double>> shown = row_normalize ? row_normalized(values) : values;
  // The colour range: y_min / y_max when given, else from zero (or the lowest value) to the highest.
  double data_lo = 0.0, data_hi = 0.0;
  for (const auto& row : shown) {
    for (double v : row) {
      if (!std::isfinite(v)) continue;
      data_lo = std::min(data_lo, v);
      data_hi = std::max(data_hi, v);
    }
  }
  const double lo = std::isnan(axes.y_min) ? data_lo : axes.y_min;
  double hi = std::isnan(axes.y_max) ? data_hi : axes.y_max;
  if (hi == lo && std::isnan(axes.y_max)) hi = lo + 1.0;  // all cells equal: any range shows them
  MG_CHECK(lo < hi, "heatmap_svg '", axes.title, "': colour range y_min ", lo, " must be below y_max ", hi);

  // Layout: label columns sized from the text, the grid fills the rest.
  const double row_font = rows > 0 ? std::clamp((axes.height - 110.0) / static_cast<double>(rows) * 0.85, 6.5, 11.0)
                                   : kTickFont;
  double widest_row_label = 0, widest_col_label = 0;
  for (const auto& name : row_names) widest_row_label = std::max(widest_row_label, text_width(name, row_font));
  for (const auto& name : col_names) widest_col_label = std::max(widest_col_label, text_width(name, kTickFont));
  const double top = axes.title.empty() ? 16 : 40;
  const double left = 10 + (axes.y_label.empty() ? 0 : 22) + std::min(widest_row_label, kMaxRowLabelPixels) + 8;
  const double right = axes.width - 12 - kScaleWidth - 60;
  double bottom = axes.height - (kTickFont + 10 + (axes.x_label.empty() ? 0 : 22) + 8);
  double height = axes.height;
  if (rows > 0 && rows <= kMaxGrownRows && (bottom - top) / static_cast<double>(rows) < kMinRowPixels) {
    const double grow = kMinRowPixels * static_cast<double>(rows) - (bottom - top);
    bottom += grow;
    height += grow;
  }
  MG_CHECK(right - left > 40 && bottom - top > 20, "heatmap_svg '", axes.title, "': ", axes.width, "x", axes.height,
           " px leaves no room for the grid");
  const double cell_w = (right - left) / static_cast<double>(std::max<std::size_t>(cols, 1));
  const double cell_h = (bottom - top) / static_cast<double>(std::max<std::size_t>(rows, 1));

  AxisOptions frame_axes = axes;
  frame_axes.height = static_cast<int>(std::ceil(height));
  const Frame frame{left, top, right, bottom};
  SvgDoc doc(axes.width, frame_axes.height, axes.title);

  // Cells, annotated when "0.35" fits with a little margin.
  const bool annotate = cell_w >= text_width("0.00", 10) + 6 && cell_h >= 14;
  for (std::size_t r = 0; r < rows; ++r) {
    for (std::size_t c = 0; c < cols; ++c) {
      const double v = shown[r][c];
      const double t = (v - lo) / (hi - lo);
      const double x = left + static_cast<double>(c) * cell_w, y = top + static_cast<double>(r) * cell_h;
      // Cells overlap by a hair so no background seams show between them.
      doc.rect(x, y, cell_w + 0.3, cell_h + 0.3, std::isfinite(v) ? blues(t) : "#d9d9d9");
      if (annotate && std::isfinite(v)) {
        const std::string label = row_normalize ? fmt(v, 2) : fmt_compact(v);
        if (text_width(label, 10) + 4 > cell_w) continue;
        doc.text(x + cell_w / 2, y + cell_h / 2 + 3.5, label, 10, "middle", "", t > 0.55 ? "#ffffff" : kTextColor);
      }
    }
  }
  doc.rect(left, top, right - left, bottom - top, "none", "stroke=\"#444444\" stroke-width=\"1\"");

  const std::size_t row_stride = stride_for(row_font + 1, cell_h);
  for (std::size_t r = 0; r < rows; r += row_stride) {
    doc.text(left - 5, top + (static_cast<double>(r) + 0.5) * cell_h + 0.35 * row_font,
             shorten(row_names[r], static_cast<std::size_t>(kMaxRowLabelPixels / (0.6 * row_font))), row_font, "end");
  }
  const std::size_t col_stride = stride_for(widest_col_label + 6, cell_w);
  for (std::size_t c = 0; c < cols; c += col_stride) {
    doc.text(left + (static_cast<double>(c) + 0.5) * cell_w, bottom + 6 + kTickFont, col_names[c], kTickFont,
             "middle");
  }

  // The colour scale: a bar of stacked rects with ticks, and what it measures above it.
  const double scale_x = right + 16, scale_top = top + 20;
  const double scale_height = std::min(bottom - scale_top, 260.0);
  const double step_height = scale_height / kScaleSteps;
  for (int i = 0; i < kScaleSteps; ++i) {
    const double t = (static_cast<double>(i) + 0.5) / kScaleSteps;
    doc.rect(scale_x, scale_top + scale_height - (i + 1) * step_height, kScaleWidth, step_height + 0.3, blues(t));
  }
  doc.rect(scale_x, scale_top, kScaleWidth, scale_height, "none", "stroke=\"#444444\" stroke-width=\"0.8\"");
  const AxisTicks scale_ticks = make_ticks(lo, hi, lo, hi, false, true);
  for (std::size_t i = 0; i < scale_ticks.values.size(); ++i) {
    const double py = scale_top + scale_height * (1.0 - (scale_ticks.values[i] - lo) / (hi - lo));
    doc.line(scale_x + kScaleWidth, py, scale_x + kScaleWidth + 4, py, kAxisColor, 1);
    doc.text(scale_x + kScaleWidth + 7, py + 0.35 * kTickFont, scale_ticks.labels[i], kTickFont, "start");
  }
  doc.text(scale_x, scale_top - 11, row_normalize ? "row share" : "value", 10, "start");

  if (rows == 0 || cols == 0) draw_no_data(doc, frame);
  draw_title_and_axis_labels(doc, frame_axes, frame);
  return doc.finish();
}

}  // namespace mg::report
