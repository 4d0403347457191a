// The report library of the example programs (examples/common): SVG charts are well formed and
// escaped, ticks are "nice", NaN points are skipped, stacked shares and heatmap normalization give
// the right numbers, JSON-lines files round-trip, files are written atomically, the progress bar
// prints plain lines when not on a terminal, and durations and tables are formatted as documented.
#include <catch2/catch.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "engine/error.hpp"
#include "examples/common/html.hpp"
#include "examples/common/metrics.hpp"
#include "examples/common/progress.hpp"
#include "examples/common/svg.hpp"
#include "examples/common/table.hpp"

namespace fs = std::filesystem;
using namespace mg::report;

namespace {

// A tiny XML checker: tags nest and close in order, attribute quotes pair up, and text holds no
// bare '<', '>' or '&' (only the five predefined entities). Returns "" when the document is fine.
// In HTML mode, <!DOCTYPE> and the void element <meta> are accepted.
std::string xml_problem(const std::string& doc, bool html = false) {
  std::vector<std::string> open;
  std::size_t i = 0;
  while (i < doc.size()) {
    const char c = doc[i];
    if (c == '&') {
      const auto semi = doc.find(';', i);
      if (semi == std::string::npos) return "bare & at " + std::to_string(i);
      const std::string entity = doc.substr(i, semi - i + 1);
      if (entity != "&amp;" && entity != "&lt;" && entity != "&gt;" && entity != "&quot;" && entity != "&#39;")
        return "unknown entity " + entity;
      i = semi + 1;
      continue;
    }
    if (c == '>') return "bare > at " + std::to_string(i);
    if (c != '<') {
      ++i;
      continue;
    }
    if (html && doc.compare(i, 9, "<!DOCTYPE") == 0) {
      i = doc.find('>', i) + 1;
      continue;
    }
    std::size_t end = i + 1;
    bool in_quotes = false;
    while (end < doc.size() && (in_quotes || doc[end] != '>')) {
      if (doc[end] == '"') in_quotes = !in_quotes;
      if (doc[end] == '<' && !in_quotes) return "'<' inside a tag at " + std::to_string(end);
      ++end;
    }
    if (end == doc.size()) return "unterminated tag at " + std::to_string(i);
    const std::string tag = doc.substr(i + 1, end - i - 1);
    if (tag.empty()) return "empty tag";
    if (tag[0] == '/') {
      if (open.empty() || open.back() != tag.substr(1)) return "</" + tag.substr(1) + "> closes nothing open";
      open.pop_back();
    } else {
      const std::string name = tag.substr(0, tag.find_first_of(" \n/"));
      const bool self_closing = tag.back() == '/';
      if (!self_closing && !(html && name == "meta")) open.push_back(name);
    }
    i = end + 1;
  }
  return open.empty() ? "" : "<" + open.back() + "> never closed";
}

std::size_t count(const std::string& text, const std::string& needle) {
  std::size_t n = 0;
  for (auto at = text.find(needle); at != std::string::npos; at = text.find(needle, at + needle.size())) ++n;
  return n;
}

// The "d" attribute of the first <path> drawn with the given stroke colour.
std::string path_of(const std::string& svg, const std::string& color) {
  const auto stroke = svg.find("stroke=\"" + color + "\"", svg.find("<path d=\""));
  const auto begin = svg.rfind("<path d=\"", stroke) + 9;
  return svg.substr(begin, svg.find('"', begin) - begin);
}

fs::path fresh_dir(const std::string& name) {
  const fs::path dir = fs::temp_directory_path() / ("moegrad_test_report_" + name);
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

std::string slurp(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream content;
  content << in.rdbuf();
  return content.str();
}

}  // namespace

TEST_CASE("report: the XML checker itself catches what it should", "[report]") {
  CHECK(xml_problem("<svg><g><rect/></g><text>a &amp; b</text></svg>").empty());
  CHECK_FALSE(xml_problem("<svg><g></svg>").empty());
  CHECK_FALSE(xml_problem("<svg><text>a & b</text></svg>").empty());
  CHECK_FALSE(xml_problem("<svg><text>a < b</text></svg>").empty());
  CHECK_FALSE(xml_problem("<svg><text>x > y</text></svg>").empty());
}

TEST_CASE("report: every chart is a well-formed standalone SVG with escaped text", "[report]") {
  AxisOptions axes{"loss <train> & \"val\" 'ok'", "epoch", "x < y"};
  const std::vector<std::string> svgs = {
      line_chart_svg({{"a&b", {0, 1, 2}, {1, 2, 3}}, {"<c>", {}, {3, 2, 1}, true}}, axes),
      line_chart_svg({}, axes),                                      // nothing at all
      line_chart_svg({{"missing", {0, 1}, {NAN, NAN}}}, axes),       // nothing finite
      stacked_area_svg({0, 1}, {{1, 3}, {2, 2}}, {"e<0>", "e&1"}, axes),
      heatmap_svg({{1, 2}, {3, 4}}, {"cat & dog", "<b>"}, {"e0", "e1"}, axes, true),
      heatmap_svg({}, {}, {}, axes, false),
      bar_chart_svg({"a\"b", "c'd"}, {1.5, NAN}, axes),
  };
  for (const auto& svg : svgs) {
    INFO(svg.substr(0, 400));
    CHECK(xml_problem(svg).empty());
    CHECK(svg.rfind("<svg xmlns=\"http://www.w3.org/2000/svg\"", 0) == 0);
    CHECK(svg.find("viewBox=\"0 0 640 ") != std::string::npos);
    CHECK(svg.find("loss &lt;train&gt; &amp; &quot;val&quot; &#39;ok&#39;") != std::string::npos);
    CHECK(svg.find("<script") == std::string::npos);
    CHECK(svg.find(" id=") == std::string::npos);  // many SVGs share one HTML page
    CHECK(svg.find("nan") == std::string::npos);
  }
  CHECK(svgs[0].find(">a&amp;b</text>") != std::string::npos);
  CHECK(svgs[1].find(">no data</text>") != std::string::npos);
  CHECK(svgs[2].find(">no data</text>") != std::string::npos);
  CHECK(svgs[6].find(">n/a</text>") != std::string::npos);  // the NaN bar is marked, not drawn
  CHECK(xml_escape("<a href=\"x\">&'") == "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
  CHECK(xml_escape(std::string("a\x01z")) == "az");  // control characters are not XML
}

TEST_CASE("report: nice ticks step by 1 or 2 or 5 times a power of ten and cover the range", "[report]") {
  using V = std::vector<double>;
  auto near = [](const V& got, const V& want) {
    if (got.size() != want.size()) return false;
    for (std::size_t i = 0; i < got.size(); ++i)
      if (std::fabs(got[i] - want[i]) > 1e-12 * std::max(1.0, std::fabs(want[i]))) return false;
    return true;
  };
  CHECK(near(nice_ticks(0, 1), V{0, 0.2, 0.4, 0.6, 0.8, 1.0}));
  CHECK(near(nice_ticks(0.41, 2.3), V{0, 0.5, 1, 1.5, 2, 2.5}));
  CHECK(near(nice_ticks(0, 1234), V{0, 500, 1000, 1500}));
  CHECK(near(nice_ticks(-3, 7), V{-4, -2, 0, 2, 4, 6, 8}));
  CHECK(near(nice_ticks(0.3, 0.7), V{0.3, 0.4, 0.5, 0.6, 0.7}));  // 0.3 / 0.1 must not add 0.2
  CHECK(near(nice_ticks(5, 5), V{4.4, 4.6, 4.8, 5, 5.2, 5.4, 5.6}));  // one value gets room around it
  CHECK(near(nice_ticks(0, 100, 11), V{0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100}));
  CHECK(near(log_ticks(0.4, 2.7), V{0.1, 0.2, 0.5, 1, 2, 5, 10}));
  CHECK(near(log_ticks(1e-4, 10), V{1e-4, 1e-3, 1e-2, 0.1, 1, 10}));
  CHECK_THROWS_AS(nice_ticks(2, 1), mg::Error);
  CHECK_THROWS_AS(nice_ticks(0, NAN), mg::Error);

  CHECK(format_tick(1500, 500) == "1500");
  CHECK(format_tick(15000, 5000) == "15k");
  CHECK(format_tick(2e6, 1e6) == "2M");
  CHECK(format_tick(0.25, 0.05) == "0.25");
  CHECK(format_tick(0.30000000000000004, 0.1) == "0.3");
  CHECK(format_tick(-1e-17, 0.1) == "0");
  CHECK(fmt_compact(1234) == "1.23k");
  CHECK(fmt_compact(999.9) == "1k");
  CHECK(fmt_compact(2.5e6) == "2.5M");
  CHECK(fmt_compact(0.35) == "0.35");
  CHECK(fmt_compact(12.345) == "12.3");
  CHECK(fmt_compact(1.2e-5) == "1.2e-5");
  CHECK(fmt_compact(NAN) == "nan");

  // A y range fixed by the caller is kept exactly, with the ticks inside it.
  AxisOptions axes;
  axes.y_min = 0;
  axes.y_max = 100;
  const std::string svg = line_chart_svg({{"acc", {1, 2}, {40, 60}}}, axes);
  for (const char* label : {">0</text>", ">20</text>", ">40</text>", ">60</text>", ">80</text>", ">100</text>"})
    CHECK(svg.find(label) != std::string::npos);
  CHECK(svg.find(">120</text>") == std::string::npos);
}

TEST_CASE("report: palettes are colour-blind safe and distinct", "[report]") {
  CHECK(series_color(0, 2) == "#0072B2");  // Okabe-Ito blue, then orange
  CHECK(series_color(1, 2) == "#E69F00");
  for (std::size_t n : {8u, 20u}) {
    std::set<std::string> colors;
    for (std::size_t i = 0; i < n; ++i) colors.insert(series_color(i, n));
    CHECK(colors.size() == n);
  }
  CHECK(viridis(0) == "#440154");
  CHECK(viridis(1) == "#fde725");
  CHECK(blues(0) == "#f7fbff");
  CHECK(blues(1) == "#08306b");
  CHECK(blues(NAN) == "#cccccc");
}

TEST_CASE("report: NaN points are skipped and the line joins their neighbours", "[report]") {
  AxisOptions axes;
  const std::string svg = line_chart_svg({{"loss", {0, 1, 2, 3}, {1.0, NAN, 3.0, INFINITY}}}, axes);
  const std::string d = path_of(svg, "#0072B2");
  CHECK(count(d, "M") == 1);
  CHECK(count(d, " L") == 1);                   // two points drawn: x = 0 and x = 2
  CHECK(count(svg, "<circle") == 2);            // short series get markers, NaN and inf none
  // log_y cannot show y <= 0: those points are skipped too.
  axes.log_y = true;
  const std::string log_svg = line_chart_svg({{"loss", {}, {0.0, 0.1, -1.0, 1.0, 10.0}}}, axes);
  CHECK(count(path_of(log_svg, "#0072B2"), " L") == 2);
  CHECK(log_svg.find(">0.1</text>") != std::string::npos);
  CHECK(log_svg.find(">10</text>") != std::string::npos);
  // A series longer than the plot is wide is thinned per pixel column, extremes kept.
  Series noisy{"noisy", {}, {}};
  for (int i = 0; i < 20000; ++i) noisy.y.push_back(i == 12345 ? 50.0 : (i % 2 ? 1.0 : 2.0));
  const std::string long_svg = line_chart_svg({noisy}, AxisOptions{});
  const std::size_t points = count(path_of(long_svg, "#0072B2"), " L") + 1;
  CHECK(points < 4 * 640);
  CHECK(long_svg.find(">50</text>") != std::string::npos);  // the spike still sets the y range
}

TEST_CASE("report: stacked shares are normalized cumulative bounds", "[report]") {
  const auto bounds = stacked_bounds({{1, 1, 2}, {0, 0, 0}, {NAN, 3, 1}});
  REQUIRE(bounds.size() == 3);
  CHECK(bounds[0] == std::vector<double>{0, 0.25, 0.5, 1.0});
  CHECK(bounds[1].empty());  // nothing routed at this step: skipped
  CHECK(bounds[2] == std::vector<double>{0, 0, 0.75, 1.0});
  CHECK_THROWS_AS(stacked_bounds({{0.5, -0.1}}), mg::Error);

  const std::string svg = stacked_area_svg({0, 10, 20}, {{1, 1, 2}, {0, 0, 0}, {1, 1, 2}},
                                           {"expert 0", "expert 1", "expert 2"}, AxisOptions{});
  CHECK(count(svg, "<polygon") == 3);
  // The legend lists the top band first, as the picture stacks them.
  CHECK(svg.find(">expert 2</text>") < svg.find(">expert 0</text>"));
  CHECK(svg.find(">1.0</text>") != std::string::npos);
  // 30 experts: colours cannot tell them apart, so the legend names the ends of the stack only.
  std::vector<std::string> names;
  for (int e = 0; e < 30; ++e) names.push_back("expert " + std::to_string(e));
  const std::string many = stacked_area_svg({}, {std::vector<double>(30, 1.0)}, names, AxisOptions{});
  CHECK(count(many, "<polygon") == 30);
  CHECK(many.find(">(26 more)</text>") != std::string::npos);
  for (const char* shown : {">expert 29</text>", ">expert 28</text>", ">expert 1</text>", ">expert 0</text>"})
    CHECK(many.find(shown) != std::string::npos);
  CHECK(many.find(">expert 15</text>") == std::string::npos);
  CHECK_THROWS_AS(stacked_area_svg({0}, {{1, 2}}, {"only one name"}, AxisOptions{}), mg::Error);
  CHECK_THROWS_AS(stacked_area_svg({0, 1}, {{1, 2}}, {"a", "b"}, AxisOptions{}), mg::Error);
}

TEST_CASE("report: heatmap rows are normalized to shares and small grids are annotated", "[report]") {
  const auto shares = row_normalized({{1, 3}, {0, 0}, {2, NAN}});
  CHECK(shares[0] == std::vector<double>{0.25, 0.75});
  CHECK(shares[1] == std::vector<double>{0, 0});
  CHECK(shares[2][0] == 1.0);
  CHECK(std::isnan(shares[2][1]));

  const std::string small = heatmap_svg({{1, 3}, {4, 4}}, {"cat", "dog"}, {"e0", "e1"}, AxisOptions{}, true);
  CHECK(count(small, ">0.25</text>") == 1);
  CHECK(count(small, ">0.75</text>") == 1);
  CHECK(count(small, ">0.50</text>") == 2);
  CHECK(small.find(">row share</text>") != std::string::npos);
  const std::string counts = heatmap_svg({{1, 3}, {4, 4}}, {"cat", "dog"}, {"e0", "e1"}, AxisOptions{}, false);
  CHECK(count(counts, ">4</text>") >= 2);  // raw counts when not normalized
  CHECK_THROWS_AS(heatmap_svg({{1, 2}}, {"a"}, {"e0"}, AxisOptions{}, true), mg::Error);

  // 100 classes by 16 experts: the picture grows to 8 px a row, every class keeps its label, and
  // cells too small to hold a number carry none.
  std::vector<std::vector<double>> routing(100, std::vector<double>(16, 1.0));
  std::vector<std::string> classes, experts;
  for (int c = 0; c < 100; ++c) classes.push_back("class " + std::to_string(c));
  for (int e = 0; e < 16; ++e) experts.push_back("e" + std::to_string(e));
  const std::string big = heatmap_svg(routing, classes, experts, AxisOptions{}, true);
  CHECK(xml_problem(big).empty());
  const auto view_box = big.find("viewBox=\"0 0 640 ");
  REQUIRE(view_box != std::string::npos);
  CHECK(std::stod(big.substr(view_box + 17)) >= 800 + 16);
  CHECK(big.find(">class 0</text>") != std::string::npos);
  CHECK(big.find(">class 99</text>") != std::string::npos);
  CHECK(count(big, ">0.06</text>") == 1);  // the colour scale's tick, no cell annotation
}

TEST_CASE("report: JSON lines round-trip through write and append and name a corrupt line", "[report]") {
  const fs::path dir = fresh_dir("jsonl");
  const std::string path = (dir / "run" / "metrics.jsonl").string();  // the folder is created
  {
    JsonlWriter writer(path, false);
    writer.write({{"epoch", 1}, {"loss", 0.5}, {"name", "a \"quoted\"\nname"}});
    writer.write({{"epoch", 2}, {"loss", NAN}});
  }
  {
    JsonlWriter writer(path, true);
    writer.write_line(R"({"epoch":3,"loss":0.25})");
    CHECK_THROWS_AS(writer.write_line("{\"a\":1}\n{\"b\":2}"), mg::Error);
    CHECK_THROWS_AS(writer.write_line("{not json"), mg::Error);
  }
  auto records = read_jsonl(path);
  REQUIRE(records.size() == 3);
  CHECK(records[0]["epoch"] == 1);
  CHECK(records[0]["name"] == "a \"quoted\"\nname");
  CHECK(records[1]["loss"].is_null());  // NaN has no JSON form
  CHECK(records[2]["loss"] == 0.25);

  // A record cut off by a crash is dropped when appending resumes.
  { std::ofstream(path, std::ios::app) << R"({"epoch":4,"lo)"; }
  { JsonlWriter(path, true).write({{"epoch", 4}}); }
  records = read_jsonl(path);
  REQUIRE(records.size() == 4);
  CHECK(records[3]["epoch"] == 4);

  { JsonlWriter(path, false).write({{"epoch", 1}}); }  // not appending: the file starts over
  CHECK(read_jsonl(path).size() == 1);

  { std::ofstream(path, std::ios::app) << "\n{\"epoch\": 2,}\n"; }
  try {
    read_jsonl(path);
    FAIL("a corrupt line must throw");
  } catch (const mg::Error& e) {
    const std::string message = e.what();
    CHECK(message.find(path) != std::string::npos);
    CHECK(message.find("line 3") != std::string::npos);
  }
  CHECK_THROWS_AS(read_jsonl((dir / "missing.jsonl").string()), mg::Error);
  fs::remove_all(dir);
}

TEST_CASE("report: files are written atomically and leave no .tmp behind", "[report]") {
  const fs::path dir = fresh_dir("atomic");
  const fs::path path = dir / "plots" / "loss.svg";
  write_text_file(path.string(), "first");
  write_text_file(path.string(), "second version");
  CHECK(slurp(path) == "second version");
  CHECK(!fs::exists(path.string() + ".tmp"));
  CHECK(std::distance(fs::directory_iterator(dir / "plots"), fs::directory_iterator{}) == 1);

  // A directory in the way: the error names the path, and the temporary file is gone.
  fs::create_directories(dir / "taken");
  fs::create_directories(dir / "taken" / "inside");
  try {
    write_text_file((dir / "taken").string(), "x");
    FAIL("writing over a non-empty directory must throw");
  } catch (const mg::Error& e) {
    CHECK(std::string(e.what()).find((dir / "taken").string()) != std::string::npos);
  }
  CHECK(!fs::exists((dir / "taken").string() + ".tmp"));
  fs::remove_all(dir);
}

TEST_CASE("report: the progress bar prints a plain line every 10% when not on a terminal", "[report]") {
  std::ostringstream out;
  {
    ProgressBar bar("epoch 3/10", 200, &out);
    for (int step = 1; step <= 200; ++step) {
      bar.update(step, {{"loss", "0.412"}, {"acc", "85.1%"}, {"", "2310 img/s"}});
      if (step == 50) bar.write("warning: expert 3 takes 95% of the tokens");
    }
    bar.finish({{"loss", "0.400"}});
  }
  std::vector<std::string> lines;
  std::istringstream in(out.str());
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  REQUIRE(lines.size() == 11);  // 10%, 20%, the message, 30%, ... 90%, then the final line
  CHECK(out.str().find('\r') == std::string::npos);
  CHECK(lines[0].rfind("epoch 3/10 [", 0) == 0);
  CHECK(lines[0].find("] 20/200 10% ") != std::string::npos);
  CHECK(lines[2] == "warning: expert 3 takes 95% of the tokens");
  CHECK(lines[5].find("] 100/200 50% ") != std::string::npos);
  CHECK(lines[5].find("<ETA ") != std::string::npos);
  CHECK(lines[5].find(" | loss 0.412 acc 85.1% 2310 img/s") != std::string::npos);
  CHECK(lines[5].find("[============>           ]") != std::string::npos);
  CHECK(lines[10].find("[========================] 200/200 100% ") != std::string::npos);
  CHECK(lines[10].find("ETA") == std::string::npos);
  CHECK(lines[10].find("| loss 0.400") != std::string::npos);

  std::ostringstream empty_out;
  ProgressBar empty("val", 0, &empty_out);
  empty.update(0);
  empty.finish();
  CHECK(empty_out.str().find("val [========================] 0/0 100% ") == 0);
  CHECK(count(empty_out.str(), "\n") == 1);
  CHECK(empty.line(0, {}).find("0/0") != std::string::npos);
  CHECK_THROWS_AS(ProgressBar("bad", -1, &out), mg::Error);
}

TEST_CASE("report: format_duration and fmt and format_table", "[report]") {
  CHECK(format_duration(0.26) == "0.3s");
  CHECK(format_duration(12.34) == "12.3s");
  CHECK(format_duration(59.96) == "1m00s");
  CHECK(format_duration(65) == "1m05s");
  CHECK(format_duration(3725) == "1h02m");
  CHECK(format_duration(-1) == "?");
  CHECK(format_duration(NAN) == "?");

  CHECK(fmt(3.14159, 2) == "3.14");
  CHECK(fmt(2.5, 0) == "2");  // round half to even, as printf does
  CHECK(fmt(NAN, 3) == "nan");
  CHECK(fmt(-INFINITY, 1) == "-inf");

  const std::string table = format_table({"router", "acc", "note"},
                                         {{"top-1", "56.12", "best"}, {"expert choice", "9.5%", "→ k=2"}});
  CHECK(table ==
        "router           acc  note\n"
        "-------------  -----  -----\n"
        "top-1          56.12  best\n"
        "expert choice   9.5%  → k=2\n");
  CHECK_THROWS_AS(format_table({"a", "b"}, {{"1"}}), mg::Error);
}

TEST_CASE("report: report.html is self-contained and escaped and well formed", "[report]") {
  AxisOptions loss_axes;
  loss_axes.title = "Loss";
  const std::string loss = line_chart_svg({{"loss", {}, {3, 2, 1}}}, loss_axes);
  const std::string html = render_report_html(
      "run <1> & co", {{"experts", "8"}, {"router", "top-2 <softmax>"}},
      {{"per epoch", {"epoch", "acc"}, {{"1", "20.5%"}, {"2", "33.0%"}}}},
      {{"Curves", "first paragraph & more\n\nsecond <para>", {"<?xml version=\"1.0\"?>\n" + loss}, ""},
       {"Raw", "", {}, "<p><em>trusted</em></p>"}});
  CHECK(xml_problem(html, true).empty());
  CHECK(html.rfind("<!DOCTYPE html>", 0) == 0);
  CHECK(html.find("<title>run &lt;1&gt; &amp; co</title>") != std::string::npos);
  CHECK(html.find("<td>top-2 &lt;softmax&gt;</td>") != std::string::npos);
  CHECK(html.find("<td class=\"num\">20.5%</td>") != std::string::npos);
  CHECK(html.find("<p>first paragraph &amp; more</p>") != std::string::npos);
  CHECK(html.find("<p>second &lt;para&gt;</p>") != std::string::npos);
  CHECK(html.find("<?xml") == std::string::npos);  // the prolog is not valid inside HTML
  CHECK(html.find(loss) != std::string::npos);
  CHECK(html.find("<p><em>trusted</em></p>") != std::string::npos);
  CHECK(html.find("<style>") != std::string::npos);
  CHECK(html.find("<script") == std::string::npos);
  CHECK(html.find("<link") == std::string::npos);
  CHECK(count(html, "http") == count(html, "http://www.w3.org/2000/svg"));  // no external resource
  CHECK(html_escape("a<b>&\"") == "a&lt;b&gt;&amp;&quot;");

  CHECK_THROWS_AS(render_report_html("t", {}, {{"bad", {"a", "b"}, {{"1"}}}}, {}), mg::Error);
  CHECK_THROWS_AS(render_report_html("t", {}, {}, {{"s", "", {"not an svg"}, ""}}), mg::Error);

  const fs::path dir = fresh_dir("html");
  write_report_html((dir / "report.html").string(), "run", {}, {}, {});
  CHECK(slurp(dir / "report.html").find("<h1>run</h1>") != std::string::npos);
  CHECK(!fs::exists(dir / "report.html.tmp"));
  fs::remove_all(dir);
}
