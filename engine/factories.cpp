// Tensor factories: zeros, ones, full, arange, eye, from_vector (random ones are in generator.cpp).
#include <cmath>
#include <cstring>

#include "engine/backend.hpp"
#include "engine/tensor.hpp"

namespace mg {

Tensor empty(const Shape& sizes, TensorOptions options) { return Tensor::empty(sizes, options); }

Tensor full(const Shape& sizes, double value, TensorOptions options) {
  const bool wants_grad = options.requires_grad_;
  Tensor t = Tensor::empty(sizes, options.requires_grad(false));
  backend_of(t).fill(t, value);
  if (wants_grad) t.requires_grad_(true);
  return t;
}
Tensor zeros(const Shape& sizes, TensorOptions options) { return full(sizes, 0.0, options); }
Tensor ones(const Shape& sizes, TensorOptions options) { return full(sizes, 1.0, options); }
Tensor zeros_like(const Tensor& t) { return zeros(t.sizes(), t.options()); }
Tensor ones_like(const Tensor& t) { return ones(t.sizes(), t.options()); }
Tensor full_like(const Tensor& t, double value) { return full(t.sizes(), value, t.options()); }
Tensor empty_like(const Tensor& t) { return empty(t.sizes(), t.options()); }
Tensor scalar_tensor(double value, TensorOptions options) { return full({}, value, options); }

Tensor arange(double end, TensorOptions options) { return arange(0.0, end, 1.0, options); }

Tensor arange(double start, double end, double step, TensorOptions options) {
  MG_CHECK(step != 0.0, "arange: step must be non-zero");
  MG_CHECK((end - start) / step >= 0, "arange: the range [", start, ", ", end, ") with step ", step,
           " is empty in the wrong direction");
  const auto n = static_cast<int64_t>(std::ceil((end - start) / step));
  std::vector<double> values(n);
  for (int64_t i = 0; i < n; ++i) values[i] = start + static_cast<double>(i) * step;
  return from_vector(values, {n}, options);
}

Tensor eye(int64_t n, TensorOptions options) {
  std::vector<double> values(n * n, 0.0);
  for (int64_t i = 0; i < n; ++i) values[i * n + i] = 1.0;
  return from_vector(values, {n, n}, options);
}

template <class T>
Tensor from_vector(const std::vector<T>& data, const Shape& sizes, TensorOptions options) {
  MG_CHECK(static_cast<int64_t>(data.size()) == numel_of(sizes), "from_vector: ", data.size(),
           " values do not fill shape ", shape_str(sizes));
  const bool wants_grad = options.requires_grad_;
  const ScalarType target = options.dtype_;
  const Device device = options.device_;
  Tensor host = Tensor::empty(sizes, TensorOptions(dtype_of<T>::value));
  if (!data.empty()) std::memcpy(host.raw_data(), data.data(), data.size() * sizeof(T));
  Tensor t = host.to(target).to(device);
  if (wants_grad) t.requires_grad_(true);
  return t;
}
template Tensor from_vector<float>(const std::vector<float>&, const Shape&, TensorOptions);
template Tensor from_vector<double>(const std::vector<double>&, const Shape&, TensorOptions);
template Tensor from_vector<int32_t>(const std::vector<int32_t>&, const Shape&, TensorOptions);

}  // namespace mg
