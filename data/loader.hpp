// mg::data::DataLoader: batches of an ImageDataset, shuffled and augmented by seed, prepared ahead
// by worker threads, as torch.utils.data.DataLoader with a seeded sampler. The order of an epoch is
// a Fisher-Yates shuffle driven by Philox keyed by (seed, epoch), and each example's augmentation
// by (seed, epoch, index): the batches are the same, in the same order, for any number of workers,
// and an epoch can be resumed exactly at any batch.
//
// Workers fill plain buffers; the Tensors are created on the calling thread inside next(), so the
// loader does not rely on the engine's allocator being thread-safe.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "data/dataset.hpp"
#include "data/transforms.hpp"
#include "engine/tensor.hpp"

namespace mg::data {

struct LoaderOptions {
  int64_t batch_size = 128;
  bool shuffle = true;
  bool drop_last = false;  // drop the last batch when it is smaller than batch_size
  uint64_t seed = 0;
  int64_t workers = 2;           // 0: batches are prepared on the calling thread, inside next()
  int64_t prefetch_batches = 4;  // how many batches the workers may prepare ahead of the caller
};

struct Batch {
  Tensor images;                 // float32 [B, C, H, W], after the transform
  Tensor labels;                 // int32 [B]
  Tensor coarse_labels;          // int32 [B], undefined when the set has none
  std::vector<int64_t> indices;  // example indices in the data set
  int64_t batch_index = 0;
};

class DataLoader {
 public:
  // Keeps a reference to `dataset`: it must outlive the loader.
  DataLoader(const ImageDataset& dataset, LoaderOptions options, TransformPtr transform = nullptr);
  ~DataLoader();  // stops and joins the workers, also in the middle of an epoch
  DataLoader(const DataLoader&) = delete;
  DataLoader& operator=(const DataLoader&) = delete;

  int64_t num_batches() const;
  const LoaderOptions& options() const;
  // Starts epoch `epoch` (the shuffle order and the augmentation depend only on seed and epoch),
  // optionally from batch `start_batch` (exact resume in the middle of an epoch). Abandons what is
  // left of the previous epoch.
  void start_epoch(int64_t epoch, int64_t start_batch = 0);
  // The next batch of the current epoch, or std::nullopt at its end. Worker threads prepare the
  // next batches into a bounded queue while the caller trains; batches come out in order. An error
  // while preparing a batch (in a worker or not) is re-thrown here and ends the epoch. Calling it
  // before start_epoch is an error.
  std::optional<Batch> next();

  // The example order of epoch `epoch` (identity when shuffle is off): what start_epoch uses.
  std::vector<int64_t> epoch_order(int64_t epoch) const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace mg::data
