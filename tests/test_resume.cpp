// Resuming through a checkpoint file continues a run exactly: N steps straight equal N/2 steps,
// save, a fresh process-like rebuild (new model, optimizer, scheduler), load, N/2 steps.
#include "gradcheck.hpp"
#include "nn/checkpoint.hpp"
#include "nn/containers.hpp"
#include "nn/layers.hpp"
#include "nn/normalization.hpp"

#include <filesystem>

namespace nn = mg::nn;
using mg::Tensor;

namespace {

struct Run {
  std::shared_ptr<nn::Sequential> model;
  std::unique_ptr<nn::AdamW> optimizer;
  std::unique_ptr<nn::CosineWarmupLR> scheduler;
  mg::Generator data{77};

  explicit Run(uint64_t seed) {
    mg::manual_seed(seed);
    model = std::make_shared<nn::Sequential>(std::initializer_list<nn::ModulePtr>{
        std::make_shared<nn::Linear>(6, 16), std::make_shared<nn::BatchNorm1d>(16), std::make_shared<nn::ReLU>(),
        std::make_shared<nn::Dropout>(0.2), std::make_shared<nn::Linear>(16, 3)});
    optimizer = std::make_unique<nn::AdamW>(model->parameters(), nn::AdamWOptions(1e-2));
    scheduler = std::make_unique<nn::CosineWarmupLR>(*optimizer, 3, 20, 1e-4, 0.1);
  }

  void step() {
    Tensor x = mg::randn({16, 6}, mg::kFloat32, &data);
    Tensor y = mg::randint(0, 3, {16}, mg::kInt32, &data);
    Tensor loss = mg::cross_entropy(model->forward(x), y);  // dropout draws from the default generator
    optimizer->zero_grad();
    loss.backward();
    optimizer->step();
    scheduler->step();
  }
};

std::vector<std::vector<float>> weights(const nn::Module& m) {
  std::vector<std::vector<float>> out;
  for (auto& [n, t] : m.state_dict()) out.push_back(t.to_vector<float>());
  return out;
}

}  // namespace

TEST_CASE("resume from a checkpoint is bit-exact", "[checkpoint][resume]") {
  const auto path = (std::filesystem::temp_directory_path() / "moegrad_resume_test.safetensors").string();
  Run straight(5);
  for (int i = 0; i < 12; ++i) straight.step();

  {
    Run first(5);
    for (int i = 0; i < 6; ++i) first.step();
    nn::TrainingState state;
    state.step = 6;
    nn::capture_optimizer_state(state, *first.optimizer, first.scheduler.get());
    nn::capture_rng_states(state, {{"data", &first.data}});
    nn::save_checkpoint(path, *first.model, state);
  }
  Run resumed(999);  // different init: everything must come from the file
  nn::TrainingState state = nn::load_checkpoint(path, *resumed.model);
  nn::restore_optimizer_state(state, *resumed.optimizer, resumed.scheduler.get());
  nn::restore_rng_states(state, {{"data", &resumed.data}});
  CHECK(state.step == 6);
  for (int i = 6; i < 12; ++i) resumed.step();

  CHECK(weights(*resumed.model) == weights(*straight.model));
  CHECK(resumed.scheduler->get_last_lr() == straight.scheduler->get_last_lr());
  std::filesystem::remove(path);

  nn::SGD sgd(straight.model->parameters(), nn::SGDOptions(0.1));
  CHECK_THROWS_WITH(nn::restore_optimizer_state(state, sgd), Catch::Contains("AdamW") || Catch::Contains("SGD"));
}
