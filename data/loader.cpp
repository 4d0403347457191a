// DataLoader: seeded shuffle, per-sample transforms and in-order delivery of batches prepared by
// worker threads into a bounded window (see loader.hpp). Workers claim batch numbers in order
// under one mutex, prepare them unlocked into plain buffers, and file the result by number; the
// caller takes batch k when it is there. A start_epoch (or the loader's end) bumps a generation
// counter, so work that was in flight for an abandoned epoch is dropped, never delivered.
#include "data/loader.hpp"

#include <array>
#include <condition_variable>
#include <cstring>
#include <exception>
#include <map>
#include <mutex>
#include <numeric>
#include <thread>

#include "data/rng_streams.hpp"
#include "engine/error.hpp"
#include "engine/math/philox.hpp"

namespace mg::data {
namespace {

// One epoch's example order; shared read-only with the workers.
struct EpochPlan {
  int64_t epoch = 0;
  std::vector<int64_t> order;
};

// A batch as the workers leave it: plain buffers (Tensors are made on the calling thread).
struct PreparedBatch {
  int64_t batch_index = 0;
  std::vector<int64_t> indices;
  std::vector<float> images;
  int64_t C = 0, H = 0, W = 0;
  std::vector<int32_t> labels, coarse_labels;
  std::exception_ptr error;
};

}  // namespace

struct DataLoader::State {
  const ImageDataset& dataset;
  LoaderOptions options;
  TransformPtr transform;
  int64_t num_batches = 0;

  std::mutex mutex;
  std::condition_variable work_cv;        // workers wait here for a batch to claim, or the stop
  std::condition_variable ready_cv;       // the caller waits here for the batch it needs
  std::shared_ptr<const EpochPlan> plan;  // null until the first start_epoch
  uint64_t generation = 0;
  int64_t next_claim = 0, next_deliver = 0, end_batch = 0;
  std::map<int64_t, PreparedBatch> ready;  // prepared, not yet delivered, by batch number
  bool stopping = false;
  std::vector<std::thread> workers;

  State(const ImageDataset& set, LoaderOptions opts, TransformPtr t)
      : dataset(set), options(opts), transform(std::move(t)) {}

  ~State() {
    {
      std::lock_guard<std::mutex> lock(mutex);
      stopping = true;
    }
    work_cv.notify_all();
    for (std::thread& worker : workers) worker.join();
  }

  PreparedBatch prepare(const EpochPlan& epoch_plan, int64_t batch_index) const {
    PreparedBatch batch;
    batch.batch_index = batch_index;
    const auto n = static_cast<int64_t>(epoch_plan.order.size());
    const int64_t begin = batch_index * options.batch_size, end = std::min(n, begin + options.batch_size);
    batch.indices.assign(epoch_plan.order.begin() + begin, epoch_plan.order.begin() + end);
    const int64_t per_image = dataset.image_numel();
    static const std::array<float, 256> kByteToUnit = [] {  // exactly v / 255.0f, as torchvision's ToTensor
      std::array<float, 256> table{};
      for (int v = 0; v < 256; ++v) table[v] = static_cast<float>(v) / 255.0f;
      return table;
    }();
    std::vector<float> chw;
    for (size_t slot = 0; slot < batch.indices.size(); ++slot) {
      const int64_t index = batch.indices[slot];
      const uint8_t* pixels = dataset.pixels.data() + index * per_image;
      chw.resize(static_cast<size_t>(per_image));
      for (int64_t i = 0; i < per_image; ++i) chw[i] = kByteToUnit[pixels[i]];
      int64_t C = dataset.channels, H = dataset.height, W = dataset.width;
      if (transform) {
        SampleRng rng{options.seed, static_cast<uint64_t>(epoch_plan.epoch), static_cast<uint64_t>(index)};
        transform->apply(chw, C, H, W, rng);
      }
      if (slot == 0) {
        batch.C = C;
        batch.H = H;
        batch.W = W;
        batch.images.resize(batch.indices.size() * static_cast<size_t>(C * H * W));
      }
      MG_CHECK(C == batch.C && H == batch.H && W == batch.W && static_cast<int64_t>(chw.size()) == C * H * W,
               "DataLoader: the transform made example ", index, " [", C, ", ", H, ", ", W,
               "] but the batch's first example [", batch.C, ", ", batch.H, ", ", batch.W, "]");
      std::copy(chw.begin(), chw.end(), batch.images.begin() + slot * C * H * W);
      batch.labels.push_back(dataset.labels[index]);
      if (!dataset.coarse_labels.empty()) batch.coarse_labels.push_back(dataset.coarse_labels[index]);
    }
    return batch;
  }

  void worker_loop() {
    std::unique_lock<std::mutex> lock(mutex);
    for (;;) {
      work_cv.wait(lock, [&] {
        return stopping ||
               (plan && next_claim < end_batch && next_claim < next_deliver + options.prefetch_batches);
      });
      if (stopping) return;
      const int64_t batch_index = next_claim++;
      const std::shared_ptr<const EpochPlan> claimed_plan = plan;
      const uint64_t claimed_generation = generation;
      lock.unlock();
      PreparedBatch batch;
      try {
        batch = prepare(*claimed_plan, batch_index);
      } catch (...) {
        batch.batch_index = batch_index;
        batch.error = std::current_exception();
      }
      lock.lock();
      if (claimed_generation != generation) continue;  // its epoch was abandoned
      ready.emplace(batch_index, std::move(batch));
      ready_cv.notify_all();
    }
  }

  // Ends the current epoch at the batch that failed: nothing after it is delivered.
  void abandon_epoch_locked() {
    ++generation;
    ready.clear();
    end_batch = next_deliver;
    next_claim = next_deliver;
  }
};

namespace {

Batch to_batch(PreparedBatch prepared) {
  const auto b = static_cast<int64_t>(prepared.indices.size());
  Batch batch;
  batch.images = mg::empty({b, prepared.C, prepared.H, prepared.W}, kFloat32);
  std::memcpy(batch.images.data_ptr<float>(), prepared.images.data(), prepared.images.size() * sizeof(float));
  batch.labels = mg::empty({b}, kInt32);
  std::memcpy(batch.labels.data_ptr<int32_t>(), prepared.labels.data(),
              prepared.labels.size() * sizeof(int32_t));
  if (!prepared.coarse_labels.empty()) {
    batch.coarse_labels = mg::empty({b}, kInt32);
    std::memcpy(batch.coarse_labels.data_ptr<int32_t>(), prepared.coarse_labels.data(),
                prepared.coarse_labels.size() * sizeof(int32_t));
  }
  batch.indices = std::move(prepared.indices);
  batch.batch_index = prepared.batch_index;
  return batch;
}

}  // namespace

DataLoader::DataLoader(const ImageDataset& dataset, LoaderOptions options, TransformPtr transform)
    : state_(std::make_unique<State>(dataset, options, std::move(transform))) {
  MG_CHECK(options.batch_size >= 1, "DataLoader: batch_size must be at least 1, got ", options.batch_size);
  MG_CHECK(options.workers >= 0, "DataLoader: workers must be non-negative, got ", options.workers);
  MG_CHECK(options.prefetch_batches >= 1, "DataLoader: prefetch_batches must be at least 1, got ",
           options.prefetch_batches);
  dataset.validate();
  const int64_t n = dataset.size();
  state_->num_batches =
      options.drop_last ? n / options.batch_size : (n + options.batch_size - 1) / options.batch_size;
  State* state = state_.get();
  for (int64_t w = 0; w < options.workers; ++w)
    state->workers.emplace_back([state] { state->worker_loop(); });
}

DataLoader::~DataLoader() = default;  // State's destructor stops and joins the workers

int64_t DataLoader::num_batches() const { return state_->num_batches; }
const LoaderOptions& DataLoader::options() const { return state_->options; }

std::vector<int64_t> DataLoader::epoch_order(int64_t epoch) const {
  MG_CHECK(epoch >= 0, "DataLoader: epoch must be non-negative, got ", epoch);
  std::vector<int64_t> order(static_cast<size_t>(state_->dataset.size()));
  std::iota(order.begin(), order.end(), int64_t{0});
  if (!state_->options.shuffle) return order;
  // Fisher-Yates (Durstenfeld): position i swaps with a uniform j in [0, i], draw i of the stream.
  const uint64_t key = stream_key(state_->options.seed, static_cast<uint64_t>(epoch), Stream::Shuffle);
  for (int64_t i = static_cast<int64_t>(order.size()) - 1; i > 0; --i) {
    const double u = math::philox_uniform<double>(key, static_cast<uint64_t>(i));
    const int64_t j = std::min(static_cast<int64_t>(u * static_cast<double>(i + 1)), i);
    std::swap(order[i], order[j]);
  }
  return order;
}

void DataLoader::start_epoch(int64_t epoch, int64_t start_batch) {
  MG_CHECK(start_batch >= 0 && start_batch <= state_->num_batches, "DataLoader: start_batch ", start_batch,
           " is outside 0..", state_->num_batches);
  auto plan = std::make_shared<EpochPlan>();
  plan->epoch = epoch;
  plan->order = epoch_order(epoch);
  {
    std::lock_guard<std::mutex> lock(state_->mutex);
    state_->plan = std::move(plan);
    ++state_->generation;
    state_->ready.clear();
    state_->next_claim = state_->next_deliver = start_batch;
    state_->end_batch = state_->num_batches;
  }
  state_->work_cv.notify_all();
}

std::optional<Batch> DataLoader::next() {
  State& s = *state_;
  std::unique_lock<std::mutex> lock(s.mutex);
  MG_CHECK(s.plan != nullptr, "DataLoader::next: call start_epoch(epoch) first");
  if (s.next_deliver >= s.end_batch) return std::nullopt;
  PreparedBatch batch;
  if (s.workers.empty()) {
    const int64_t batch_index = s.next_deliver++;
    try {
      batch = s.prepare(*s.plan, batch_index);
    } catch (...) {
      s.abandon_epoch_locked();
      throw;
    }
  } else {
    s.ready_cv.wait(lock, [&] { return s.ready.count(s.next_deliver) > 0; });
    auto it = s.ready.find(s.next_deliver);
    batch = std::move(it->second);
    s.ready.erase(it);
    ++s.next_deliver;
    if (batch.error) {
      s.abandon_epoch_locked();
      std::rethrow_exception(batch.error);
    }
    lock.unlock();
    s.work_cv.notify_all();  // a slot of the prefetch window is free
  }
  return to_batch(std::move(batch));
}

}  // namespace mg::data
