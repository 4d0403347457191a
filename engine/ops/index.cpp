// Indexing ops: validation and autograd here, the loops in the backend's index kernels. The joining
// ops (cat, stack, split, chunk, repeat) are in join.cpp.
#include "engine/ops/index.hpp"

#include <algorithm>
#include <climits>

#include "engine/autograd.hpp"
#include "engine/profiler.hpp"
#include "engine/backend.hpp"
#include "engine/ops/elementwise.hpp"

namespace mg {
namespace {

// Every index in [0, size); names the op, the bad index and the valid range otherwise. The values
// are checked by the index's backend, on a GPU without a round trip to the host.
void check_index(const char* op, const Tensor& index, int64_t size, const Tensor& x, int64_t dim) {
  MG_CHECK(index.dtype() == kInt32, op, ": index must be int32, got ", dtype_name(index.dtype()));
  MG_CHECK(index.device() == x.device(), op, ": index on ", index.device().str(), " but input on ",
           x.device().str());
  backend_of(index).check_index_range(
      index.contiguous(), size, std::nullopt, [op, size, dim, shape = x.sizes()](int32_t i) {
        return detail::concat(op, ": index ", i, " is out of range [0, ", size, ") for dim ", dim,
                              " of input shape ", shape_str(shape));
      });
}

// Shapes for gather/scatter_add: index has x's rank and is no larger than x outside `dim`.
void check_gather_shapes(const char* op, const Tensor& x, int64_t dim, const Tensor& index) {
  MG_CHECK(index.dim() == x.dim(), op, ": index of shape ", shape_str(index.sizes()),
           " must have as many dims as input of shape ", shape_str(x.sizes()));
  for (int64_t d = 0; d < x.dim(); ++d)
    MG_CHECK(d == dim || index.size(d) <= x.size(d), op, ": index of shape ", shape_str(index.sizes()),
             " is larger than input of shape ", shape_str(x.sizes()), " in dim ", d);
}

// A 1-d (or 0-d, one element) index along `dim`, as index_select and index_add take.
void check_vector_index(const char* op, const Tensor& index, const Tensor& x, int64_t dim) {
  MG_CHECK(index.dim() <= 1, op, ": index must be 1-d, got shape ", shape_str(index.sizes()),
           " for input of shape ", shape_str(x.sizes()));
  check_index(op, index, x.size(dim), x, dim);
}

// A contiguous tensor as [rows, size(-1)] for the row kernels. The row count is spelled out because
// reshape cannot infer a -1 when the last dim is empty.
Tensor as_rows(const Tensor& moved) {
  const int64_t n = moved.size(-1);
  const int64_t rows = n == 0 ? numel_of(Shape(moved.sizes().begin(), moved.sizes().end() - 1))
                              : moved.numel() / n;
  return moved.reshape({rows, n});
}

}  // namespace

Tensor index_select(const Tensor& x, int64_t dim, const Tensor& index) {
  MG_PROFILE("index_select");
  dim = wrap_dim("index_select", dim, x.dim());
  if (x.dim() == 0) {  // a scalar acts as a 1-element vector, and stays a scalar (as torch)
    MG_CHECK(index.numel() == 1, "index_select: index of shape ", shape_str(index.sizes()),
             " must hold exactly one element for a 0-d input");
    return index_select(x.reshape({1}), 0, index.reshape({1})).reshape({});
  }
  check_vector_index("index_select", index, x, dim);
  Shape shape = x.sizes();
  shape[dim] = index.numel();
  Tensor out = Tensor::empty(shape, x.options());
  {
    NoGradGuard no_grad;
    backend_of(x).index_select(x.contiguous(), dim, index.contiguous(), out);
  }
  if (!any_requires_grad({&x})) return out;
  return record("index_select", out, {x}, [dim, idx = index.detach(), sizes = x.sizes()](const TensorList& g) {
    return TensorList{index_add(zeros(sizes, g[0].options()), dim, idx, g[0])};
  });
}

Tensor index_add(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& source) {
  MG_PROFILE("index_add");
  dim = wrap_dim("index_add", dim, x.dim());
  if (x.dim() == 0) {
    MG_CHECK(source.numel() == 1 && index.numel() == 1, "index_add: a 0-d input takes one index and "
             "one source element, got index of shape ", shape_str(index.sizes()), " and source of shape ",
             shape_str(source.sizes()));
    return index_add(x.reshape({1}), 0, index.reshape({1}), source.reshape({1})).reshape({});
  }
  MG_CHECK(source.dtype() == x.dtype(), "index_add: dtype mismatch, input ", dtype_name(x.dtype()),
           " vs source ", dtype_name(source.dtype()));
  check_vector_index("index_add", index, x, dim);
  Shape expected = x.sizes();
  expected[dim] = index.numel();
  MG_CHECK(source.sizes() == expected, "index_add: source of shape ", shape_str(source.sizes()),
           " does not match input of shape ", shape_str(x.sizes()), " with ", index.numel(),
           " indices along dim ", dim, " (expected ", shape_str(expected), ")");
  Tensor out;
  {
    NoGradGuard no_grad;
    out = x.clone();
    backend_of(x).index_add(out, dim, index.contiguous(), source.contiguous());
  }
  if (!any_requires_grad({&x, &source})) return out;
  const bool source_grad = source.requires_grad();
  return record("index_add", out, {x, source}, [dim, source_grad, idx = index.detach()](const TensorList& g) {
    return TensorList{g[0], source_grad ? index_select(g[0], dim, idx) : Tensor()};
  });
}

Tensor masked_fill(const Tensor& x, const Tensor& mask, double value) {
  MG_PROFILE("masked_fill");
  const Shape shape = broadcast_shapes("masked_fill", mask.sizes(), x.sizes());
  MG_CHECK(shape == x.sizes(), "masked_fill: mask of shape ", shape_str(mask.sizes()),
           " does not broadcast to input of shape ", shape_str(x.sizes()));
  MG_CHECK(mask.device() == x.device(), "masked_fill: mask on ", mask.device().str(),
           " but input on ", x.device().str());
  Tensor out = Tensor::empty(shape, x.options());
  {
    NoGradGuard no_grad;
    backend_of(x).where(mask.expand(shape), scalar_tensor(value, x.options()).expand(shape), x, out);
  }
  if (!any_requires_grad({&x})) return out;
  return record("masked_fill", out, {x}, [m = mask.detach()](const TensorList& g) {
    return TensorList{where(m, zeros({}, g[0].options()), g[0])};  // filled slots do not depend on x
  });
}

Tensor one_hot(const Tensor& labels, int64_t num_classes) {
  MG_PROFILE("one_hot");
  MG_CHECK(labels.dtype() == kInt32, "one_hot: labels must be int32, got ", dtype_name(labels.dtype()),
           " of shape ", shape_str(labels.sizes()));
  // Inferring num_classes needs the largest label on the host; the labels are checked there too,
  // so that a negative one is reported at once.
  Tensor checked = labels.contiguous();
  if (num_classes < 0) {
    MG_CHECK(labels.numel() > 0, "one_hot: cannot infer num_classes from empty labels of shape ",
             shape_str(labels.sizes()), "; pass num_classes");
    checked = checked.to(Device::cpu());
    const int32_t* values = checked.data_ptr<int32_t>();
    num_classes = *std::max_element(values, values + checked.numel()) + 1;
  }
  backend_of(checked).check_index_range(
      checked, num_classes, std::nullopt, [num_classes, shape = labels.sizes()](int32_t v) {
        return detail::concat("one_hot: label ", v, " is out of range [0, ", num_classes,
                              ") in labels of shape ", shape_str(shape));
      });
  Shape shape = labels.sizes();
  shape.push_back(num_classes);
  Tensor out = zeros(shape, labels.options());
  if (out.numel() == 0) return out;
  // A scatter of ones along a trailing size-1 dim: one backend kernel instead of a host loop.
  Shape column = labels.sizes();
  column.push_back(1);
  backend_of(labels).scatter_add(out, labels.dim(), labels.contiguous().reshape(column),
                                 ones(column, labels.options()));
  return out;
}

std::tuple<Tensor, Tensor> topk(const Tensor& x, int64_t k, int64_t dim, bool largest, bool sorted) {
  MG_PROFILE("topk");
  (void)sorted;  // the kernel always returns sorted order, which sorted=false permits
  dim = wrap_dim("topk", dim, x.dim());
  const int64_t n = x.dim() == 0 ? 1 : x.size(dim);
  MG_CHECK(k >= 0 && k <= n, "topk: k = ", k, " is out of range [0, ", n, "] for dim ", dim,
           " of input shape ", shape_str(x.sizes()));
  if (x.dim() == 0) {
    auto [v, i] = topk(x.reshape({1}), k, 0, largest, sorted);
    const Shape shape = k == 0 ? Shape{0} : Shape{};
    return {v.reshape(shape), i.reshape(shape)};
  }
  Tensor values, indices;
  {
    NoGradGuard no_grad;  // the layout shuffles are internal
    Tensor moved = x.transpose(dim, -1).contiguous();
    Tensor rows = as_rows(moved);
    values = Tensor::empty({rows.size(0), k}, x.options());
    indices = Tensor::empty({rows.size(0), k}, x.options().dtype(kInt32));
    if (values.numel() > 0) backend_of(x).topk_rows(rows, k, largest, values, indices);
    Shape out_moved = moved.sizes();
    out_moved.back() = k;
    values = values.reshape(out_moved).transpose(dim, -1).contiguous();
    indices = indices.reshape(out_moved).transpose(dim, -1).contiguous();
  }
  // Indices within a slice are distinct, so scattering into zeros puts each gradient back once.
  Tensor recorded = record("topk", values, {x}, [dim, idx = indices, sizes = x.sizes()](const TensorList& g) {
    return TensorList{scatter_add(zeros(sizes, g[0].options()), dim, idx, g[0])};
  });
  return {recorded, indices};
}

Tensor scatter_add(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& src) {
  MG_PROFILE("scatter_add");
  dim = wrap_dim("scatter_add", dim, x.dim());
  check_gather_shapes("scatter_add", x, dim, index);
  if (x.dim() == 0)  // one element, as torch: the kernels address dims, so give it one
    return scatter_add(x.reshape({1}), 0, index.reshape({1}), src.reshape({-1})).reshape({});
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
  MG_PROFILE("gather");
  dim = wrap_dim("gather", dim, x.dim());
  check_gather_shapes("gather", x, dim, index);
  if (x.dim() == 0) return gather(x.reshape({1}), 0, index.reshape({1})).reshape({});
  check_index("gather", index, x.size(dim), x, dim);
  Tensor out = Tensor::empty(index.sizes(), x.options());
  {
    NoGradGuard no_grad;  // a copy for layout only: no node of its own
    backend_of(x).gather(x.contiguous(), dim, index.contiguous(), out);
  }
  return record("gather", out, {x}, [dim, idx = index.detach(), sizes = x.sizes()](const TensorList& g) {
    return TensorList{scatter_add(zeros(sizes, g[0].options()), dim, idx, g[0])};
  });
}

std::tuple<Tensor, Tensor> sort(const Tensor& x, int64_t dim, bool descending) {
  MG_PROFILE("sort");
  dim = wrap_dim("sort", dim, x.dim());
  if (x.dim() == 0) return {x, zeros({}, x.options().dtype(kInt32))};
  Tensor values, indices;
  {
    NoGradGuard no_grad;  // the layout shuffles are internal
    Tensor moved = x.transpose(dim, -1).contiguous();
    Tensor rows = as_rows(moved);
    values = Tensor::empty(rows.sizes(), x.options());
    indices = Tensor::empty(rows.sizes(), x.options().dtype(kInt32));
    if (rows.numel() > 0) backend_of(x).sort_rows(rows, descending, values, indices);
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

Buckets bucket_by_key(const Tensor& keys, int64_t num_buckets, int64_t limit) {
  MG_PROFILE("bucket_by_key");
  MG_CHECK(keys.dtype() == kInt32 && keys.dim() == 1, "bucket_by_key: keys must be 1-d int32, got ",
           dtype_name(keys.dtype()), " ", shape_str(keys.sizes()));
  MG_CHECK(num_buckets >= 1, "bucket_by_key: num_buckets must be >= 1, got ", num_buckets);
  const int64_t n = keys.numel();
  MG_CHECK(n <= INT32_MAX, "bucket_by_key: ", n, " keys do not fit int32 positions");
  if (limit < 0) limit = n;
  NoGradGuard no_grad;
  const Tensor contiguous_keys = keys.contiguous();
  Tensor sorted = Tensor::empty({n}, keys.options());
  const std::vector<int64_t> counts =
      backend_of(keys).bucket_sort(contiguous_keys, num_buckets, limit, sorted);
  MG_CHECK(counts[num_buckets] == 0, "bucket_by_key: ", counts[num_buckets], " of ", n,
           " keys are outside the buckets [0, ", num_buckets, ")");
  Buckets buckets;
  buckets.total.assign(counts.begin(), counts.end() - 1);
  int64_t placed = 0;
  for (int64_t count : buckets.total) {
    buckets.kept.push_back(std::min(count, limit));
    placed += buckets.kept.back();
  }
  buckets.position = sorted.narrow(0, 0, placed);
  return buckets;
}

Tensor Tensor::index_select(int64_t dim, const Tensor& index) const {
  return mg::index_select(*this, dim, index);
}
Tensor Tensor::index_add(int64_t dim, const Tensor& index, const Tensor& source) const {
  return mg::index_add(*this, dim, index, source);
}
Tensor Tensor::masked_fill(const Tensor& mask, double value) const {
  return mg::masked_fill(*this, mask, value);
}
std::tuple<Tensor, Tensor> Tensor::topk(int64_t k, int64_t dim, bool largest, bool sorted) const {
  return mg::topk(*this, k, dim, largest, sorted);
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
