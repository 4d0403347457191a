// One SGD-momentum training step of the small residual CNN of
// shared/reference/torch/cnn_step.py, the same work as that script (its docstring defines it):
//   stem CBR(3->32) | res1 x + CBR(32->32)(CBR(32->32)(x)) | maxpool 2 | down1 CBR(32->64)
//   | res2 x + CBR(64->64)(CBR(64->64)(x)) | maxpool 2 | down2 CBR(64->128)
//   | global average pool | Linear(128->100) | cross-entropy (mean)
// CBR = Conv2d 3x3 stride 1 pad 1 no bias, BatchNorm2d (training mode), ReLU. Batch 128 of
// x ~ N(0,1) [B,3,32,32], y ~ U{0..99}; SGD(lr 0.05, momentum 0.9, weight_decay 5e-4).
// Step = zero_grad (set to none) + forward + loss + backward + step, loss read back as a number.
//
// Timing as the peer's benchutil.time_fn: `--warmup` steps, then `--steps` timed steps, one
// sample each; median, min and max. Only the initialization differs from the peer (our own
// generator), so losses are not comparable, the work is.
//
// Output: one JSON line on stdout. --profile prints mg::profiler::report() of `--steps` extra
// steps to stderr (taken after the timed ones, so the profiler's own cost stays out of the timing).
//
// Usage: bench_cnn_step [--threads N] [--batch 128] [--warmup 3] [--steps 7] [--profile]
//                       [--device cpu|cuda]
#include <cstdio>
#include <memory>
#include <vector>

#include "bench_step.hpp"
#include "moegrad.hpp"
#include "nn/containers.hpp"
#include "nn/conv.hpp"
#include "nn/layers.hpp"
#include "nn/normalization.hpp"
#include "nn/optim.hpp"

namespace {

using mg::Tensor;
namespace nn = mg::nn;

nn::ModulePtr cbr(int64_t cin, int64_t cout) {
  return std::make_shared<nn::Sequential>(std::initializer_list<nn::ModulePtr>{
      std::make_shared<nn::Conv2d>(cin, cout, 3, 1, 1, 1, 1, /*bias=*/false),
      std::make_shared<nn::BatchNorm2d>(cout), std::make_shared<nn::ReLU>()});
}

class Res : public nn::Module {
 public:
  explicit Res(int64_t c) : Module("Res") {
    f = register_module("f", std::make_shared<nn::Sequential>(
                                 std::initializer_list<nn::ModulePtr>{cbr(c, c), cbr(c, c)}));
  }
  Tensor forward(const Tensor& x) override { return x + f->forward(x); }
  std::shared_ptr<nn::Sequential> f;
};

class Net : public nn::Module {
 public:
  explicit Net(int64_t num_classes = 100) : Module("Net") {
    features = register_module(
        "features", std::make_shared<nn::Sequential>(std::initializer_list<nn::ModulePtr>{
                        cbr(3, 32), std::make_shared<Res>(32), std::make_shared<nn::MaxPool2d>(2),
                        cbr(32, 64), std::make_shared<Res>(64), std::make_shared<nn::MaxPool2d>(2),
                        cbr(64, 128)}));
    fc = register_module("fc", std::make_shared<nn::Linear>(128, num_classes));
  }
  Tensor forward(const Tensor& x) override { return fc->forward(features->forward(x).mean({2, 3})); }
  std::shared_ptr<nn::Sequential> features;
  std::shared_ptr<nn::Linear> fc;
};

// Forward multiply-accumulates per image of the convolutions and the linear layer, from the shapes
// (the peer asserts the same 48,083,456).
int64_t fwd_macs_per_image() {
  const int64_t convs[][4] = {{3, 32, 32, 1},  {32, 32, 32, 2}, {32, 64, 16, 1},
                              {64, 64, 16, 2}, {64, 128, 8, 1}};  // cin, cout, size, count
  int64_t macs = 128 * 100;
  for (const auto& c : convs) macs += c[3] * c[2] * c[2] * c[1] * c[0] * 9;
  return macs;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace step_bench;
  step_bench::Args defaults;
  defaults.batch = 128;
  const Args args = parse_args(argc, argv, defaults);
  mg::set_num_threads(args.threads);
  mg::manual_seed(0);
  const double rss_start = peak_rss_mb();

  auto model = std::make_shared<Net>();
  model->to(args.device);
  const Tensor x = mg::randn({args.batch, 3, 32, 32}).to(args.device);
  const Tensor y = mg::randint(0, 100, {args.batch}).to(args.device);
  int64_t params = 0;
  for (const Tensor& p : model->parameters()) params += p.numel();
  nn::SGD opt(model->parameters(), nn::SGDOptions(0.05).momentum(0.9).weight_decay(5e-4));
  std::vector<double> losses;

  auto step = [&] {
    opt.zero_grad(true);
    Tensor loss = mg::cross_entropy(model->forward(x), y);
    loss.backward();
    opt.step();
    losses.push_back(loss.item());
  };

  const Timing t = time_fn(step, args.warmup, args.steps);
  const double flop_step = 3.0 * 2.0 * fwd_macs_per_image() * args.batch;
  std::printf(
      "{\"bench\":\"cnn_step\",\"impl\":\"moegrad\",\"device\":\"%s\",\"threads\":%d,\"batch\":%d,"
      "\"channels_last\":false,\"ms_median\":%.3f,\"ms_min\":%.3f,\"ms_max\":%.3f,\"repeats\":%d,"
      "\"img_per_s_median\":%.1f,\"img_per_s_best\":%.1f,\"fwd_mflop_per_img\":%.3f,"
      "\"train_gflop_per_step_3x\":%.2f,\"achieved_gflops_median\":%.1f,\"params\":%lld,"
      "\"peak_rss_mb\":%.1f,\"rss_at_start_mb\":%.1f,\"loss_first\":%.4f,\"loss_last\":%.4f,"
      "\"load1\":%.2f,\"samples_ms\":%s}\n",
      args.device.str().c_str(), args.threads, args.batch, t.median, t.min, t.max, args.steps, args.batch / (t.median / 1e3),
      args.batch / (t.min / 1e3), 2.0 * fwd_macs_per_image() / 1e6, flop_step / 1e9,
      flop_step / (t.median / 1e3) / 1e9, static_cast<long long>(params), peak_rss_mb(), rss_start,
      losses.front(), losses.back(), load_average(), t.samples_json().c_str());
  std::fflush(stdout);

  if (args.profile) {
    mg::profiler::reset();
    mg::profiler::enable();
    const auto t0 = Clock::now();
    for (int i = 0; i < args.steps; ++i) step();
    const double wall = seconds_since(t0);
    mg::profiler::enable(false);
    std::fprintf(stderr, "# profile of %d cnn_step steps (threads %d): %.1f ms/step wall\n",
                 args.steps, args.threads, 1e3 * wall / args.steps);
    std::fputs(mg::profiler::report().c_str(), stderr);
  }
  return 0;
}
