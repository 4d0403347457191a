// Conv2d's init is torch's: kaiming_uniform_(a = sqrt(5)) for the weight, which is
// U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with fan_in = in / groups * kh * kw, and the same bound for
// the bias. The reprs print sizes as torch does: tuples for Conv2d, plain numbers for square pools.
#include "nn/conv.hpp"

#include <cmath>

#include "nn/init.hpp"

namespace mg::nn {
namespace {

std::string tuple_str(Size2 s) { return detail::concat("(", s.h, ", ", s.w, ")"); }
std::string size_str(Size2 s) { return s.h == s.w ? std::to_string(s.h) : tuple_str(s); }

// The expected [C, H, W] or [N, C, H, W] input with `channels` channels (any when 0).
void check_input(const char* module, const Tensor& x, int64_t channels) {
  MG_CHECK(x.dim() == 3 || x.dim() == 4, module, ": expected input [N, C, H, W] or [C, H, W], got shape ",
           shape_str(x.sizes()));
  MG_CHECK(channels == 0 || x.size(-3) == channels, module, ": input of shape ", shape_str(x.sizes()),
           " has ", x.size(-3), " channels, expected ", channels);
}

}  // namespace

Conv2d::Conv2d(int64_t in, int64_t out, Size2 kernel, Size2 stride_, Size2 padding_,
               Size2 dilation_, int64_t groups_, bool with_bias)
    : Module("Conv2d"), in_channels(in), out_channels(out), kernel_size(kernel), stride(stride_),
      padding(padding_), dilation(dilation_), groups(groups_) {
  MG_CHECK(in > 0 && out > 0 && kernel.h > 0 && kernel.w > 0, "Conv2d: channels and kernel size "
           "must be positive, got ", in, " -> ", out, " with kernel ", tuple_str(kernel));
  MG_CHECK(groups > 0 && in % groups == 0 && out % groups == 0, "Conv2d: in_channels ", in,
           " and out_channels ", out, " must both be divisible by groups=", groups);
  weight = register_parameter("weight", empty({out, in / groups, kernel.h, kernel.w}));
  if (with_bias) bias = register_parameter("bias", empty({out}));
  reset_parameters();
}

void Conv2d::reset_parameters() {
  init::kaiming_uniform_(weight, std::sqrt(5.0));
  if (bias.defined()) {
    const double fan_in = static_cast<double>(init::calculate_fan_in_and_fan_out(weight).first);
    const double bound = 1.0 / std::sqrt(fan_in);
    init::uniform_(bias, -bound, bound);
  }
}

Tensor Conv2d::forward(const Tensor& x) {
  check_input("Conv2d", x, in_channels);
  return conv2d(x, weight, bias, stride, padding, dilation, groups);
}

std::string Conv2d::extra_repr() const {
  std::string s = detail::concat(in_channels, ", ", out_channels, ", kernel_size=", tuple_str(kernel_size),
                                 ", stride=", tuple_str(stride));
  if (padding != Size2(0)) s += ", padding=" + tuple_str(padding);
  if (dilation != Size2(1)) s += ", dilation=" + tuple_str(dilation);
  if (groups != 1) s += detail::concat(", groups=", groups);
  if (!bias.defined()) s += ", bias=False";
  return s;
}

MaxPool2d::MaxPool2d(Size2 kernel, std::optional<Size2> stride_, Size2 padding_, Size2 dilation_,
                     bool ceil_mode_)
    : Module("MaxPool2d"), kernel_size(kernel), stride(stride_.value_or(kernel)), padding(padding_),
      dilation(dilation_), ceil_mode(ceil_mode_) {}

Tensor MaxPool2d::forward(const Tensor& x) {
  check_input("MaxPool2d", x, 0);
  return max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode);
}

std::string MaxPool2d::extra_repr() const {
  return detail::concat("kernel_size=", size_str(kernel_size), ", stride=", size_str(stride),
                        ", padding=", size_str(padding), ", dilation=", size_str(dilation),
                        ", ceil_mode=", ceil_mode ? "True" : "False");
}

AvgPool2d::AvgPool2d(Size2 kernel, std::optional<Size2> stride_, Size2 padding_, bool ceil_mode_,
                     bool count_include_pad_)
    : Module("AvgPool2d"), kernel_size(kernel), stride(stride_.value_or(kernel)), padding(padding_),
      ceil_mode(ceil_mode_), count_include_pad(count_include_pad_) {}

Tensor AvgPool2d::forward(const Tensor& x) {
  check_input("AvgPool2d", x, 0);
  return avg_pool2d(x, kernel_size, stride, padding, ceil_mode, count_include_pad);
}

std::string AvgPool2d::extra_repr() const {
  std::string s = detail::concat("kernel_size=", size_str(kernel_size), ", stride=", size_str(stride),
                                 ", padding=", size_str(padding));
  if (ceil_mode) s += ", ceil_mode=True";
  if (!count_include_pad) s += ", count_include_pad=False";
  return s;
}

AdaptiveAvgPool2d::AdaptiveAvgPool2d(Size2 size) : Module("AdaptiveAvgPool2d"), output_size(size) {}

Tensor AdaptiveAvgPool2d::forward(const Tensor& x) {
  check_input("AdaptiveAvgPool2d", x, 0);
  return adaptive_avg_pool2d(x, output_size);
}

std::string AdaptiveAvgPool2d::extra_repr() const { return "output_size=" + size_str(output_size); }

}  // namespace mg::nn
