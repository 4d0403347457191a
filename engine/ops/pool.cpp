// max_pool2d, avg_pool2d and adaptive_avg_pool2d. The window arithmetic (output sizes, ceil_mode,
// padding in the divisor) follows torch's ATen/native/Pool.h and AdaptivePooling.h and lives here
// only; the backends receive finished windows.
#include "engine/ops/pool.hpp"

#include <algorithm>

#include "engine/autograd.hpp"
#include "engine/backend.hpp"
#include "engine/profiler.hpp"

namespace mg {
namespace {

std::string pair_str(Size2 s) { return detail::concat("(", s.h, ", ", s.w, ")"); }

void check_pool_input(const char* op, const Tensor& x) {
  MG_CHECK(x.dim() == 4 || x.dim() == 3, op, ": expected input [N, C, H, W] or [C, H, W], got shape ",
           shape_str(x.sizes()));
  MG_CHECK(x.is_floating_point(), op, ": expected a floating-point input, got ", dtype_name(x.dtype()));
}

// Runs a 4-d pooling on an unbatched [C, H, W] input by adding and removing the batch dim.
template <class F>
Tensor batched(const Tensor& x, const F& pool4d) {
  return x.dim() == 3 ? pool4d(x.unsqueeze(0)).squeeze(0) : pool4d(x);
}

// torch's pooling_output_shape: with ceil_mode the last window must still start inside the input
// or its left padding.
int64_t pool_out_size(int64_t in, int64_t kernel, int64_t stride, int64_t pad, int64_t dilation,
                      bool ceil_mode) {
  const int64_t span = in + 2 * pad - dilation * (kernel - 1) - 1;  // >= 0, checked by the caller
  int64_t out = (ceil_mode ? span + stride - 1 : span) / stride + 1;
  if (ceil_mode && (out - 1) * stride >= in + pad) --out;
  return out;
}

Window2d pool_window(const char* op, const Tensor& x, Size2 kernel, Size2 stride, Size2 padding,
                     Size2 dilation, bool ceil_mode) {
  MG_CHECK(kernel.h > 0 && kernel.w > 0 && stride.h > 0 && stride.w > 0 && dilation.h > 0 &&
               dilation.w > 0 && padding.h >= 0 && padding.w >= 0,
           op, ": kernel, stride and dilation must be positive and padding non-negative, got kernel ",
           pair_str(kernel), ", stride ", pair_str(stride), ", padding ", pair_str(padding),
           ", dilation ", pair_str(dilation));
  const Size2 extent{dilation.h * (kernel.h - 1) + 1, dilation.w * (kernel.w - 1) + 1};
  MG_CHECK(padding.h <= extent.h / 2 && padding.w <= extent.w / 2, op, ": padding ",
           pair_str(padding), " must be at most half of the kernel extent ", pair_str(extent));
  const int64_t H = x.size(2), W = x.size(3);
  MG_CHECK(extent.h <= H + 2 * padding.h && extent.w <= W + 2 * padding.w, op, ": kernel ",
           pair_str(kernel), " (extent ", pair_str(extent), ") is larger than the padded input (",
           H + 2 * padding.h, ", ", W + 2 * padding.w, ") of input shape ", shape_str(x.sizes()));
  Window2d win;
  win.kernel_h = kernel.h;
  win.kernel_w = kernel.w;
  win.stride_h = stride.h;
  win.stride_w = stride.w;
  win.pad_h = padding.h;
  win.pad_w = padding.w;
  win.dilation_h = dilation.h;
  win.dilation_w = dilation.w;
  win.out_h = pool_out_size(H, kernel.h, stride.h, padding.h, dilation.h, ceil_mode);
  win.out_w = pool_out_size(W, kernel.w, stride.w, padding.w, dilation.w, ceil_mode);
  return win;
}

// avg_pool2d's windows along one dim: the divisor with padding counts the window clipped to the
// padded input, without padding the window clipped to the input (torch's avg_pool2d kernel).
void avg_windows_1d(int64_t in, int64_t out, int64_t kernel, int64_t stride, int64_t pad,
                    bool count_include_pad, std::vector<int64_t>& begin, std::vector<int64_t>& end,
                    std::vector<double>& div) {
  for (int64_t o = 0; o < out; ++o) {
    int64_t b = o * stride - pad, e = std::min(b + kernel, in + pad);
    const int64_t padded = e - b;
    b = std::max<int64_t>(b, 0);
    e = std::min(e, in);
    begin.push_back(b);
    end.push_back(e);
    div.push_back(static_cast<double>(count_include_pad ? padded : e - b));
  }
}

// adaptive_avg_pool2d's windows along one dim: [floor(o * in / out), ceil((o + 1) * in / out)).
void adaptive_windows_1d(int64_t in, int64_t out, std::vector<int64_t>& begin,
                         std::vector<int64_t>& end, std::vector<double>& div) {
  for (int64_t o = 0; o < out; ++o) {
    begin.push_back(o * in / out);
    end.push_back(((o + 1) * in + out - 1) / out);
    div.push_back(static_cast<double>(end.back() - begin.back()));
  }
}

// The forward and backward shared by avg_pool2d and adaptive_avg_pool2d.
Tensor avg_pool_with(const char* op, const Tensor& x, const AvgWindows& windows) {
  profiler::Scope scope(op);
  Tensor out;
  {
    NoGradGuard no_grad;
    out = Tensor::empty({x.size(0), x.size(1), static_cast<int64_t>(windows.row_begin.size()),
                         static_cast<int64_t>(windows.col_begin.size())},
                        x.options());
    backend_of(x).avg_pool2d(x.detach().contiguous(), windows, out);
  }
  if (!any_requires_grad({&x})) return out;
  return record(op, out, {x}, [windows, x_sizes = x.sizes()](const TensorList& g) {
    const Tensor grad = g[0].contiguous();
    Tensor grad_x = Tensor::empty(x_sizes, grad.options());
    backend_of(grad).avg_pool2d_backward(grad, windows, grad_x);
    return TensorList{grad_x};
  });
}

}  // namespace

Tensor max_pool2d(const Tensor& x, Size2 kernel, std::optional<Size2> stride, Size2 padding,
                  Size2 dilation, bool ceil_mode) {
  check_pool_input("max_pool2d", x);
  return batched(x, [&](const Tensor& x4) {
    MG_PROFILE("max_pool2d");
    const Window2d win =
        pool_window("max_pool2d", x4, kernel, stride.value_or(kernel), padding, dilation, ceil_mode);
    Tensor out, indices;
    {
      NoGradGuard no_grad;
      const Shape out_shape{x4.size(0), x4.size(1), win.out_h, win.out_w};
      out = Tensor::empty(out_shape, x4.options());
      indices = Tensor::empty(out_shape, x4.options().dtype(kInt32));
      backend_of(x4).max_pool2d(x4.detach().contiguous(), win, out, indices);
    }
    if (!any_requires_grad({&x4})) return out;
    return record("max_pool2d", out, {x4}, [indices, x_sizes = x4.sizes()](const TensorList& g) {
      const Tensor grad = g[0].contiguous();
      Tensor grad_x = Tensor::empty(x_sizes, grad.options());
      backend_of(grad).max_pool2d_backward(grad, indices, grad_x);
      return TensorList{grad_x};
    });
  });
}

Tensor avg_pool2d(const Tensor& x, Size2 kernel, std::optional<Size2> stride, Size2 padding,
                  bool ceil_mode, bool count_include_pad) {
  check_pool_input("avg_pool2d", x);
  return batched(x, [&](const Tensor& x4) {
    const Size2 s = stride.value_or(kernel);
    const Window2d win = pool_window("avg_pool2d", x4, kernel, s, padding, 1, ceil_mode);
    AvgWindows windows;
    avg_windows_1d(x4.size(2), win.out_h, kernel.h, s.h, padding.h, count_include_pad,
                   windows.row_begin, windows.row_end, windows.row_div);
    avg_windows_1d(x4.size(3), win.out_w, kernel.w, s.w, padding.w, count_include_pad,
                   windows.col_begin, windows.col_end, windows.col_div);
    return avg_pool_with("avg_pool2d", x4, windows);
  });
}

Tensor adaptive_avg_pool2d(const Tensor& x, Size2 output_size) {
  check_pool_input("adaptive_avg_pool2d", x);
  MG_CHECK(output_size.h > 0 && output_size.w > 0, "adaptive_avg_pool2d: output size must be "
           "positive, got ", pair_str(output_size), " for input shape ", shape_str(x.sizes()));
  MG_CHECK(x.size(-1) > 0 && x.size(-2) > 0, "adaptive_avg_pool2d: empty spatial dims in input shape ",
           shape_str(x.sizes()));
  return batched(x, [&](const Tensor& x4) {
    AvgWindows windows;
    adaptive_windows_1d(x4.size(2), output_size.h, windows.row_begin, windows.row_end, windows.row_div);
    adaptive_windows_1d(x4.size(3), output_size.w, windows.col_begin, windows.col_end, windows.col_div);
    return avg_pool_with("adaptive_avg_pool2d", x4, windows);
  });
}

}  // namespace mg
