// Optimizers, LR schedules and gradient clipping against PyTorch 1.13 in float64 (numbers from
// reference/make_optim_reference.py), and moegrad's own contracts: a parameter without a gradient
// or frozen stays bit-identical with an untouched state; parameters join and leave with their
// state; a state_dict round trip continues exactly where the run was.
#include <cmath>

#include "gradcheck.hpp"
#include "nn/clip_grad.hpp"
#include "nn/layers.hpp"
#include "nn/lr_scheduler.hpp"
#include "nn/optim.hpp"
#include "reference/optim_reference.hpp"

using mg::Tensor;
using mgtest::require_close;
namespace nn = mg::nn;
namespace ref = optimref;

namespace {
Tensor f64(const std::vector<double>& v, const mg::Shape& s) { return mg::from_vector(v, s, mg::kFloat64); }

// The reference problem: three parameters, gradients c * p + s * d set by hand.
struct Problem {
  std::vector<Tensor> params, coef, shift;
  explicit Problem(mg::ScalarType dtype = mg::kFloat64) {
    const std::vector<mg::Shape> shapes{{2, 3}, {4}, {3}};
    const std::vector<const std::vector<double>*> init{&ref::init0, &ref::init1, &ref::init2},
        c{&ref::coef0, &ref::coef1, &ref::coef2}, d{&ref::shift0, &ref::shift1, &ref::shift2};
    for (size_t i = 0; i < 3; ++i) {
      params.push_back(f64(*init[i], shapes[i]).to(dtype).requires_grad_());
      coef.push_back(f64(*c[i], shapes[i]).to(dtype));
      shift.push_back(f64(*d[i], shapes[i]).to(dtype));
    }
  }
  void set_grads(double scale) {
    mg::NoGradGuard no_grad;
    for (size_t i = 0; i < params.size(); ++i) params[i].set_grad(coef[i] * params[i] + shift[i] * scale);
  }
  std::vector<double> flat() const {
    std::vector<double> out;
    for (const auto& p : params) {
      const auto v = p.to_vector<double>();
      out.insert(out.end(), v.begin(), v.end());
    }
    return out;
  }
  // The three reference steps; returns the parameters after each, concatenated.
  std::vector<double> run(nn::Optimizer& opt) {
    std::vector<double> traj;
    for (double s : ref::scales) {
      set_grads(s);
      opt.step();
      const auto v = flat();
      traj.insert(traj.end(), v.begin(), v.end());
    }
    return traj;
  }
  std::vector<double> buffer(nn::Optimizer& opt, const std::string& name) const {
    std::vector<double> out;
    for (const auto& p : params) {
      REQUIRE(opt.state(p) != nullptr);
      const auto v = opt.state(p)->buffers.at(name).to_vector<double>();
      out.insert(out.end(), v.begin(), v.end());
    }
    return out;
  }
};

void require_rel(const std::vector<double>& actual, const std::vector<double>& expected, double rtol = 1e-12,
                 double atol = 1e-15) {
  const auto n = static_cast<int64_t>(expected.size());
  REQUIRE(static_cast<int64_t>(actual.size()) == n);
  require_close(f64(actual, {n}), f64(expected, {n}), atol, rtol);
}

std::vector<nn::ParamGroup> groups(const Problem& pr, const nn::OptimizerOptions& group1) {
  return {nn::ParamGroup({pr.params[0], pr.params[1]}), nn::ParamGroup({pr.params[2]}, group1)};
}

std::unique_ptr<nn::Optimizer> make_adamw_amsgrad(const Problem& pr) {
  return std::make_unique<nn::AdamW>(
      groups(pr, nn::AdamWOptions(0.02).weight_decay(0.1).amsgrad(true).betas({0.8, 0.5})),
      nn::AdamWOptions(0.05).weight_decay(0.1).amsgrad(true).betas({0.8, 0.5}));
}
}  // namespace

TEST_CASE("SGD with momentum, Nesterov, dampening and weight decay matches PyTorch", "[optim]") {
  Problem pr;
  nn::SGD opt(groups(pr, nn::SGDOptions(0.02).momentum(0.8).dampening(0.25)),
              nn::SGDOptions(0.1).momentum(0.9).nesterov(true).weight_decay(0.01));
  require_rel(pr.run(opt), ref::sgd_traj);
  require_rel(pr.buffer(opt, "momentum_buffer"), ref::sgd_momentum_buffer);
  CHECK(opt.state(pr.params[0])->step == 3);
}

TEST_CASE("Adam, AdamW and AdamW with AMSGrad match PyTorch", "[optim]") {
  SECTION("Adam with L2 decay in the second group") {
    Problem pr;
    nn::Adam opt(groups(pr, nn::AdamOptions(0.01).weight_decay(0.1).betas({0.8, 0.9})), nn::AdamOptions(0.05));
    require_rel(pr.run(opt), ref::adam_traj);
    require_rel(pr.buffer(opt, "exp_avg"), ref::adam_exp_avg);
    require_rel(pr.buffer(opt, "exp_avg_sq"), ref::adam_exp_avg_sq);
  }
  SECTION("AdamW, no decay in the second group") {
    Problem pr;
    nn::AdamW opt(groups(pr, nn::AdamWOptions(0.01).weight_decay(0.0)), nn::AdamWOptions(0.05).weight_decay(0.1));
    require_rel(pr.run(opt), ref::adamw_traj);
    require_rel(pr.buffer(opt, "exp_avg"), ref::adamw_exp_avg);
    require_rel(pr.buffer(opt, "exp_avg_sq"), ref::adamw_exp_avg_sq);
  }
  SECTION("AdamW with AMSGrad") {
    Problem pr;
    auto opt = make_adamw_amsgrad(pr);
    require_rel(pr.run(*opt), ref::adamw_amsgrad_traj);
    require_rel(pr.buffer(*opt, "max_exp_avg_sq"), ref::adamw_amsgrad_max_exp_avg_sq);
    require_rel(pr.buffer(*opt, "exp_avg_sq"), ref::adamw_amsgrad_exp_avg_sq);
  }
  SECTION("float32 parameters, within the issue's 1e-5") {
    Problem pr(mg::kFloat32);
    nn::AdamW opt(groups(pr, nn::AdamWOptions(0.01).weight_decay(0.0)), nn::AdamWOptions(0.05).weight_decay(0.1));
    require_rel(pr.run(opt), ref::adamw_traj, 1e-5, 1e-6);
    CHECK(opt.state(pr.params[0])->buffers.at("exp_avg").dtype() == mg::kFloat32);
  }
  SECTION("a non-contiguous parameter is updated through a staged copy") {
    Problem pr;
    Tensor transposed = pr.params[0].detach().t().contiguous().t();  // same values, strides (1, 2)
    pr.params[0].set_data(transposed);
    REQUIRE_FALSE(pr.params[0].is_contiguous());
    auto opt = make_adamw_amsgrad(pr);
    require_rel(pr.run(*opt), ref::adamw_amsgrad_traj);
    CHECK(pr.params[0].strides() == mg::Shape{1, 2});
  }
}

TEST_CASE("parameters without a gradient, or frozen, are untouched and keep their state", "[optim]") {
  Problem pr;
  nn::Adam opt(pr.params, nn::AdamOptions(0.1).weight_decay(0.01));
  const auto before = pr.params[1].to_vector<double>();
  pr.set_grads(1.0);
  pr.params[1].set_grad(Tensor());  // never received a gradient
  opt.step();
  CHECK(pr.params[1].to_vector<double>() == before);
  CHECK(opt.state(pr.params[1]) == nullptr);
  CHECK(opt.state(pr.params[0])->step == 1);

  // Param 0 has state; in the next step it gets no gradient (an expert that saw no tokens), and
  // param 2 is frozen while still holding a stale gradient.
  pr.set_grads(0.5);
  pr.params[0].set_grad(Tensor());
  pr.params[2].requires_grad_(false);
  const auto p0 = pr.params[0].to_vector<double>(), p2 = pr.params[2].to_vector<double>();
  const auto m0 = opt.state(pr.params[0])->buffers.at("exp_avg").to_vector<double>();
  const auto v2 = opt.state(pr.params[2])->buffers.at("exp_avg_sq").to_vector<double>();
  opt.step();
  CHECK(pr.params[0].to_vector<double>() == p0);
  CHECK(pr.params[2].to_vector<double>() == p2);
  CHECK(opt.state(pr.params[0])->buffers.at("exp_avg").to_vector<double>() == m0);
  CHECK(opt.state(pr.params[2])->buffers.at("exp_avg_sq").to_vector<double>() == v2);
  CHECK(opt.state(pr.params[0])->step == 1);
  CHECK(opt.state(pr.params[2])->step == 1);
  CHECK(opt.state(pr.params[1])->step == 1);  // its first update

  opt.zero_grad();
  for (const auto& p : pr.params) CHECK_FALSE(p.grad().defined());
}

TEST_CASE("a frozen expert module stays bit-identical while its sibling trains", "[optim]") {
  mg::manual_seed(3);
  auto expert_a = std::make_shared<nn::Linear>(4, 3);
  auto expert_b = std::make_shared<nn::Linear>(4, 3);
  auto params = expert_a->parameters();
  for (const auto& p : expert_b->parameters()) params.push_back(p);
  nn::AdamW opt(params, nn::AdamWOptions(0.01));
  const Tensor x = mg::randn({5, 4});
  auto train_step = [&] {
    opt.zero_grad();
    ((*expert_a)(x) + (*expert_b)(x)).pow(2.0).sum().backward();
    opt.step();
  };
  train_step();
  const auto b_weight = expert_b->weight.to_vector<float>();
  const auto b_state = opt.state(expert_b->weight)->buffers.at("exp_avg").to_vector<float>();
  const auto a_weight = expert_a->weight.to_vector<float>();
  ((*expert_a)(x) + (*expert_b)(x)).sum().backward();  // leaves stale grads on both experts
  expert_b->freeze();
  opt.step();
  train_step();
  CHECK(expert_b->weight.to_vector<float>() == b_weight);
  CHECK(opt.state(expert_b->weight)->buffers.at("exp_avg").to_vector<float>() == b_state);
  CHECK(opt.state(expert_b->weight)->step == 1);
  CHECK(expert_a->weight.to_vector<float>() != a_weight);
  CHECK(opt.state(expert_a->weight)->step == 3);
}

TEST_CASE("parameters join and leave an optimizer with their state", "[optim]") {
  Problem pr, plain;
  const nn::AdamOptions router = nn::AdamOptions(0.01);
  nn::Adam opt({nn::ParamGroup({pr.params[0], pr.params[1]}), nn::ParamGroup({}, router)}, nn::AdamOptions(0.05));
  nn::Adam plain_opt({nn::ParamGroup({plain.params[0], plain.params[1]}), nn::ParamGroup({}, router)},
                     nn::AdamOptions(0.05));
  pr.set_grads(ref::scales[0]);
  plain.set_grads(ref::scales[0]);
  opt.step();
  plain_opt.step();

  // A new expert joins group 1 mid-training and starts without state.
  opt.add_params(1, {pr.params[2]});
  CHECK(opt.param_groups()[1].params().size() == 1);
  CHECK(opt.state(pr.params[2]) == nullptr);
  for (double s : {ref::scales[1], ref::scales[2]}) {
    pr.set_grads(s);
    plain.set_grads(s);
    opt.step();
    plain_opt.step();
  }
  CHECK(opt.state(pr.params[2])->step == 2);
  CHECK(opt.state(pr.params[0])->step == 3);
  // The others moved exactly as without it.
  CHECK(pr.params[0].to_vector<double>() == plain.params[0].to_vector<double>());

  // An expert splits: the copy takes the state of the original.
  Tensor split = pr.params[2].detach().clone().requires_grad_();
  opt.add_params(1, {split});
  nn::ParamState copied = *opt.state(pr.params[2]);
  for (auto& [name, buf] : copied.buffers) buf = buf.clone();
  opt.set_state(split, copied);
  CHECK(opt.state(split)->step == 2);

  opt.remove_params({pr.params[2]});
  CHECK(opt.state(pr.params[2]) == nullptr);
  CHECK(opt.param_groups()[1].params().size() == 1);
  CHECK(opt.param_groups()[1].params()[0].is_same(split));
  CHECK(opt.state_dict().scalars.at("state.1.0.step") == 2);

  CHECK_THROWS_WITH(opt.remove_params({pr.params[2], pr.params[0]}), Catch::Contains("not parameters"));
  CHECK(opt.param_groups()[0].params().size() == 2);  // the failed removal changed nothing
  CHECK_THROWS_WITH(opt.add_params(0, {split}), Catch::Contains("more than once"));
  CHECK_THROWS_WITH(opt.add_params(2, {pr.params[2]}), Catch::Contains("2 groups"));
  CHECK_THROWS_WITH(opt.set_state(pr.params[2], copied), Catch::Contains("not a parameter"));
}

namespace {
// Runs `steps` more reference-style steps (scales cycled) and returns the parameters.
std::vector<double> continue_run(Problem& pr, nn::Optimizer& opt, nn::LRScheduler& sched, int steps) {
  for (int k = 0; k < steps; ++k) {
    pr.set_grads(0.7 - 0.4 * k);
    opt.step();
    sched.step();
  }
  return pr.flat();
}

template <class MakeOpt, class MakeSched>
void check_round_trip(MakeOpt make_opt, MakeSched make_sched) {
  Problem a;
  auto opt = make_opt(a);
  auto sched = make_sched(*opt);
  a.run(*opt);
  for (int k = 0; k < 3; ++k) sched->step();
  const nn::OptimizerStateDict saved = opt->state_dict();
  const auto saved_sched = sched->state_dict();
  std::vector<Tensor> saved_params;
  for (const auto& p : a.params) saved_params.push_back(p.detach().clone());
  const auto uninterrupted = continue_run(a, *opt, *sched, 4);

  Problem b;  // a restarted process: fresh optimizer and scheduler, then the checkpoint
  {
    mg::NoGradGuard no_grad;
    for (size_t i = 0; i < b.params.size(); ++i) b.params[i].copy_(saved_params[i]);
  }
  auto opt_b = make_opt(b);
  auto sched_b = make_sched(*opt_b);
  opt_b->load_state_dict(saved);
  sched_b->load_state_dict(saved_sched);
  CHECK(sched_b->last_epoch() == 3);
  CHECK(continue_run(b, *opt_b, *sched_b, 4) == uninterrupted);
  CHECK(opt_b->param_groups()[1].options().to_map() == opt->param_groups()[1].options().to_map());
}
}  // namespace

TEST_CASE("state_dict round trip continues exactly like an uninterrupted run", "[optim]") {
  SECTION("AdamW with AMSGrad and StepLR") {
    check_round_trip(make_adamw_amsgrad, [](nn::Optimizer& o) { return std::make_unique<nn::StepLR>(o, 2, 0.5); });
  }
  SECTION("SGD with Nesterov momentum and OneCycleLR (which also cycles momentum)") {
    check_round_trip(
        [](const Problem& pr) {
          return std::make_unique<nn::SGD>(groups(pr, nn::SGDOptions(0.02).momentum(0.8)),
                                           nn::SGDOptions(0.1).momentum(0.9).nesterov(true).weight_decay(0.01));
        },
        [](nn::Optimizer& o) { return std::make_unique<nn::OneCycleLR>(o, std::vector<double>{0.2, 0.05}, 12); });
  }
}

TEST_CASE("state_dict layout and load_state_dict checks", "[optim]") {
  Problem pr;
  auto opt = make_adamw_amsgrad(pr);
  pr.params[1].requires_grad_(false);  // no state for param (0, 1)
  pr.run(*opt);
  const nn::OptimizerStateDict sd = opt->state_dict();
  CHECK(sd.optimizer == "AdamW");
  CHECK(sd.scalars.at("num_groups") == 2);
  CHECK(sd.scalars.at("group.0.num_params") == 2);
  CHECK(sd.scalars.at("group.1.lr") == 0.02);
  CHECK(sd.scalars.at("group.1.beta2") == 0.5);
  CHECK(sd.scalars.at("group.0.amsgrad") == 1);
  CHECK(sd.scalars.at("state.1.0.step") == 3);
  CHECK(sd.scalars.count("state.0.1.step") == 0);
  std::vector<std::string> names;
  for (const auto& [name, t] : sd.tensors) names.push_back(name);
  CHECK(names == std::vector<std::string>{"state.0.0.exp_avg", "state.0.0.exp_avg_sq", "state.0.0.max_exp_avg_sq",
                                          "state.1.0.exp_avg", "state.1.0.exp_avg_sq", "state.1.0.max_exp_avg_sq"});

  Problem other;
  nn::AdamW one_group(other.params, nn::AdamWOptions());
  CHECK_THROWS_WITH(one_group.load_state_dict(sd), Catch::Contains("parameter groups"));
  nn::Adam adam(groups(other, nn::AdamOptions()), nn::AdamOptions());
  CHECK_THROWS_WITH(adam.load_state_dict(sd), Catch::Contains("for AdamW"));

  auto target = make_adamw_amsgrad(other);
  nn::OptimizerStateDict bad = sd;
  bad.tensors.back().second = mg::zeros({7}, mg::kFloat64);
  CHECK_THROWS_WITH(target->load_state_dict(bad), Catch::Contains("shape"));
  bad = sd;
  bad.scalars["group.0.momentum"] = 0.5;
  CHECK_THROWS_WITH(target->load_state_dict(bad), Catch::Contains("unknown option 'momentum'"));
  CHECK(target->state(other.params[0]) == nullptr);  // failed loads changed nothing
  CHECK(target->param_groups()[1].options().get_lr() == 0.02);
}

TEST_CASE("clip_grad_norm_ matches PyTorch", "[optim]") {
  const std::vector<std::pair<double, double>> cases{{1.0, 2.0}, {2.0, 1.0}, {0.5, INFINITY}, {100.0, 2.0}, {3.0, 3.0}};
  const auto n0 = static_cast<int64_t>(ref::clip_grad0.size()), n1 = static_cast<int64_t>(ref::clip_grad1.size());
  for (size_t k = 0; k < cases.size(); ++k) {
    INFO("max_norm " << cases[k].first << ", norm_type " << cases[k].second);
    Tensor a = mg::zeros({2, 3}, mg::kFloat64).requires_grad_(), b = mg::zeros({4}, mg::kFloat64).requires_grad_();
    a.set_grad(f64(ref::clip_grad0, {2, 3}));
    b.set_grad(f64(ref::clip_grad1, {4}));
    Tensor frozen = mg::zeros({2}, mg::kFloat64);  // holds a gradient but takes no part
    frozen.set_grad(f64({1e6, 1e6}, {2}));
    const double total = nn::clip_grad_norm_({a, frozen, b}, cases[k].first, cases[k].second);
    require_rel({total}, {ref::clip_totals[k]});
    std::vector<double> got = a.grad().to_vector<double>(), expected(ref::clip_grads.begin() + k * (n0 + n1),
                                                                    ref::clip_grads.begin() + (k + 1) * (n0 + n1));
    const auto gb = b.grad().to_vector<double>();
    got.insert(got.end(), gb.begin(), gb.end());
    require_rel(got, expected);
    CHECK(frozen.grad().to_vector<double>() == std::vector<double>{1e6, 1e6});
  }
  Tensor none = mg::zeros({2}, mg::kFloat64).requires_grad_();
  CHECK(nn::clip_grad_norm_({none}, 1.0) == 0.0);
  none.set_grad(f64({NAN, 1.0}, {2}));
  CHECK_THROWS_WITH(nn::clip_grad_norm_({none}, 1.0, 2.0, true), Catch::Contains("non-finite"));
  none.set_grad(f64({-3.0, 0.5}, {2}));
  nn::clip_grad_value_({none}, 1.0);
  CHECK(none.grad().to_vector<double>() == std::vector<double>{-1.0, 0.5});
}

namespace {
struct TwoGroups {  // the schedulers' reference optimizer: groups at lr 0.1 and 0.02
  Tensor a = mg::zeros({2}, mg::kFloat64).requires_grad_(), b = mg::zeros({2}, mg::kFloat64).requires_grad_();
  std::vector<nn::ParamGroup> groups(const nn::OptimizerOptions& o) {
    auto g1 = o.clone();
    g1->set_lr(0.02);
    return {nn::ParamGroup({a}), nn::ParamGroup({b}, *g1)};
  }
};

// get_last_lr() (and the groups' momentum) after construction and after each of `steps` steps.
std::pair<std::vector<double>, std::vector<double>> sequence(nn::Optimizer& opt, nn::LRScheduler& sched, int steps) {
  std::vector<double> lrs, momenta;
  for (int k = 0; k <= steps; ++k) {
    if (k > 0) sched.step();
    for (double lr : sched.get_last_lr()) lrs.push_back(lr);
    const auto& groups = opt.param_groups();
    for (size_t g = 0; g < groups.size(); ++g) {
      CHECK(groups[g].options().get_lr() == sched.get_last_lr()[g]);
      momenta.push_back(groups[g].options().get_momentum());
    }
  }
  return {lrs, momenta};
}
}  // namespace

TEST_CASE("StepLR, MultiStepLR and OneCycleLR match PyTorch", "[optim]") {
  TwoGroups t;
  nn::SGD sgd(t.groups(nn::SGDOptions(0.1)), nn::SGDOptions(0.1));
  nn::StepLR step_lr(sgd, 3, 0.5);
  require_rel(sequence(sgd, step_lr, 20).first, ref::steplr);

  nn::SGD sgd2(t.groups(nn::SGDOptions(0.1)), nn::SGDOptions(0.1));
  nn::MultiStepLR multi(sgd2, {2, 5, 5, 9}, 0.3);
  require_rel(sequence(sgd2, multi, 20).first, ref::multisteplr);

  nn::SGD sgd3(t.groups(nn::SGDOptions(0.1).momentum(0.9)), nn::SGDOptions(0.1).momentum(0.9));
  nn::OneCycleLR one_cycle(sgd3, {1.0, 0.5}, 20);
  const auto [lrs, momenta] = sequence(sgd3, one_cycle, 19);
  require_rel(lrs, ref::onecycle_lr);
  require_rel(momenta, ref::onecycle_momentum);
  one_cycle.step();  // last_epoch 20 == total_steps is still allowed, as in torch
  CHECK_THROWS_WITH(one_cycle.step(), Catch::Contains("total steps is 20"));
  CHECK(one_cycle.last_epoch() == 20);

  nn::Adam adam(t.groups(nn::AdamOptions(0.1)), nn::AdamOptions(0.1));
  nn::OneCycleLR three(adam, 0.3, 20,
                       {.pct_start = 0.25, .anneal_strategy = "linear", .div_factor = 10.0,
                        .final_div_factor = 100.0, .three_phase = true});
  const auto [lrs3, beta1] = sequence(adam, three, 20);
  require_rel(lrs3, ref::onecycle3_lr);
  require_rel(beta1, ref::onecycle3_beta1);
}

TEST_CASE("CosineWarmupLR follows its documented formula", "[optim]") {
  TwoGroups t;
  nn::AdamW opt(t.groups(nn::AdamWOptions(0.1)), nn::AdamWOptions(0.1));
  const int64_t W = 5, T = 20;
  const double min_lr = 1e-4, f = 0.1, pi = std::acos(-1.0);
  nn::CosineWarmupLR sched(opt, W, T, min_lr, f);
  for (int64_t step = 0; step <= T + 3; ++step) {
    if (step > 0) sched.step();
    for (size_t g = 0; g < 2; ++g) {
      const double base = g == 0 ? 0.1 : 0.02;
      double expected = min_lr;
      if (step < W)
        expected = base * (f + (1 - f) * static_cast<double>(step) / W);
      else if (step < T)
        expected = min_lr + 0.5 * (base - min_lr) * (1 + std::cos(pi * static_cast<double>(step - W) / (T - W)));
      INFO("step " << step << ", group " << g);
      CHECK(std::abs(sched.get_last_lr()[g] - expected) <= 1e-15 + 1e-13 * expected);
    }
  }
  CHECK(sched.last_epoch() == T + 3);
  CHECK_THROWS_WITH(nn::CosineWarmupLR(opt, 10, 10), Catch::Contains("warmup_steps < total_steps"));
}

TEST_CASE("optimizers reject invalid options and parameters", "[optim]") {
  Tensor p = mg::zeros({3}, mg::kFloat64).requires_grad_();
  CHECK_THROWS_WITH(nn::SGD({p}, nn::SGDOptions(-0.1)), Catch::Contains("invalid learning rate -0.1"));
  CHECK_THROWS_WITH(nn::Adam({p}, nn::AdamOptions(-1.0)), Catch::Contains("Adam: invalid learning rate"));
  CHECK_THROWS_WITH(nn::AdamW({p}, nn::AdamWOptions().betas({1.0, 0.999})), Catch::Contains("invalid beta1"));
  CHECK_THROWS_WITH(nn::SGD({p}, nn::SGDOptions(0.1).nesterov(true)), Catch::Contains("Nesterov"));
  CHECK_THROWS_WITH(nn::SGD({nn::ParamGroup({p}, nn::SGDOptions(-1.0))}, nn::SGDOptions(0.1)),
                    Catch::Contains("invalid learning rate"));
  CHECK_THROWS_WITH(nn::SGD({nn::ParamGroup({p}, nn::AdamOptions())}, nn::SGDOptions(0.1)),
                    Catch::Contains("has Adam options"));
  CHECK_THROWS_WITH(nn::SGD({p, p}, nn::SGDOptions(0.1)), Catch::Contains("more than once"));
  CHECK_THROWS_WITH(nn::SGD({p * 2.0}, nn::SGDOptions(0.1)), Catch::Contains("non-leaf"));
  nn::SGD opt({p}, nn::SGDOptions(0.1));
  CHECK_THROWS_WITH(opt.remove_params({mg::zeros({3})}), Catch::Contains("not parameters of this optimizer"));
  CHECK_THROWS_WITH(nn::StepLR(opt, 0), Catch::Contains("step_size"));
  CHECK_THROWS_WITH(nn::OneCycleLR(opt, {1.0, 2.0}, 10), Catch::Contains("expected 1 values for max_lr"));
}
