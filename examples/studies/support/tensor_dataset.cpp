// TensorDataset: checks, subsets, flattening image sets through the data library, and the seeded
// batch order.
#include "examples/studies/support/tensor_dataset.hpp"

#include "data/idx.hpp"
#include "data/transforms.hpp"
#include "engine/error.hpp"
#include "engine/generator.hpp"
#include "engine/ops.hpp"

namespace mg::study {

Tensor TensorDataset::domains() const {
  MG_CHECK(!class_to_domain.empty(), name, ": the data set has no domains");
  const std::vector<int32_t> label_values = labels.to_vector<int32_t>();
  std::vector<int32_t> domain_of(label_values.size());
  for (size_t i = 0; i < label_values.size(); ++i) domain_of[i] = class_to_domain[label_values[i]];
  return from_vector(domain_of, {size()}, kInt32);
}

TensorDataset TensorDataset::subset(int64_t begin, int64_t count) const {
  MG_CHECK(begin >= 0 && count > 0 && begin + count <= size(), name, ": subset(", begin, ", ", count,
           ") is outside the ", size(), " examples");
  TensorDataset out = *this;
  out.inputs = inputs.narrow(0, begin, count).contiguous();
  out.labels = labels.narrow(0, begin, count).contiguous();
  return out;
}

TensorDataset TensorDataset::select(const std::vector<int64_t>& indices) const {
  MG_CHECK(!indices.empty(), name, ": select() needs at least one index");
  std::vector<int32_t> index(indices.size());
  for (size_t i = 0; i < indices.size(); ++i) {
    MG_CHECK(indices[i] >= 0 && indices[i] < size(), name, ": select() index ", indices[i], " outside 0..", size() - 1);
    index[i] = static_cast<int32_t>(indices[i]);
  }
  const Tensor positions = from_vector(index, {static_cast<int64_t>(index.size())}, kInt32);
  TensorDataset out = *this;
  out.inputs = index_select(inputs, 0, positions);
  out.labels = index_select(labels, 0, positions);
  return out;
}

void TensorDataset::validate() const {
  MG_CHECK(inputs.defined() && inputs.dim() == 2 && inputs.dtype() == kFloat32, name,
           ": inputs must be float32 [N, D]");
  MG_CHECK(labels.defined() && labels.dim() == 1 && labels.dtype() == kInt32 && labels.size(0) == size(), name,
           ": labels must be int32 [N = ", size(), "]");
  MG_CHECK(!class_names.empty(), name, ": no class names");
  for (int32_t label : labels.to_vector<int32_t>())
    MG_CHECK(label >= 0 && label < num_classes(), name, ": label ", label, " outside 0..", num_classes() - 1);
  if (class_to_domain.empty()) return;
  MG_CHECK(static_cast<int64_t>(class_to_domain.size()) == num_classes(), name, ": class_to_domain has ",
           class_to_domain.size(), " entries for ", num_classes(), " classes");
  for (int32_t domain : class_to_domain)
    MG_CHECK(domain >= 0 && domain < num_domains(), name, ": domain ", domain, " outside 0..", num_domains() - 1);
}

TensorDataset flatten_images(const data::ImageDataset& images, const std::vector<float>& mean,
                             const std::vector<float>& std) {
  const int64_t N = images.size(), D = images.image_numel();
  const data::TransformPtr norm = data::normalize(mean, std);
  std::vector<float> flat(static_cast<size_t>(N * D));
  std::vector<float> chw(static_cast<size_t>(D));
  for (int64_t i = 0; i < N; ++i) {
    for (int64_t j = 0; j < D; ++j) chw[j] = images.pixels[i * D + j] / 255.0f;
    int64_t C = images.channels, H = images.height, W = images.width;
    data::SampleRng rng{0, 0, static_cast<uint64_t>(i)};  // normalize draws nothing
    norm->apply(chw, C, H, W, rng);
    std::copy(chw.begin(), chw.end(), flat.begin() + i * D);
  }
  TensorDataset out;
  out.name = images.name;
  out.inputs = from_vector(flat, {N, D}, kFloat32);
  out.labels = from_vector(images.labels, {N}, kInt32);
  out.class_names = images.class_names;
  out.class_to_domain = images.fine_to_coarse();
  out.domain_names = images.coarse_names;
  out.validate();
  return out;
}

TensorDataset load_fashion_mnist(const std::string& dir, data::Split split, int64_t limit) {
  data::ImageDataset images = data::read_fashion_mnist(dir.empty() ? data::default_fashion_mnist_dir() : dir, split);
  if (limit > 0 && limit < images.size()) images = images.subset(0, limit);
  return flatten_images(images, data::fashion_mnist_mean, data::fashion_mnist_std);
}

std::vector<Tensor> shuffled_batches(int64_t n, int64_t batch_size, uint64_t seed, int64_t epoch,
                                     bool drop_last) {
  MG_CHECK(n > 0 && batch_size > 0, "shuffled_batches: need n > 0 and batch_size > 0, got n = ", n,
           ", batch_size = ", batch_size);
  // One generator per (seed, epoch): an epoch's order never depends on what ran before it.
  Generator gen(seed * 0x9E3779B97F4A7C15ull + static_cast<uint64_t>(epoch) + 1);
  const Tensor order = randperm(n, &gen);
  std::vector<Tensor> batches;
  for (int64_t begin = 0; begin < n; begin += batch_size) {
    const int64_t count = std::min(batch_size, n - begin);
    if (count < batch_size && drop_last) break;
    batches.push_back(order.narrow(0, begin, count).contiguous());
  }
  return batches;
}

}  // namespace mg::study
