// Image folder reader in torchvision's ImageFolder layout (root/<class>/<image>, sorted class
// names = labels). Decoding is stb_image's (PNG, JPEG, BMP); resizing is bilinear with half-pixel
// centres (align_corners=False, no antialiasing), as torch.nn.functional.interpolate.
#include "data/image_folder.hpp"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <memory>

#include "engine/error.hpp"

// Static: the implementation stays private to this file, whatever else links stb.
#define STB_IMAGE_STATIC
#define STB_IMAGE_IMPLEMENTATION
#define STBI_ONLY_PNG
#define STBI_ONLY_JPEG
#define STBI_ONLY_BMP
#include <stb/stb_image.h>

namespace mg::data {
namespace {

namespace fs = std::filesystem;

bool is_image_file(const fs::path& path) {
  std::string ext = path.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  return ext == ".png" || ext == ".jpg" || ext == ".jpeg" || ext == ".bmp";
}

// Bilinear resize of an interleaved [h, w, c] image into planes [c, out_h, out_w], sampling at
// src = (dst + 0.5) * scale - 0.5 clamped to the image, as interpolate(align_corners=False).
void resize_to_planes(const uint8_t* hwc, int64_t h, int64_t w, int64_t c, int64_t out_h, int64_t out_w,
                      uint8_t* chw) {
  auto source_coordinate = [](int64_t dst, int64_t in_size, int64_t out_size, int64_t& low, int64_t& high,
                              float& frac) {
    const float scale = static_cast<float>(in_size) / static_cast<float>(out_size);
    const float src = std::max(0.0f, (static_cast<float>(dst) + 0.5f) * scale - 0.5f);
    low = std::min<int64_t>(static_cast<int64_t>(src), in_size - 1);
    high = std::min<int64_t>(low + 1, in_size - 1);
    frac = src - static_cast<float>(low);
  };
  for (int64_t y = 0; y < out_h; ++y) {
    int64_t y0, y1;
    float fy;
    source_coordinate(y, h, out_h, y0, y1, fy);
    for (int64_t x = 0; x < out_w; ++x) {
      int64_t x0, x1;
      float fx;
      source_coordinate(x, w, out_w, x0, x1, fx);
      for (int64_t ch = 0; ch < c; ++ch) {
        auto at = [&](int64_t yy, int64_t xx) { return static_cast<float>(hwc[(yy * w + xx) * c + ch]); };
        const float top = at(y0, x0) + (at(y0, x1) - at(y0, x0)) * fx;
        const float bottom = at(y1, x0) + (at(y1, x1) - at(y1, x0)) * fx;
        const float value = top + (bottom - top) * fy;
        chw[(ch * out_h + y) * out_w + x] = static_cast<uint8_t>(std::clamp(value + 0.5f, 0.0f, 255.0f));
      }
    }
  }
}

}  // namespace

ImageDataset read_image_folder(const std::string& dir, int64_t height, int64_t width, int64_t channels) {
  MG_CHECK(channels == 1 || channels == 3, "image folder ", dir, ": channels must be 1 or 3, got ", channels);
  MG_CHECK(height > 0 && width > 0, "image folder ", dir, ": size must be positive, got ", height, "x",
           width);
  std::error_code ec;
  MG_CHECK(fs::is_directory(dir, ec), "image folder: missing folder ", dir,
           " (expected one subfolder per class holding PNG/JPEG/BMP images)");
  ImageDataset set;
  set.name = fs::path(dir).filename().string();
  if (set.name.empty()) set.name = fs::path(dir).parent_path().filename().string();  // "dir/" given
  set.channels = channels;
  set.height = height;
  set.width = width;
  for (const auto& entry : fs::directory_iterator(dir))
    if (entry.is_directory()) set.class_names.push_back(entry.path().filename().string());
  std::sort(set.class_names.begin(), set.class_names.end());
  MG_CHECK(!set.class_names.empty(), "image folder ", dir, ": no class subfolders (expected one per class)");

  const int64_t per_image = channels * height * width;
  for (size_t label = 0; label < set.class_names.size(); ++label) {
    const fs::path class_dir = fs::path(dir) / set.class_names[label];
    std::vector<fs::path> files;
    for (const auto& entry : fs::directory_iterator(class_dir))
      if (entry.is_regular_file() && is_image_file(entry.path())) files.push_back(entry.path());
    std::sort(files.begin(), files.end());
    MG_CHECK(!files.empty(), "image folder ", dir, ": class folder ", class_dir.string(),
             " holds no .png/.jpg/.jpeg/.bmp file");
    for (const fs::path& file : files) {
      int w = 0, h = 0, file_channels = 0;
      std::unique_ptr<stbi_uc, void (*)(void*)> decoded(
          stbi_load(file.string().c_str(), &w, &h, &file_channels, static_cast<int>(channels)),
          stbi_image_free);
      MG_CHECK(decoded != nullptr, "image folder ", dir, ": cannot decode ", file.string(), " (",
               stbi_failure_reason(), "; expected a PNG, JPEG or BMP image)");
      const size_t offset = set.pixels.size();
      set.pixels.resize(offset + per_image);
      resize_to_planes(decoded.get(), h, w, channels, height, width, set.pixels.data() + offset);
      set.labels.push_back(static_cast<int32_t>(label));
    }
  }
  set.validate();
  return set;
}

}  // namespace mg::data
