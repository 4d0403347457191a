// Plain-text tables and number formatting for the terminal. Widths count UTF-8 code points, so a
// label such as "top-k → 2" lines up too.
#include "examples/common/table.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "engine/error.hpp"

namespace mg::report {
namespace {

std::size_t display_width(std::string_view text) {
  // UTF-8 continuation bytes are 10xxxxxx; every other byte starts a code point.
  return static_cast<std::size_t>(
      std::count_if(text.begin(), text.end(), [](char c) { return (static_cast<unsigned char>(c) & 0xC0) != 0x80; }));
}

}  // namespace

bool looks_numeric(const std::string& cell) {
  if (cell.empty()) return false;
  char* end = nullptr;
  std::strtod(cell.c_str(), &end);
  if (end == cell.c_str()) return false;
  const std::string_view rest(end);
  return rest.empty() || rest == "%" || rest == "k" || rest == "M" || rest == "G" || rest == "x" || rest == "s";
}

std::string fmt(double value, int decimals) {
  if (std::isnan(value)) return "nan";
  if (std::isinf(value)) return value > 0 ? "inf" : "-inf";
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, "%.*f", std::clamp(decimals, 0, 17), value);
  return buffer;
}

std::string fmt_compact(double value) {
  if (std::isnan(value)) return "nan";
  if (std::isinf(value)) return value > 0 ? "inf" : "-inf";
  if (value == 0.0) return "0";
  char buffer[64];
  const double magnitude = std::fabs(value);
  if (magnitude < 1e-3) {
    std::snprintf(buffer, sizeof buffer, "%.2g", value);
    std::string text = buffer;
    // "1.2e-05" -> "1.2e-5"
    const auto e = text.find("e-0");
    if (e != std::string::npos) text.erase(e + 2, 1);
    return text;
  }
  // Round to three significant digits first, so 999.9 becomes "1k" rather than "1000".
  std::snprintf(buffer, sizeof buffer, "%.3g", value);
  const double rounded = std::strtod(buffer, nullptr);
  static constexpr struct { double unit; const char* suffix; } units[] = {{1e9, "G"}, {1e6, "M"}, {1e3, "k"}};
  for (const auto& u : units) {
    if (std::fabs(rounded) >= u.unit) {
      std::snprintf(buffer, sizeof buffer, "%.3g%s", rounded / u.unit, u.suffix);
      return buffer;
    }
  }
  // %.3g never prints trailing zeros, and stays in plain notation above 1e-3.
  return buffer;
}

std::string format_table(const std::vector<std::string>& header, const std::vector<std::vector<std::string>>& rows) {
  const std::size_t columns = header.size();
  std::vector<std::size_t> widths(columns);
  std::vector<bool> numeric_column(columns, !rows.empty());
  for (std::size_t c = 0; c < columns; ++c) widths[c] = display_width(header[c]);
  for (std::size_t r = 0; r < rows.size(); ++r) {
    MG_CHECK(rows[r].size() == columns, "format_table: row ", r, " has ", rows[r].size(), " cells, the header has ",
             columns);
    for (std::size_t c = 0; c < columns; ++c) {
      widths[c] = std::max(widths[c], display_width(rows[r][c]));
      // A column is right-aligned when every non-empty cell is a number.
      if (!rows[r][c].empty() && !looks_numeric(rows[r][c])) numeric_column[c] = false;
    }
  }
  std::string out;
  auto append_line = [&](const std::vector<std::string>& cells) {
    std::string line;
    for (std::size_t c = 0; c < columns; ++c) {
      const std::string padding(widths[c] - display_width(cells[c]), ' ');
      if (c > 0) line += "  ";
      line += numeric_column[c] ? padding + cells[c] : cells[c] + padding;
    }
    line.erase(line.find_last_not_of(' ') + 1);
    out += line + '\n';
  };
  append_line(header);
  std::vector<std::string> rule(columns);
  for (std::size_t c = 0; c < columns; ++c) rule[c] = std::string(widths[c], '-');
  append_line(rule);
  for (const auto& row : rows) append_line(row);
  return out;
}

}  // namespace mg::report
