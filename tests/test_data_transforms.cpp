// Transforms: random crop and horizontal flip move pixels exactly as torchvision's do for the
// offsets their stream draws; normalize's values; the per-sample stream depends only on
// (seed, epoch, index, draw).
#include <catch2/catch.hpp>
#include <numeric>
#include <set>

#include "data/transforms.hpp"
#include "engine/error.hpp"

using Catch::Matchers::Contains;
namespace data = mg::data;

namespace {

// 2 channels of 3 x 4: value = 100 c + 10 y + x + 1 (no zero, so padding shows).
std::vector<float> small_image() {
  std::vector<float> chw;
  for (int c = 0; c < 2; ++c)
    for (int y = 0; y < 3; ++y)
      for (int x = 0; x < 4; ++x) chw.push_back(static_cast<float>(100 * c + 10 * y + x + 1));
  return chw;
}

std::vector<float> run(const data::TransformPtr& t, uint64_t seed, uint64_t epoch, uint64_t index,
                       int64_t* out_h = nullptr, int64_t* out_w = nullptr) {
  std::vector<float> chw = small_image();
  int64_t C = 2, H = 3, W = 4;
  data::SampleRng rng{seed, epoch, index};
  t->apply(chw, C, H, W, rng);
  if (out_h) *out_h = H;
  if (out_w) *out_w = W;
  return chw;
}

}  // namespace

TEST_CASE("transforms: the sample stream is a function of (seed, epoch, index, draw)", "[data]") {
  data::SampleRng a{7, 3, 11}, b{7, 3, 11}, other_epoch{7, 4, 11}, other_index{7, 3, 12},
      other_seed{8, 3, 11};
  const double first = a.uniform();
  REQUIRE(first == b.uniform());
  REQUIRE(first >= 0.0);
  REQUIRE(first < 1.0);
  REQUIRE(a.uniform() != first);  // the next draw moves on
  REQUIRE(other_epoch.uniform() != first);
  REQUIRE(other_index.uniform() != first);
  REQUIRE(other_seed.uniform() != first);
  // Uniform enough: 4,000 draws of randint(5) over examples land 800 +- 120 in each bucket.
  std::vector<int> counts(5, 0);
  for (uint64_t index = 0; index < 4000; ++index) {
    data::SampleRng rng{1, 0, index};
    ++counts[rng.randint(5)];
  }
  for (int count : counts) REQUIRE(std::abs(count - 800) < 120);
}

TEST_CASE("transforms: random_crop cuts the drawn window of the zero-padded image", "[data]") {
  const data::TransformPtr crop = data::random_crop(3, 2);
  const std::vector<float> input = small_image();
  std::set<std::pair<int64_t, int64_t>> origins_seen;
  for (uint64_t index = 0; index < 200; ++index) {
    int64_t H = 0, W = 0;
    const std::vector<float> out = run(crop, 5, 1, index, &H, &W);
    REQUIRE((H == 3 && W == 3 && out.size() == 18));
    // The same stream's first two draws are the window's top and left in padded coordinates.
    data::SampleRng probe{5, 1, index};
    const int64_t top = probe.randint(3 + 4 - 3 + 1), left = probe.randint(4 + 4 - 3 + 1);
    origins_seen.insert({top, left});
    for (int64_t c = 0; c < 2; ++c)
      for (int64_t y = 0; y < 3; ++y)
        for (int64_t x = 0; x < 3; ++x) {
          const int64_t src_y = top + y - 2, src_x = left + x - 2;
          const bool inside = src_y >= 0 && src_y < 3 && src_x >= 0 && src_x < 4;
          REQUIRE(out[(c * 3 + y) * 3 + x] == (inside ? input[(c * 3 + src_y) * 4 + src_x] : 0.0f));
        }
  }
  REQUIRE(origins_seen.size() == 5 * 6);  // every window position occurs
  REQUIRE_THROWS_WITH(run(data::random_crop(8, 1), 0, 0, 0), Contains("does not fit"));
}

TEST_CASE("transforms: random_crop without padding shifts within the image", "[data]") {
  int64_t H = 0, W = 0;
  const data::TransformPtr crop = data::random_crop(3, 0);
  const std::vector<float> out = run(crop, 0, 0, 0, &H, &W);
  // a 3 x 3 window of a 3 x 4 image: rows whole, columns shifted by the drawn left (0 or 1)
  data::SampleRng probe{0, 0, 0};
  REQUIRE(probe.randint(1) == 0);
  const int64_t left = probe.randint(2);
  REQUIRE(out[0] == 1.0f + static_cast<float>(left));
  REQUIRE(out[17] == 100.0f + 20.0f + 3.0f + static_cast<float>(left));
}

TEST_CASE("transforms: horizontal flip mirrors each row, with probability p", "[data]") {
  const std::vector<float> input = small_image();
  const std::vector<float> flipped = run(data::random_horizontal_flip(1.0), 0, 0, 0);
  for (int64_t row = 0; row < 6; ++row)
    for (int64_t x = 0; x < 4; ++x) REQUIRE(flipped[row * 4 + x] == input[row * 4 + 3 - x]);
  REQUIRE(run(data::random_horizontal_flip(0.0), 0, 0, 0) == input);

  const data::TransformPtr half = data::random_horizontal_flip(0.5);
  int flips = 0;
  for (uint64_t index = 0; index < 1000; ++index) {
    const bool was_flipped = run(half, 3, 0, index) != input;
    data::SampleRng probe{3, 0, index};
    REQUIRE(was_flipped == probe.bernoulli(0.5));
    flips += was_flipped;
  }
  REQUIRE(std::abs(flips - 500) < 60);
}

TEST_CASE("transforms: normalize per channel", "[data]") {
  const std::vector<float> input = small_image();
  const std::vector<float> out = run(data::normalize({0.5f, 100.0f}, {2.0f, 4.0f}), 0, 0, 0);
  REQUIRE(out[0] == Approx((1.0f - 0.5f) / 2.0f));
  REQUIRE(out[12] == Approx((101.0f - 100.0f) / 4.0f));
  REQUIRE(out[23] == Approx((124.0f - 100.0f) / 4.0f));
  // One value for all channels; the CIFAR-100 default on three channels.
  REQUIRE(run(data::normalize({1.0f}, {2.0f}), 0, 0, 0)[12] == Approx(50.0f));
  std::vector<float> rgb = {0.50708f, 1.0f, 0.0f};
  int64_t C = 3, H = 1, W = 1;
  data::SampleRng rng{0, 0, 0};
  data::normalize()->apply(rgb, C, H, W, rng);
  REQUIRE(rgb[0] == Approx(0.0f).margin(1e-6));
  REQUIRE(rgb[1] == Approx((1.0f - 0.48655f) / 0.25644f));
  REQUIRE(rgb[2] == Approx(-0.44092f / 0.27615f));
  REQUIRE_THROWS_WITH(run(data::normalize({0.f, 0.f, 0.f}, {1.f, 1.f, 1.f}), 0, 0, 0),
                      Contains("3 mean/std values for an image of 2 channels"));
  REQUIRE_THROWS_WITH(data::normalize({0.f}, {0.f}), Contains("std values must be positive"));
}

TEST_CASE("transforms: compose is seeded per sample, epochs differ", "[data]") {
  const data::TransformPtr augment = data::compose(
      {data::random_crop(3, 1), data::random_horizontal_flip(), data::normalize({0.f}, {10.f})});
  REQUIRE(run(augment, 9, 2, 17) == run(augment, 9, 2, 17));
  int differ_by_epoch = 0, differ_by_index = 0;
  for (uint64_t index = 0; index < 20; ++index) {
    differ_by_epoch += run(augment, 9, 2, index) != run(augment, 9, 3, index);
    differ_by_index += run(augment, 9, 2, index) != run(augment, 9, 2, index + 100);
  }
  REQUIRE(differ_by_epoch >= 15);  // 5 x 4 windows x 2 flips: a repeat has chance ~1/40
  REQUIRE(differ_by_index >= 15);
  // compose = applying the parts in order with one shared stream
  std::vector<float> chw = small_image();
  int64_t C = 2, H = 3, W = 4;
  data::SampleRng rng{9, 2, 17};
  data::random_crop(3, 1)->apply(chw, C, H, W, rng);
  data::random_horizontal_flip()->apply(chw, C, H, W, rng);
  data::normalize({0.f}, {10.f})->apply(chw, C, H, W, rng);
  REQUIRE(chw == run(augment, 9, 2, 17));
}
