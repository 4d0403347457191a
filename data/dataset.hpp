// mg::data::ImageDataset: an image classification set held in memory exactly as read (uint8 pixels,
// [N, C, H, W] in C order) with its fine labels, optional coarse (superclass) labels and the class
// names. Every reader in data/ returns one, fully validated; the loader turns it into batches.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace mg::data {

enum class Split { Train, Test };
const char* split_name(Split split);  // "train" / "test", for messages

struct ImageDataset {
  std::string name;  // "cifar100", "cifar10", "fashion-mnist", "mnist", folder name
  int64_t channels = 0, height = 0, width = 0;
  std::vector<uint8_t> pixels;            // size() * channels * height * width
  std::vector<int32_t> labels;            // fine labels, 0 .. num_classes()-1
  std::vector<int32_t> coarse_labels;     // superclass per example; empty when the set has none
  std::vector<std::string> class_names;   // index = label
  std::vector<std::string> coarse_names;  // index = coarse label
  // label -> coarse label as the set defines it (CIFAR-100's superclass table); empty when the set
  // has no coarse labels, or when only the examples say it (see fine_to_coarse).
  std::vector<int32_t> class_to_coarse;

  int64_t size() const { return static_cast<int64_t>(labels.size()); }
  int64_t num_classes() const { return static_cast<int64_t>(class_names.size()); }
  int64_t num_coarse() const { return static_cast<int64_t>(coarse_names.size()); }
  int64_t image_numel() const { return channels * height * width; }  // pixels per example
  // label -> coarse label (empty when the set has no coarse labels): class_to_coarse when set,
  // otherwise read off the examples (a label no example carries maps to -1).
  std::vector<int32_t> fine_to_coarse() const;
  // Examples [begin, begin + count) with the same names, for tiny smoke runs.
  ImageDataset subset(int64_t begin, int64_t count) const;
  // Throws mg::Error unless pixels, labels, coarse labels and names agree with each other (sizes,
  // label ranges). Every reader calls it before returning.
  void validate() const;
};

}  // namespace mg::data
