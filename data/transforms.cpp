// Per-sample transforms (torchvision.transforms semantics) and the per-sample random stream.
// SampleRng draw k of example `index` in epoch `epoch` is Philox4x32-10 at counter
// index * 2^16 + k under a key derived from (seed, epoch), so it never depends on which thread
// runs the transform or what ran before it.
#include "data/transforms.hpp"

#include <algorithm>
#include <cmath>

#include "data/rng_streams.hpp"
#include "engine/error.hpp"
#include "engine/math/philox.hpp"

namespace mg::data {

double SampleRng::uniform() {
  MG_CHECK(draws < kDrawsPerSample, "SampleRng: more than ", kDrawsPerSample, " draws for one sample");
  MG_CHECK(index < (uint64_t{1} << 47), "SampleRng: example index ", index, " is too large");
  const uint64_t key = stream_key(seed, epoch, Stream::Augmentation);
  return math::philox_uniform<double>(key, index * kDrawsPerSample + draws++);
}

bool SampleRng::bernoulli(double p) { return uniform() < p; }

int64_t SampleRng::randint(int64_t n) {
  MG_CHECK(n >= 1, "SampleRng::randint: n must be at least 1, got ", n);
  return std::min(static_cast<int64_t>(uniform() * static_cast<double>(n)), n - 1);
}

namespace {

class RandomCrop final : public Transform {
 public:
  RandomCrop(int64_t size, int64_t padding) : size_(size), padding_(padding) {
    MG_CHECK(size > 0 && padding >= 0,
             "random_crop: size must be positive and padding non-negative, got size ", size, ", padding ",
             padding);
  }
  void apply(std::vector<float>& chw, int64_t& C, int64_t& H, int64_t& W, SampleRng& rng) const override {
    const int64_t padded_h = H + 2 * padding_, padded_w = W + 2 * padding_;
    MG_CHECK(padded_h >= size_ && padded_w >= size_, "random_crop: a ", size_, "x", size_, " crop of a ", H,
             "x", W, " image padded by ", padding_, " does not fit");
    // Window origin in padded coordinates, drawn top first then left, as torchvision.
    const int64_t top = rng.randint(padded_h - size_ + 1), left = rng.randint(padded_w - size_ + 1);
    std::vector<float> out(static_cast<size_t>(C * size_ * size_), 0.0f);
    for (int64_t c = 0; c < C; ++c)
      for (int64_t y = 0; y < size_; ++y) {
        const int64_t src_y = top + y - padding_;
        if (src_y < 0 || src_y >= H) continue;  // zero padding row
        for (int64_t x = 0; x < size_; ++x) {
          const int64_t src_x = left + x - padding_;
          if (src_x >= 0 && src_x < W) out[(c * size_ + y) * size_ + x] = chw[(c * H + src_y) * W + src_x];
        }
      }
    chw.swap(out);
    H = size_;
    W = size_;
  }

 private:
  int64_t size_, padding_;
};

class RandomHorizontalFlip final : public Transform {
 public:
  explicit RandomHorizontalFlip(double p) : p_(p) {
    MG_CHECK(p >= 0.0 && p <= 1.0, "random_horizontal_flip: p must be in [0, 1], got ", p);
  }
  void apply(std::vector<float>& chw, int64_t& C, int64_t& H, int64_t& W, SampleRng& rng) const override {
    if (!rng.bernoulli(p_)) return;
    for (int64_t row = 0; row < C * H; ++row)
      std::reverse(chw.begin() + row * W, chw.begin() + (row + 1) * W);
  }

 private:
  double p_;
};

class Normalize final : public Transform {
 public:
  Normalize(std::vector<float> mean, std::vector<float> std) : mean_(std::move(mean)), std_(std::move(std)) {
    MG_CHECK(!mean_.empty() && mean_.size() == std_.size(), "normalize: mean has ", mean_.size(),
             " values and std ", std_.size(), "; expected the same non-zero count");
    for (float s : std_) MG_CHECK(s > 0.0f, "normalize: std values must be positive, got ", s);
  }
  void apply(std::vector<float>& chw, int64_t& C, int64_t& H, int64_t& W, SampleRng& rng) const override {
    const auto values = static_cast<int64_t>(mean_.size());
    MG_CHECK(values == 1 || values == C, "normalize: ", values, " mean/std values for an image of ", C,
             " channels");
    for (int64_t c = 0; c < C; ++c) {
      const float mean = mean_[values == 1 ? 0 : c], inv_std = 1.0f / std_[values == 1 ? 0 : c];
      for (int64_t i = c * H * W; i < (c + 1) * H * W; ++i) chw[i] = (chw[i] - mean) * inv_std;
    }
  }

 private:
  std::vector<float> mean_, std_;
};

class Compose final : public Transform {
 public:
  explicit Compose(std::vector<TransformPtr> transforms) : transforms_(std::move(transforms)) {
    for (const TransformPtr& t : transforms_) MG_CHECK(t != nullptr, "compose: a transform is null");
  }
  void apply(std::vector<float>& chw, int64_t& C, int64_t& H, int64_t& W, SampleRng& rng) const override {
    for (const TransformPtr& t : transforms_) t->apply(chw, C, H, W, rng);
  }

 private:
  std::vector<TransformPtr> transforms_;
};

}  // namespace

TransformPtr random_crop(int64_t size, int64_t padding) {
  return std::make_shared<RandomCrop>(size, padding);
}
TransformPtr random_horizontal_flip(double p) { return std::make_shared<RandomHorizontalFlip>(p); }
TransformPtr normalize(std::vector<float> mean, std::vector<float> std) {
  return std::make_shared<Normalize>(std::move(mean), std::move(std));
}
TransformPtr compose(std::vector<TransformPtr> transforms) {
  return std::make_shared<Compose>(std::move(transforms));
}

}  // namespace mg::data
