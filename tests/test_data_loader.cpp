// DataLoader: every example exactly once per epoch, drop_last, seeded shuffles, identical batches
// for 0, 1 and 3 workers (augmentation included), exact resume from a batch, errors re-thrown from
// next() in order, a bounded prefetch window, and clean destruction in the middle of an epoch.
#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <numeric>
#include <set>
#include <thread>

#include "data/loader.hpp"
#include "engine/error.hpp"

using Catch::Matchers::Contains;
namespace data = mg::data;

namespace {

// n examples of 1 x 2 x 3; every pixel of example i is i (n <= 256), label i % 7, coarse i % 2.
data::ImageDataset numbered_set(int64_t n) {
  data::ImageDataset set;
  set.name = "numbered";
  set.channels = 1;
  set.height = 2;
  set.width = 3;
  for (int64_t i = 0; i < n; ++i) {
    for (int p = 0; p < 6; ++p) set.pixels.push_back(static_cast<uint8_t>(i));
    set.labels.push_back(static_cast<int32_t>(i % 7));
    set.coarse_labels.push_back(static_cast<int32_t>(i % 2));
  }
  set.class_names = {"0", "1", "2", "3", "4", "5", "6"};
  set.coarse_names = {"even", "odd"};
  return set;
}

struct Seen {
  std::vector<std::vector<int64_t>> indices;
  std::vector<std::vector<float>> images;
  std::vector<std::vector<int32_t>> labels;
};

Seen take_epoch(data::DataLoader& loader, int64_t epoch, int64_t start_batch = 0) {
  Seen seen;
  loader.start_epoch(epoch, start_batch);
  int64_t expected_index = start_batch;
  while (std::optional<data::Batch> batch = loader.next()) {
    REQUIRE(batch->batch_index == expected_index++);
    seen.indices.push_back(batch->indices);
    seen.images.push_back(batch->images.to_vector<float>());
    seen.labels.push_back(batch->labels.to_vector<int32_t>());
  }
  REQUIRE(!loader.next().has_value());  // stays at the end
  return seen;
}

// Throws for one example: a worker's error must come out of next() at that example's batch.
class FailOnExample final : public data::Transform {
 public:
  explicit FailOnExample(int64_t bad) : bad_(bad) {}
  void apply(std::vector<float>& chw, int64_t& C, int64_t& H, int64_t& W,
             data::SampleRng& rng) const override {
    if (static_cast<int64_t>(rng.index) == bad_)
      throw mg::Error("augment: example " + std::to_string(bad_) + " is bad");
  }

 private:
  int64_t bad_;
};

// Counts the examples it sees, optionally slowly, to observe the workers.
class CountingTransform final : public data::Transform {
 public:
  explicit CountingTransform(int sleep_us = 0) : sleep_us_(sleep_us) {}
  void apply(std::vector<float>& chw, int64_t& C, int64_t& H, int64_t& W,
             data::SampleRng& rng) const override {
    if (sleep_us_ > 0) std::this_thread::sleep_for(std::chrono::microseconds(sleep_us_));
    ++count;
  }
  mutable std::atomic<int64_t> count{0};

 private:
  int sleep_us_;
};

}  // namespace

TEST_CASE("loader: every example once per epoch, batch contents, drop_last", "[data]") {
  const data::ImageDataset set = numbered_set(103);
  for (bool drop_last : {false, true}) {
    data::LoaderOptions options;
    options.batch_size = 10;
    options.drop_last = drop_last;
    options.workers = 2;
    options.seed = 42;
    data::DataLoader loader(set, options);
    REQUIRE(loader.num_batches() == (drop_last ? 10 : 11));
    data::LoaderOptions seen_options = loader.options();
    REQUIRE(seen_options.batch_size == 10);
    loader.start_epoch(0);
    std::vector<int> times_seen(103, 0);
    int64_t batches = 0;
    while (std::optional<data::Batch> batch = loader.next()) {
      const int64_t b = static_cast<int64_t>(batch->indices.size());
      REQUIRE(b == ((!drop_last && batches == 10) ? 3 : 10));
      REQUIRE(batch->images.sizes() == mg::Shape{b, 1, 2, 3});
      REQUIRE(batch->labels.dtype() == mg::kInt32);
      const std::vector<float> images = batch->images.to_vector<float>();
      const std::vector<int32_t> labels = batch->labels.to_vector<int32_t>();
      const std::vector<int32_t> coarse = batch->coarse_labels.to_vector<int32_t>();
      for (int64_t k = 0; k < b; ++k) {
        const int64_t index = batch->indices[k];
        ++times_seen[index];
        REQUIRE(images[k * 6 + 5] == static_cast<float>(index) / 255.0f);
        REQUIRE(labels[k] == index % 7);
        REQUIRE(coarse[k] == index % 2);
      }
      ++batches;
    }
    REQUIRE(batches == loader.num_batches());
    const int64_t once = std::count(times_seen.begin(), times_seen.end(), 1);
    REQUIRE(once == (drop_last ? 100 : 103));
    REQUIRE(std::count(times_seen.begin(), times_seen.end(), 0) == 103 - once);
  }
}

TEST_CASE("loader: shuffles by seed and epoch, no shuffle keeps the order", "[data]") {
  const data::ImageDataset set = numbered_set(50);
  data::LoaderOptions options;
  options.batch_size = 50;
  options.workers = 0;
  options.seed = 1;
  data::DataLoader loader(set, options);
  const std::vector<int64_t> epoch0 = loader.epoch_order(0), epoch1 = loader.epoch_order(1);
  REQUIRE(std::set<int64_t>(epoch0.begin(), epoch0.end()).size() == 50);
  REQUIRE(epoch0 != epoch1);
  REQUIRE(take_epoch(loader, 1).indices[0] == epoch1);
  options.seed = 2;
  REQUIRE(data::DataLoader(set, options).epoch_order(0) != epoch0);
  options.seed = 1;
  REQUIRE(data::DataLoader(set, options).epoch_order(0) == epoch0);
  options.shuffle = false;
  std::vector<int64_t> identity(50);
  std::iota(identity.begin(), identity.end(), int64_t{0});
  REQUIRE(data::DataLoader(set, options).epoch_order(3) == identity);
}

TEST_CASE("loader: the same batches for 0, 1 and 3 workers, and exact resume", "[data]") {
  const data::ImageDataset set = numbered_set(77);
  const data::TransformPtr augment = data::compose({data::random_crop(2, 1), data::random_horizontal_flip()});
  data::LoaderOptions options;
  options.batch_size = 8;
  options.seed = 123;
  options.prefetch_batches = 2;
  std::vector<Seen> per_workers;
  for (int64_t workers : {0, 1, 3}) {
    options.workers = workers;
    data::DataLoader loader(set, options, augment);
    per_workers.push_back(take_epoch(loader, 0));
    Seen epoch1 = take_epoch(loader, 1);
    REQUIRE(epoch1.images != per_workers.back().images);
    // start_batch 4 of epoch 1 is the tail of the full epoch 1
    const Seen tail = take_epoch(loader, 1, 4);
    REQUIRE(tail.indices.size() == 6);
    REQUIRE(tail.indices ==
            std::vector<std::vector<int64_t>>(epoch1.indices.begin() + 4, epoch1.indices.end()));
    REQUIRE(tail.images == std::vector<std::vector<float>>(epoch1.images.begin() + 4, epoch1.images.end()));
    REQUIRE(take_epoch(loader, 1, loader.num_batches()).indices.empty());
  }
  for (size_t w = 1; w < per_workers.size(); ++w) {
    REQUIRE(per_workers[w].indices == per_workers[0].indices);
    REQUIRE(per_workers[w].images == per_workers[0].images);
    REQUIRE(per_workers[w].labels == per_workers[0].labels);
  }
  // The crop made 1 x 2 x 2 images.
  REQUIRE(per_workers[0].images[0].size() == 8 * 4);
}

TEST_CASE("loader: an error while preparing a batch is re-thrown from next() in order", "[data]") {
  const data::ImageDataset set = numbered_set(40);
  for (int64_t workers : {0, 3}) {
    data::LoaderOptions options;
    options.batch_size = 4;
    options.shuffle = false;
    options.workers = workers;
    data::DataLoader loader(set, options, std::make_shared<FailOnExample>(21));
    for (int round = 0; round < 2; ++round) {  // start_epoch recovers after a failure
      loader.start_epoch(0);
      for (int64_t b = 0; b < 5; ++b) REQUIRE(loader.next()->batch_index == b);
      REQUIRE_THROWS_WITH(loader.next(), Contains("example 21 is bad"));
      REQUIRE(!loader.next().has_value());
    }
  }
  data::DataLoader fresh(set, data::LoaderOptions{});
  REQUIRE_THROWS_WITH(fresh.next(), Contains("call start_epoch"));
  data::LoaderOptions bad;
  bad.batch_size = 0;
  REQUIRE_THROWS_WITH(data::DataLoader(set, bad), Contains("batch_size must be at least 1"));
}

TEST_CASE("loader: workers stay within the prefetch window, destruction mid-epoch joins", "[data]") {
  const data::ImageDataset set = numbered_set(200);
  data::LoaderOptions options;
  options.batch_size = 5;
  options.workers = 3;
  options.prefetch_batches = 4;
  auto counter = std::make_shared<CountingTransform>();
  {
    data::DataLoader loader(set, options, counter);
    loader.start_epoch(0);
    REQUIRE(loader.next().has_value());
    // After batch 0 is taken, batches 1..4 may be prepared, and no more.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (counter->count < 5 * 5 && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    REQUIRE(counter->count == 5 * 5);
  }
  // Slow workers busy in the middle of an epoch: the destructor waits for at most their current
  // batch and returns.
  auto slow = std::make_shared<CountingTransform>(2000);
  const auto start = std::chrono::steady_clock::now();
  {
    data::DataLoader loader(set, options, slow);
    loader.start_epoch(0);
    REQUIRE(loader.next().has_value());
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  REQUIRE(seconds < 2.0);
  REQUIRE(slow->count <= 5 * 5);
}
