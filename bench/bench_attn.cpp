// nn::MultiheadAttention(192, 3 heads, batch_first) forward + backward, the workload of
// shared/reference/torch/attn.py (its docstring defines it): self-attention q = k = v = x with
// x [64, 65, 192] requiring grad, bias, no dropout; a step clears the gradients (set to none),
// runs out = mha(x, x, x, need_weights) and out.backward(g) with a fixed random g. One
// configuration per need_weights (false: what ViT code uses; true: torch's default, which also
// returns the head-averaged weights).
//
// Timing as the peer's benchutil.time_fn: `--warmup` steps, then `--steps` timed steps (the peer
// uses 9), one sample each; median, min and max. FLOPs (matmuls only) as the peer counts them.
//
// Output: one JSON line per need_weights on stdout. --profile prints mg::profiler::report() of
// `--steps` extra steps per configuration to stderr, after the timed ones.
//
// Usage: bench_attn [--threads N] [--batch 64] [--warmup 3] [--steps 9] [--profile]
//                   [--device cpu|cuda]
#include <cstdio>
#include <memory>

#include "bench_step.hpp"
#include "moegrad.hpp"
#include "nn/attention.hpp"

int main(int argc, char** argv) {
  using namespace step_bench;
  Args defaults;
  defaults.batch = 64;
  defaults.steps = 9;
  const Args args = parse_args(argc, argv, defaults);
  mg::set_num_threads(args.threads);
  const int64_t B = args.batch, L = 65, D = 192, H = 3, dh = D / H, N = B * L;
  const double fwd_flop = 2.0 * N * D * 3 * D + 2.0 * (2.0 * B * H * L * L * dh) + 2.0 * N * D * D;

  for (bool need_weights : {false, true}) {
    mg::manual_seed(0);
    auto mha = std::make_shared<mg::nn::MultiheadAttention>(D, H, 0.0, true, true);
    mha->to(args.device);
    mg::Tensor x = mg::randn({B, L, D}).to(args.device).requires_grad_();
    const mg::Tensor g = mg::randn({B, L, D}).to(args.device);
    auto step = [&] {
      mha->zero_grad();
      x.set_grad(mg::Tensor());
      mg::Tensor out = mha->forward(x, x, x, need_weights).first;
      out.backward(g);
      synchronize(args.device);
    };
    const Timing t = time_fn(step, args.warmup, args.steps);
    std::printf(
        "{\"bench\":\"attn\",\"impl\":\"moegrad\",\"device\":\"%s\",\"need_weights\":%s,\"batch\":%lld,\"seq\":%lld,"
        "\"dim\":%lld,\"heads\":%lld,\"threads\":%d,\"ms_median\":%.3f,\"ms_min\":%.3f,"
        "\"ms_max\":%.3f,\"repeats\":%d,\"gflop_fwd\":%.3f,\"gflop_fwd_bwd_3x\":%.3f,"
        "\"achieved_gflops_median\":%.1f,\"peak_rss_mb\":%.1f,\"load1\":%.2f,\"samples_ms\":%s}\n",
        args.device.str().c_str(), need_weights ? "true" : "false", static_cast<long long>(B), static_cast<long long>(L),
        static_cast<long long>(D), static_cast<long long>(H), args.threads, t.median, t.min, t.max,
        args.steps, fwd_flop / 1e9, 3 * fwd_flop / 1e9, 3 * fwd_flop / (t.median / 1e3) / 1e9,
        peak_rss_mb(), load_average(), t.samples_json().c_str());
    std::fflush(stdout);

    if (args.profile) {
      mg::profiler::reset();
      mg::profiler::enable();
      const auto t0 = Clock::now();
      for (int i = 0; i < args.steps; ++i) step();
      const double wall = seconds_since(t0);
      mg::profiler::enable(false);
      std::fprintf(stderr, "# profile of %d attn steps (need_weights %d, threads %d): %.2f ms/step wall\n",
                   args.steps, need_weights, args.threads, 1e3 * wall / args.steps);
      std::fputs(mg::profiler::report().c_str(), stderr);
    }
  }
  return 0;
}
