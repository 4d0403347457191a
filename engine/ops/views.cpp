// View ops: new shape/strides/offset over the same storage, recorded by autograd. Each backward
// maps the gradient back to the input's shape (a transpose transposes back, an expand sums).
#include <algorithm>
#include <numeric>

#include "engine/autograd.hpp"
#include "engine/ops/elementwise.hpp"

namespace mg {
namespace {

Tensor make_view(const Tensor& base, Shape sizes, Shape strides, int64_t offset) {
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = base.impl()->storage;
  impl->sizes = std::move(sizes);
  impl->strides = std::move(strides);
  impl->offset = offset;
  impl->dtype = base.dtype();
  return Tensor(std::move(impl));
}

// Strides for viewing `t` as `sizes` without a copy, or nullopt when its layout does not allow it
// (PyTorch's computeStride).
std::optional<Shape> view_strides(const Tensor& t, const Shape& sizes) {
  if (t.numel() == 0 || t.is_contiguous()) return contiguous_strides(sizes);
  const Shape& old_sizes = t.sizes();
  const Shape& old_strides = t.strides();
  Shape strides(sizes.size());
  int64_t view_d = static_cast<int64_t>(sizes.size()) - 1;
  int64_t chunk_base_stride = old_strides.back();
  int64_t tensor_numel = 1, view_numel = 1;
  for (int64_t d = static_cast<int64_t>(old_sizes.size()) - 1; d >= 0; --d) {
    tensor_numel *= old_sizes[d];
    if (d == 0 || (old_sizes[d - 1] != 1 && old_strides[d - 1] != tensor_numel * chunk_base_stride)) {
      while (view_d >= 0 && (view_numel < tensor_numel || sizes[view_d] == 1)) {
        strides[view_d] = view_numel * chunk_base_stride;
        view_numel *= sizes[view_d];
        --view_d;
      }
      if (view_numel != tensor_numel) return std::nullopt;
      if (d > 0) {
        chunk_base_stride = old_strides[d - 1];
        tensor_numel = 1;
        view_numel = 1;
      }
    }
  }
  if (view_d != -1) return std::nullopt;
  return strides;
}

Shape infer_size(const char* op, const Shape& sizes, int64_t numel, const Shape& from) {
  Shape out = sizes;
  int64_t known = 1, infer_at = -1;
  for (size_t i = 0; i < out.size(); ++i) {
    if (out[i] == -1) {
      MG_CHECK(infer_at < 0, op, ": only one dimension can be -1, got ", shape_str(sizes));
      infer_at = static_cast<int64_t>(i);
    } else {
      MG_CHECK(out[i] >= 0, op, ": invalid size ", out[i], " in ", shape_str(sizes));
      known *= out[i];
    }
  }
  if (infer_at >= 0) {
    MG_CHECK(known != 0 && numel % known == 0, op, ": shape ", shape_str(sizes),
             " is invalid for input of shape ", shape_str(from));
    out[infer_at] = numel / known;
  }
  MG_CHECK(numel_of(out) == numel, op, ": shape ", shape_str(sizes), " is invalid for input of shape ",
           shape_str(from), " (", numel, " elements)");
  return out;
}

}  // namespace

Tensor Tensor::view(const Shape& sizes) const {
  const Shape shape = infer_size("view", sizes, numel(), this->sizes());
  auto strides = view_strides(*this, shape);
  MG_CHECK(strides.has_value(), "view: shape ", shape_str(shape), " is not compatible with the strides "
           "of input of shape ", shape_str(this->sizes()), "; use reshape()");
  const Shape from = this->sizes();
  return record("view", make_view(*this, shape, *strides, storage_offset()), {*this},
                [from](const TensorList& g) { return TensorList{g[0].reshape(from)}; });
}

Tensor Tensor::reshape(const Shape& sizes) const {
  const Shape shape = infer_size("reshape", sizes, numel(), this->sizes());
  if (view_strides(*this, shape)) return view(shape);
  return contiguous().view(shape);
}

Tensor Tensor::flatten(int64_t start_dim, int64_t end_dim) const {
  if (dim() == 0) return reshape({1});
  start_dim = wrap_dim("flatten", start_dim, dim());
  end_dim = wrap_dim("flatten", end_dim, dim());
  MG_CHECK(start_dim <= end_dim, "flatten: start_dim ", start_dim, " is after end_dim ", end_dim);
  Shape shape(sizes().begin(), sizes().begin() + start_dim);
  int64_t merged = 1;
  for (int64_t d = start_dim; d <= end_dim; ++d) merged *= sizes()[d];
  shape.push_back(merged);
  shape.insert(shape.end(), sizes().begin() + end_dim + 1, sizes().end());
  return reshape(shape);
}

Tensor Tensor::permute(const Shape& dims) const {
  MG_CHECK(static_cast<int64_t>(dims.size()) == dim(), "permute: ", dims.size(),
           " dims given for a tensor of shape ", shape_str(sizes()));
  Shape sizes_out(dims.size()), strides_out(dims.size()), inverse(dims.size());
  std::vector<bool> used(dims.size(), false);
  for (size_t i = 0; i < dims.size(); ++i) {
    const int64_t d = wrap_dim("permute", dims[i], dim());
    MG_CHECK(!used[d], "permute: dim ", d, " repeated in ", shape_str(dims));
    used[d] = true;
    sizes_out[i] = sizes()[d];
    strides_out[i] = strides()[d];
    inverse[d] = static_cast<int64_t>(i);
  }
  return record("permute", make_view(*this, sizes_out, strides_out, storage_offset()), {*this},
                [inverse](const TensorList& g) { return TensorList{g[0].permute(inverse)}; });
}

Tensor Tensor::transpose(int64_t dim0, int64_t dim1) const {
  if (dim() == 0) return *this;
  dim0 = wrap_dim("transpose", dim0, dim());
  dim1 = wrap_dim("transpose", dim1, dim());
  Shape order(dim());
  std::iota(order.begin(), order.end(), 0);
  std::swap(order[dim0], order[dim1]);
  return permute(order);
}

Tensor Tensor::t() const {
  MG_CHECK(dim() <= 2, "t: expects a tensor of at most 2 dims, got shape ", shape_str(sizes()));
  return dim() < 2 ? *this : transpose(0, 1);
}

Tensor Tensor::unsqueeze(int64_t d) const {
  d = wrap_dim("unsqueeze", d, dim() + 1);
  Shape shape = sizes();
  shape.insert(shape.begin() + d, 1);
  return view_as_shape_(shape);
}

Tensor Tensor::squeeze() const {
  Shape shape;
  for (int64_t s : sizes())
    if (s != 1) shape.push_back(s);
  return view_as_shape_(shape);
}

Tensor Tensor::squeeze(int64_t d) const {
  if (dim() == 0) return *this;
  d = wrap_dim("squeeze", d, dim());
  if (sizes()[d] != 1) return *this;
  Shape shape = sizes();
  shape.erase(shape.begin() + d);
  return view_as_shape_(shape);
}

// Adding or removing size-1 dims never needs a copy: keep the strides of the remaining dims.
Tensor Tensor::view_as_shape_(const Shape& shape) const {
  Shape strides;
  size_t src = 0;
  for (int64_t s : shape) {
    while (src < sizes().size() && sizes()[src] == 1 && s != 1) ++src;
    if (src < sizes().size() && sizes()[src] == s) {
      strides.push_back(this->strides()[src]);
      ++src;
    } else {
      strides.push_back(1);  // an inserted size-1 dim: its stride is never used
    }
  }
  const Shape from = sizes();
  return record("view", make_view(*this, shape, strides, storage_offset()), {*this},
                [from](const TensorList& g) { return TensorList{g[0].reshape(from)}; });
}

Tensor Tensor::expand(const Shape& target) const {
  MG_CHECK(static_cast<int64_t>(target.size()) >= dim(), "expand: target shape ", shape_str(target),
           " has fewer dims than input shape ", shape_str(sizes()));
  const size_t lead = target.size() - sizes().size();
  Shape shape(target.size()), strides(target.size());
  for (size_t i = 0; i < target.size(); ++i) {
    const int64_t want = target[i];
    if (i < lead) {
      MG_CHECK(want >= 0, "expand: cannot expand to shape ", shape_str(target));
      shape[i] = want;
      strides[i] = 0;
      continue;
    }
    const int64_t have = sizes()[i - lead];
    MG_CHECK(want == -1 || want == have || have == 1, "expand: cannot expand shape ",
             shape_str(sizes()), " to ", shape_str(target));
    shape[i] = want == -1 ? have : want;
    strides[i] = (have == 1 && shape[i] != 1) ? 0 : this->strides()[i - lead];
  }
  if (shape == sizes()) return *this;
  const Shape from = sizes();
  return record("expand", make_view(*this, shape, strides, storage_offset()), {*this},
                [from](const TensorList& g) { return TensorList{sum_to(g[0], from)}; });
}

Tensor Tensor::slice(int64_t d, int64_t start, int64_t end, int64_t step) const {
  d = wrap_dim("slice", d, dim());
  MG_CHECK(step > 0, "slice: step must be positive, got ", step);
  const int64_t n = sizes()[d];
  if (start < 0) start += n;
  if (end < 0) end += n;
  start = std::clamp<int64_t>(start, 0, n);
  end = std::clamp<int64_t>(end, start, n);
  Shape shape = sizes(), strides = this->strides();
  shape[d] = (end - start + step - 1) / step;
  strides[d] *= step;
  const Shape from = sizes();
  return record("slice", make_view(*this, shape, strides, storage_offset() + start * this->strides()[d]),
                {*this}, [from, d, start, end, step](const TensorList& g) {
                  Tensor grad = zeros(from, g[0].options());
                  grad.slice(d, start, end, step).copy_(g[0]);
                  return TensorList{grad};
                });
}

Tensor Tensor::narrow(int64_t d, int64_t start, int64_t length) const {
  d = wrap_dim("narrow", d, dim());
  const int64_t n = sizes()[d];
  if (start < 0) start += n;
  MG_CHECK(start >= 0 && length >= 0 && start + length <= n, "narrow: range [", start, ", ",
           start + length, ") out of bounds for dim ", d, " of size ", n, " (shape ",
           shape_str(sizes()), ")");
  return slice(d, start, start + length);
}

Tensor Tensor::select(int64_t d, int64_t index) const {
  d = wrap_dim("select", d, dim());
  const int64_t n = sizes()[d];
  MG_CHECK(index >= -n && index < n, "select: index ", index, " out of range for dim ", d,
           " of size ", n, " (shape ", shape_str(sizes()), ")");
  if (index < 0) index += n;
  Shape shape = sizes(), strides = this->strides();
  const int64_t offset = storage_offset() + index * strides[d];
  shape.erase(shape.begin() + d);
  strides.erase(strides.begin() + d);
  const Shape from = sizes();
  return record("select", make_view(*this, shape, strides, offset), {*this},
                [from, d, index](const TensorList& g) {
                  Tensor grad = zeros(from, g[0].options());
                  grad.select(d, index).copy_(g[0]);
                  return TensorList{grad};
                });
}

}  // namespace mg
