// CIFAR-10 / CIFAR-100 binary readers (format: shared/data/DATASETS.md, from the CIFAR authors'
// page). A record is the label byte(s) then 3,072 pixel bytes already in [C, H, W] order (1,024 R,
// 1,024 G, 1,024 B, each plane row-major), so pixels are copied as they are.
#include "data/cifar.hpp"

#include <filesystem>
#include <fstream>

#include "data/file_util.hpp"
#include "engine/error.hpp"

namespace mg::data {
namespace {

constexpr int64_t kImageBytes = 3 * 32 * 32;
constexpr int64_t kRecordsPerChunk = 1000;  // read in chunks: no second copy of a 150 MB file

// How one CIFAR variant lays out a record's label bytes and which values they may take.
struct RecordFormat {
  const char* who;  // "cifar100" / "cifar10", first word of every message
  bool has_coarse;  // CIFAR-100: a coarse byte comes before the fine byte
  int32_t num_classes;
  int32_t num_coarse;
  const std::vector<int32_t>* class_to_coarse;  // CIFAR-100's superclass table, checked per record
  int64_t record_bytes() const { return (has_coarse ? 2 : 1) + kImageBytes; }
};

// The size check says what a wrong size means: a truncated download ends inside (or after) some
// record; a wrong file is simply not the expected number of records.
void check_file_size(const RecordFormat& format, const std::string& path, int64_t expected_records) {
  const int64_t record = format.record_bytes(), expected = expected_records * record;
  const auto found = static_cast<int64_t>(std::filesystem::file_size(path));
  if (found == expected) return;
  std::string where;
  if (found < expected && found % record != 0)
    where = detail::concat("; record ", found / record, " is truncated at byte offset ",
                           found / record * record);
  else if (found < expected)
    where = detail::concat("; the file ends after ", found / record, " records");
  throw Error(detail::concat(format.who, ": ", path, " is ", found, " bytes, expected ", expected,
                             " (", expected_records, " records of ", record, " bytes)", where));
}

// Appends the records of one file to `out`, checking every label.
void read_records(const RecordFormat& format, const std::string& path, int64_t expected_records,
                  ImageDataset& out) {
  io::require_file(format.who, path,
                   detail::concat(expected_records, " records of ", format.record_bytes(), " bytes"));
  check_file_size(format, path, expected_records);
  std::ifstream in(path, std::ios::binary);
  MG_CHECK(in.good(), format.who, ": cannot open ", path);
  const int64_t record = format.record_bytes(), label_bytes = record - kImageBytes;
  const int64_t first_pixel = static_cast<int64_t>(out.pixels.size());
  out.pixels.resize(first_pixel + expected_records * kImageBytes);
  std::vector<uint8_t> chunk(kRecordsPerChunk * record);
  for (int64_t start = 0; start < expected_records; start += kRecordsPerChunk) {
    const int64_t count = std::min(kRecordsPerChunk, expected_records - start);
    in.read(reinterpret_cast<char*>(chunk.data()), count * record);
    MG_CHECK(in.gcount() == count * record, format.who, ": ", path, " ends early, inside record ",
             start + in.gcount() / record, " (byte offset ", start * record + in.gcount(), ")");
    for (int64_t r = 0; r < count; ++r) {
      const uint8_t* rec = chunk.data() + r * record;
      const int64_t index = start + r;
      const int32_t fine = rec[label_bytes - 1];
      MG_CHECK(fine < format.num_classes, format.who, ": ", path, " record ", index, " (byte offset ",
               index * record + label_bytes - 1, ") has label ", fine, ", expected 0..",
               format.num_classes - 1);
      out.labels.push_back(fine);
      if (format.has_coarse) {
        const int32_t coarse = rec[0];
        MG_CHECK(coarse < format.num_coarse, format.who, ": ", path, " record ", index, " (byte offset ",
                 index * record, ") has coarse label ", coarse, ", expected 0..", format.num_coarse - 1);
        MG_CHECK((*format.class_to_coarse)[fine] == coarse, format.who, ": ", path, " record ", index,
                 " has fine label ", fine, " with coarse label ", coarse, ", but the superclass table puts ",
                 fine, " in ", (*format.class_to_coarse)[fine]);
        out.coarse_labels.push_back(coarse);
      }
      std::copy(rec + label_bytes, rec + record, out.pixels.begin() + first_pixel + index * kImageBytes);
    }
  }
}

// Names from the meta file when present (it must hold exactly `expected` non-blank lines), else
// the built-in table.
std::vector<std::string> read_names(const char* who, const std::string& path,
                                    const std::vector<std::string>& fallback) {
  if (!io::is_regular_file(path)) return fallback;
  std::vector<std::string> names = io::read_name_lines(path);
  MG_CHECK(names.size() == fallback.size(), who, ": ", path, " holds ", names.size(),
           " names (non-blank lines), expected ", fallback.size());
  return names;
}

ImageDataset empty_cifar(const char* name) {
  ImageDataset set;
  set.name = name;
  set.channels = 3;
  set.height = 32;
  set.width = 32;
  return set;
}

}  // namespace

const std::vector<std::string>& cifar100_fine_label_names() {
  static const std::vector<std::string> names = {
      "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle",
      "bicycle", "bottle", "bowl", "boy", "bridge", "bus", "butterfly", "camel",
      "can", "castle", "caterpillar", "cattle", "chair", "chimpanzee", "clock", "cloud",
      "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur", "dolphin", "elephant",
      "flatfish", "forest", "fox", "girl", "hamster", "house", "kangaroo", "keyboard",
      "lamp", "lawn_mower", "leopard", "lion", "lizard", "lobster", "man", "maple_tree",
      "motorcycle", "mountain", "mouse", "mushroom", "oak_tree", "orange", "orchid", "otter",
      "palm_tree", "pear", "pickup_truck", "pine_tree", "plain", "plate", "poppy", "porcupine",
      "possum", "rabbit", "raccoon", "ray", "road", "rocket", "rose", "sea",
      "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake", "spider",
      "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank", "telephone", "television",
      "tiger", "tractor", "train", "trout", "tulip", "turtle", "wardrobe", "whale",
      "willow_tree", "wolf", "woman", "worm"};
  return names;
}

const std::vector<std::string>& cifar100_coarse_label_names() {
  static const std::vector<std::string> names = {
      "aquatic_mammals", "fish", "flowers", "food_containers", "fruit_and_vegetables",
      "household_electrical_devices", "household_furniture", "insects", "large_carnivores",
      "large_man-made_outdoor_things", "large_natural_outdoor_scenes",
      "large_omnivores_and_herbivores", "medium_mammals", "non-insect_invertebrates", "people",
      "reptiles", "small_mammals", "trees", "vehicles_1", "vehicles_2"};
  return names;
}

const std::vector<int32_t>& cifar100_fine_to_coarse() {
  static const std::vector<int32_t> table = {
      4,  1,  14, 8,  0,  6,  7,  7,  18, 3,  3,  14, 9,  18, 7,  11, 3,  9,  7,  11,
      6,  11, 5,  10, 7,  6,  13, 15, 3,  15, 0,  11, 1,  10, 12, 14, 16, 9,  11, 5,
      5,  19, 8,  8,  15, 13, 14, 17, 18, 10, 16, 4,  17, 4,  2,  0,  17, 4,  18, 17,
      10, 3,  2,  12, 12, 16, 12, 1,  9,  19, 2,  10, 0,  1,  16, 12, 9,  13, 15, 13,
      16, 19, 2,  4,  6,  19, 5,  5,  8,  19, 18, 1,  2,  15, 6,  0,  17, 8,  14, 13};
  return table;
}

const std::vector<std::string>& cifar10_label_names() {
  static const std::vector<std::string> names = {"airplane", "automobile", "bird", "cat", "deer",
                                                 "dog",      "frog",       "horse", "ship", "truck"};
  return names;
}

ImageDataset read_cifar100(const std::string& dir, Split split) {
  const RecordFormat format{"cifar100", true, 100, 20, &cifar100_fine_to_coarse()};
  ImageDataset set = empty_cifar("cifar100");
  const bool train = split == Split::Train;
  read_records(format, io::path_join(dir, train ? "train.bin" : "test.bin"), train ? 50000 : 10000, set);
  set.class_names = read_names(format.who, io::path_join(dir, "fine_label_names.txt"),
                               cifar100_fine_label_names());
  set.coarse_names = read_names(format.who, io::path_join(dir, "coarse_label_names.txt"),
                                cifar100_coarse_label_names());
  set.class_to_coarse = cifar100_fine_to_coarse();
  set.validate();
  return set;
}

ImageDataset read_cifar10(const std::string& dir, Split split) {
  const RecordFormat format{"cifar10", false, 10, 0, nullptr};
  ImageDataset set = empty_cifar("cifar10");
  if (split == Split::Train) {
    for (int batch = 1; batch <= 5; ++batch)
      read_records(format, io::path_join(dir, detail::concat("data_batch_", batch, ".bin")), 10000, set);
  } else {
    read_records(format, io::path_join(dir, "test_batch.bin"), 10000, set);
  }
  set.class_names = read_names(format.who, io::path_join(dir, "batches.meta.txt"), cifar10_label_names());
  set.validate();
  return set;
}

}  // namespace mg::data
