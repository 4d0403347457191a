// Small file helpers shared by the readers in data/ (not part of the public API): existence checks
// with messages that say what was expected, name lists, and whole-file reads through zlib.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace mg::data::io {

std::string path_join(const std::string& dir, const std::string& file);
bool is_regular_file(const std::string& path);
// Throws "<who>: missing file <path> (expected <expected>)" unless path is a regular file.
void require_file(const std::string& who, const std::string& path, const std::string& expected);
// The non-blank lines of a text file, trailing spaces and '\r' removed.
std::vector<std::string> read_name_lines(const std::string& path);
// The whole contents of a plain or gzipped file (zlib's gzread reads both); a corrupt or
// truncated gzip stream is an error naming the file.
std::vector<uint8_t> read_gz_or_plain(const std::string& who, const std::string& path);

}  // namespace mg::data::io
