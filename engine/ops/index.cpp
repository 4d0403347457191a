// Indexing and joining ops: validation and autograd here, the loops in the backend's index kernels.
#include "engine/ops/index.hpp"

#include <algorithm>

#include "engine/autograd.hpp"
#include "engine/backend.hpp"
#include "engine/ops/elementwise.hpp"

namespace mg {
namespace {

// Every index in [0, size); names the op, the bad index and the valid range otherwise.
void check_index(const char* op, const Tensor& index, int64_t size, const Tensor& x, int64_t dim) {
  MG_CHECK(index.dtype() == kInt32, op, ": index must be int32, got ", dtype_name(index.dtype()));
  for (int32_t i : index.to_vector<int32_t>())
    MG_CHECK(i >= 0 && i < size, op, ": index ", i, " is out of range [0, ", size, ") for dim ", dim,
             " of input shape ", shape_str(x.sizes()));
}

// Shapes for gather/scatter_add: index has x's rank and is no larger than x outside `dim`.
void check_gather_shapes(const char* op, const Tensor& x, int64_t dim, const Tensor& index) {
  MG_CHECK(index.dim() == x.dim(), op, ": index of shape ", shape_str(index.sizes()),
           " must have as many dims as input of shape ", shape_str(x.sizes()));
  for (int64_t d = 0; d < x.dim(); ++d)
    MG_CHECK(d == dim || index.size(d) <= x.size(d), op, ": index of shape ", shape_str(index.sizes()),
             " is larger than input of shape ", shape_str(x.sizes()), " in dim ", d);
}

}  // namespace

Tensor scatter_add(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& src) {
  dim = wrap_dim("scatter_add", dim, x.dim());
  check_gather_shapes("scatter_add", x, dim, index);
  MG_CHECK(src.dtype() == x.dtype(), "scatter_add: dtype mismatch, input ", dtype_name(x.dtype()),
           " vs src ", dtype_name(src.dtype()));
  for (int64_t d = 0; d < x.dim(); ++d)
    MG_CHECK(index.size(d) <= src.size(d), "scatter_add: index of shape ", shape_str(index.sizes()),
             " is larger than src of shape ", shape_str(src.sizes()), " in dim ", d);
  check_index("scatter_add", index, x.size(dim), x, dim);
  Tensor out;
  {
    NoGradGuard no_grad;
    out = x.clone();
    backend_of(x).scatter_add(out, dim, index.contiguous(), src.contiguous());
  }
  if (!any_requires_grad({&x, &src})) return out;
  return record("scatter_add", out, {x, src},
                [dim, idx = index.detach(), src_sizes = src.sizes()](const TensorList& g) {
                  Tensor gsrc = gather(g[0], dim, idx);
                  if (gsrc.sizes() != src_sizes) {  // src larger than index: untouched part gets 0
                    Tensor full_grad = zeros(src_sizes, g[0].options());
                    Tensor region = full_grad;
                    for (int64_t d = 0; d < idx.dim(); ++d) region = region.narrow(d, 0, idx.size(d));
                    region.copy_(gsrc);
                    gsrc = full_grad;
                  }
                  return TensorList{g[0], gsrc};
                });
}

Tensor gather(const Tensor& x, int64_t dim, const Tensor& index) {
  dim = wrap_dim("gather", dim, x.dim());
  check_gather_shapes("gather", x, dim, index);
  check_index("gather", index, x.size(dim), x, dim);
  Tensor out = Tensor::empty(index.sizes(), x.options());
  backend_of(x).gather(x.contiguous(), dim, index.contiguous(), out);
  return record("gather", out, {x}, [dim, idx = index.detach(), sizes = x.sizes()](const TensorList& g) {
    return TensorList{scatter_add(zeros(sizes, g[0].options()), dim, idx, g[0])};
  });
}

std::tuple<Tensor, Tensor> sort(const Tensor& x, int64_t dim, bool descending) {
  dim = wrap_dim("sort", dim, x.dim());
  if (x.dim() == 0) return {x, zeros({}, kInt32)};
  Tensor values, indices;
  {
    NoGradGuard no_grad;  // the layout shuffles are internal
    Tensor moved = x.transpose(dim, -1).contiguous();
    Tensor rows = moved.reshape({-1, moved.size(-1)});
    values = Tensor::empty(rows.sizes(), x.options());
    indices = Tensor::empty(rows.sizes(), x.options().dtype(kInt32));
    backend_of(x).sort_rows(rows, descending, values, indices);
    indices = indices.reshape(moved.sizes()).transpose(dim, -1).contiguous();
    values = values.reshape(moved.sizes()).transpose(dim, -1).contiguous();
  }
  Tensor recorded = record("sort", values, {x}, [dim, idx = indices](const TensorList& g) {
    return TensorList{scatter_add(zeros_like(g[0]), dim, idx, g[0])};
  });
  return {recorded, indices};
}

Tensor argsort(const Tensor& x, int64_t dim, bool descending) {
  NoGradGuard no_grad;
  return std::get<1>(sort(x, dim, descending));
}

Tensor Tensor::scatter_add(int64_t dim, const Tensor& index, const Tensor& src) const {
  return mg::scatter_add(*this, dim, index, src);
}
Tensor Tensor::gather(int64_t dim, const Tensor& index) const { return mg::gather(*this, dim, index); }
std::tuple<Tensor, Tensor> Tensor::sort(int64_t dim, bool descending) const {
  return mg::sort(*this, dim, descending);
}
Tensor Tensor::argsort(int64_t dim, bool descending) const { return mg::argsort(*this, dim, descending); }

}  // namespace mg
