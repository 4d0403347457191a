// PyTorch-style printing: tensor([[1.0000, 2.0000], ...], dtype=float64, requires_grad=True).
// Floats use 4 decimals, or scientific notation when the magnitudes span a wide range, as torch.
#include <cmath>
#include <iomanip>
#include <sstream>

#include "engine/autograd.hpp"
#include "engine/tensor.hpp"

namespace mg {
namespace {

struct Format {
  bool integer = false;
  bool scientific = false;
  int width = 1;
};

std::string format_value(double v, const Format& f) {
  std::ostringstream os;
  if (f.integer) {
    os << static_cast<int64_t>(v);
  } else if (std::isnan(v)) {
    os << "nan";
  } else if (std::isinf(v)) {
    os << (v > 0 ? "inf" : "-inf");
  } else if (f.scientific) {
    os << std::scientific << std::setprecision(4) << v;
  } else {
    os << std::fixed << std::setprecision(4) << v;
  }
  return os.str();
}

void print_dim(std::ostream& os, const std::vector<double>& values, const Shape& sizes, size_t d,
               int64_t offset, const Format& f, int indent) {
  if (d == sizes.size()) {
    std::string s = format_value(values[offset], f);
    os << std::string(std::max<int>(0, f.width - static_cast<int>(s.size())), ' ') << s;
    return;
  }
  int64_t inner = 1;
  for (size_t i = d + 1; i < sizes.size(); ++i) inner *= sizes[i];
  os << '[';
  const int64_t n = sizes[d];
  const bool summarize = n > 6 && numel_of(sizes) > 1000;  // torch summarizes past 1000 elements
  for (int64_t i = 0; i < n; ++i) {
    if (summarize && i == 3) {
      os << (d + 1 == sizes.size() ? "..., " : "...,\n" + std::string(indent + 1, ' '));
      i = n - 3;
    }
    print_dim(os, values, sizes, d + 1, offset + i * inner, f, indent + 1);
    if (i + 1 < n) {
      if (d + 1 == sizes.size()) os << ", ";
      else os << ',' << std::string(sizes.size() - d - 1, '\n') << std::string(indent + 1, ' ');
    }
  }
  os << ']';
}

}  // namespace

std::string Tensor::to_string() const {
  if (!defined()) return "[ undefined Tensor ]";
  std::vector<double> values = to_vector<double>();
  Format f;
  f.integer = dtype() == kInt32;
  if (!f.integer) {
    double max_abs = 0, min_abs = INFINITY;
    for (double v : values) {
      if (!std::isfinite(v) || v == 0) continue;
      max_abs = std::max(max_abs, std::abs(v));
      min_abs = std::min(min_abs, std::abs(v));
    }
    f.scientific = max_abs >= 1e8 || (max_abs > 0 && (max_abs / min_abs > 1000 || min_abs < 1e-4));
  }
  for (double v : values) f.width = std::max<int>(f.width, format_value(v, f).size());
  std::ostringstream os;
  os << "tensor(";
  if (dim() == 0) os << format_value(values[0], f);
  else print_dim(os, values, sizes(), 0, 0, f, 7);
  if (numel() == 0) os << ", size=" << shape_str(sizes());
  if (dtype() != kFloat32) os << ", dtype=" << dtype_name(dtype());
  if (!device().is_cpu()) os << ", device='" << device().str() << "'";
  if (grad_fn()) os << ", grad_fn=<" << grad_fn()->name() << "Backward>";
  else if (requires_grad()) os << ", requires_grad=True";
  os << ')';
  return os.str();
}

std::ostream& operator<<(std::ostream& os, const Tensor& t) { return os << t.to_string(); }

}  // namespace mg
