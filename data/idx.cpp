// IDX reader (MNIST, Fashion-MNIST; format: shared/data/DATASETS.md and LeCun's MNIST page): a
// big-endian header, magic 00 00 08 <ndims> (0x08 = unsigned byte), one u32 per dimension, then
// the bytes in C order. Images are [count, rows, cols] (magic 2051), labels [count] (magic 2049).
#include "data/idx.hpp"

#include <algorithm>

#include "data/file_util.hpp"
#include "engine/error.hpp"

namespace mg::data {
namespace {

constexpr uint32_t kImagesMagic = 0x00000803;
constexpr uint32_t kLabelsMagic = 0x00000801;
constexpr int64_t kMaxSide = 1 << 15;

uint32_t big_endian_u32(const std::vector<uint8_t>& bytes, size_t offset) {
  return uint32_t{bytes[offset]} << 24 | uint32_t{bytes[offset + 1]} << 16 |
         uint32_t{bytes[offset + 2]} << 8 | uint32_t{bytes[offset + 3]};
}

// The dimensions of an IDX file of unsigned bytes with `ndims` dimensions, after checking its
// magic and that the data after the header is exactly their product (a short file names the
// record it ends in).
std::vector<int64_t> idx_dims(const std::string& who, const std::string& path,
                              const std::vector<uint8_t>& bytes, uint32_t magic, int ndims) {
  const size_t header = 4 + 4 * static_cast<size_t>(ndims);
  // The magic first: a wrong kind of file is a clearer message than its size.
  if (bytes.size() >= 4) {
    const uint32_t found_magic = big_endian_u32(bytes, 0);
    MG_CHECK(found_magic == magic, who, ": ", path, " has magic number ", found_magic,
             " at byte offset 0, expected ", magic, " (IDX ", ndims == 1 ? "labels" : "images",
             " of unsigned bytes)");
  }
  MG_CHECK(bytes.size() >= header, who, ": ", path, " is ", bytes.size(), " bytes, shorter than the ", header,
           "-byte IDX header");
  std::vector<int64_t> dims;
  int64_t record_bytes = 1;
  for (int d = 0; d < ndims; ++d) {
    dims.push_back(big_endian_u32(bytes, 4 + 4 * d));
    if (d > 0) record_bytes *= dims.back();
  }
  // The per-record bound keeps count * record size within int64 (count is at most 2^32 - 1).
  for (int d = 1; d < ndims; ++d)
    MG_CHECK(dims[d] > 0 && dims[d] <= kMaxSide, who, ": ", path, " has dimension ", d, " of size ", dims[d],
             " (byte offset ", 4 + 4 * d, "), expected 1..", kMaxSide);
  const int64_t expected = static_cast<int64_t>(header) + dims[0] * record_bytes;
  const auto found = static_cast<int64_t>(bytes.size());
  if (found < expected) {
    const int64_t record = (found - static_cast<int64_t>(header)) / record_bytes;
    throw Error(detail::concat(who, ": ", path, " is truncated: ", found, " bytes (decompressed), expected ",
                               expected, " for ", dims[0], " records; record ", record,
                               " is cut at byte offset ", header + record * record_bytes));
  }
  MG_CHECK(found == expected, who, ": ", path, " is ", found, " bytes (decompressed), expected ", expected,
           " for the ", dims[0], " records its header declares");
  return dims;
}

// read_idx with the labels checked against a known class count (-1: any byte value is a class).
ImageDataset read_idx_checked(const std::string& images_path, const std::string& labels_path,
                              std::string name, int64_t num_classes) {
  const std::vector<uint8_t> image_bytes = io::read_gz_or_plain(name, images_path);
  const std::vector<int64_t> image_dims = idx_dims(name, images_path, image_bytes, kImagesMagic, 3);
  const std::vector<uint8_t> label_bytes = io::read_gz_or_plain(name, labels_path);
  const std::vector<int64_t> label_dims = idx_dims(name, labels_path, label_bytes, kLabelsMagic, 1);
  MG_CHECK(image_dims[0] == label_dims[0], name, ": ", images_path, " holds ", image_dims[0], " images but ",
           labels_path, " holds ", label_dims[0], " labels");

  ImageDataset set;
  set.name = std::move(name);
  set.channels = 1;
  set.height = image_dims[1];
  set.width = image_dims[2];
  set.pixels.assign(image_bytes.begin() + 16, image_bytes.end());
  int32_t largest_label = 0;
  for (int64_t i = 0; i < label_dims[0]; ++i) {
    const int32_t label = label_bytes[8 + i];
    MG_CHECK(num_classes < 0 || label < num_classes, set.name, ": ", labels_path, " record ", i,
             " (byte offset ", 8 + i, ") has label ", label, ", expected 0..", num_classes - 1);
    set.labels.push_back(label);
    largest_label = std::max(largest_label, label);
  }
  const int64_t classes = num_classes < 0 ? largest_label + 1 : num_classes;
  for (int64_t c = 0; c < classes; ++c) set.class_names.push_back(std::to_string(c));
  return set;
}

}  // namespace

ImageDataset read_idx(const std::string& images_path, const std::string& labels_path, std::string name) {
  ImageDataset set = read_idx_checked(images_path, labels_path, std::move(name), -1);
  set.validate();
  return set;
}

std::string default_fashion_mnist_dir() { return "/usr/share/datasets/fashion-mnist"; }

ImageDataset read_fashion_mnist(const std::string& dir, Split split) {
  const std::string prefix = split == Split::Train ? "train" : "t10k";
  // Debian ships the files gzipped; an unpacked copy (no .gz) is read the same way.
  auto locate = [&](const std::string& stem) {
    const std::string gz = io::path_join(dir, stem + ".gz");
    return io::is_regular_file(gz) ? gz : io::path_join(dir, stem);
  };
  const std::string images = locate(prefix + "-images-idx3-ubyte");
  const std::string labels = locate(prefix + "-labels-idx1-ubyte");
  const std::string expected = detail::concat("Fashion-MNIST ", split_name(split),
                                              " split; Debian package dataset-fashion-mnist installs it in ",
                                              default_fashion_mnist_dir());
  io::require_file("fashion-mnist", images, expected);
  io::require_file("fashion-mnist", labels, expected);
  ImageDataset set = read_idx_checked(images, labels, "fashion-mnist", 10);
  set.class_names = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                     "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};
  set.coarse_names = {"clothing", "footwear", "bags"};
  set.class_to_coarse = {0, 0, 0, 0, 0, 1, 0, 1, 2, 1};
  for (int32_t label : set.labels) set.coarse_labels.push_back(set.class_to_coarse[label]);
  set.validate();
  return set;
}

}  // namespace mg::data
