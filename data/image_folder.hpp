// Reader for an image folder in torchvision's ImageFolder layout: one subfolder per class, the
// sorted subfolder names are the labels 0..K-1. PNG, JPEG and BMP files are decoded with stb_image,
// converted to `channels` (1 = gray, 3 = RGB) and resized (bilinear, align_corners=False as
// torch.nn.functional.interpolate) to height x width. Other files are ignored; an undecodable
// image is an error that names it.
#pragma once
#include <cstdint>
#include <string>

#include "data/dataset.hpp"

namespace mg::data {

ImageDataset read_image_folder(const std::string& dir, int64_t height, int64_t width, int64_t channels);

}  // namespace mg::data
