// File helpers for the readers: see file_util.hpp.
#include "data/file_util.hpp"

#include <zlib.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <memory>

#include "engine/error.hpp"

namespace mg::data::io {

std::string path_join(const std::string& dir, const std::string& file) {
  return (std::filesystem::path(dir) / file).string();
}

bool is_regular_file(const std::string& path) {
  std::error_code ec;
  return std::filesystem::is_regular_file(path, ec);
}

void require_file(const std::string& who, const std::string& path, const std::string& expected) {
  MG_CHECK(is_regular_file(path), who, ": missing file ", path, " (expected ", expected, ")");
}

std::vector<std::string> read_name_lines(const std::string& path) {
  std::ifstream in(path);
  MG_CHECK(in.good(), "cannot open ", path);
  std::vector<std::string> names;
  std::string line;
  while (std::getline(in, line)) {
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ' || line.back() == '\t'))
      line.pop_back();
    if (!line.empty()) names.push_back(line);
  }
  return names;
}

std::vector<uint8_t> read_gz_or_plain(const std::string& who, const std::string& path) {
  require_file(who, path, "a plain or gzipped file");
  std::unique_ptr<gzFile_s, int (*)(gzFile)> file(gzopen(path.c_str(), "rb"), gzclose);
  MG_CHECK(file != nullptr, who, ": cannot open ", path);
  std::vector<uint8_t> bytes;
  constexpr size_t kChunk = size_t{1} << 20;
  for (;;) {
    const size_t filled = bytes.size();
    bytes.resize(filled + kChunk);
    const int got = gzread(file.get(), bytes.data() + filled, static_cast<unsigned>(kChunk));
    bytes.resize(filled + static_cast<size_t>(std::max(got, 0)));
    if (got <= 0) break;  // end of data, or an error reported below through gzerror
  }
  int status = Z_OK;
  const char* message = gzerror(file.get(), &status);
  MG_CHECK(status == Z_OK, who, ": ", path, " is not a valid gzip stream (", message,
           "): corrupt or truncated after ", bytes.size(), " decompressed bytes");
  return bytes;
}

}  // namespace mg::data::io
