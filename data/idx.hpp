// Reader for the IDX format of MNIST and Fashion-MNIST (LeCun et al.; Xiao et al. 2017): big-endian
// header with magic 2051 (images: count, rows, cols) or 2049 (labels: count), then unsigned bytes
// in C order. Files may be plain or gzipped (detected by content; read through zlib's gzread).
#pragma once
#include <string>

#include "data/dataset.hpp"

namespace mg::data {

// One-channel images [N, 1, rows, cols]; class names "0".."9" style (the largest label + 1 of them)
// unless the caller sets them. Errors name the file, the expected magic/size and the byte offset.
ImageDataset read_idx(const std::string& images_path, const std::string& labels_path, std::string name);

// Fashion-MNIST from Debian's dataset-fashion-mnist ({train,t10k}-{images-idx3,labels-idx1}-ubyte.gz
// in `dir`, plain files without .gz accepted too), with class names and three superclasses:
// clothing {0 T-shirt/top, 1 Trouser, 2 Pullover, 3 Dress, 4 Coat, 6 Shirt}, footwear {5 Sandal,
// 7 Sneaker, 9 Ankle boot}, bags {8 Bag}.
ImageDataset read_fashion_mnist(const std::string& dir, Split split);
std::string default_fashion_mnist_dir();  // "/usr/share/datasets/fashion-mnist"

}  // namespace mg::data
