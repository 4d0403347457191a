// The trainer's data choice (auto: CIFAR-100 if present, else the offline Fashion-MNIST), the
// readers behind each --dataset, and the train/test transforms.
#include "examples/trainer/datasets.hpp"

#include <cmath>
#include <filesystem>

#include "data/cifar.hpp"
#include "data/fetch.hpp"
#include "data/idx.hpp"
#include "data/image_folder.hpp"
#include "engine/error.hpp"

namespace mg::trainer {
namespace {

namespace fs = std::filesystem;

bool holds_cifar100(const std::string& data_dir) {
  const fs::path dir = fs::path(data_dir) / "cifar-100-binary";
  return fs::exists(dir / "train.bin") && fs::exists(dir / "test.bin");
}

// <dir>/<stem>.gz when it exists, else <dir>/<stem> (read_idx reads either).
std::string idx_file(const fs::path& dir, const std::string& stem) {
  const fs::path gz = dir / (stem + ".gz");
  return fs::exists(gz) ? gz.string() : (dir / stem).string();
}

std::string fashion_mnist_dir(const std::string& data_dir) {
  const fs::path local = fs::path(data_dir) / "fashion-mnist";
  return fs::exists(local) ? local.string() : data::default_fashion_mnist_dir();
}

data::ImageDataset first(data::ImageDataset set, int64_t max_examples) {
  if (max_examples <= 0 || max_examples >= set.size()) return set;
  return set.subset(0, max_examples);
}

// Per-channel mean and std of the training pixels on 0..1, for sets without published constants.
std::pair<std::vector<float>, std::vector<float>> pixel_statistics(const data::ImageDataset& set) {
  const int64_t C = set.channels, plane = set.height * set.width;
  std::vector<double> sum(C, 0.0), sum_sq(C, 0.0);
  for (int64_t i = 0; i < set.size(); ++i)
    for (int64_t c = 0; c < C; ++c) {
      const uint8_t* p = set.pixels.data() + (i * C + c) * plane;
      for (int64_t k = 0; k < plane; ++k) {
        const double v = p[k] / 255.0;
        sum[c] += v;
        sum_sq[c] += v * v;
      }
    }
  std::vector<float> mean(C), std(C);
  const double n = static_cast<double>(set.size() * plane);
  for (int64_t c = 0; c < C; ++c) {
    mean[c] = static_cast<float>(sum[c] / n);
    std[c] = static_cast<float>(std::sqrt(std::max(sum_sq[c] / n - mean[c] * double(mean[c]), 1e-12)));
  }
  return {mean, std};
}

data::TransformPtr normalization(const data::ImageDataset& train) {
  if (train.name == "cifar100") return data::normalize(data::cifar100_mean, data::cifar100_std);
  if (train.name == "cifar10") return data::normalize(data::cifar10_mean, data::cifar10_std);
  if (train.name == "fashion-mnist")
    return data::normalize(data::fashion_mnist_mean, data::fashion_mnist_std);
  auto [mean, std] = pixel_statistics(train);
  return data::normalize(mean, std);
}

}  // namespace

TrainingData load_training_data(TrainConfig& config) {
  TrainingData out;
  std::string dataset = config.dataset;
  if (dataset == "auto") {
    if (holds_cifar100(config.data_dir) || config.download) {
      dataset = "cifar100";
      out.source = holds_cifar100(config.data_dir)
                       ? "found " + (fs::path(config.data_dir) / "cifar-100-binary").string()
                       : "--download given";
    } else {
      dataset = "fashion-mnist";
      out.source = "no CIFAR-100 in " + (fs::path(config.data_dir) / "cifar-100-binary").string() +
                   " (put it there, or pass --download), so the offline Fashion-MNIST";
    }
  } else {
    out.source = "--dataset " + dataset;
  }

  if (dataset == "cifar100") {
    const std::string dir = data::ensure_cifar100(config.data_dir, config.download);
    out.train = data::read_cifar100(dir, data::Split::Train);
    out.test = data::read_cifar100(dir, data::Split::Test);
    out.source = "CIFAR-100 from " + dir + " (" + out.source + ")";
  } else if (dataset == "cifar10") {
    const std::string dir = (fs::path(config.data_dir) / "cifar-10-batches-bin").string();
    out.train = data::read_cifar10(dir, data::Split::Train);
    out.test = data::read_cifar10(dir, data::Split::Test);
    out.source = "CIFAR-10 from " + dir + " (" + out.source + ")";
  } else if (dataset == "fashion-mnist") {
    const std::string dir = fashion_mnist_dir(config.data_dir);
    out.train = data::read_fashion_mnist(dir, data::Split::Train);
    out.test = data::read_fashion_mnist(dir, data::Split::Test);
    out.source = "Fashion-MNIST from " + dir + " (" + out.source + ")";
  } else if (dataset == "mnist") {
    const fs::path dir = fs::path(config.data_dir) / "mnist";
    out.train = data::read_idx(idx_file(dir, "train-images-idx3-ubyte"),
                               idx_file(dir, "train-labels-idx1-ubyte"), "mnist");
    out.test = data::read_idx(idx_file(dir, "t10k-images-idx3-ubyte"),
                              idx_file(dir, "t10k-labels-idx1-ubyte"), "mnist");
    out.source = "MNIST from " + dir.string() + " (" + out.source + ")";
  } else {
    const fs::path root(config.folder);
    out.train = data::read_image_folder((root / "train").string(), config.image_size, config.image_size,
                                        config.channels);
    out.test = data::read_image_folder((root / "test").string(), config.image_size, config.image_size,
                                       config.channels);
    MG_CHECK(out.train.class_names == out.test.class_names, "train_moe: ", (root / "train").string(), " and ",
             (root / "test").string(), " must hold the same class folders");
    out.source = "image folder " + root.string() + " (" + out.source + ")";
  }
  config.dataset = dataset;
  out.train = first(std::move(out.train), config.max_train_examples);
  out.test = first(std::move(out.test), config.max_test_examples);
  MG_CHECK(out.train.size() >= config.batch_size, "train_moe: ", out.train.size(),
           " training examples are "
           "fewer than one batch of --batch-size ",
           config.batch_size);
  MG_CHECK(out.test.size() > 0, "train_moe: the test split is empty");
  return out;
}

bool has_superclasses(const data::ImageDataset& set) { return set.num_coarse() > 0; }

int64_t num_routing_labels(const data::ImageDataset& set) {
  return has_superclasses(set) ? set.num_coarse() : set.num_classes();
}

data::TransformPtr train_transform(const TrainConfig& config, const data::ImageDataset& train) {
  if (!config.augment) return normalization(train);
  std::vector<data::TransformPtr> steps;
  // 4 pixels of padding on 32-pixel CIFAR images (the usual recipe), 2 on smaller ones; digits are
  // not mirrored (a flipped 2 is no digit), clothes and photographs are.
  steps.push_back(data::random_crop(train.height, train.height >= 32 ? 4 : 2));
  if (train.name != "mnist") steps.push_back(data::random_horizontal_flip());
  steps.push_back(normalization(train));
  return data::compose(steps);
}

data::TransformPtr test_transform(const data::ImageDataset& train) { return normalization(train); }

void to_device(data::Batch& batch, Device device) {
  batch.images = batch.images.to(device);
  batch.labels = batch.labels.to(device);
  if (batch.coarse_labels.defined()) batch.coarse_labels = batch.coarse_labels.to(device);
}

}  // namespace mg::trainer
