// Metrics as JSON lines (https://jsonlines.org): one JSON object per line, appended and flushed
// line by line, so a crash loses nothing and `--resume` can append to the same file.
// NaN and infinity have no JSON form; nlohmann::json writes them as null.
#pragma once
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace mg::report {

class JsonlWriter {
 public:
  // append = false truncates the file. Missing parent directories are created. When appending to a
  // file whose last line has no newline (cut off by a crash mid-write; every complete record ends in
  // one), that partial line is dropped so the next record starts on a line of its own.
  JsonlWriter(const std::string& path, bool append);
  void write(const nlohmann::json& record);
  // An already serialized one-line JSON value (e.g. mg::moe::StepStats::to_json(), whose keys keep
  // their struct order); checked to parse and to hold no newline.
  void write_line(std::string_view json_line);
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::ofstream file_;
};

// Every line of a JSON-lines file (blank lines skipped); a line that is not valid JSON throws an
// mg::Error naming the file and the line number.
std::vector<nlohmann::json> read_jsonl(const std::string& path);

}  // namespace mg::report
