// moe::MoELayer forward + backward, the workload of shared/reference/torch/moe_layer.py (its
// docstring defines it): T = 4096 tokens, d 256, experts Linear(256, 1024) -> ReLU ->
// Linear(1024, 256), a linear router with softmax, top-2 renormalized, E = 4, 16, 64; x requires
// grad; a step sets the gradients to none, runs y = layer(x) and y.backward(g) with a fixed random
// g. Implementations:
//   moegrad   MoELayer with FFNExpert experts: sorted dispatch, grouped expert kernel
//   modules   the same layer with the experts forced through the module path (one expert after
//             another, each op recorded), to show what the grouped kernel buys
//   dense     Linear(d, k * H) -> ReLU -> Linear(k * H, d) on all T tokens: the expert GEMM FLOPs
//             of top-k with perfect dispatch (the peer's "dense")
// The layer does everything a training step needs: the balancing-loss values and the step
// statistics are computed too (the peer's layer computes neither). Our router's gate has a bias
// (E numbers; the peer's has none).
//
// Timing: `--warmup` untimed steps per configuration, then `--repeats` rounds of one timed step
// per configuration, the order rotated each round, so drift of this VM's speed hits every
// configuration alike; median, min, max per configuration as the peer's benchutil. The last line
// gives the in-run ratios (ratio of medians and the median of per-round ratios).
//
// Usage: bench_moe_layer [--threads 2] [--experts 4 16 64] [--impls moegrad modules dense]
//                        [--tokens 4096] [--d 256] [--hidden 1024] [--topk 2] [--warmup 2]
//                        [--repeats 7] [--profile] [--device cpu|cuda]
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "bench_step.hpp"
#include "moegrad.hpp"
#include "nn/containers.hpp"
#include "nn/layers.hpp"

namespace {

using step_bench::Clock;
using step_bench::seconds_since;

struct Args {
  int threads = 2, warmup = 2, repeats = 7;
  int64_t tokens = 4096, d = 256, hidden = 1024, topk = 2;
  std::vector<int64_t> experts{4, 16, 64};
  std::vector<std::string> impls{"moegrad", "modules", "dense"};
  bool profile = false;
  mg::Device device = mg::Device::cpu();
};

Args parse_args(int argc, char** argv) {
  Args a;
  auto usage = [&] {
    std::fprintf(stderr,
                 "usage: %s [--threads N] [--experts E...] [--impls moegrad modules dense] [--tokens T]"
                 " [--d D] [--hidden H] [--topk K] [--warmup W] [--repeats R] [--profile] [--device cpu|cuda]\n",
                 argv[0]);
    std::exit(2);
  };
  for (int i = 1; i < argc; ++i) {
    const std::string s = argv[i];
    auto value = [&] {
      if (i + 1 >= argc) usage();
      return std::atoll(argv[++i]);
    };
    auto list = [&](auto& out, auto convert) {
      out.clear();
      while (i + 1 < argc && argv[i + 1][0] != '-') out.push_back(convert(argv[++i]));
      if (out.empty()) usage();
    };
    if (s == "--threads") a.threads = static_cast<int>(value());
    else if (s == "--warmup") a.warmup = static_cast<int>(value());
    else if (s == "--repeats" || s == "--steps") a.repeats = static_cast<int>(value());
    else if (s == "--tokens") a.tokens = value();
    else if (s == "--d") a.d = value();
    else if (s == "--hidden") a.hidden = value();
    else if (s == "--topk") a.topk = value();
    else if (s == "--experts") list(a.experts, [](const char* v) { return static_cast<int64_t>(std::atoll(v)); });
    else if (s == "--impls") list(a.impls, [](const char* v) { return std::string(v); });
    else if (s == "--profile") a.profile = true;
    else if (s == "--device" && i + 1 < argc) a.device = step_bench::parse_device(argv[++i], argv[0]);
    else usage();
  }
  if (a.threads < 1 || a.warmup < 0 || a.repeats < 1 || a.tokens < 1) usage();
  for (const auto& impl : a.impls)
    if (impl != "moegrad" && impl != "modules" && impl != "dense") usage();
  return a;
}

// Same math as FFNExpert's Linear-ReLU-Linear, but a type the layer's grouped kernel does not
// recognize, so the experts run through the module path.
class ModulePathExpert : public mg::nn::Sequential {};

mg::nn::ModulePtr make_expert(const Args& a, bool grouped) {
  if (grouped)
    return std::make_shared<mg::moe::FFNExpert>(
        mg::moe::FFNExpertConfig{.input_dim = a.d, .hidden = {a.hidden}});
  auto s = std::make_shared<ModulePathExpert>();
  s->push_back(std::make_shared<mg::nn::Linear>(a.d, a.hidden));
  s->push_back(std::make_shared<mg::nn::ReLU>());
  s->push_back(std::make_shared<mg::nn::Linear>(a.hidden, a.d));
  return s;
}

std::shared_ptr<mg::moe::MoELayer> make_layer(const Args& a, int64_t E, bool grouped, uint64_t seed) {
  mg::manual_seed(seed);
  mg::moe::MoEConfig config;
  config.router.input_dim = a.d;
  config.router.num_experts = E;
  config.router.top_k = a.topk;
  config.router.seed = seed;
  std::vector<mg::nn::ModulePtr> experts;
  for (int64_t e = 0; e < E; ++e) experts.push_back(make_expert(a, grouped));
  auto layer = std::make_shared<mg::moe::MoELayer>(config, experts);
  layer->to(a.device);
  return layer;
}

struct Case {
  std::string impl;
  int64_t E = 0;  // 0 for dense
  std::shared_ptr<mg::nn::Module> module;
  std::function<void()> step;
  std::vector<double> samples_ms;  // in round order
  std::vector<int64_t> tokens_per_expert;
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

std::string json_list(const std::vector<double>& v) {
  std::string s;
  char buf[32];
  for (double x : v) {
    std::snprintf(buf, sizeof buf, "%s%.3f", s.empty() ? "" : ",", x);
    s += buf;
  }
  return "[" + s + "]";
}

// Outputs and every gradient of the grouped and the module path on 512 tokens (the peer checks
// its implementations against each other the same way).
void check(const Args& a, int64_t E) {
  auto grouped = make_layer(a, E, true, 1), modules = make_layer(a, E, false, 1);
  mg::Generator gen(1);
  const mg::Tensor x0 = mg::randn({512, a.d}, {}, &gen).to(a.device);
  const mg::Tensor g = mg::randn({512, a.d}, {}, &gen).to(a.device);
  double err = 0;
  auto run = [&](mg::moe::MoELayer& layer) {
    mg::Tensor x = x0.clone().requires_grad_();
    mg::Tensor y = layer.forward(x);
    y.backward(g);
    std::vector<mg::Tensor> out{y.detach(), x.grad()};
    for (const auto& p : layer.parameters()) out.push_back(p.grad().defined() ? p.grad() : mg::zeros_like(p));
    return out;
  };
  const auto ra = run(*grouped), rb = run(*modules);
  for (size_t i = 0; i < ra.size(); ++i) err = std::max(err, (ra[i] - rb[i]).abs().max().item());
  std::printf("{\"bench\":\"moe_layer_check\",\"E\":%lld,\"max_abs_diff_grouped_vs_modules\":%.3g,\"ok\":%s}\n",
              static_cast<long long>(E), err, err < 1e-4 ? "true" : "false");
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  const Args a = parse_args(argc, argv);
  mg::set_num_threads(a.threads);
  const int64_t T = a.tokens, D = a.d, H = a.hidden, K = a.topk;
  auto has = [&](const char* impl) { return std::find(a.impls.begin(), a.impls.end(), impl) != a.impls.end(); };

  if (has("moegrad") && has("modules"))
    for (int64_t E : a.experts) check(a, E);

  mg::manual_seed(0);
  mg::Tensor x = mg::randn({T, D}).to(a.device).requires_grad_();
  const mg::Tensor g = mg::randn({T, D}).to(a.device);

  std::vector<Case> cases;
  auto add_case = [&](const std::string& impl, int64_t E, std::shared_ptr<mg::nn::Module> module) {
    Case c{impl, E, module, {}, {}, {}};
    mg::nn::Module* m = module.get();
    const mg::Device device = a.device;
    c.step = [m, &x, &g, device] {
      for (mg::Tensor& p : m->parameters()) p.set_grad(mg::Tensor());  // gradients to none, as the peer
      x.set_grad(mg::Tensor());
      m->forward(x).backward(g);
      step_bench::synchronize(device);
    };
    cases.push_back(std::move(c));
  };
  if (has("dense")) {
    mg::manual_seed(0);
    auto dense = std::make_shared<mg::nn::Sequential>(std::initializer_list<mg::nn::ModulePtr>{
        std::make_shared<mg::nn::Linear>(D, K * H), std::make_shared<mg::nn::ReLU>(),
        std::make_shared<mg::nn::Linear>(K * H, D)});
    dense->to(a.device);
    add_case("dense", 0, dense);
  }
  for (int64_t E : a.experts)
    for (const char* impl : {"moegrad", "modules"})
      if (has(impl)) add_case(impl, E, make_layer(a, E, std::string(impl) == "moegrad", 0));

  for (Case& c : cases)
    for (int i = 0; i < a.warmup; ++i) c.step();
  for (int r = 0; r < a.repeats; ++r)
    for (size_t j = 0; j < cases.size(); ++j) {
      Case& c = cases[(j + r) % cases.size()];
      const auto t0 = Clock::now();
      c.step();
      c.samples_ms.push_back(1e3 * seconds_since(t0));
    }

  const double expert_gflop = 3.0 * T * K * 4.0 * D * H / 1e9;
  std::map<std::string, const Case*> by_name;
  for (Case& c : cases) {
    if (auto* layer = dynamic_cast<mg::moe::MoELayer*>(c.module.get())) {
      mg::NoGradGuard no_grad;
      layer->forward(x);
      c.tokens_per_expert = layer->last_stats().tokens_per_expert;
    }
    const double router_gflop = c.E ? 3.0 * 2.0 * T * D * c.E / 1e9 : 0.0;
    const double med = median(c.samples_ms);
    std::vector<double> sorted = c.samples_ms;
    std::sort(sorted.begin(), sorted.end());
    std::printf("{\"bench\":\"moe_layer\",\"impl\":\"%s\",\"device\":\"%s\",\"E\":", c.impl.c_str(),
                a.device.str().c_str());
    if (c.E) std::printf("%lld", static_cast<long long>(c.E));
    else std::printf("null");
    std::printf(",\"T\":%lld,\"d\":%lld,\"hidden\":%lld,\"topk\":%lld,\"threads\":%d,\"ms_median\":%.3f,"
                "\"ms_min\":%.3f,\"ms_max\":%.3f,\"repeats\":%d,\"expert_gflop_fwd_bwd\":%.3f,"
                "\"router_gflop_fwd_bwd\":%.3f,\"achieved_gflops_median\":%.1f",
                static_cast<long long>(T), static_cast<long long>(D), static_cast<long long>(H),
                static_cast<long long>(K), a.threads, med, sorted.front(), sorted.back(), a.repeats,
                expert_gflop, router_gflop, (expert_gflop + router_gflop) / (med / 1e3));
    if (!c.tokens_per_expert.empty()) {
      const auto [lo, hi] = std::minmax_element(c.tokens_per_expert.begin(), c.tokens_per_expert.end());
      std::printf(",\"tokens_per_expert_mean\":%.1f,\"tokens_per_expert_min\":%lld,\"tokens_per_expert_max\":%lld",
                  double(T * K) / c.E, static_cast<long long>(*lo), static_cast<long long>(*hi));
    }
    std::printf(",\"peak_rss_mb\":%.1f,\"load1\":%.2f,\"samples_ms\":%s}\n", step_bench::peak_rss_mb(),
                step_bench::load_average(), json_list(c.samples_ms).c_str());
    std::fflush(stdout);
    by_name[c.impl + "/" + std::to_string(c.E)] = &c;
  }

  // In-run ratios: of the medians, and the median over rounds of the same-round ratio.
  auto ratio = [&](const std::string& num, const std::string& den, const char* key, bool& first) {
    if (!by_name.count(num) || !by_name.count(den)) return;
    const Case &n = *by_name[num], &d = *by_name[den];
    std::vector<double> per_round;
    for (size_t r = 0; r < n.samples_ms.size(); ++r) per_round.push_back(n.samples_ms[r] / d.samples_ms[r]);
    std::printf("%s\"%s\":%.3f,\"%s_paired\":%.3f", first ? "" : ",", key,
                median(n.samples_ms) / median(d.samples_ms), key, median(per_round));
    first = false;
  };
  std::printf("{\"bench\":\"moe_layer_ratios\",\"threads\":%d,", a.threads);
  bool first = true;
  const std::string lo = std::to_string(a.experts.front()), hi = std::to_string(a.experts.back());
  ratio("moegrad/" + hi, "moegrad/" + lo, "moegrad_E_last_over_E_first", first);
  ratio("moegrad/" + lo, "dense/0", "moegrad_E_first_over_dense", first);
  for (int64_t E : a.experts)
    ratio("moegrad/" + std::to_string(E), "modules/" + std::to_string(E),
          ("moegrad_over_modules_E" + std::to_string(E)).c_str(), first);
  std::printf("%s\"load1\":%.2f}\n", first ? "" : ",", step_bench::load_average());
  std::fflush(stdout);

  if (a.profile) {
    for (Case& c : cases) {
      mg::profiler::reset();
      mg::profiler::enable();
      for (int i = 0; i < 3; ++i) c.step();
      mg::profiler::enable(false);
      std::fprintf(stderr, "# profile impl=%s E=%lld threads=%d (3 steps)\n%s\n", c.impl.c_str(),
                   static_cast<long long>(c.E), a.threads, mg::profiler::report().c_str());
    }
  }
  return 0;
}
