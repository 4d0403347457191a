// JSON-lines metrics: each record is serialized to one line and flushed at once, so the file holds
// every finished record whatever happens to the process afterwards.
#include "examples/common/metrics.hpp"

#include <filesystem>

#include "engine/error.hpp"

namespace mg::report {
namespace {

namespace fs = std::filesystem;

// Drops a final line that lacks its newline: a record cut off by a crash mid-write.
void drop_partial_last_line(const std::string& path) {
  std::error_code error;
  const auto size = fs::file_size(path, error);
  if (error || size == 0) return;
  std::ifstream in(path, std::ios::binary);
  std::string content(size, '\0');
  in.read(content.data(), static_cast<std::streamsize>(size));
  if (content.back() == '\n') return;
  const auto last_newline = content.find_last_of('\n');
  fs::resize_file(path, last_newline == std::string::npos ? 0 : last_newline + 1, error);
  MG_CHECK(!error, "JsonlWriter: cannot drop the partial last line of ", path, ": ", error.message());
}

}  // namespace

JsonlWriter::JsonlWriter(const std::string& path, bool append) : path_(path) {
  const fs::path parent = fs::path(path).parent_path();
  std::error_code error;
  if (!parent.empty()) fs::create_directories(parent, error);
  MG_CHECK(!error, "JsonlWriter: cannot create the directory ", parent.string(), ": ", error.message());
  if (append) drop_partial_last_line(path);
  file_.open(path, append ? std::ios::app : std::ios::trunc);
  MG_CHECK(file_.is_open(), "JsonlWriter: cannot open ", path, " for writing");
}

void JsonlWriter::write(const nlohmann::json& record) {
  // Invalid UTF-8 in a string is replaced rather than thrown: a metric must never stop a run.
  write_line(record.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
}

void JsonlWriter::write_line(std::string_view json_line) {
  MG_CHECK(json_line.find('\n') == std::string_view::npos, "JsonlWriter: a record for ", path_,
           " spans several lines; JSON lines need one record per line");
  MG_CHECK(nlohmann::json::accept(json_line), "JsonlWriter: the record for ", path_, " is not valid JSON: ",
           json_line.substr(0, 80));
  file_ << json_line << '\n';
  file_.flush();
  MG_CHECK(file_.good(), "JsonlWriter: writing to ", path_, " failed");
}

std::vector<nlohmann::json> read_jsonl(const std::string& path) {
  std::ifstream in(path);
  MG_CHECK(in.is_open(), "read_jsonl: cannot open ", path);
  std::vector<nlohmann::json> records;
  std::string line;
  for (int64_t line_number = 1; std::getline(in, line); ++line_number) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    try {
      records.push_back(nlohmann::json::parse(line));
    } catch (const nlohmann::json::parse_error& e) {
      throw Error(detail::concat("read_jsonl: ", path, " line ", line_number, ", column ", e.byte,
                                 " is not valid JSON: ", line.substr(0, 80)));
    }
  }
  return records;
}

}  // namespace mg::report
