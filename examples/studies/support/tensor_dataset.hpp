// An in-memory classification set as two tensors (inputs [N, D], labels [N]) plus its domain
// structure (which classes belong together: clothing / footwear / bags, or the synthetic domains of
// domain_data.hpp), and its shuffled batches. The studies train small models on a few thousand
// flattened examples, where one index_select per batch is all the loading there is; data::DataLoader
// (worker threads, augmentation) is the tool for the image trainers.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "data/dataset.hpp"
#include "engine/tensor.hpp"

namespace mg::study {

struct TensorDataset {
  std::string name;
  Tensor inputs;                          // float32 [N, D]
  Tensor labels;                          // int32 [N]
  std::vector<std::string> class_names;   // index = label
  std::vector<int32_t> class_to_domain;   // label -> domain; empty when the set has no domains
  std::vector<std::string> domain_names;  // index = domain

  int64_t size() const { return inputs.size(0); }
  int64_t dim() const { return inputs.size(1); }
  int64_t num_classes() const { return static_cast<int64_t>(class_names.size()); }
  int64_t num_domains() const { return static_cast<int64_t>(domain_names.size()); }
  // int32 [N]: the domain of each example (class_to_domain of its label).
  Tensor domains() const;
  // Examples [begin, begin + count), same names and domains.
  TensorDataset subset(int64_t begin, int64_t count) const;
  // The examples at `indices` (in that order), same names and domains.
  TensorDataset select(const std::vector<int64_t>& indices) const;
  // Throws mg::Error unless shapes, dtypes, label range and the domain map agree.
  void validate() const;
};

// Images [N, C, H, W] flattened to [N, C*H*W] floats through the data library's normalize
// transform (pixels / 255, then (x - mean) / std per channel); the coarse labels become domains.
TensorDataset flatten_images(const data::ImageDataset& images, const std::vector<float>& mean,
                             const std::vector<float>& std);

// Fashion-MNIST from `dir` (data::default_fashion_mnist_dir() when empty), flattened and
// normalized with its standard mean and std; domains clothing / footwear / bags. limit > 0 keeps
// the first `limit` examples (both splits are in a fixed, class-mixed order).
TensorDataset load_fashion_mnist(const std::string& dir, data::Split split, int64_t limit = 0);

// The example indices of each batch of epoch `epoch`: a permutation of 0..n-1 fixed by
// (seed, epoch), cut into int32 index tensors of batch_size (the last one shorter unless
// drop_last drops it).
std::vector<Tensor> shuffled_batches(int64_t n, int64_t batch_size, uint64_t seed, int64_t epoch,
                                     bool drop_last = false);

}  // namespace mg::study
