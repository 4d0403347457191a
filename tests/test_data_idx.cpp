// IDX reader (MNIST / Fashion-MNIST) against files written here in the exact format, plain and
// gzipped, with each way a file can be broken; and the real Fashion-MNIST from Debian's
// dataset-fashion-mnist when it is installed.
#include <catch2/catch.hpp>
#include <filesystem>

#include "data/idx.hpp"
#include "engine/error.hpp"
#include "test_data_util.hpp"

using Catch::Matchers::Contains;
using mg_test::TempDir;
namespace data = mg::data;

namespace {

// 5 images of 3 x 4 with pixel (i, y, x) = 40 i + 4 y + x, labels 3 1 4 1 5.
std::vector<uint8_t> small_pixels() {
  std::vector<uint8_t> pixels;
  for (int i = 0; i < 5; ++i)
    for (int y = 0; y < 3; ++y)
      for (int x = 0; x < 4; ++x) pixels.push_back(static_cast<uint8_t>(40 * i + 4 * y + x));
  return pixels;
}
const std::vector<uint8_t> kSmallLabels = {3, 1, 4, 1, 5};

}  // namespace

TEST_CASE("idx: plain and gzipped files read the same", "[data]") {
  TempDir dir;
  mg_test::write_file(dir.file("images"), mg_test::idx_images(5, 3, 4, small_pixels()));
  mg_test::write_file(dir.file("labels"), mg_test::idx_labels(kSmallLabels));
  mg_test::write_gzip(dir.file("images.gz"), mg_test::idx_images(5, 3, 4, small_pixels()));
  mg_test::write_gzip(dir.file("labels.gz"), mg_test::idx_labels(kSmallLabels));
  for (const std::string suffix : {"", ".gz"}) {
    const data::ImageDataset set =
        data::read_idx(dir.file("images" + suffix), dir.file("labels" + suffix), "digits");
    REQUIRE(set.name == "digits");
    REQUIRE(set.size() == 5);
    REQUIRE((set.channels == 1 && set.height == 3 && set.width == 4));
    REQUIRE(set.labels == std::vector<int32_t>{3, 1, 4, 1, 5});
    REQUIRE(set.pixels == small_pixels());
    REQUIRE(set.num_classes() == 6);  // labels 0..5
    REQUIRE(set.class_names[5] == "5");
    REQUIRE(set.coarse_labels.empty());
  }
}

TEST_CASE("idx: broken files stop with the file, what was expected and where", "[data]") {
  TempDir dir;
  const std::string images = dir.file("images"), labels = dir.file("labels");
  mg_test::write_file(images, mg_test::idx_images(5, 3, 4, small_pixels()));
  mg_test::write_file(labels, mg_test::idx_labels(kSmallLabels));
  auto read = [&] { return data::read_idx(images, labels, "digits"); };
  SECTION("missing") {
    std::filesystem::remove(labels);
    REQUIRE_THROWS_WITH(read(), Contains("missing file " + labels));
  }
  SECTION("bad magic: a labels file given as images") {
    mg_test::write_file(images, mg_test::idx_labels(kSmallLabels));
    REQUIRE_THROWS_WITH(read(), Contains(images + " has magic number 2049 at byte offset 0, expected 2051"));
  }
  SECTION("truncated images") {
    std::vector<uint8_t> bytes = mg_test::idx_images(5, 3, 4, small_pixels());
    bytes.resize(16 + 2 * 12 + 7);
    mg_test::write_file(images, bytes);
    REQUIRE_THROWS_WITH(
        read(), Contains(images + " is truncated: 47 bytes (decompressed), expected 76 for 5 records") &&
                    Contains("record 2 is cut at byte offset 40"));
  }
  SECTION("wrong size: bytes after the declared records") {
    std::vector<uint8_t> bytes = mg_test::idx_labels(kSmallLabels);
    bytes.push_back(0);
    mg_test::write_file(labels, bytes);
    REQUIRE_THROWS_WITH(read(), Contains(labels + " is 14 bytes (decompressed), expected 13"));
  }
  SECTION("header shorter than the format's") {
    mg_test::write_file(labels, {0, 0, 8});
    REQUIRE_THROWS_WITH(read(), Contains(labels + " is 3 bytes, shorter than the 8-byte IDX header"));
  }
  SECTION("counts disagree") {
    mg_test::write_file(labels, mg_test::idx_labels({1, 2, 3}));
    REQUIRE_THROWS_WITH(read(), Contains("holds 5 images but") && Contains("holds 3 labels"));
  }
  SECTION("truncated gzip stream") {
    const std::string gz = dir.file("images.gz");
    std::vector<uint8_t> pixels(2000 * 12);
    for (size_t i = 0; i < pixels.size(); ++i) pixels[i] = static_cast<uint8_t>(i * 2654435761u >> 13);
    mg_test::write_gzip(gz, mg_test::idx_images(2000, 3, 4, pixels));
    std::vector<uint8_t> compressed = mg_test::read_file(gz);
    compressed.resize(compressed.size() / 2);
    mg_test::write_file(gz, compressed);
    REQUIRE_THROWS_WITH(data::read_idx(gz, labels, "digits"), Contains(gz + " is not a valid gzip stream"));
  }
}

TEST_CASE("fashion-mnist: labels out of range and missing files", "[data]") {
  TempDir dir;
  mg_test::write_gzip(dir.file("t10k-images-idx3-ubyte.gz"), mg_test::idx_images(5, 3, 4, small_pixels()));
  SECTION("missing labels file names the package") {
    REQUIRE_THROWS_WITH(
        data::read_fashion_mnist(dir.path(), data::Split::Test),
        Contains("missing file " + dir.file("t10k-labels-idx1-ubyte")) && Contains("dataset-fashion-mnist"));
  }
  SECTION("label 10") {
    mg_test::write_gzip(dir.file("t10k-labels-idx1-ubyte.gz"), mg_test::idx_labels({3, 1, 4, 10, 5}));
    REQUIRE_THROWS_WITH(
        data::read_fashion_mnist(dir.path(), data::Split::Test),
        Contains("t10k-labels-idx1-ubyte.gz record 3 (byte offset 11) has label 10, expected 0..9"));
  }
  SECTION("unpacked files are read too, with names and superclasses") {
    mg_test::write_file(dir.file("t10k-labels-idx1-ubyte"), mg_test::idx_labels({9, 0, 5, 8, 6}));
    const data::ImageDataset set = data::read_fashion_mnist(dir.path(), data::Split::Test);
    REQUIRE(set.class_names[9] == "Ankle boot");
    REQUIRE(set.coarse_names == std::vector<std::string>{"clothing", "footwear", "bags"});
    REQUIRE(set.coarse_labels == std::vector<int32_t>{1, 0, 1, 2, 0});
    REQUIRE(set.fine_to_coarse() == std::vector<int32_t>{0, 0, 0, 0, 0, 1, 0, 1, 2, 1});
  }
}

TEST_CASE("fashion-mnist: the real data set from dataset-fashion-mnist", "[data]") {
  const std::string dir = data::default_fashion_mnist_dir();
  if (!std::filesystem::exists(dir + "/train-images-idx3-ubyte.gz")) {
    WARN("SKIPPED: Fashion-MNIST is not installed in " << dir << " (apt-get install dataset-fashion-mnist)");
    return;
  }
  const data::ImageDataset train = data::read_fashion_mnist(dir, data::Split::Train);
  const data::ImageDataset test = data::read_fashion_mnist(dir, data::Split::Test);
  REQUIRE(train.size() == 60000);
  REQUIRE(test.size() == 10000);
  REQUIRE((train.channels == 1 && train.height == 28 && train.width == 28));
  REQUIRE(train.num_classes() == 10);
  REQUIRE(train.num_coarse() == 3);
  REQUIRE(std::vector<int32_t>(train.labels.begin(), train.labels.begin() + 10) ==
          std::vector<int32_t>{9, 0, 0, 3, 0, 2, 7, 2, 5, 5});
  REQUIRE(std::vector<int32_t>(test.labels.begin(), test.labels.begin() + 10) ==
          std::vector<int32_t>{9, 2, 1, 1, 6, 1, 4, 6, 5, 7});
  REQUIRE(train.coarse_labels[0] == 1);  // ankle boot: footwear
  // Pixel sums of the first images (computed with Python's gzip module from the same files).
  int64_t first_train_sum = 0, first_test_sum = 0;
  for (int i = 0; i < 784; ++i) {
    first_train_sum += train.pixels[i];
    first_test_sum += test.pixels[i];
  }
  REQUIRE(first_train_sum == 76247);
  REQUIRE(first_test_sum == 33456);
  std::vector<int64_t> per_class(10, 0);
  for (int32_t label : train.labels) ++per_class[label];
  REQUIRE(per_class == std::vector<int64_t>(10, 6000));
}
