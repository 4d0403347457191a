// Image folder reader: PNG, BMP and JPEG files written here with stb_image_write in a
// one-subfolder-per-class tree; checks labels from sorted folder names, exact pixels at the stored
// size, bilinear downsizing (align_corners=False) and gray conversion, and the error cases.
#include <catch2/catch.hpp>
#include <filesystem>

#include "data/image_folder.hpp"
#include "engine/error.hpp"
#include "test_data_util.hpp"

#define STB_IMAGE_WRITE_STATIC
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb/stb_image_write.h>

using Catch::Matchers::Contains;
using mg_test::TempDir;
namespace data = mg::data;

namespace {

// A 4 x 4 RGB image, interleaved: R = 10 (4 y + x) + base, G = 200 - R, B = 7.
std::vector<uint8_t> rgb_image(int base) {
  std::vector<uint8_t> hwc;
  for (int y = 0; y < 4; ++y)
    for (int x = 0; x < 4; ++x) {
      const int red = 10 * (4 * y + x) + base;
      hwc.push_back(static_cast<uint8_t>(red));
      hwc.push_back(static_cast<uint8_t>(200 - red));
      hwc.push_back(7);
    }
  return hwc;
}

void write_png(const std::string& path, const std::vector<uint8_t>& hwc) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  REQUIRE(stbi_write_png(path.c_str(), 4, 4, 3, hwc.data(), 4 * 3) != 0);
}

void write_bmp(const std::string& path, const std::vector<uint8_t>& hwc) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  REQUIRE(stbi_write_bmp(path.c_str(), 4, 4, 3, hwc.data()) != 0);
}

}  // namespace

TEST_CASE("image folder: classes from sorted folder names, exact pixels, bilinear resize", "[data]") {
  TempDir dir;
  const std::string root = dir.file("shapes");
  write_png(root + "/dog/a.png", rgb_image(0));
  write_bmp(root + "/cat/b.bmp", rgb_image(5));
  write_png(root + "/cat/a.PNG", rgb_image(1));
  mg_test::write_text(root + "/cat/notes.txt", "not an image");

  const data::ImageDataset same = data::read_image_folder(root, 4, 4, 3);
  REQUIRE(same.name == "shapes");
  REQUIRE(same.class_names == std::vector<std::string>{"cat", "dog"});
  REQUIRE(same.size() == 3);
  REQUIRE(same.labels == std::vector<int32_t>{0, 0, 1});  // cat/a.PNG, cat/b.bmp, dog/a.png
  // [C, H, W]: red plane of the first image, then its green plane.
  REQUIRE(same.pixels[0 * 16 + 2 * 4 + 3] == 10 * 11 + 1);
  REQUIRE(same.pixels[1 * 16 + 2 * 4 + 3] == 200 - (10 * 11 + 1));
  REQUIRE(same.pixels[2 * 16] == 7);
  REQUIRE(same.pixels[48 + 5] == 10 * 5 + 5);  // the BMP decodes exactly too
  REQUIRE(same.pixels[96 + 15] == 10 * 15 + 0);

  // 4 -> 2 with half-pixel centres samples at 0.5 and 2.5: the mean of each 2 x 2 block.
  const data::ImageDataset half = data::read_image_folder(root, 2, 2, 3);
  REQUIRE(half.pixels.size() == 3 * 12);
  REQUIRE(half.pixels[0] == (0 + 10 + 40 + 50) / 4 + 1);       // red (0, 0) of cat/a.PNG: 26
  REQUIRE(half.pixels[3] == (100 + 110 + 140 + 150) / 4 + 1);  // red (1, 1): 126
  // Gray is stb's luma (77 R + 150 G + 29 B) >> 8.
  const data::ImageDataset gray = data::read_image_folder(root, 4, 4, 1);
  REQUIRE(gray.channels == 1);
  const int red = 10 * 6 + 1;
  REQUIRE(gray.pixels[6] == (77 * red + 150 * (200 - red) + 29 * 7) >> 8);
}

TEST_CASE("image folder: JPEG decodes close to the written pixels", "[data]") {
  TempDir dir;
  std::vector<uint8_t> flat(8 * 8 * 3, 0);
  for (size_t i = 0; i < flat.size(); i += 3) {
    flat[i] = 200;
    flat[i + 1] = 100;
    flat[i + 2] = 50;
  }
  const std::string path = dir.file("set/only/x.jpg");
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  REQUIRE(stbi_write_jpg(path.c_str(), 8, 8, 3, flat.data(), 95) != 0);
  const data::ImageDataset set = data::read_image_folder(dir.file("set"), 8, 8, 3);
  REQUIRE(set.size() == 1);
  REQUIRE(std::abs(int{set.pixels[0]} - 200) <= 3);
  REQUIRE(std::abs(int{set.pixels[64]} - 100) <= 3);
  REQUIRE(std::abs(int{set.pixels[128]} - 50) <= 3);
}

TEST_CASE("image folder: errors name the folder or file", "[data]") {
  TempDir dir;
  const std::string root = dir.file("set");
  SECTION("missing folder") {
    REQUIRE_THROWS_WITH(data::read_image_folder(root, 4, 4, 3), Contains("missing folder " + root));
  }
  SECTION("no class folders") {
    std::filesystem::create_directories(root);
    REQUIRE_THROWS_WITH(data::read_image_folder(root, 4, 4, 3), Contains("no class subfolders"));
  }
  SECTION("class folder without images") {
    write_png(root + "/a/x.png", rgb_image(0));
    std::filesystem::create_directories(root + "/b");
    REQUIRE_THROWS_WITH(data::read_image_folder(root, 4, 4, 3),
                        Contains("class folder " + root + "/b holds no"));
  }
  SECTION("undecodable file") {
    mg_test::write_text(root + "/a/broken.png", "this is not a png");
    REQUIRE_THROWS_WITH(data::read_image_folder(root, 4, 4, 3),
                        Contains("cannot decode " + root + "/a/broken.png"));
  }
  SECTION("bad arguments") {
    REQUIRE_THROWS_WITH(data::read_image_folder(root, 4, 4, 2), Contains("channels must be 1 or 3"));
  }
}
