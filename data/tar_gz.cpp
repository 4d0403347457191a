// Unpacking a .tar.gz in-process: zlib's gzread decompresses, a small reader walks the POSIX ustar
// blocks (IEEE 1003.1-1988 headers of 512 bytes; GNU long names and pax `path` records honoured).
// Only regular files and directories are written; links, devices, absolute paths and ".."
// components are refused, so an archive cannot write outside dest_dir. Each file is written as
// "<name>.part" and renamed when complete: a failed unpack never leaves a short file under its
// real name.
#include <zlib.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <utility>
#include <vector>

#include "data/fetch.hpp"
#include "engine/error.hpp"

namespace mg::data {
namespace {

namespace fs = std::filesystem;
constexpr size_t kBlock = 512;
constexpr uint64_t kChunk = uint64_t{1} << 20;        // file data is copied through in 1 MiB pieces
constexpr uint64_t kMaxLongName = uint64_t{1} << 20;  // bound on a GNU long name / pax header

class GzBlockReader {
 public:
  explicit GzBlockReader(const std::string& path) : path_(path), file_(gzopen(path.c_str(), "rb"), gzclose) {
    MG_CHECK(file_ != nullptr, "extract_tar_gz: cannot open ", path);
  }
  // Reads exactly n bytes. At the end of the data before any byte: false when end_allowed, else an
  // error; a partial read or a corrupt stream is always an error.
  bool read(uint8_t* out, size_t n, const std::string& what, bool end_allowed = false) {
    size_t got = 0;
    while (got < n) {
      const int r = gzread(file_.get(), out + got, static_cast<unsigned>(n - got));
      if (r <= 0) break;
      got += static_cast<size_t>(r);
    }
    int status = Z_OK;
    const char* message = gzerror(file_.get(), &status);
    MG_CHECK(status == Z_OK, "extract_tar_gz: ", path_, " is corrupt or truncated (", message,
             ") at byte offset ", offset_ + got, " of the tar stream, inside ", what);
    if (got == 0 && end_allowed) return false;
    MG_CHECK(got == n, "extract_tar_gz: ", path_, " ends at byte offset ", offset_ + got,
             " of the tar stream, inside ", what, " (", n - got, " bytes missing)");
    offset_ += n;
    return true;
  }
  uint64_t offset() const { return offset_; }

 private:
  std::string path_;
  std::unique_ptr<gzFile_s, int (*)(gzFile)> file_;
  uint64_t offset_ = 0;
};

uint64_t parse_octal(const uint8_t* field, size_t width, const std::string& archive, uint64_t offset) {
  uint64_t value = 0;
  size_t i = 0;
  while (i < width && field[i] == ' ') ++i;
  for (; i < width && field[i] >= '0' && field[i] <= '7'; ++i) value = value * 8 + (field[i] - '0');
  for (; i < width; ++i)
    MG_CHECK(field[i] == ' ' || field[i] == '\0', "extract_tar_gz: ", archive,
             ": bad octal number in the header at ", "byte offset ", offset, " of the tar stream");
  return value;
}

std::string field_string(const uint8_t* field, size_t width) {
  return std::string(reinterpret_cast<const char*>(field),
                     strnlen(reinterpret_cast<const char*>(field), width));
}

// The header checksum: the sum of all 512 bytes with the checksum field read as spaces.
bool checksum_ok(const uint8_t* header, const std::string& archive, uint64_t offset) {
  uint64_t sum = 0;
  for (size_t i = 0; i < kBlock; ++i) sum += (i >= 148 && i < 156) ? ' ' : header[i];
  return sum == parse_octal(header + 148, 8, archive, offset);
}

// The path below dest_dir an entry may be written to: relative, no ".." component.
fs::path safe_relative_path(const std::string& name, const std::string& archive) {
  MG_CHECK(!name.empty(), "extract_tar_gz: ", archive, " holds an entry with an empty name");
  const fs::path path(name);
  MG_CHECK(!path.has_root_path(), "extract_tar_gz: ", archive, " holds the absolute path \"", name,
           "\"; refusing to write outside the destination");
  for (const fs::path& part : path)
    MG_CHECK(part != "..", "extract_tar_gz: ", archive, " holds the path \"", name,
             "\" with a \"..\" component; refusing to write outside the destination");
  return path.lexically_normal();
}

// The "path" record of a pax extended header ("<length> <key>=<value>\n" records, the length
// counting the whole record), or "" when it has none.
std::string pax_path(const std::string& records, const std::string& archive) {
  size_t pos = 0;
  while (pos < records.size()) {
    size_t length = 0, digits_end = pos;
    while (digits_end < records.size() && records[digits_end] >= '0' && records[digits_end] <= '9')
      length = length * 10 + static_cast<size_t>(records[digits_end++] - '0');
    MG_CHECK(digits_end < records.size() && records[digits_end] == ' ' && length > digits_end - pos + 1 &&
                 pos + length <= records.size() && records[pos + length - 1] == '\n',
             "extract_tar_gz: ", archive, ": malformed pax extended header record at offset ", pos);
    const std::string record = records.substr(digits_end + 1, pos + length - digits_end - 2);  // no '\n'
    if (record.rfind("path=", 0) == 0) return record.substr(5);
    pos += length;
  }
  return "";
}

}  // namespace

void extract_tar_gz(const std::string& archive, const std::string& dest_dir) {
  MG_CHECK(fs::is_regular_file(archive), "extract_tar_gz: missing archive ", archive);
  fs::create_directories(dest_dir);
  GzBlockReader reader(archive);
  uint8_t header[kBlock];
  std::vector<char> buffer(kChunk);
  std::string long_name;  // from a GNU 'L' or pax 'x' entry, for the next entry only
  bool seen_entry = false;
  for (;;) {
    const uint64_t header_offset = reader.offset();
    if (!reader.read(header, kBlock, "a header", true)) break;  // no end-of-archive blocks: fine
    if (std::all_of(header, header + kBlock, [](uint8_t b) { return b == 0; })) break;  // end of archive
    MG_CHECK(checksum_ok(header, archive, header_offset), "extract_tar_gz: ", archive,
             ": header checksum mismatch at byte offset ", header_offset,
             " of the tar stream (not a tar archive, or a corrupted one)");
    std::string name = field_string(header + 0, 100);
    // The prefix field exists in POSIX ustar only ("ustar\0"); old GNU headers ("ustar  ") keep
    // other fields there.
    if (std::memcmp(header + 257, "ustar\0", 6) == 0 && header[345] != 0)
      name = field_string(header + 345, 155) + "/" + name;
    if (!long_name.empty()) name = std::exchange(long_name, "");
    const char type = static_cast<char>(header[156]);
    const uint64_t size = parse_octal(header + 124, 12, archive, header_offset);
    const uint64_t padded = (size + kBlock - 1) / kBlock * kBlock;
    const std::string what = "entry \"" + name + "\"";

    if (type == 'L' || type == 'x' || type == 'g') {
      MG_CHECK(padded <= kMaxLongName, "extract_tar_gz: ", archive, ": extended header of ", size,
               " bytes at byte offset ", header_offset, " is implausibly large");
      std::vector<char> record(padded);
      reader.read(reinterpret_cast<uint8_t*>(record.data()), padded, what);
      if (type == 'L') long_name = std::string(record.data(), strnlen(record.data(), size));
      if (type == 'x') long_name = pax_path(std::string(record.data(), size), archive);
      continue;  // a pax global header ('g') names no file
    }
    MG_CHECK(type == '0' || type == '\0' || type == '7' || type == '5', "extract_tar_gz: ", archive, ": ",
             what, " has type '", type, "'; only regular files and directories are unpacked");
    const fs::path target = fs::path(dest_dir) / safe_relative_path(name, archive);
    seen_entry = true;
    if (type == '5') {
      fs::create_directories(target);
      continue;
    }
    MG_CHECK(target.has_filename() && target.filename() != ".", "extract_tar_gz: ", archive, ": ", what,
             " is a regular file without a file name");
    fs::create_directories(target.parent_path());
    const fs::path partial = target.string() + ".part";
    try {
      std::ofstream out(partial, std::ios::binary | std::ios::trunc);
      MG_CHECK(out.good(), "extract_tar_gz: cannot write ", partial.string());
      for (uint64_t done = 0; done < padded;) {
        const uint64_t n = std::min(kChunk, padded - done);
        reader.read(reinterpret_cast<uint8_t*>(buffer.data()), n, what);
        if (done < size) out.write(buffer.data(), static_cast<std::streamsize>(std::min(n, size - done)));
        done += n;
      }
      out.close();
      MG_CHECK(out.good(), "extract_tar_gz: write failed for ", partial.string(), " (disk full?)");
    } catch (...) {
      std::error_code ignored;
      fs::remove(partial, ignored);
      throw;
    }
    fs::rename(partial, target);
  }
  MG_CHECK(seen_entry, "extract_tar_gz: ", archive, " holds no file or directory");
}

}  // namespace mg::data
