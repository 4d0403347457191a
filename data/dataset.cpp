// ImageDataset: subsets, the fine -> coarse table, and the consistency check every reader runs
// before it returns (so no caller ever sees a half-loaded or inconsistent set).
#include "data/dataset.hpp"

#include "engine/error.hpp"

namespace mg::data {

const char* split_name(Split split) { return split == Split::Train ? "train" : "test"; }

std::vector<int32_t> ImageDataset::fine_to_coarse() const {
  if (!class_to_coarse.empty() || coarse_labels.empty()) return class_to_coarse;
  std::vector<int32_t> table(class_names.size(), -1);
  for (size_t i = 0; i < labels.size(); ++i) {
    int32_t& coarse = table.at(static_cast<size_t>(labels[i]));
    MG_CHECK(coarse == -1 || coarse == coarse_labels[i], name, ": example ", i, " has label ", labels[i],
             " with coarse label ", coarse_labels[i], ", an earlier one with ", coarse);
    coarse = coarse_labels[i];
  }
  return table;
}

ImageDataset ImageDataset::subset(int64_t begin, int64_t count) const {
  MG_CHECK(begin >= 0 && count >= 0 && begin + count <= size(), name, ": subset(", begin, ", ", count,
           ") is outside the ", size(), " examples");
  ImageDataset out;
  out.name = name;
  out.channels = channels;
  out.height = height;
  out.width = width;
  const int64_t per_image = image_numel();
  out.pixels.assign(pixels.begin() + begin * per_image, pixels.begin() + (begin + count) * per_image);
  out.labels.assign(labels.begin() + begin, labels.begin() + begin + count);
  if (!coarse_labels.empty())
    out.coarse_labels.assign(coarse_labels.begin() + begin, coarse_labels.begin() + begin + count);
  out.class_names = class_names;
  out.coarse_names = coarse_names;
  out.class_to_coarse = class_to_coarse;
  return out;
}

void ImageDataset::validate() const {
  MG_CHECK(channels > 0 && height > 0 && width > 0, name, ": image shape [", channels, ", ", height, ", ",
           width, "] must be positive");
  MG_CHECK(static_cast<int64_t>(pixels.size()) == size() * image_numel(), name, ": ", pixels.size(),
           " pixel bytes for ", size(), " images of ", image_numel(), " (expected ", size() * image_numel(),
           ")");
  MG_CHECK(!class_names.empty(), name, ": no class names");
  for (size_t i = 0; i < labels.size(); ++i)
    MG_CHECK(labels[i] >= 0 && labels[i] < num_classes(), name, ": example ", i, " has label ", labels[i],
             ", expected 0..", num_classes() - 1);
  if (coarse_labels.empty()) {
    MG_CHECK(class_to_coarse.empty(), name, ": a fine -> coarse table without coarse labels");
    return;
  }
  MG_CHECK(coarse_labels.size() == labels.size(), name, ": ", coarse_labels.size(), " coarse labels for ",
           labels.size(), " examples");
  for (size_t i = 0; i < coarse_labels.size(); ++i)
    MG_CHECK(coarse_labels[i] >= 0 && coarse_labels[i] < num_coarse(), name, ": example ", i,
             " has coarse label ", coarse_labels[i], ", expected 0..", num_coarse() - 1);
  if (class_to_coarse.empty()) return;
  MG_CHECK(static_cast<int64_t>(class_to_coarse.size()) == num_classes(), name, ": fine -> coarse table has ",
           class_to_coarse.size(), " entries for ", num_classes(), " classes");
  for (size_t i = 0; i < labels.size(); ++i)
    MG_CHECK(class_to_coarse[labels[i]] == coarse_labels[i], name, ": example ", i, " has label ", labels[i],
             " and coarse label ", coarse_labels[i], ", but label ", labels[i], " belongs to coarse label ",
             class_to_coarse[labels[i]]);
}

}  // namespace mg::data
