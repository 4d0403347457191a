// mg::Tensor: an n-d view (shape, strides, offset) into shared Storage, plus the autograd metadata
// that connects it to the graph. The method names mirror libtorch's torch::Tensor.
// Op methods (t.exp(), t.sum(...)) are thin forwards to the free functions in engine/ops/*.hpp,
// defined beside each op's forward and backward.
#pragma once
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "engine/dtype.hpp"
#include "engine/shape.hpp"
#include "engine/storage.hpp"

namespace mg {

class Tensor;
class Node;
using TensorList = std::vector<Tensor>;
// A gradient hook sees the incoming gradient and may return a replacement (or an undefined tensor
// to keep it), like torch::Tensor::register_hook.
using GradHook = std::function<Tensor(const Tensor&)>;

struct AutogradMeta {
  bool requires_grad = false;
  std::shared_ptr<struct TensorImpl> grad;
  std::shared_ptr<Node> grad_fn;  // null for leaves
  uint32_t output_nr = 0;         // which output of grad_fn this tensor is
  std::weak_ptr<Node> grad_accumulator;  // leaves: cached AccumulateGrad node
  std::vector<GradHook> leaf_hooks;
  bool retains_grad = false;
};

struct TensorImpl {
  std::shared_ptr<Storage> storage;
  Shape sizes;
  Shape strides;
  int64_t offset = 0;  // in elements
  ScalarType dtype = kFloat32;
  AutogradMeta autograd;
};

struct TensorOptions {
  ScalarType dtype_ = kFloat32;
  Device device_ = Device::cpu();
  bool requires_grad_ = false;
  TensorOptions() = default;
  TensorOptions(ScalarType t) : dtype_(t) {}  // NOLINT: implicit, as torch::TensorOptions
  TensorOptions(Device d) : device_(d) {}     // NOLINT
  TensorOptions dtype(ScalarType t) const { auto o = *this; o.dtype_ = t; return o; }
  TensorOptions device(Device d) const { auto o = *this; o.device_ = d; return o; }
  TensorOptions requires_grad(bool r = true) const { auto o = *this; o.requires_grad_ = r; return o; }
};
inline TensorOptions dtype(ScalarType t) { return TensorOptions().dtype(t); }
inline TensorOptions device(Device d) { return TensorOptions().device(d); }
inline TensorOptions requires_grad(bool r = true) { return TensorOptions().requires_grad(r); }

enum class Reduction { None, Mean, Sum };
inline constexpr Reduction kNone = Reduction::None;
inline constexpr Reduction kMean = Reduction::Mean;
inline constexpr Reduction kSum = Reduction::Sum;

class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}
  // A fresh contiguous tensor with uninitialized data.
  static Tensor empty(const Shape& sizes, TensorOptions options = {});

  bool defined() const { return impl_ != nullptr; }
  const std::shared_ptr<TensorImpl>& impl() const { return impl_; }
  bool is_same(const Tensor& o) const { return impl_ == o.impl_; }

  // ---- metadata
  const Shape& sizes() const { return ref().sizes; }
  const Shape& shape() const { return ref().sizes; }
  int64_t size(int64_t dim) const;
  const Shape& strides() const { return ref().strides; }
  int64_t stride(int64_t dim) const;
  int64_t dim() const { return static_cast<int64_t>(ref().sizes.size()); }
  int64_t numel() const { return numel_of(ref().sizes); }
  int64_t storage_offset() const { return ref().offset; }
  ScalarType dtype() const { return ref().dtype; }
  ScalarType scalar_type() const { return ref().dtype; }
  Device device() const { return ref().storage->device(); }
  bool is_cuda() const { return device().is_cuda(); }
  bool is_floating_point() const { return mg::is_floating_point(dtype()); }
  size_t element_size() const { return mg::element_size(dtype()); }
  bool is_contiguous() const;
  bool shares_storage(const Tensor& o) const { return ref().storage == o.ref().storage; }
  TensorOptions options() const { return TensorOptions().dtype(dtype()).device(device()); }

  // ---- data access (CPU). data_ptr<T>() checks that T matches the dtype.
  template <class T> T* data_ptr() const;
  void* raw_data() const;  // address of element 0 of this view, untyped
  template <class T> T item() const;
  double item() const;
  template <class T> std::vector<T> to_vector() const;  // logical order, any strides
  std::string to_string() const;                          // PyTorch-style printing

  // ---- autograd
  bool requires_grad() const { return ref().autograd.requires_grad; }
  Tensor& requires_grad_(bool requires_grad = true);
  Tensor& set_requires_grad(bool requires_grad) { return requires_grad_(requires_grad); }
  bool is_leaf() const { return ref().autograd.grad_fn == nullptr; }
  const std::shared_ptr<Node>& grad_fn() const { return ref().autograd.grad_fn; }
  uint32_t output_nr() const { return ref().autograd.output_nr; }
  Tensor grad() const;  // undefined when no gradient has been accumulated
  void set_grad(const Tensor& grad);
  Tensor& mutable_grad_zero_();  // zeroes grad in place when it exists (optimizer's zero_grad)
  void retain_grad();
  bool retains_grad() const { return ref().autograd.retains_grad; }
  void register_hook(GradHook hook);
  // Gradient of this tensor w.r.t. the leaves. `gradient` is required unless this is a scalar.
  void backward(const Tensor& gradient = {}, bool retain_graph = false) const;
  Tensor detach() const;  // shares storage, no history
  Tensor& detach_();

  // ---- copies and in-place fills (not recorded: use on leaves under NoGradGuard or on data)
  Tensor contiguous() const;
  Tensor clone() const;
  Tensor& copy_(const Tensor& src);
  Tensor& fill_(double value);
  // Points this tensor (and every handle to it) at src's data, shape and dtype, keeping its
  // autograd identity: how modules move parameters between devices and dtypes in place, as
  // torch's `param.data = ...`.
  void set_data(const Tensor& src);
  Tensor& zero_() { return fill_(0.0); }
  Tensor to(ScalarType dtype) const;
  Tensor to(Device device) const;

  // ---- views (share storage; recorded by autograd)
  Tensor view(const Shape& sizes) const;
  Tensor reshape(const Shape& sizes) const;
  Tensor flatten(int64_t start_dim = 0, int64_t end_dim = -1) const;
  Tensor transpose(int64_t dim0, int64_t dim1) const;
  Tensor t() const;
  Tensor permute(const Shape& dims) const;
  Tensor unsqueeze(int64_t dim) const;
  Tensor squeeze() const;
  Tensor squeeze(int64_t dim) const;
  Tensor expand(const Shape& sizes) const;
  Tensor expand_as(const Tensor& other) const { return expand(other.sizes()); }
  Tensor narrow(int64_t dim, int64_t start, int64_t length) const;
  Tensor slice(int64_t dim, int64_t start, int64_t end, int64_t step = 1) const;
  Tensor select(int64_t dim, int64_t index) const;
  Tensor operator[](int64_t index) const { return select(0, index); }

  // ---- element-wise (engine/ops/elementwise.hpp)
  Tensor neg() const;
  Tensor exp() const;
  Tensor log() const;
  Tensor sqrt() const;
  Tensor rsqrt() const;
  Tensor abs() const;
  Tensor relu() const;
  Tensor sigmoid() const;
  Tensor tanh() const;
  Tensor pow(double exponent) const;
  Tensor pow(const Tensor& exponent) const;
  Tensor clamp(std::optional<double> min, std::optional<double> max) const;
  Tensor add(const Tensor& other) const;
  Tensor sub(const Tensor& other) const;
  Tensor mul(const Tensor& other) const;
  Tensor div(const Tensor& other) const;
  Tensor masked_fill(const Tensor& mask, double value) const;

  // ---- reductions (engine/ops/reduce.hpp); an empty dims list means all dims
  Tensor sum() const;
  Tensor sum(const Shape& dims, bool keepdim = false) const;
  Tensor mean() const;
  Tensor mean(const Shape& dims, bool keepdim = false) const;
  Tensor var(const Shape& dims, bool unbiased = true, bool keepdim = false) const;
  Tensor std(const Shape& dims, bool unbiased = true, bool keepdim = false) const;
  Tensor max() const;
  Tensor min() const;
  std::tuple<Tensor, Tensor> max(int64_t dim, bool keepdim = false) const;
  std::tuple<Tensor, Tensor> min(int64_t dim, bool keepdim = false) const;
  Tensor argmax(std::optional<int64_t> dim = std::nullopt, bool keepdim = false) const;
  Tensor logsumexp(const Shape& dims, bool keepdim = false) const;
  Tensor norm(double p = 2.0) const;

  // ---- linear algebra, softmax, indexing
  Tensor matmul(const Tensor& other) const;
  Tensor softmax(int64_t dim) const;
  Tensor log_softmax(int64_t dim) const;
  Tensor index_select(int64_t dim, const Tensor& index) const;
  Tensor gather(int64_t dim, const Tensor& index) const;
  Tensor scatter_add(int64_t dim, const Tensor& index, const Tensor& src) const;
  Tensor index_add(int64_t dim, const Tensor& index, const Tensor& source) const;
  std::tuple<Tensor, Tensor> topk(int64_t k, int64_t dim = -1, bool largest = true,
                                  bool sorted = true) const;
  std::tuple<Tensor, Tensor> sort(int64_t dim = -1, bool descending = false) const;
  Tensor argsort(int64_t dim = -1, bool descending = false) const;
  Tensor repeat(const Shape& repeats) const;
  TensorList split(int64_t split_size, int64_t dim = 0) const;
  TensorList chunk(int64_t chunks, int64_t dim = 0) const;

 private:
  TensorImpl& ref() const;  // checked access: throws on an undefined tensor
  Tensor view_as_shape_(const Shape& shape) const;  // add/remove size-1 dims (views.cpp)
  std::shared_ptr<TensorImpl> impl_;
};

std::ostream& operator<<(std::ostream& os, const Tensor& t);

// ---- factories (engine/factories.cpp)
Tensor empty(const Shape& sizes, TensorOptions options = {});
Tensor zeros(const Shape& sizes, TensorOptions options = {});
Tensor ones(const Shape& sizes, TensorOptions options = {});
Tensor full(const Shape& sizes, double value, TensorOptions options = {});
Tensor zeros_like(const Tensor& t);
Tensor ones_like(const Tensor& t);
Tensor full_like(const Tensor& t, double value);
Tensor empty_like(const Tensor& t);
Tensor scalar_tensor(double value, TensorOptions options = {});
Tensor arange(double end, TensorOptions options = {});
Tensor arange(double start, double end, double step = 1.0, TensorOptions options = {});
Tensor eye(int64_t n, TensorOptions options = {});
template <class T>
Tensor from_vector(const std::vector<T>& data, const Shape& sizes, TensorOptions options = {});
// Builds a tensor from nested data: tensor({1.f, 2.f}) is 1-d; use from_vector for more dims.
template <class T>
Tensor tensor(std::initializer_list<T> data, TensorOptions options = dtype_of<T>::value) {
  return from_vector(std::vector<T>(data), {static_cast<int64_t>(data.size())}, options);
}

}  // namespace mg
