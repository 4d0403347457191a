// The frame shared by the charts: the SVG writer, scales, axes, and a legend placed in its own
// column to the right of the plot area, so it never covers data.
#include <algorithm>
#include <cmath>
#include <cstdio>

#include "engine/error.hpp"
#include "examples/common/svg_draw.hpp"

namespace mg::report::detail {
namespace {

constexpr double kLegendRowHeight = 17, kLegendSwatch = 20, kLegendGap = 6;
constexpr std::size_t kLegendMaxChars = 28;

std::string legend_name(const std::string& name) { return shorten(name, kLegendMaxChars); }

double legend_column_width(const std::vector<LegendEntry>& legend) {
  double widest = text_width("+999 more", kLegendFont);
  for (const auto& entry : legend) widest = std::max(widest, text_width(legend_name(entry.name), kLegendFont));
  return kLegendSwatch + kLegendGap + widest + 14;
}

}  // namespace

std::string num(double value) {
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, "%.2f", value);
  std::string text = buffer;
  text.erase(text.find_last_not_of('0') + 1);
  if (text.back() == '.') text.pop_back();
  return text == "-0" ? "0" : text;
}

double text_width(const std::string& text, double font_size) {
  // ~0.6 em per character is a generous average for sans-serif digits and lower-case letters.
  std::size_t characters = 0;
  for (char c : text) characters += (static_cast<unsigned char>(c) & 0xC0) != 0x80;
  return 0.6 * font_size * static_cast<double>(characters);
}

std::string shorten(const std::string& text, std::size_t max_chars) {
  if (text_width(text, 1.0) <= 0.6 * static_cast<double>(max_chars)) return text;
  std::string kept;
  std::size_t characters = 0;
  for (char c : text) {
    const bool starts_character = (static_cast<unsigned char>(c) & 0xC0) != 0x80;
    if (starts_character && ++characters > max_chars - 3) break;
    kept += c;
  }
  return kept + "...";
}

SvgDoc::SvgDoc(double width, double height, const std::string& title) {
  head_ = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + num(width) + "\" height=\"" + num(height) +
          "\" viewBox=\"0 0 " + num(width) + " " + num(height) +
          "\" font-family=\"Helvetica, Arial, 'DejaVu Sans', sans-serif\" role=\"img\">\n";
  if (!title.empty()) head_ += "<title>" + xml_escape(title) + "</title>\n";
  head_ += "<rect width=\"100%\" height=\"100%\" fill=\"#ffffff\"/>\n";
}

void SvgDoc::text(double x, double y, const std::string& content, double font_size, const char* anchor,
                  const std::string& extra, const std::string& fill) {
  body_ += "<text x=\"" + num(x) + "\" y=\"" + num(y) + "\" font-size=\"" + num(font_size) + "\" text-anchor=\"" +
           anchor + "\" fill=\"" + fill + "\"" + (extra.empty() ? "" : " " + extra) + ">" +
           xml_escape(content) + "</text>\n";
}

void SvgDoc::line(double x1, double y1, double x2, double y2, const std::string& stroke, double stroke_width,
                  const std::string& extra) {
  body_ += "<line x1=\"" + num(x1) + "\" y1=\"" + num(y1) + "\" x2=\"" + num(x2) + "\" y2=\"" + num(y2) +
           "\" stroke=\"" + stroke + "\" stroke-width=\"" + num(stroke_width) + "\"" +
           (extra.empty() ? "" : " " + extra) + "/>\n";
}

void SvgDoc::rect(double x, double y, double width, double height, const std::string& fill, const std::string& extra) {
  body_ += "<rect x=\"" + num(x) + "\" y=\"" + num(y) + "\" width=\"" + num(width) + "\" height=\"" + num(height) +
           "\" fill=\"" + fill + "\"" + (extra.empty() ? "" : " " + extra) + "/>\n";
}

std::string SvgDoc::finish() const { return head_ + body_ + "</svg>\n"; }

double Scale::operator()(double value) const {
  const double t = log ? (std::log10(value) - std::log10(domain_lo)) / (std::log10(domain_hi) - std::log10(domain_lo))
                       : (value - domain_lo) / (domain_hi - domain_lo);
  return pixel_lo + t * (pixel_hi - pixel_lo);
}

AxisTicks make_ticks(double lo, double hi, double fixed_lo, double fixed_hi, bool log, bool tight) {
  if (!std::isnan(fixed_lo)) lo = fixed_lo;
  if (!std::isnan(fixed_hi)) hi = fixed_hi;
  if (!(std::isfinite(lo) && std::isfinite(hi))) {  // no data: an empty unit axis
    lo = log ? 1.0 : 0.0;
    hi = log ? 10.0 : 1.0;
  }
  MG_CHECK(lo <= hi, "svg axis: y_min (", lo, ") must be below y_max (", hi, ")");
  MG_CHECK(!log || lo > 0, "svg axis: a log axis needs positive bounds, got y_min ", lo);
  if (lo == hi) {  // a single value: give it room on both sides
    const double pad = log ? 0.0 : (lo == 0.0 ? 1.0 : std::fabs(lo) * 0.1);
    lo = log ? lo / 2 : lo - pad;
    hi = log ? hi * 2 : hi + pad;
  }
  AxisTicks axis;
  axis.values = log ? log_ticks(lo, hi) : nice_ticks(lo, hi);
  axis.lo = tight || !std::isnan(fixed_lo) ? lo : axis.values.front();
  axis.hi = tight || !std::isnan(fixed_hi) ? hi : axis.values.back();
  if (log && !tight) {  // the nearest 1-2-5 ticks around the data, not whole decades
    if (std::isnan(fixed_lo)) axis.lo = *(std::upper_bound(axis.values.begin(), axis.values.end(), lo * (1 + 1e-9)) - 1);
    if (std::isnan(fixed_hi)) axis.hi = *std::lower_bound(axis.values.begin(), axis.values.end(), hi * (1 - 1e-9));
  }
  const double step = axis.values.size() > 1 ? axis.values[1] - axis.values[0] : 1.0;
  const double tolerance = log ? axis.lo * 1e-9 : step * 1e-6;
  std::erase_if(axis.values, [&](double v) { return v < axis.lo - tolerance || v > axis.hi + tolerance; });
  for (double v : axis.values) axis.labels.push_back(format_tick(v, log ? v : step));
  return axis;
}

Frame layout_frame(const AxisOptions& axes, const std::vector<std::string>& y_tick_labels,
                   double bottom_label_height, const std::vector<LegendEntry>& legend) {
  Frame frame{};
  const double width = axes.width, height = axes.height;
  frame.top = axes.title.empty() ? 16 : 40;
  frame.bottom = height - (bottom_label_height + (axes.x_label.empty() ? 0 : 22) + 8);
  double widest_tick = 0;
  for (const auto& label : y_tick_labels) widest_tick = std::max(widest_tick, text_width(label, kTickFont));
  frame.left = 10 + (axes.y_label.empty() ? 0 : 22) + widest_tick + 8;
  frame.right = width - 20;
  if (!legend.empty()) {
    frame.legend_rows = std::max(1, static_cast<int>((frame.bottom - frame.top) / kLegendRowHeight));
    const double column_width = legend_column_width(legend);
    const auto rows = static_cast<std::size_t>(frame.legend_rows);
    const std::size_t columns_needed = (legend.size() + rows - 1) / rows;
    // The legend may take up to 40% of the width; beyond that the last slot says "+N more".
    const auto columns_allowed = static_cast<std::size_t>(std::max(1.0, std::floor(0.4 * width / column_width)));
    const std::size_t columns = std::min(columns_needed, columns_allowed);
    frame.legend_shown = columns_needed <= columns_allowed ? legend.size() : columns * rows - 1;
    frame.right = width - 12 - static_cast<double>(columns) * column_width;
    frame.legend_x = frame.right + 16;
  }
  MG_CHECK(frame.right - frame.left > 40 && frame.bottom - frame.top > 40, "svg chart '", axes.title,
           "': ", axes.width, "x", axes.height, " px leaves no room for the plot area");
  return frame;
}

void draw_title_and_axis_labels(SvgDoc& doc, const AxisOptions& axes, const Frame& frame) {
  const double centre_x = (frame.left + frame.right) / 2, centre_y = (frame.top + frame.bottom) / 2;
  if (!axes.title.empty()) {
    // Bold text runs wider than the estimate; a title wider than the plot is centred on the picture.
    const std::string title = shorten(axes.title, static_cast<std::size_t>((axes.width - 20) / (0.66 * kTitleFont)));
    const bool fits_plot = 1.1 * text_width(title, kTitleFont) < frame.right - frame.left;
    doc.text(fits_plot ? centre_x : axes.width / 2.0, 24, title, kTitleFont, "middle", "font-weight=\"bold\"");
  }
  if (!axes.x_label.empty()) doc.text(centre_x, axes.height - 10, axes.x_label, kLabelFont, "middle");
  if (!axes.y_label.empty()) {
    const double x = 10 + kLabelFont;
    doc.text(x, centre_y, axes.y_label, kLabelFont, "middle",
             "transform=\"rotate(-90 " + num(x) + " " + num(centre_y) + ")\"");
  }
}

void draw_y_axis(SvgDoc& doc, const Frame& frame, const Scale& y, const AxisTicks& ticks) {
  for (std::size_t i = 0; i < ticks.values.size(); ++i) {
    const double py = y(ticks.values[i]);
    doc.line(frame.left, py, frame.right, py, kGridColor, 1);
    doc.line(frame.left - 4, py, frame.left, py, kAxisColor, 1);
    doc.text(frame.left - 7, py + 0.35 * kTickFont, ticks.labels[i], kTickFont, "end");
  }
}

void draw_x_axis(SvgDoc& doc, const Frame& frame, const Scale& x, const AxisTicks& ticks) {
  for (std::size_t i = 0; i < ticks.values.size(); ++i) {
    const double px = x(ticks.values[i]);
    doc.line(px, frame.top, px, frame.bottom, kGridColor, 1);
    doc.line(px, frame.bottom, px, frame.bottom + 4, kAxisColor, 1);
    doc.text(px, frame.bottom + 6 + kTickFont, ticks.labels[i], kTickFont, "middle");
  }
}

void draw_axis_lines(SvgDoc& doc, const Frame& frame) {
  doc.line(frame.left, frame.top, frame.left, frame.bottom, kAxisColor, 1);
  doc.line(frame.left, frame.bottom, frame.right, frame.bottom, kAxisColor, 1);
}

void draw_legend(SvgDoc& doc, const Frame& frame, const std::vector<LegendEntry>& legend) {
  if (legend.empty()) return;
  const double column_width = legend_column_width(legend);
  auto slot = [&](std::size_t i, double& x, double& y) {
    x = frame.legend_x + static_cast<double>(i / static_cast<std::size_t>(frame.legend_rows)) * column_width;
    y = frame.top + 8 + static_cast<double>(i % static_cast<std::size_t>(frame.legend_rows)) * kLegendRowHeight;
  };
  double x = 0, y = 0;
  for (std::size_t i = 0; i < frame.legend_shown; ++i) {
    const LegendEntry& entry = legend[i];
    slot(i, x, y);
    if (entry.swatch && !entry.color.empty()) {
      doc.rect(x + 4, y - 6, 12, 12, entry.color);
    } else if (!entry.color.empty()) {
      doc.line(x, y, x + kLegendSwatch, y, entry.color, 2.2, entry.dashed ? "stroke-dasharray=\"6 4\"" : "");
    }
    doc.text(x + kLegendSwatch + kLegendGap, y + 0.35 * kLegendFont, legend_name(entry.name), kLegendFont, "start");
  }
  if (frame.legend_shown < legend.size()) {
    slot(frame.legend_shown, x, y);
    doc.text(x + kLegendSwatch + kLegendGap, y + 0.35 * kLegendFont,
             ::mg::detail::concat("+", legend.size() - frame.legend_shown, " more"), kLegendFont, "start",
             "fill-opacity=\"0.7\"");
  }
}

std::string plot_clip_open(const Frame& frame) {
  // A nested viewport clips its content; its viewBox keeps the outer coordinates. The margin lets
  // a marker on the plot's edge show whole.
  constexpr double kMargin = 4;
  const std::string x = num(frame.left - kMargin), y = num(frame.top - kMargin),
                    w = num(frame.right - frame.left + 2 * kMargin), h = num(frame.bottom - frame.top + 2 * kMargin);
  return "<svg x=\"" + x + "\" y=\"" + y + "\" width=\"" + w + "\" height=\"" + h + "\" viewBox=\"" + x + " " + y +
         " " + w + " " + h + "\" overflow=\"hidden\">\n";
}

void draw_no_data(SvgDoc& doc, const Frame& frame) {
  doc.text((frame.left + frame.right) / 2, (frame.top + frame.bottom) / 2, "no data", 13, "middle",
           "fill-opacity=\"0.6\"");
}

}  // namespace mg::report::detail
