// nn modules: registration and traversal, state dicts, train/eval, layers, norms against PyTorch,
// and the freezing contract (a frozen branch stays bit-identical while its siblings train).
#include "gradcheck.hpp"
#include "nn/containers.hpp"
#include "nn/init.hpp"
#include "nn/layers.hpp"
#include "nn/loss.hpp"
#include "nn/normalization.hpp"
#include "nn/optim.hpp"
#include "reference/norm_reference.hpp"

using mg::Tensor;
using mg::TensorList;
using mgtest::gradcheck;
using mgtest::require_close;
namespace nn = mg::nn;

namespace {
Tensor f64(const std::vector<double>& v, const mg::Shape& s) { return mg::from_vector(v, s, mg::kFloat64); }

std::vector<std::string> names(const nn::NamedTensors& nt) {
  std::vector<std::string> out;
  for (const auto& kv : nt) out.push_back(kv.first);
  return out;
}
}  // namespace

TEST_CASE("modules register parameters, buffers and children in order", "[nn]") {
  mg::manual_seed(0);
  auto net = std::make_shared<nn::Sequential>(std::initializer_list<nn::ModulePtr>{
      std::make_shared<nn::Linear>(4, 8), std::make_shared<nn::BatchNorm1d>(8),
      std::make_shared<nn::ReLU>(), std::make_shared<nn::Linear>(8, 2, false)});
  CHECK(names(net->named_parameters()) ==
        std::vector<std::string>{"0.weight", "0.bias", "1.weight", "1.bias", "3.weight"});
  CHECK(names(net->named_buffers()) == std::vector<std::string>{"1.running_mean", "1.running_var"});
  CHECK(net->state_dict().size() == 7);
  CHECK(net->named_modules().size() == 5);
  CHECK(net->forward(mg::randn({5, 4})).sizes() == mg::Shape{5, 2});
  CHECK_THAT(net->to_string(), Catch::Contains("(0): Linear(in_features=4, out_features=8, bias=True)"));

  net->eval();
  net->apply([](nn::Module& m) { CHECK_FALSE(m.is_training()); });
  net->train();
  CHECK((*net)[1]->is_training());
  CHECK_THROWS_WITH(net->register_parameter("0", mg::zeros({1})), Catch::Contains("already registered"));
  CHECK_THROWS_WITH(net->register_parameter("a.b", mg::zeros({1})), Catch::Contains("invalid name"));
  CHECK_THROWS_WITH(net->forward(mg::randn({5, 3})), Catch::Contains("Linear") && Catch::Contains("[5, 3]"));
}

TEST_CASE("state_dict round trip - strict loading lists every problem and changes nothing", "[nn]") {
  mg::manual_seed(1);
  auto a = std::make_shared<nn::Linear>(3, 2);
  mg::manual_seed(2);
  auto b = std::make_shared<nn::Linear>(3, 2);
  CHECK(a->weight.to_vector<float>() != b->weight.to_vector<float>());
  Tensor b_weight_handle = b->weight;
  b->load_state_dict(a->state_dict());
  CHECK(b->weight.to_vector<float>() == a->weight.to_vector<float>());
  CHECK(b_weight_handle.is_same(b->weight));  // loaded in place: optimizers keep their handles
  CHECK_FALSE(b->weight.shares_storage(a->weight));

  const auto before = b->weight.to_vector<float>();
  nn::NamedTensors bad = {{"weight", mg::zeros({2, 4})}, {"extra", mg::zeros({1})}};
  try {
    b->load_state_dict(bad);
    FAIL("expected an error");
  } catch (const mg::Error& e) {
    const std::string msg = e.what();
    CHECK_THAT(msg, Catch::Contains("missing keys: bias"));
    CHECK_THAT(msg, Catch::Contains("unexpected keys: extra"));
    CHECK_THAT(msg, Catch::Contains("weight (checkpoint [2, 4], model [2, 3])"));
  }
  CHECK(b->weight.to_vector<float>() == before);
  // non-strict ignores missing/unexpected keys but still refuses wrong shapes
  b->load_state_dict({{"bias", mg::zeros({2})}, {"extra", mg::zeros({1})}}, /*strict=*/false);
  CHECK(b->bias.to_vector<float>() == std::vector<float>{0, 0});
}

TEST_CASE("Linear: torch's default init bounds, forward and gradients", "[nn]") {
  mg::manual_seed(3);
  nn::Linear lin(100, 50);
  const double bound = 1.0 / std::sqrt(100.0);
  CHECK(lin.weight.abs().max().item() <= bound);
  CHECK(lin.weight.abs().max().item() > 0.9 * bound);
  CHECK(lin.bias.abs().max().item() <= bound);
  lin.to(mg::kFloat64);
  CHECK(lin.weight.dtype() == mg::kFloat64);
  CHECK(lin.weight.requires_grad());
  gradcheck("Linear", [&](const TensorList& in) { return mg::linear(in[0], in[1], in[2]); },
            {mg::randn({4, 100}, mg::kFloat64), lin.weight, lin.bias});
}

TEST_CASE("init functions follow torch.nn.init's formulas", "[nn]") {
  mg::Generator g(4);
  Tensor w = mg::empty({256, 128});
  nn::init::xavier_uniform_(w, 1.0, &g);
  const double xb = std::sqrt(6.0 / (256 + 128));
  CHECK(w.abs().max().item() <= xb);
  nn::init::kaiming_normal_(w, 0.0, nn::init::FanMode::FanIn, "relu", &g);
  CHECK(std::abs(w.std({0, 1}).item() - std::sqrt(2.0 / 128)) < 0.003);
  nn::init::trunc_normal_(w, 0.0, 1.0, -0.5, 0.5, &g);
  CHECK(w.abs().max().item() <= 0.5);
  CHECK(std::abs(w.mean().item()) < 0.01);
  CHECK(nn::init::calculate_gain("tanh") == Approx(5.0 / 3.0));
  CHECK(nn::init::calculate_fan_in_and_fan_out(mg::empty({16, 3, 5, 5})) == std::pair<int64_t, int64_t>{75, 400});
}

TEST_CASE("batch_norm and layer_norm equal PyTorch", "[nn][norm]") {
  Tensor x = f64(normref::bn_x, {4, 3, 2, 2}), w = f64(normref::bn_w, {3}), b = f64(normref::bn_b, {3});
  Tensor dy = f64(normref::bn_dy, {4, 3, 2, 2});
  Tensor rm = mg::zeros({3}, mg::kFloat64), rv = mg::ones({3}, mg::kFloat64);
  {
    Tensor xr = x.clone().requires_grad_(), wr = w.clone().requires_grad_(), br = b.clone().requires_grad_();
    Tensor y = mg::batch_norm(xr, rm, rv, wr, br, true, true, 0.1, 1e-5);
    y.backward(dy);
    require_close(y, f64(normref::bn_train_y, {4, 3, 2, 2}), 1e-12, 1e-10);
    require_close(xr.grad(), f64(normref::bn_train_dx, {4, 3, 2, 2}), 1e-12, 1e-10);
    require_close(wr.grad(), f64(normref::bn_train_dw, {3}), 1e-12, 1e-10);
    require_close(br.grad(), f64(normref::bn_train_db, {3}), 1e-12, 1e-10);
    require_close(rm, f64(normref::bn_running_mean, {3}), 1e-12, 1e-10);
    require_close(rv, f64(normref::bn_running_var, {3}), 1e-12, 1e-10);
  }
  {
    Tensor xr = x.clone().requires_grad_(), wr = w.clone().requires_grad_(), br = b.clone().requires_grad_();
    Tensor y = mg::batch_norm(xr, rm, rv, wr, br, false, false);
    y.backward(dy);
    require_close(y, f64(normref::bn_eval_y, {4, 3, 2, 2}), 1e-12, 1e-10);
    require_close(xr.grad(), f64(normref::bn_eval_dx, {4, 3, 2, 2}), 1e-12, 1e-10);
    require_close(wr.grad(), f64(normref::bn_eval_dw, {3}), 1e-12, 1e-10);
    require_close(br.grad(), f64(normref::bn_eval_db, {3}), 1e-12, 1e-10);
  }
  {
    Tensor lx = f64(normref::ln_x, {2, 3, 4}).requires_grad_();
    Tensor lw = f64(normref::ln_w, {3, 4}).requires_grad_(), lb = f64(normref::ln_b, {3, 4}).requires_grad_();
    Tensor y = mg::layer_norm(lx, {3, 4}, lw, lb);
    y.backward(f64(normref::ln_dy, {2, 3, 4}));
    require_close(y, f64(normref::ln_y, {2, 3, 4}), 1e-12, 1e-10);
    require_close(lx.grad(), f64(normref::ln_dx, {2, 3, 4}), 1e-12, 1e-10);
    require_close(lw.grad(), f64(normref::ln_dw, {3, 4}), 1e-12, 1e-10);
    require_close(lb.grad(), f64(normref::ln_db, {3, 4}), 1e-12, 1e-10);
  }
  // float32 within 1e-5 relative
  Tensor y32 = mg::batch_norm(x.to(mg::kFloat32), Tensor(), Tensor(), w.to(mg::kFloat32), b.to(mg::kFloat32), true, false);
  require_close(y32, f64(normref::bn_train_y, {4, 3, 2, 2}), 1e-5, 1e-5);
}

TEST_CASE("norm ops: gradients", "[nn][norm]") {
  mg::Generator g(6);
  auto r = [&](const mg::Shape& s) { return mg::randn(s, mg::kFloat64, &g); };
  Tensor rm = mg::zeros({3}, mg::kFloat64), rv = mg::ones({3}, mg::kFloat64) * 2.0;
  gradcheck("batch_norm train", [&](const TensorList& in) {
    return mg::batch_norm(in[0], Tensor(), Tensor(), in[1], in[2], true, false);
  }, {r({4, 3, 2, 2}), r({3}), r({3})});
  gradcheck("batch_norm train 1d, transposed input", [&](const TensorList& in) {
    return mg::batch_norm(in[0].t(), Tensor(), Tensor(), in[1], in[2], true, false);
  }, {r({3, 5}), r({3}), r({3})});
  gradcheck("batch_norm eval", [&](const TensorList& in) {
    return mg::batch_norm(in[0], rm, rv, in[1], in[2], false, false);
  }, {r({4, 3, 5}), r({3}), r({3})});
  gradcheck("batch_norm no affine", [&](const TensorList& in) {
    return mg::batch_norm(in[0], Tensor(), Tensor(), Tensor(), Tensor(), true, false);
  }, {r({4, 3})});
  gradcheck("layer_norm", [](const TensorList& in) { return mg::layer_norm(in[0], {4}, in[1], in[2]); },
            {r({2, 3, 4}), r({4}), r({4})});
  gradcheck("layer_norm strided", [](const TensorList& in) { return mg::layer_norm(in[0].transpose(0, 1), {2}); },
            {r({2, 3})});
  gradcheck("embedding", [](const TensorList& in) {
    return mg::embedding(in[0], mg::from_vector(std::vector<int32_t>{1, 0, 1, 3}, {2, 2}, mg::kInt32));
  }, {r({4, 3})});
  mg::Generator drop_gen(9);
  gradcheck("dropout", [&](const TensorList& in) {
    drop_gen.set_state(9, 0);  // the same mask on every evaluation
    return mg::dropout(in[0], 0.3, true, &drop_gen);
  }, {r({5, 4})});
}

TEST_CASE("dropout: scaling, eval identity, seeded masks", "[nn][norm]") {
  mg::Generator g(1);
  Tensor x = mg::ones({100000});
  Tensor y = mg::dropout(x, 0.25, true, &g);
  const auto v = y.to_vector<float>();
  int zeros = 0;
  for (float e : v) {
    if (e == 0) ++zeros;
    else CHECK(e == Approx(1.0 / 0.75));
  }
  CHECK(std::abs(zeros / 100000.0 - 0.25) < 0.01);
  CHECK(mg::dropout(x, 0.25, false).is_same(x));
  CHECK_THROWS_WITH(mg::dropout(x, 1.5, true), Catch::Contains("dropout"));
}

TEST_CASE("BatchNorm: train/eval, frozen statistics survive a parent's train()", "[nn][norm]") {
  mg::manual_seed(5);
  auto bn = std::make_shared<nn::BatchNorm2d>(3);
  auto parent = std::make_shared<nn::Sequential>(std::initializer_list<nn::ModulePtr>{bn});
  Tensor x = mg::randn({8, 3, 4, 4}) * 3.0 + 1.0;
  parent->forward(x);
  CHECK(bn->running_mean.abs().sum().item() > 0);  // training updated the statistics

  bn->freeze_running_stats();
  parent->train();  // a parent's train() must not undo the freeze
  CHECK(bn->is_training());
  CHECK(bn->running_stats_frozen());
  CHECK_FALSE(bn->uses_batch_stats());
  const auto rm = bn->running_mean.to_vector<float>(), rv = bn->running_var.to_vector<float>();
  Tensor y1 = parent->forward(x);
  parent->forward(mg::randn({8, 3, 4, 4}));
  CHECK(bn->running_mean.to_vector<float>() == rm);
  CHECK(bn->running_var.to_vector<float>() == rv);
  // frozen statistics normalize with the running statistics, as in eval
  parent->eval();
  CHECK(parent->forward(x).to_vector<float>() == y1.to_vector<float>());
  CHECK(bn->weight.requires_grad());  // freeze_running_stats leaves the affine parameters alone

  bn->freeze_running_stats(false);
  parent->train();
  CHECK(bn->uses_batch_stats());
  CHECK_THROWS_WITH(bn->forward(mg::zeros({2, 4, 3, 3})), Catch::Contains("BatchNorm2d") && Catch::Contains("[2, 4, 3, 3]"));
  CHECK_THROWS_WITH(bn->forward(mg::zeros({2, 3})), Catch::Contains("BatchNorm2d"));
}

// The contract this project exists for: a model with BatchNorm in a shared stem and in two
// branches; freeze branch A, train the rest for 50 steps in train mode -> branch A's outputs,
// parameters and running statistics are bit-identical (drift exactly 0.00).
TEST_CASE("freeze: a frozen branch stays bit-identical while the rest trains", "[nn][freeze]") {
  mg::manual_seed(11);
  auto branch = [] {
    return std::make_shared<nn::Sequential>(std::initializer_list<nn::ModulePtr>{
        std::make_shared<nn::Linear>(16, 16), std::make_shared<nn::BatchNorm1d>(16),
        std::make_shared<nn::ReLU>(), std::make_shared<nn::Linear>(16, 4)});
  };
  auto stem = std::make_shared<nn::Sequential>(std::initializer_list<nn::ModulePtr>{
      std::make_shared<nn::Linear>(8, 16), std::make_shared<nn::BatchNorm1d>(16), std::make_shared<nn::ReLU>()});
  auto branch_a = branch(), branch_b = branch();
  auto model = std::make_shared<nn::Module>("TwoBranch");
  model->register_module("stem", stem);
  model->register_module("a", branch_a);
  model->register_module("b", branch_b);

  mg::Generator data(12);
  // SGD with momentum and weight decay: a frozen parameter must not even decay.
  nn::SGD optimizer(model->parameters(), nn::SGDOptions(0.05).momentum(0.9).weight_decay(1e-2));
  auto train_step = [&]() {
    Tensor x = mg::randn({32, 8}, mg::kFloat32, &data);
    Tensor target = mg::randn({32, 4}, mg::kFloat32, &data);
    Tensor h = stem->forward(x);
    Tensor loss = mg::mse_loss(branch_a->forward(h), target) + mg::mse_loss(branch_b->forward(h), target);
    optimizer.zero_grad();
    loss.backward();
    optimizer.step();
  };
  for (int i = 0; i < 10; ++i) train_step();  // everything trains first

  branch_a->freeze();
  model->train();  // must not undo the freeze
  const Tensor probe = mg::randn({64, 16}, mg::kFloat32, &data);
  branch_a->eval();
  const auto out_before = branch_a->forward(probe).to_vector<float>();
  model->train();
  std::vector<std::vector<float>> state_before;
  for (auto& [n, t] : branch_a->state_dict()) state_before.push_back(t.to_vector<float>());
  const auto stem_before = stem->state_dict()[0].second.to_vector<float>();

  for (int i = 0; i < 50; ++i) train_step();

  size_t k = 0;
  for (auto& [n, t] : branch_a->state_dict()) {
    INFO("branch a tensor " << n);
    CHECK(t.to_vector<float>() == state_before[k++]);
  }
  for (auto& p : branch_a->parameters()) CHECK_FALSE(p.grad().defined());
  branch_a->eval();
  CHECK(branch_a->forward(probe).to_vector<float>() == out_before);
  CHECK(stem->state_dict()[0].second.to_vector<float>() != stem_before);  // the rest did train

  branch_a->unfreeze();
  CHECK_FALSE(branch_a->running_stats_frozen());
  for (auto& p : branch_a->parameters()) CHECK(p.requires_grad());
}

TEST_CASE("containers", "[nn]") {
  nn::ModuleList list{std::make_shared<nn::ReLU>(), std::make_shared<nn::Tanh>(), std::make_shared<nn::SiLU>()};
  list.erase(1);
  CHECK(list.size() == 2);
  CHECK(list[1]->name() == "SiLU");
  CHECK(list.named_children()[1].first == "1");
  nn::ModuleDict dict;
  dict.insert("gate", std::make_shared<nn::Linear>(2, 2));
  CHECK(dict.contains("gate"));
  CHECK(dict.parameters().size() == 2);
  dict.erase("gate");
  CHECK_FALSE(dict.contains("gate"));
  CHECK_THROWS_WITH(dict["gate"], Catch::Contains("gate"));
  nn::Embedding emb(10, 3);
  CHECK(emb.forward(mg::from_vector(std::vector<int32_t>{1, 9}, {2}, mg::kInt32)).sizes() == mg::Shape{2, 3});
  nn::LayerNorm ln({3});
  CHECK(ln.forward(mg::randn({2, 3})).sizes() == mg::Shape{2, 3});
}

TEST_CASE("loss modules forward to the engine's losses", "[nn]") {
  Tensor logits = f64({2, 0, -1, 0.5, 0.5, 3}, {2, 3});
  Tensor labels = mg::from_vector(std::vector<int32_t>{0, 2}, {2}, mg::kInt32);
  nn::CrossEntropyLoss ce(mg::CrossEntropyOptions().label_smoothing(0.1));
  require_close(ce.forward(logits, labels), mg::cross_entropy(logits, labels, mg::CrossEntropyOptions().label_smoothing(0.1)));
  nn::NLLLoss nll(mg::kSum);
  require_close(nll.forward(mg::log_softmax(logits, 1), labels), mg::cross_entropy(logits, labels, mg::CrossEntropyOptions().reduction(mg::kSum)));
  nn::MSELoss mse;
  require_close(mse.forward(f64({1, 2}, {2}), f64({0, 0}, {2})), f64({2.5}, {}));
  nn::BCEWithLogitsLoss bce(mg::kNone);
  require_close(bce.forward(f64({0}, {1}), f64({1}, {1})), f64({std::log(2.0)}, {1}));
}
