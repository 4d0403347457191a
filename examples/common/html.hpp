// One report.html per run that opens with no network: CSS inline, SVG plots inlined, no scripts.
// A title, a key/value summary table, further tables, then sections of text and figures.
#pragma once
#include <string>
#include <utility>
#include <vector>

namespace mg::report {

struct ReportSection {
  std::string title;
  std::string text;               // plain text, escaped; blank lines separate paragraphs
  std::vector<std::string> svgs;  // standalone SVG documents, inlined as they are
  std::string html;               // trusted HTML appended after the figures, as it is
};

struct ReportTable {
  std::string title;
  std::vector<std::string> header;
  std::vector<std::vector<std::string>> rows;  // each as long as the header
};

std::string render_report_html(const std::string& title,
                               const std::vector<std::pair<std::string, std::string>>& summary,
                               const std::vector<ReportTable>& tables,
                               const std::vector<ReportSection>& sections);

// render_report_html written atomically to path (see write_text_file).
void write_report_html(const std::string& path, const std::string& title,
                       const std::vector<std::pair<std::string, std::string>>& summary,  // key -> value
                       const std::vector<ReportTable>& tables,
                       const std::vector<ReportSection>& sections);

// Escapes & < > " ' for HTML text and attribute values.
std::string html_escape(const std::string& text);

}  // namespace mg::report
