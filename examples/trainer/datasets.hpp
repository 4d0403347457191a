// Which data the trainer trains on, and how its images are prepared. `--dataset auto` picks
// CIFAR-100 when <data-dir>/cifar-100-binary holds it (or --download fetches it), otherwise the
// Fashion-MNIST that Debian's dataset-fashion-mnist installs, so a run on a fresh machine needs no
// download; the choice and the reason are printed.
#pragma once
#include <string>

#include "data/dataset.hpp"
#include "data/loader.hpp"
#include "data/transforms.hpp"
#include "examples/trainer/config.hpp"

namespace mg::trainer {

struct TrainingData {
  data::ImageDataset train, test;
  std::string source;  // where the data came from and why this set, for the log and the report
};

// Reads both splits (cut to --max-*-examples). Sets config.dataset to the set actually used, so the
// saved configuration names it (resuming an `auto` run reads the same data).
TrainingData load_training_data(TrainConfig& config);

// The routing labels of a set (superclasses, or classes when it has none) and how many there are.
bool has_superclasses(const data::ImageDataset& set);
int64_t num_routing_labels(const data::ImageDataset& set);

// Normalization by the set's standard mean/std (computed from the training pixels for sets without
// published constants), after a random crop with padding and a horizontal flip (not for digits) when
// augment is set.
data::TransformPtr train_transform(const TrainConfig& config, const data::ImageDataset& train);
data::TransformPtr test_transform(const data::ImageDataset& train);

// Moves a batch's images and labels to the model's device: the loader prepares batches on the host.
void to_device(data::Batch& batch, Device device);

}  // namespace mg::trainer
