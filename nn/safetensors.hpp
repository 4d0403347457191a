// Reading and writing tensors in the safetensors format (https://huggingface.co/docs/safetensors),
// so weights move between moegrad and the Python/Rust ecosystem without pickle.
//
// Layout: an 8-byte little-endian u64 N, then N bytes of UTF-8 JSON
//   {"__metadata__": {"k": "v", ...}, "name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [b, e]}, ...}
// padded with spaces to a multiple of 8 (as the reference writer does, so the data stays aligned),
// then the byte buffer. Offsets are relative to the buffer; tensors are row-major, little-endian,
// packed back to back with no gaps, and the buffer ends where the last tensor ends.
// moegrad reads and writes the dtypes it has: F32, F64 and I32.
//
// Loading checks the whole file (sizes, header, every entry) before it allocates a tensor, and
// every error names the file, the byte offset and what is wrong. Saving is atomic: the data goes
// to "<path>.tmp.<pid>", is flushed and fsynced, then renamed over `path`, so a crash or a full
// disk leaves any previous file at `path` as it was.
#pragma once
#include <map>
#include <string>

#include "nn/module.hpp"

namespace mg::nn {

struct SafetensorsFile {
  NamedTensors tensors;                         // in the order their data lies in the file
  std::map<std::string, std::string> metadata;  // the "__metadata__" object (empty when absent)
};

// Writes `tensors` in the given order (non-contiguous or CUDA tensors are saved as contiguous CPU
// data). Names must be unique, non-empty and not "__metadata__".
void save_safetensors(const std::string& path, const NamedTensors& tensors,
                      const std::map<std::string, std::string>& metadata = {});

SafetensorsFile load_safetensors(const std::string& path);

// Only the "__metadata__" object, without reading tensor data; the header is still fully checked
// against the file's size, so a truncated file is reported here as well.
std::map<std::string, std::string> load_safetensors_metadata(const std::string& path);

}  // namespace mg::nn
