// CIFAR-100 and CIFAR-10 binary readers against files written here in exactly their format
// (shared/data/DATASETS.md): fine and coarse labels, the [C, H, W] pixel layout, names from the meta
// files (blank lines skipped) or the built-in tables, and each way a file can be broken: missing,
// wrong size, truncated, label out of range, inconsistent superclass.
#include <catch2/catch.hpp>
#include <filesystem>

#include "data/cifar.hpp"
#include "engine/error.hpp"
#include "test_data_util.hpp"

using Catch::Matchers::Contains;
using mg_test::TempDir;
namespace data = mg::data;

namespace {

constexpr int64_t kPixels = 3072;

uint8_t pixel_value(int64_t record, int64_t byte) { return static_cast<uint8_t>(record * 7 + byte * 13); }

// CIFAR-100 records: fine label r % 100, its superclass, then the pixel pattern.
std::vector<uint8_t> cifar100_records(int64_t count) {
  std::vector<uint8_t> bytes;
  bytes.reserve(static_cast<size_t>(count * (2 + kPixels)));
  for (int64_t r = 0; r < count; ++r) {
    const int32_t fine = static_cast<int32_t>(r % 100);
    bytes.push_back(static_cast<uint8_t>(data::cifar100_fine_to_coarse()[fine]));
    bytes.push_back(static_cast<uint8_t>(fine));
    for (int64_t j = 0; j < kPixels; ++j) bytes.push_back(pixel_value(r, j));
  }
  return bytes;
}

// CIFAR-10 records of batch file `file` (1..5, 0 = test): label (r + file) % 10, then the pattern.
std::vector<uint8_t> cifar10_records(int64_t count, int file) {
  std::vector<uint8_t> bytes;
  bytes.reserve(static_cast<size_t>(count * (1 + kPixels)));
  for (int64_t r = 0; r < count; ++r) {
    bytes.push_back(static_cast<uint8_t>((r + file) % 10));
    for (int64_t j = 0; j < kPixels; ++j) bytes.push_back(pixel_value(r, j));
  }
  return bytes;
}

const std::vector<uint8_t>& valid_cifar100_test_bin() {
  static const std::vector<uint8_t> bytes = cifar100_records(10000);
  return bytes;
}

}  // namespace

TEST_CASE("cifar100: reads records, labels, superclasses and meta names", "[data]") {
  TempDir dir;
  mg_test::write_file(dir.file("test.bin"), valid_cifar100_test_bin());
  // The real meta files end with a blank line; any blank line is skipped.
  std::string fine_names, coarse_names;
  for (const std::string& name : data::cifar100_fine_label_names()) fine_names += "f_" + name + "\n";
  for (const std::string& name : data::cifar100_coarse_label_names()) coarse_names += "\n" + name + "\r\n";
  mg_test::write_text(dir.file("fine_label_names.txt"), fine_names + "\n\n");
  mg_test::write_text(dir.file("coarse_label_names.txt"), coarse_names);

  const data::ImageDataset set = data::read_cifar100(dir.path(), data::Split::Test);
  REQUIRE(set.name == "cifar100");
  REQUIRE(set.size() == 10000);
  REQUIRE((set.channels == 3 && set.height == 32 && set.width == 32));
  REQUIRE(set.num_classes() == 100);
  REQUIRE(set.num_coarse() == 20);
  REQUIRE(set.class_names[0] == "f_apple");
  REQUIRE(set.class_names[99] == "f_worm");
  REQUIRE(set.coarse_names[0] == "aquatic_mammals");
  REQUIRE(set.coarse_names[19] == "vehicles_2");
  // record 1234: fine 34 (fox), coarse 12 (medium_mammals)
  REQUIRE(set.labels[1234] == 34);
  REQUIRE(set.coarse_labels[1234] == 12);
  // Pixel (c, y, x) of record r is byte c * 1024 + y * 32 + x of its pixel block: red top row first.
  const int64_t r = 4321, c = 2, y = 5, x = 17;
  REQUIRE(set.pixels[r * kPixels + c * 1024 + y * 32 + x] == pixel_value(r, c * 1024 + y * 32 + x));
  REQUIRE(set.pixels.back() == pixel_value(9999, kPixels - 1));
  const std::vector<int32_t> fine_to_coarse = set.fine_to_coarse();
  REQUIRE(fine_to_coarse == data::cifar100_fine_to_coarse());
  REQUIRE(fine_to_coarse[4] == 0);    // beaver -> aquatic_mammals
  REQUIRE(fine_to_coarse[98] == 14);  // woman -> people

  const data::ImageDataset few = set.subset(10, 3);
  REQUIRE(few.size() == 3);
  REQUIRE(few.labels == std::vector<int32_t>{10, 11, 12});
  REQUIRE(few.coarse_labels == std::vector<int32_t>{3, 14, 9});
  REQUIRE(few.pixels[0] == pixel_value(10, 0));
  REQUIRE(few.fine_to_coarse() == data::cifar100_fine_to_coarse());
}

TEST_CASE("cifar100: names fall back to the built-in tables without meta files", "[data]") {
  TempDir dir;
  mg_test::write_file(dir.file("test.bin"), valid_cifar100_test_bin());
  const data::ImageDataset set = data::read_cifar100(dir.path(), data::Split::Test);
  REQUIRE(set.class_names == data::cifar100_fine_label_names());
  REQUIRE(set.class_names[34] == "fox");
  REQUIRE(set.coarse_names[12] == "medium_mammals");

  mg_test::write_text(dir.file("coarse_label_names.txt"), "a\nb\n\nc\n");
  REQUIRE_THROWS_WITH(data::read_cifar100(dir.path(), data::Split::Test),
                      Contains("coarse_label_names.txt holds 3 names") && Contains("expected 20"));
}

TEST_CASE("cifar100: broken files stop with the file and what was expected", "[data]") {
  TempDir dir;
  const std::string test_bin = dir.file("test.bin");
  SECTION("missing") {
    REQUIRE_THROWS_WITH(
        data::read_cifar100(dir.path(), data::Split::Train),
        Contains("missing file " + dir.file("train.bin")) && Contains("50000 records of 3074 bytes"));
  }
  SECTION("wrong size") {
    mg_test::write_file(test_bin, std::vector<uint8_t>(3074 * 3));
    std::filesystem::resize_file(test_bin, 30740000 + 5);
    REQUIRE_THROWS_WITH(
        data::read_cifar100(dir.path(), data::Split::Test),
        Contains(test_bin + " is 30740005 bytes, expected 30740000 (10000 records of 3074 bytes)"));
  }
  SECTION("truncated record") {
    mg_test::write_file(test_bin, std::vector<uint8_t>(1));
    std::filesystem::resize_file(test_bin, 30740000 - 100);
    REQUIRE_THROWS_WITH(
        data::read_cifar100(dir.path(), data::Split::Test),
        Contains("is 30739900 bytes") && Contains("record 9999 is truncated at byte offset 30736926"));
  }
  SECTION("fewer whole records") {
    mg_test::write_file(test_bin, cifar100_records(3));
    REQUIRE_THROWS_WITH(data::read_cifar100(dir.path(), data::Split::Test),
                        Contains("is 9222 bytes, expected 30740000") && Contains("ends after 3 records"));
  }
  SECTION("fine label out of range") {
    std::vector<uint8_t> bytes = valid_cifar100_test_bin();
    bytes[1234 * 3074 + 1] = 100;
    mg_test::write_file(test_bin, bytes);
    REQUIRE_THROWS_WITH(
        data::read_cifar100(dir.path(), data::Split::Test),
        Contains(test_bin + " record 1234 (byte offset 3793317) has label 100, expected 0..99"));
  }
  SECTION("coarse label out of range") {
    std::vector<uint8_t> bytes = valid_cifar100_test_bin();
    bytes[77 * 3074] = 20;
    mg_test::write_file(test_bin, bytes);
    REQUIRE_THROWS_WITH(data::read_cifar100(dir.path(), data::Split::Test),
                        Contains("record 77 (byte offset 236698) has coarse label 20, expected 0..19"));
  }
  SECTION("coarse label disagrees with the superclass table") {
    std::vector<uint8_t> bytes = valid_cifar100_test_bin();
    bytes[5 * 3074] = 0;  // fine 5 (bed) belongs to 6 (household_furniture)
    mg_test::write_file(test_bin, bytes);
    REQUIRE_THROWS_WITH(data::read_cifar100(dir.path(), data::Split::Test),
                        Contains("record 5 has fine label 5 with coarse label 0") && Contains("puts 5 in 6"));
  }
}

TEST_CASE("cifar10: five train batches in order, test batch, names", "[data]") {
  TempDir dir;
  std::vector<uint8_t> bytes = cifar10_records(10000, 0);
  mg_test::write_file(dir.file("test_batch.bin"), bytes);
  mg_test::write_text(dir.file("batches.meta.txt"),
                      "plane\ncar\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n\n");
  const data::ImageDataset test = data::read_cifar10(dir.path(), data::Split::Test);
  REQUIRE(test.size() == 10000);
  REQUIRE(test.coarse_labels.empty());
  REQUIRE(test.fine_to_coarse().empty());
  REQUIRE(test.num_coarse() == 0);
  REQUIRE(test.class_names[1] == "car");
  REQUIRE(test.labels[13] == 3);
  REQUIRE(test.pixels[13 * kPixels + 2000] == pixel_value(13, 2000));

  // Train: the same records in every file, label shifted by the file number, so order shows.
  for (int file = 1; file <= 5; ++file) {
    for (int64_t r = 0; r < 10000; ++r) bytes[r * 3073] = static_cast<uint8_t>((r + file) % 10);
    mg_test::write_file(dir.file("data_batch_" + std::to_string(file) + ".bin"), bytes);
  }
  std::filesystem::remove(dir.file("batches.meta.txt"));
  const data::ImageDataset train = data::read_cifar10(dir.path(), data::Split::Train);
  REQUIRE(train.size() == 50000);
  REQUIRE(train.class_names == data::cifar10_label_names());
  for (int file = 1; file <= 5; ++file) {
    const int64_t first = (file - 1) * 10000;
    REQUIRE(train.labels[first] == file % 10);
    REQUIRE(train.labels[first + 9999] == (9999 + file) % 10);
    REQUIRE(train.pixels[(first + 5) * kPixels + 7] == pixel_value(5, 7));
  }
}

TEST_CASE("cifar10: broken files", "[data]") {
  TempDir dir;
  SECTION("a missing batch names it") {
    mg_test::write_file(dir.file("data_batch_1.bin"), std::vector<uint8_t>(1));
    std::filesystem::resize_file(dir.file("data_batch_1.bin"), 30730000);
    REQUIRE_THROWS_WITH(data::read_cifar10(dir.path(), data::Split::Train),
                        Contains("missing file " + dir.file("data_batch_2.bin")));
  }
  SECTION("label out of range") {
    std::vector<uint8_t> bytes = cifar10_records(10000, 0);
    bytes[9999 * 3073] = 10;
    mg_test::write_file(dir.file("test_batch.bin"), bytes);
    REQUIRE_THROWS_WITH(data::read_cifar10(dir.path(), data::Split::Test),
                        Contains("record 9999 (byte offset 30726927) has label 10, expected 0..9"));
  }
  SECTION("wrong size") {
    mg_test::write_file(dir.file("test_batch.bin"), cifar10_records(2, 0));
    REQUIRE_THROWS_WITH(data::read_cifar10(dir.path(), data::Split::Test),
                        Contains("is 6146 bytes, expected 30730000 (10000 records of 3073 bytes)"));
  }
}
