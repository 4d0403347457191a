// report.html: one self-contained page (inline CSS, inlined SVG, no scripts, no external resources)
// that a browser opens from disk with no network. Figures flow two abreast on a wide screen.
#include "examples/common/html.hpp"

#include "engine/error.hpp"
#include "examples/common/svg.hpp"
#include "examples/common/table.hpp"

namespace mg::report {
namespace {

constexpr const char* kStyle = R"(
body { font-family: system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: #222;
       margin: 0; background: #fafafa; line-height: 1.45; }
main { max-width: 1360px; margin: 0 auto; padding: 24px 32px 48px; }
h1 { font-size: 1.6em; margin: 0 0 16px; }
h2 { font-size: 1.25em; margin: 32px 0 10px; padding-bottom: 4px; border-bottom: 1px solid #ddd; }
nav ol { margin: 4px 0 0; padding-left: 22px; }
nav a { color: #0b5cad; text-decoration: none; }
table { border-collapse: collapse; background: #fff; font-size: 0.92em; margin: 6px 0 12px; }
th, td { border: 1px solid #ddd; padding: 4px 10px; text-align: left; vertical-align: top; }
thead th { background: #eef2f6; }
tbody tr:nth-child(even) { background: #f7f9fb; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
table.summary th { background: #eef2f6; font-weight: 600; }
.figures { display: flex; flex-wrap: wrap; gap: 16px; }
figure { margin: 0; background: #fff; border: 1px solid #e3e3e3; padding: 6px; max-width: 100%; }
figure svg { display: block; max-width: 100%; height: auto; }
p { max-width: 80ch; }
)";

std::string cell(const char* tag, const std::string& content) {
  const bool numeric = std::string(tag) == "td" && looks_numeric(content);
  return std::string("<") + tag + (numeric ? " class=\"num\">" : ">") + html_escape(content) + "</" + tag + ">";
}

// The SVG documents come from svg.hpp, but anything may be passed: keep only the <svg> element (an
// XML prolog is not valid inside HTML) and refuse scripts, which the page promises not to have.
std::string inline_svg(const std::string& svg, const std::string& section) {
  const auto begin = svg.find("<svg");
  MG_CHECK(begin != std::string::npos, "write_report_html: a figure of section '", section, "' is not an SVG document");
  MG_CHECK(svg.find("<script") == std::string::npos, "write_report_html: a figure of section '", section,
           "' contains a script");
  return svg.substr(begin);
}

std::string paragraphs(const std::string& text) {
  std::string out;
  std::size_t begin = 0;
  while (begin < text.size()) {
    auto end = text.find("\n\n", begin);
    if (end == std::string::npos) end = text.size();
    const std::string paragraph = text.substr(begin, end - begin);
    if (paragraph.find_first_not_of(" \n\t") != std::string::npos) out += "<p>" + html_escape(paragraph) + "</p>\n";
    begin = end + 2;
  }
  return out;
}

}  // namespace

std::string html_escape(const std::string& text) { return xml_escape(text); }

std::string render_report_html(const std::string& title,
                               const std::vector<std::pair<std::string, std::string>>& summary,
                               const std::vector<ReportTable>& tables,
                               const std::vector<ReportSection>& sections) {
  std::string html = "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
                     "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>" +
                     html_escape(title) + "</title>\n<style>" + kStyle + "</style>\n</head>\n<body>\n<main>\n<h1>" +
                     html_escape(title) + "</h1>\n";
  if (!summary.empty()) {
    html += "<table class=\"summary\">\n<tbody>\n";
    for (const auto& [key, value] : summary) html += "<tr>" + cell("th", key) + cell("td", value) + "</tr>\n";
    html += "</tbody>\n</table>\n";
  }
  if (sections.size() > 2) {  // a table of contents, with plain in-page links
    html += "<nav><ol>\n";
    for (std::size_t i = 0; i < sections.size(); ++i) {
      html += "<li><a href=\"#section-" + std::to_string(i + 1) + "\">" + html_escape(sections[i].title) + "</a></li>\n";
    }
    html += "</ol></nav>\n";
  }
  for (const auto& table : tables) {
    html += "<section>\n<h2>" + html_escape(table.title) + "</h2>\n<table>\n<thead><tr>";
    for (const auto& name : table.header) html += cell("th", name);
    html += "</tr></thead>\n<tbody>\n";
    for (std::size_t r = 0; r < table.rows.size(); ++r) {
      MG_CHECK(table.rows[r].size() == table.header.size(), "write_report_html: table '", table.title, "' row ", r,
               " has ", table.rows[r].size(), " cells, the header has ", table.header.size());
      html += "<tr>";
      for (const auto& value : table.rows[r]) html += cell("td", value);
      html += "</tr>\n";
    }
    html += "</tbody>\n</table>\n</section>\n";
  }
  for (std::size_t i = 0; i < sections.size(); ++i) {
    const ReportSection& section = sections[i];
    html += "<section id=\"section-" + std::to_string(i + 1) + "\">\n<h2>" + html_escape(section.title) + "</h2>\n" +
            paragraphs(section.text);
    if (!section.svgs.empty()) {
      html += "<div class=\"figures\">\n";
      for (const auto& svg : section.svgs) html += "<figure>\n" + inline_svg(svg, section.title) + "</figure>\n";
      html += "</div>\n";
    }
    html += section.html + "</section>\n";
  }
  html += "</main>\n</body>\n</html>\n";
  return html;
}

void write_report_html(const std::string& path, const std::string& title,
                       const std::vector<std::pair<std::string, std::string>>& summary,
                       const std::vector<ReportTable>& tables, const std::vector<ReportSection>& sections) {
  write_text_file(path, render_report_html(title, summary, tables, sections));
}

}  // namespace mg::report
