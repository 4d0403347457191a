// Tensor metadata, data access, copies and the autograd entry points (backward, grad, hooks).
#include "engine/tensor.hpp"

#include <cmath>
#include <cstring>

#include "engine/autograd.hpp"
#include "engine/backend.hpp"
#include "engine/ops/elementwise.hpp"
#include "engine/profiler.hpp"

namespace mg {

Storage::Storage(size_t nbytes, Device device) : nbytes_(nbytes), device_(device) {
  data_ = backend_for(device).allocate(nbytes);
}

Storage::~Storage() { backend_for(device_).deallocate(data_); }

TensorImpl& Tensor::ref() const {
  MG_CHECK(impl_ != nullptr, "Tensor: operation on an undefined tensor");
  return *impl_;
}

Tensor Tensor::empty(const Shape& sizes, TensorOptions options) {
  for (int64_t s : sizes) MG_CHECK(s >= 0, "empty: negative dimension in shape ", shape_str(sizes));
  auto impl = std::make_shared<TensorImpl>();
  const int64_t n = numel_of(sizes);
  impl->storage = std::make_shared<Storage>(static_cast<size_t>(n) * mg::element_size(options.dtype_),
                                            options.device_);
  impl->sizes = sizes;
  impl->strides = contiguous_strides(sizes);
  impl->dtype = options.dtype_;
  Tensor t(std::move(impl));
  if (options.requires_grad_) t.requires_grad_(true);
  return t;
}

int64_t Tensor::size(int64_t dim) const { return sizes()[wrap_dim("size", dim, this->dim())]; }
int64_t Tensor::stride(int64_t dim) const { return strides()[wrap_dim("stride", dim, this->dim())]; }

bool Tensor::is_contiguous() const {
  if (numel() == 0) return true;  // no element to misplace, as torch
  int64_t expected = 1;
  for (int64_t i = dim() - 1; i >= 0; --i) {
    if (sizes()[i] == 1) continue;
    if (strides()[i] != expected) return false;
    expected *= sizes()[i];
  }
  return true;
}

void* Tensor::raw_data() const {
  return static_cast<char*>(ref().storage->data()) + ref().offset * element_size();
}

template <class T>
T* Tensor::data_ptr() const {
  MG_CHECK(dtype() == dtype_of<T>::value, "data_ptr: tensor has dtype ", dtype_name(dtype()),
           ", asked for ", dtype_name(dtype_of<T>::value));
  return static_cast<T*>(raw_data());
}
template float* Tensor::data_ptr<float>() const;
template double* Tensor::data_ptr<double>() const;
template int32_t* Tensor::data_ptr<int32_t>() const;

template <class T>
std::vector<T> Tensor::to_vector() const {
  Tensor src = device().is_cpu() ? *this : to(Device::cpu());
  if (src.dtype() != dtype_of<T>::value) src = src.to(dtype_of<T>::value);
  src = src.contiguous();
  const T* p = src.data_ptr<T>();
  return std::vector<T>(p, p + src.numel());
}
template std::vector<float> Tensor::to_vector<float>() const;
template std::vector<double> Tensor::to_vector<double>() const;
template std::vector<int32_t> Tensor::to_vector<int32_t>() const;

template <class T>
T Tensor::item() const {
  MG_CHECK(numel() == 1, "item: expected a tensor with one element, got shape ", shape_str(sizes()));
  return to_vector<T>()[0];
}
template float Tensor::item<float>() const;
template double Tensor::item<double>() const;
template int32_t Tensor::item<int32_t>() const;
double Tensor::item() const { return item<double>(); }

// ---- autograd entry points

Tensor& Tensor::requires_grad_(bool requires_grad) {
  MG_CHECK(!requires_grad || is_floating_point(), "requires_grad_: only floating-point tensors can "
           "require gradients, got ", dtype_name(dtype()));
  MG_CHECK(requires_grad || is_leaf(), "requires_grad_: cannot turn off requires_grad on a non-leaf "
           "tensor; use detach()");
  ref().autograd.requires_grad = requires_grad;
  return *this;
}

Tensor Tensor::grad() const {
  const auto& g = ref().autograd.grad;
  return g ? Tensor(g) : Tensor();
}

void Tensor::set_grad(const Tensor& grad) {
  MG_CHECK(!grad.defined() || grad.sizes() == sizes(), "set_grad: gradient of shape ",
           shape_str(grad.sizes()), " for a tensor of shape ", shape_str(sizes()));
  ref().autograd.grad = grad.defined() ? grad.impl_ : nullptr;
}

Tensor& Tensor::mutable_grad_zero_() {
  if (ref().autograd.grad) Tensor(ref().autograd.grad).zero_();
  return *this;
}

void Tensor::retain_grad() {
  MG_CHECK(requires_grad(), "retain_grad: tensor does not require grad");
  if (is_leaf() || retains_grad()) return;
  ref().autograd.retains_grad = true;
  std::weak_ptr<TensorImpl> weak = impl_;
  grad_fn()->add_output_hook(output_nr(), [weak](const Tensor& g) {
    if (auto self = weak.lock()) {
      auto& slot = self->autograd.grad;
      slot = slot ? (Tensor(slot) + g).impl() : g.clone().impl();
    }
    return Tensor();
  });
}

void Tensor::register_hook(GradHook hook) {
  MG_CHECK(requires_grad(), "register_hook: cannot register a hook on a tensor that does not "
           "require grad");
  if (is_leaf())
    ref().autograd.leaf_hooks.push_back(std::move(hook));
  else
    grad_fn()->add_output_hook(output_nr(), std::move(hook));
}

void Tensor::backward(const Tensor& gradient, bool retain_graph) const {
  autograd::backward({*this}, {gradient}, retain_graph);
}

Tensor Tensor::detach() const {
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = this->ref().storage;
  impl->sizes = sizes();
  impl->strides = strides();
  impl->offset = storage_offset();
  impl->dtype = dtype();
  return Tensor(std::move(impl));
}

Tensor& Tensor::detach_() {
  auto& meta = ref().autograd;
  meta.grad_fn.reset();
  meta.output_nr = 0;
  meta.requires_grad = false;
  meta.retains_grad = false;
  return *this;
}

// ---- copies

Tensor Tensor::contiguous() const { return is_contiguous() ? *this : clone(); }

Tensor Tensor::clone() const {
  MG_PROFILE("clone");
  Tensor out = Tensor::empty(sizes(), options());
  backend_of(*this).copy(*this, out);
  return record("clone", out, {*this}, [](const TensorList& g) { return TensorList{g[0]}; });
}

Tensor& Tensor::copy_(const Tensor& src) {
  MG_CHECK(src.sizes() == sizes() || broadcast_shapes("copy_", src.sizes(), sizes()) == sizes(),
           "copy_: cannot copy a tensor of shape ", shape_str(src.sizes()), " into shape ",
           shape_str(sizes()));
  MG_CHECK(!(requires_grad() && GradMode::is_enabled()), "copy_: in-place write into a tensor that "
           "requires grad; wrap it in NoGradGuard");
  Tensor s = src.expand(sizes());
  if (s.device() == device()) {
    backend_of(*this).copy(s, *this);
  } else {
    // Cross-device: stage through a contiguous host buffer. The CUDA backend's copy handles the
    // host<->device direction for contiguous tensors.
    Tensor staged = s.contiguous();
    if (staged.dtype() != dtype()) staged = staged.to(dtype());
    backend_for(device().is_cpu() ? staged.device() : device()).copy(staged, *this);
  }
  return *this;
}

Tensor& Tensor::fill_(double value) {
  MG_CHECK(!(requires_grad() && GradMode::is_enabled()), "fill_: in-place write into a tensor that "
           "requires grad; wrap it in NoGradGuard");
  backend_of(*this).fill(*this, value);
  return *this;
}

void Tensor::set_data(const Tensor& src) {
  MG_CHECK(is_leaf(), "set_data: only leaf tensors can have their data replaced");
  MG_CHECK(!requires_grad() || src.is_floating_point(), "set_data: a tensor that requires grad "
           "cannot take ", dtype_name(src.dtype()), " data");
  TensorImpl& self = ref();
  self.storage = src.ref().storage;
  self.sizes = src.sizes();
  self.strides = src.strides();
  self.offset = src.storage_offset();
  self.dtype = src.dtype();
  self.autograd.grad.reset();
}

Tensor Tensor::to(ScalarType dtype) const {
  if (dtype == this->dtype()) return *this;
  MG_PROFILE("to");
  Tensor out = Tensor::empty(sizes(), options().dtype(dtype));
  backend_of(*this).copy(*this, out);
  if (!mg::is_floating_point(dtype)) return out;
  const ScalarType from = this->dtype();
  return record("to", out, {*this}, [from](const TensorList& g) { return TensorList{g[0].to(from)}; });
}

Tensor Tensor::to(Device device) const {
  if (device == this->device()) return *this;
  Tensor out = Tensor::empty(sizes(), options().device(device));
  {
    NoGradGuard no_grad;
    out.copy_(*this);
  }
  const Device from = this->device();
  return record("to", out, {*this}, [from](const TensorList& g) { return TensorList{g[0].to(from)}; });
}

}  // namespace mg
