// Per-sample augmentations on float images [C, H, W] (values 0..1: the loader converts uint8
// pixels with /255 before any transform runs), following torchvision.transforms: RandomCrop with
// zero padding, RandomHorizontalFlip, Normalize, Compose. Randomness comes from a SampleRng keyed by
// (seed, epoch, example index), so an example's augmentation is the same whichever worker thread
// prepares it and in whatever order.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

namespace mg::data {

// A counter-based stream (Philox4x32-10, engine/math/philox.hpp) for one example in one epoch:
// draw k is a pure function of (seed, epoch, index, k).
struct SampleRng {
  uint64_t seed = 0, epoch = 0, index = 0;
  uint64_t draws = 0;  // draws taken so far

  double uniform();            // [0, 1)
  bool bernoulli(double p);    // true with probability p
  int64_t randint(int64_t n);  // uniform in [0, n), n >= 1
};

class Transform {
 public:
  virtual ~Transform() = default;
  // Transforms `chw` (C * H * W floats) in place; may change C, H, W (and resize chw).
  virtual void apply(std::vector<float>& chw, int64_t& C, int64_t& H, int64_t& W, SampleRng& rng) const = 0;
};
using TransformPtr = std::shared_ptr<const Transform>;

// Standard normalizations on 0..1 data (shared/data/DATASETS.md).
inline const std::vector<float> cifar100_mean = {0.50708f, 0.48655f, 0.44092f};
inline const std::vector<float> cifar100_std = {0.26733f, 0.25644f, 0.27615f};
inline const std::vector<float> cifar10_mean = {0.4914f, 0.4822f, 0.4465f};
inline const std::vector<float> cifar10_std = {0.2470f, 0.2435f, 0.2616f};
inline const std::vector<float> fashion_mnist_mean = {0.2860f};
inline const std::vector<float> fashion_mnist_std = {0.3530f};

// Pads each side with `padding` zeros, then cuts a random size x size window (torchvision's
// RandomCrop(size, padding)); two draws per sample (top, left).
TransformPtr random_crop(int64_t size, int64_t padding);
// Mirrors left-right with probability p; one draw per sample.
TransformPtr random_horizontal_flip(double p = 0.5);
// (x - mean[c]) / std[c] per channel; one value each, or one value for all channels.
TransformPtr normalize(std::vector<float> mean = cifar100_mean, std::vector<float> std = cifar100_std);
// Applies the transforms in order, sharing the sample's stream.
TransformPtr compose(std::vector<TransformPtr> transforms);

}  // namespace mg::data
