// Internal to moegrad_report: the SVG writer and the frame every chart shares (title, axes with
// ticks and grid, axis labels, legend outside the plot area). Text widths are estimated from the
// character count (no font metrics without a renderer), generously, so labels do not collide.
#pragma once
#include <string>
#include <vector>

#include "examples/common/svg.hpp"

namespace mg::report::detail {

constexpr double kTickFont = 11, kLabelFont = 12, kTitleFont = 15, kLegendFont = 11;
constexpr const char* kTextColor = "#222222";
constexpr const char* kAxisColor = "#444444";
constexpr const char* kGridColor = "#e4e4e4";

std::string num(double value);                        // a coordinate: at most 2 decimals
double text_width(const std::string& text, double font_size);
// At most max_chars characters (UTF-8 aware), "..." marking a cut.
std::string shorten(const std::string& text, std::size_t max_chars);

class SvgDoc {
 public:
  SvgDoc(double width, double height, const std::string& title);  // title: the <title> element
  // anchor: "start", "middle" or "end"; extra: further attributes, already escaped
  void text(double x, double y, const std::string& content, double font_size, const char* anchor,
            const std::string& extra = "", const std::string& fill = kTextColor);
  void line(double x1, double y1, double x2, double y2, const std::string& stroke, double stroke_width,
            const std::string& extra = "");
  void rect(double x, double y, double width, double height, const std::string& fill, const std::string& extra = "");
  void raw(const std::string& markup) { body_ += markup; }
  std::string finish() const;

 private:
  std::string head_, body_;
};

// Data to pixels along one axis; log scales map log10 of the value.
struct Scale {
  double domain_lo, domain_hi, pixel_lo, pixel_hi;
  bool log = false;
  double operator()(double value) const;
};

struct AxisTicks {
  std::vector<double> values;
  std::vector<std::string> labels;
  double lo = 0, hi = 1;  // the axis' extent
};
// Ticks for data in [lo, hi]: extended to nice bounds unless fixed (fixed_lo/hi not NaN) or tight
// (the x axis spans its data exactly); a log axis uses powers of ten.
AxisTicks make_ticks(double lo, double hi, double fixed_lo, double fixed_hi, bool log, bool tight);

struct LegendEntry {
  std::string name, color;
  bool dashed = false, swatch = false;  // swatch: a filled square (areas, cells) instead of a line
                                        // no color: text alone
};

struct Frame {
  double left, top, right, bottom;  // the plot area in pixels
  double legend_x = 0;              // where the legend's first column starts
  int legend_rows = 0;              // entries per legend column
  std::size_t legend_shown = 0;     // entries drawn; the rest are summarized as "+N more"
};
// Margins from the title, axis labels, the widest y tick label and the legend's columns.
Frame layout_frame(const AxisOptions& axes, const std::vector<std::string>& y_tick_labels,
                   double bottom_label_height, const std::vector<LegendEntry>& legend);
void draw_title_and_axis_labels(SvgDoc& doc, const AxisOptions& axes, const Frame& frame);
void draw_y_axis(SvgDoc& doc, const Frame& frame, const Scale& y, const AxisTicks& ticks);
void draw_x_axis(SvgDoc& doc, const Frame& frame, const Scale& x, const AxisTicks& ticks);
void draw_axis_lines(SvgDoc& doc, const Frame& frame);  // drawn last, over the data
void draw_legend(SvgDoc& doc, const Frame& frame, const std::vector<LegendEntry>& legend);
// Opens a nested <svg> over the plot area that clips what is drawn inside (no clipPath ids needed);
// close it with raw("</svg>").
std::string plot_clip_open(const Frame& frame);
void draw_no_data(SvgDoc& doc, const Frame& frame);

}  // namespace mg::report::detail
