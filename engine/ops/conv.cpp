// conv2d: argument checks with torch's rules, the forward through the backend, and the backward
//   grad_x      = col2im(W^T @ grad)            (backend conv2d_backward_input)
//   grad_weight = sum_n grad[n] @ im2col(x[n])^T (backend conv2d_backward_weight)
//   grad_bias   = grad summed over N, H, W.
// The backward calls kernels directly, so it is not itself differentiable (no double backward).
#include "engine/ops/conv.hpp"

#include "engine/autograd.hpp"
#include "engine/backend.hpp"
#include "engine/ops/reduce.hpp"
#include "engine/profiler.hpp"

namespace mg {
namespace {

std::string pair_str(int64_t h, int64_t w) { return detail::concat("(", h, ", ", w, ")"); }

Window2d conv_window(const Tensor& x, const Tensor& weight, Size2 stride, Size2 padding,
                     Size2 dilation) {
  MG_CHECK(stride.h > 0 && stride.w > 0 && dilation.h > 0 && dilation.w > 0 && padding.h >= 0 &&
               padding.w >= 0,
           "conv2d: stride and dilation must be positive and padding non-negative, got stride ",
           pair_str(stride.h, stride.w), ", padding ", pair_str(padding.h, padding.w),
           ", dilation ", pair_str(dilation.h, dilation.w));
  Window2d win;
  win.kernel_h = weight.size(2);
  win.kernel_w = weight.size(3);
  win.stride_h = stride.h;
  win.stride_w = stride.w;
  win.pad_h = padding.h;
  win.pad_w = padding.w;
  win.dilation_h = dilation.h;
  win.dilation_w = dilation.w;
  const int64_t extent_h = dilation.h * (win.kernel_h - 1) + 1;
  const int64_t extent_w = dilation.w * (win.kernel_w - 1) + 1;
  const int64_t padded_h = x.size(2) + 2 * padding.h, padded_w = x.size(3) + 2 * padding.w;
  MG_CHECK(extent_h <= padded_h && extent_w <= padded_w, "conv2d: kernel of size ",
           pair_str(win.kernel_h, win.kernel_w), " (", pair_str(extent_h, extent_w),
           " with dilation) is larger than the padded input ", pair_str(padded_h, padded_w),
           "; input shape ", shape_str(x.sizes()), ", weight shape ", shape_str(weight.sizes()));
  win.out_h = (padded_h - extent_h) / stride.h + 1;
  win.out_w = (padded_w - extent_w) / stride.w + 1;
  return win;
}

void check_conv_args(const Tensor& x, const Tensor& weight, const Tensor& bias, int64_t groups) {
  MG_CHECK(weight.dim() == 4, "conv2d: expected weight [O, C/groups, kh, kw], got shape ",
           shape_str(weight.sizes()), " for input shape ", shape_str(x.sizes()));
  MG_CHECK(x.is_floating_point(), "conv2d: expected a floating-point input, got ", dtype_name(x.dtype()));
  MG_CHECK(x.dtype() == weight.dtype() && (!bias.defined() || bias.dtype() == x.dtype()),
           "conv2d: dtype mismatch, input ", dtype_name(x.dtype()), ", weight ",
           dtype_name(weight.dtype()), bias.defined() ? ", bias " : "",
           bias.defined() ? dtype_name(bias.dtype()) : "");
  MG_CHECK(x.device() == weight.device() && (!bias.defined() || bias.device() == x.device()),
           "conv2d: input on ", x.device().str(), " but weight on ", weight.device().str());
  MG_CHECK(groups >= 1, "conv2d: groups must be positive, got ", groups);
  const int64_t C = x.size(1), O = weight.size(0);
  MG_CHECK(O % groups == 0, "conv2d: weight of shape ", shape_str(weight.sizes()), " has ", O,
           " output channels, not divisible by groups=", groups);
  MG_CHECK(C == weight.size(1) * groups, "conv2d: input of shape ", shape_str(x.sizes()), " has ", C,
           " channels but weight of shape ", shape_str(weight.sizes()), " with groups=", groups,
           " expects ", weight.size(1) * groups);
  MG_CHECK(!bias.defined() || bias.sizes() == Shape{O}, "conv2d: bias of shape ",
           shape_str(bias.sizes()), " does not match the ", O, " output channels of weight shape ",
           shape_str(weight.sizes()));
}

}  // namespace

Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias, Size2 stride,
              Size2 padding, Size2 dilation, int64_t groups) {
  MG_CHECK(x.dim() == 4 || x.dim() == 3, "conv2d: expected input [N, C, H, W] or [C, H, W], got shape ",
           shape_str(x.sizes()), " with weight shape ", shape_str(weight.sizes()));
  if (x.dim() == 3)
    return conv2d(x.unsqueeze(0), weight, bias, stride, padding, dilation, groups).squeeze(0);
  MG_PROFILE("conv2d");
  check_conv_args(x, weight, bias, groups);
  const Window2d win = conv_window(x, weight, stride, padding, dilation);

  Tensor x_c, w_c, out;
  {
    NoGradGuard no_grad;
    x_c = x.detach().contiguous();
    w_c = weight.detach().contiguous();
    out = Tensor::empty({x.size(0), weight.size(0), win.out_h, win.out_w}, x.options());
    backend_of(x).conv2d(x_c, w_c, bias.defined() ? bias.detach().contiguous() : Tensor(), win,
                         groups, out);
  }
  if (!any_requires_grad({&x, &weight, &bias})) return out;
  const bool need_x = x.requires_grad(), need_w = weight.requires_grad();
  const bool need_b = bias.defined() && bias.requires_grad();
  // Each gradient needs only the other operand: keep x alive only for grad_weight and the
  // weight only for grad_x.
  return record("conv2d", out, {x, weight, bias},
                [=, x_saved = need_w ? x_c : Tensor(), w_saved = need_x ? w_c : Tensor(),
                 x_sizes = x.sizes(), w_sizes = weight.sizes()](const TensorList& g) {
                  const Tensor grad = g[0].contiguous();
                  Backend& backend = backend_of(grad);
                  Tensor grad_x, grad_w, grad_b;
                  if (need_x) {
                    grad_x = Tensor::empty(x_sizes, grad.options());
                    backend.conv2d_backward_input(grad, w_saved, win, groups, grad_x);
                  }
                  if (need_w) {
                    grad_w = Tensor::empty(w_sizes, grad.options());
                    backend.conv2d_backward_weight(x_saved, grad, win, groups, grad_w);
                  }
                  if (need_b) grad_b = grad.sum({0, 2, 3});
                  return TensorList{grad_x, grad_w, grad_b};
                });
}

}  // namespace mg
