// safetensors reader and writer. Follows the format as written by the reference implementation
// (huggingface/safetensors, safetensors/src/tensor.rs): header padded with spaces to a multiple of
// 8, "__metadata__" first, offsets packed in the order the tensors are listed. The checks on load
// are the reference's (sizes, offsets contiguous from 0 to the end of the buffer), with messages
// that say where in the file the problem is.
#include "nn/safetensors.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>

namespace mg::nn {

// The buffer is copied to and from tensor storage byte for byte; a big-endian host would need a
// byte swap per element, which moegrad does not build for.
static_assert(std::endian::native == std::endian::little, "safetensors data is little-endian");

namespace {

using json = nlohmann::ordered_json;  // keeps header order: ties between empty tensors, metadata

constexpr uint64_t kSizeFieldBytes = 8;
// The reference rejects larger headers too; without a cap a corrupt size field would make us
// allocate whatever it says before finding the JSON is garbage.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;
constexpr const char* kMetadataKey = "__metadata__";

const char* dtype_code(ScalarType t) {
  switch (t) {
    case kFloat32: return "F32";
    case kFloat64: return "F64";
    case kInt32: return "I32";
  }
  return "?";
}

std::optional<ScalarType> parse_dtype(const std::string& code) {
  if (code == "F32") return kFloat32;
  if (code == "F64") return kFloat64;
  if (code == "I32") return kInt32;
  return std::nullopt;
}

[[noreturn]] void fail_at(const std::string& path, uint64_t offset, const std::string& what) {
  throw Error(detail::concat("load_safetensors: ", path, ": at byte ", offset, ": ", what));
}

std::string errno_text() { return std::strerror(errno); }

// A read-only file descriptor that closes itself; reads are positional so that the checks can
// look at the header and the data in any order.
class InputFile {
 public:
  explicit InputFile(const std::string& path) : path_(path) {
    fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    MG_CHECK(fd_ >= 0, "load_safetensors: cannot open ", path, ": ", errno_text());
    struct stat st {};
    const bool stat_ok = ::fstat(fd_, &st) == 0;
    const std::string why = stat_ok ? "not a regular file" : errno_text();
    if (!stat_ok || !S_ISREG(st.st_mode)) {
      ::close(fd_);
      throw Error(detail::concat("load_safetensors: cannot read ", path, ": ", why));
    }
    size_ = static_cast<uint64_t>(st.st_size);
  }
  ~InputFile() { ::close(fd_); }
  InputFile(const InputFile&) = delete;
  InputFile& operator=(const InputFile&) = delete;

  uint64_t size() const { return size_; }
  void read_at(uint64_t offset, void* dst, uint64_t n) const {
    auto* out = static_cast<char*>(dst);
    while (n > 0) {
      const ssize_t got = ::pread(fd_, out, n, static_cast<off_t>(offset));
      if (got < 0 && errno == EINTR) continue;
      if (got < 0) fail_at(path_, offset, "read failed: " + errno_text());
      // The size was checked against fstat; a short read means the file shrank under us.
      if (got == 0) fail_at(path_, offset, "unexpected end of file (was it truncated while reading?)");
      out += got;
      offset += static_cast<uint64_t>(got);
      n -= static_cast<uint64_t>(got);
    }
  }

 private:
  std::string path_;
  int fd_ = -1;
  uint64_t size_ = 0;
};

struct Entry {
  std::string name;
  ScalarType dtype;
  Shape shape;
  uint64_t begin, end;  // relative to the data buffer
};

struct Header {
  uint64_t data_start = 0;     // absolute offset of the buffer: 8 + N
  std::vector<Entry> entries;  // sorted by data offset
  std::map<std::string, std::string> metadata;
};

// Where `key` is defined in the header text, for error messages; the header's start when the
// writer spelled the key differently (escapes) from nlohmann's dump.
uint64_t key_offset(const std::string& text, const std::string& key) {
  const std::string quoted = json(key).dump();
  for (size_t pos = text.find(quoted); pos != std::string::npos; pos = text.find(quoted, pos + 1)) {
    size_t after = pos + quoted.size();
    while (after < text.size() && std::isspace(static_cast<unsigned char>(text[after]))) ++after;
    if (after < text.size() && text[after] == ':') return kSizeFieldBytes + pos;
  }
  return kSizeFieldBytes;
}

std::string describe(const Entry& e) {
  return detail::concat("tensor '", e.name, "' (", dtype_code(e.dtype), " ", shape_str(e.shape), ")");
}

Entry parse_entry(const std::string& path, uint64_t at, const std::string& name, const json& info) {
  auto bad = [&](const std::string& what) { fail_at(path, at, "tensor '" + name + "': " + what); };
  if (!info.is_object()) bad("expected an object with dtype, shape and data_offsets, got " + info.dump());
  for (const char* field : {"dtype", "shape", "data_offsets"})
    if (!info.contains(field)) bad(detail::concat("missing \"", field, "\""));
  const json& dtype = info["dtype"];
  if (!dtype.is_string()) bad("dtype must be a string, got " + dtype.dump());
  const auto type = parse_dtype(dtype.get<std::string>());
  if (!type) bad("unsupported dtype " + dtype.dump() + " (moegrad reads F32, F64 and I32)");

  Entry e{name, *type, {}, 0, 0};
  const json& shape = info["shape"];
  if (!shape.is_array()) bad("shape must be an array, got " + shape.dump());
  uint64_t numel = 1;
  for (const json& d : shape) {
    if (!d.is_number_unsigned()) bad("shape must hold non-negative integers, got " + shape.dump());
    const auto size = d.get<uint64_t>();
    if (size > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ||
        (size != 0 && numel > std::numeric_limits<uint64_t>::max() / size))
      bad("shape " + shape.dump() + " is too large");
    numel *= size;
    e.shape.push_back(static_cast<int64_t>(size));
  }
  const uint64_t itemsize = element_size(e.dtype);
  if (numel > std::numeric_limits<uint64_t>::max() / itemsize) bad("shape " + shape.dump() + " is too large");

  const json& offsets = info["data_offsets"];
  if (!offsets.is_array() || offsets.size() != 2 || !offsets[0].is_number_unsigned() ||
      !offsets[1].is_number_unsigned())
    bad("data_offsets must be two non-negative integers [begin, end], got " + offsets.dump());
  e.begin = offsets[0].get<uint64_t>();
  e.end = offsets[1].get<uint64_t>();
  if (e.end < e.begin) bad("data_offsets " + offsets.dump() + " end before they begin");
  if (e.end - e.begin != numel * itemsize)
    bad(detail::concat("data_offsets ", offsets.dump(), " span ", e.end - e.begin, " bytes but ",
                       dtype_code(e.dtype), " ", shape_str(e.shape), " needs ", numel * itemsize));
  return e;
}

// Reads and checks everything but the tensor data: after this returns, every entry's bytes lie
// inside the file and the entries tile the buffer exactly.
Header read_header(const std::string& path, const InputFile& file) {
  const uint64_t file_size = file.size();
  if (file_size < kSizeFieldBytes)
    fail_at(path, file_size, detail::concat("file is ", file_size,
                                            " bytes, too short for the 8-byte header size"));
  unsigned char size_field[kSizeFieldBytes];
  file.read_at(0, size_field, kSizeFieldBytes);
  uint64_t header_bytes = 0;
  for (int i = kSizeFieldBytes - 1; i >= 0; --i) header_bytes = (header_bytes << 8) | size_field[i];
  if (header_bytes > file_size - kSizeFieldBytes)
    fail_at(path, 0, detail::concat("header size ", header_bytes, " runs past the end of the file (",
                                    file_size, " bytes): truncated, or not a safetensors file"));
  if (header_bytes > kMaxHeaderBytes)
    fail_at(path, 0, detail::concat("header size ", header_bytes, " exceeds the limit of ",
                                    kMaxHeaderBytes, " bytes"));

  std::string text(header_bytes, '\0');
  file.read_at(kSizeFieldBytes, text.data(), header_bytes);
  json root;
  try {
    root = json::parse(text);
  } catch (const json::parse_error& err) {
    const uint64_t pos = std::min<uint64_t>(err.byte > 0 ? err.byte - 1 : 0, header_bytes);
    fail_at(path, kSizeFieldBytes + pos, std::string("header is not valid JSON: ") + err.what());
  }
  if (!root.is_object()) fail_at(path, kSizeFieldBytes, "header is not a JSON object");

  Header header;
  header.data_start = kSizeFieldBytes + header_bytes;
  for (const auto& [key, value] : root.items()) {
    const uint64_t at = key_offset(text, key);
    if (key == kMetadataKey) {
      if (!value.is_object()) fail_at(path, at, "__metadata__ must be an object of strings");
      for (const auto& [mk, mv] : value.items()) {
        if (!mv.is_string())
          fail_at(path, at, "__metadata__ value of '" + mk + "' must be a string, got " + mv.dump());
        header.metadata[mk] = mv.get<std::string>();
      }
      continue;
    }
    header.entries.push_back(parse_entry(path, at, key, value));
  }
  // Stable: empty tensors sharing an offset keep the header's order.
  std::stable_sort(header.entries.begin(), header.entries.end(),
                   [](const Entry& a, const Entry& b) { return a.begin < b.begin; });

  const uint64_t buffer_bytes = file_size - header.data_start;
  uint64_t expected = 0;
  const Entry* previous = nullptr;
  for (const Entry& e : header.entries) {
    if (e.begin < expected)
      fail_at(path, header.data_start + e.begin,
              detail::concat(describe(e), " at data_offsets [", e.begin, ", ", e.end,
                             "] overlaps '", previous->name, "', which ends at ", expected));
    if (e.begin > expected)
      fail_at(path, header.data_start + expected,
              detail::concat(e.begin - expected, " bytes before ", describe(e),
                             " belong to no tensor (data_offsets must be contiguous from 0)"));
    if (e.end > buffer_bytes)
      fail_at(path, file_size,
              detail::concat("file ends at byte ", file_size, " but ", describe(e),
                             " needs bytes up to ", header.data_start + e.end, " (truncated file?)"));
    expected = e.end;
    previous = &e;
  }
  if (expected < buffer_bytes)
    fail_at(path, header.data_start + expected,
            detail::concat(buffer_bytes - expected, " trailing bytes after the last tensor's data"));
  return header;
}

// Writes to "<path>.tmp.<pid>" and renames it over `path` only in commit(); destroyed uncommitted
// (an exception on the way), it removes the temporary file, so `path` is never half-written.
class AtomicWriter {
 public:
  explicit AtomicWriter(std::string path)
      : path_(std::move(path)), tmp_(detail::concat(path_, ".tmp.", ::getpid())) {
    // A leftover from a crashed process that had our pid: remove it rather than write through it
    // (it could be a symlink); O_EXCL then guarantees the file is ours.
    ::unlink(tmp_.c_str());
    fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd_ < 0) fail("cannot create");
  }
  ~AtomicWriter() {
    if (fd_ >= 0) ::close(fd_);
    if (!committed_) ::unlink(tmp_.c_str());
  }
  AtomicWriter(const AtomicWriter&) = delete;
  AtomicWriter& operator=(const AtomicWriter&) = delete;

  void write(const void* data, uint64_t n) {
    const auto* in = static_cast<const char*>(data);
    while (n > 0) {
      const ssize_t put = ::write(fd_, in, n);
      if (put < 0 && errno == EINTR) continue;
      if (put < 0) fail("cannot write");
      in += put;
      n -= static_cast<uint64_t>(put);
    }
  }

  void commit() {
    if (::fsync(fd_) != 0) fail("cannot flush");
    const int fd = fd_;
    fd_ = -1;
    if (::close(fd) != 0) fail("cannot close");
    if (::rename(tmp_.c_str(), path_.c_str()) != 0) fail("cannot rename into place");
    committed_ = true;
    // The rename is durable only once the directory entry is; filesystems that cannot fsync a
    // directory say EINVAL, and there is nothing more to do on them.
    std::string dir = std::filesystem::path(path_).parent_path().string();
    if (dir.empty()) dir = ".";
    const int dir_fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir_fd >= 0) {
      const bool synced = ::fsync(dir_fd) == 0 || errno == EINVAL;
      const std::string why = errno_text();
      ::close(dir_fd);
      MG_CHECK(synced, "save_safetensors: ", path_, " was written but syncing its directory failed: ", why);
    }
  }

 private:
  [[noreturn]] void fail(const char* what) {
    throw Error(detail::concat("save_safetensors: ", what, " ", tmp_, ": ", errno_text(),
                               " (", path_, " is left as it was)"));
  }
  std::string path_, tmp_;
  int fd_ = -1;
  bool committed_ = false;
};

}  // namespace

void save_safetensors(const std::string& path, const NamedTensors& tensors,
                      const std::map<std::string, std::string>& metadata) {
  // Everything that can be rejected is rejected before the temporary file exists.
  std::set<std::string> seen;
  std::vector<Tensor> data;
  json root = json::object();
  if (!metadata.empty()) root[kMetadataKey] = metadata;
  uint64_t offset = 0;
  for (const auto& [name, tensor] : tensors) {
    MG_CHECK(!name.empty() && name != kMetadataKey, "save_safetensors: ", path,
             ": invalid tensor name '", name, "'");
    MG_CHECK(seen.insert(name).second, "save_safetensors: ", path, ": duplicate tensor name '", name, "'");
    MG_CHECK(tensor.defined(), "save_safetensors: ", path, ": tensor '", name, "' is undefined");
    Tensor t = tensor.detach();
    if (!t.device().is_cpu()) t = t.to(Device::cpu());
    t = t.contiguous();
    const uint64_t nbytes = static_cast<uint64_t>(t.numel()) * t.element_size();
    root[name] = {{"dtype", dtype_code(t.dtype())},
                  {"shape", t.sizes()},
                  {"data_offsets", {offset, offset + nbytes}}};
    offset += nbytes;
    data.push_back(std::move(t));
  }
  std::string text;
  try {
    text = root.dump();
  } catch (const json::type_error& err) {  // a name or metadata string that is not UTF-8
    throw Error(detail::concat("save_safetensors: ", path, ": ", err.what()));
  }
  // Keeps the buffer 8-byte aligned for readers that map the file (the reference pads the same).
  text.append((kSizeFieldBytes - text.size() % kSizeFieldBytes) % kSizeFieldBytes, ' ');
  unsigned char size_field[kSizeFieldBytes];
  for (uint64_t i = 0, n = text.size(); i < kSizeFieldBytes; ++i, n >>= 8) size_field[i] = n & 0xff;

  AtomicWriter out(path);
  out.write(size_field, kSizeFieldBytes);
  out.write(text.data(), text.size());
  for (const Tensor& t : data)
    if (t.numel() > 0) out.write(t.raw_data(), static_cast<uint64_t>(t.numel()) * t.element_size());
  out.commit();
}

SafetensorsFile load_safetensors(const std::string& path) {
  InputFile file(path);
  Header header = read_header(path, file);
  SafetensorsFile out;
  out.metadata = std::move(header.metadata);
  for (const Entry& e : header.entries) {
    Tensor t = Tensor::empty(e.shape, e.dtype);
    if (e.end > e.begin) file.read_at(header.data_start + e.begin, t.raw_data(), e.end - e.begin);
    out.tensors.emplace_back(e.name, std::move(t));
  }
  return out;
}

std::map<std::string, std::string> load_safetensors_metadata(const std::string& path) {
  InputFile file(path);
  return read_header(path, file).metadata;
}

}  // namespace mg::nn
