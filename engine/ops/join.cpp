// Joining and splitting ops: cat, stack, split, split_with_sizes, chunk, unbind, repeat (declared
// in index.hpp). The pieces of split and chunk are narrow() views, so their autograd comes with them.
#include <algorithm>

#include "engine/autograd.hpp"
#include "engine/profiler.hpp"
#include "engine/ops/index.hpp"
#include "engine/ops/reduce.hpp"

namespace mg {

Tensor cat(const TensorList& tensors, int64_t dim) {
  MG_PROFILE("cat");
  MG_CHECK(!tensors.empty(), "cat: expected a non-empty list of tensors");
  // torch's legacy rule: a 1-d empty tensor (shape [0]) joins tensors of any shape and is skipped,
  // so a result can be built up from an empty start.
  auto skipped = [](const Tensor& t) { return t.dim() == 1 && t.numel() == 0; };
  size_t ref_i = 0;
  while (ref_i + 1 < tensors.size() && skipped(tensors[ref_i])) ++ref_i;
  const Tensor& ref = tensors[ref_i];
  for (size_t i = 0; i < tensors.size(); ++i)
    MG_CHECK(tensors[i].dim() > 0, "cat: zero-dimensional tensor (at position ", i,
             ") cannot be concatenated");
  dim = wrap_dim("cat", dim, ref.dim());

  Shape shape = ref.sizes();
  shape[dim] = 0;
  Shape starts, lengths;  // each input's place along dim in the output; start -1 when skipped
  for (size_t i = 0; i < tensors.size(); ++i) {
    const Tensor& t = tensors[i];
    MG_CHECK(t.dtype() == ref.dtype(), "cat: dtype mismatch, tensor ", ref_i, " is ",
             dtype_name(ref.dtype()), " but tensor ", i, " is ", dtype_name(t.dtype()));
    MG_CHECK(t.device() == ref.device(), "cat: device mismatch, tensor ", ref_i, " on ",
             ref.device().str(), " but tensor ", i, " on ", t.device().str());
    if (skipped(t) && !skipped(ref)) {
      starts.push_back(-1);
      lengths.push_back(0);
      continue;
    }
    MG_CHECK(t.dim() == ref.dim(), "cat: tensor ", i, " of shape ", shape_str(t.sizes()), " has ",
             t.dim(), " dims but tensor ", ref_i, " of shape ", shape_str(ref.sizes()), " has ", ref.dim());
    for (int64_t d = 0; d < t.dim(); ++d)
      MG_CHECK(d == dim || t.size(d) == ref.size(d), "cat: sizes must match except in dim ", dim,
               ", but tensor ", ref_i, " has shape ", shape_str(ref.sizes()), " and tensor ", i,
               " has shape ", shape_str(t.sizes()));
    starts.push_back(shape[dim]);
    lengths.push_back(t.size(dim));
    shape[dim] += t.size(dim);
  }

  Tensor out = Tensor::empty(shape, ref.options());
  {
    NoGradGuard no_grad;
    for (size_t i = 0; i < tensors.size(); ++i)
      if (lengths[i] > 0) out.narrow(dim, starts[i], lengths[i]).copy_(tensors[i]);
  }
  if (!any_requires_grad(tensors)) return out;
  return record("cat", out, tensors, [dim, starts, lengths](const TensorList& g) {
    TensorList grads;
    for (size_t i = 0; i < starts.size(); ++i)
      grads.push_back(starts[i] < 0 ? Tensor() : g[0].narrow(dim, starts[i], lengths[i]));
    return grads;
  });
}

Tensor stack(const TensorList& tensors, int64_t dim) {
  MG_CHECK(!tensors.empty(), "stack: expected a non-empty list of tensors");
  const Shape& first = tensors[0].sizes();
  for (size_t i = 1; i < tensors.size(); ++i)
    MG_CHECK(tensors[i].sizes() == first, "stack: expects tensors of equal shape, but tensor 0 has "
             "shape ", shape_str(first), " and tensor ", i, " has shape ", shape_str(tensors[i].sizes()));
  dim = wrap_dim("stack", dim, tensors[0].dim() + 1);
  TensorList parts;
  parts.reserve(tensors.size());
  for (const Tensor& t : tensors) parts.push_back(t.unsqueeze(dim));
  return cat(parts, dim);
}

TensorList split_with_sizes(const Tensor& x, const Shape& split_sizes, int64_t dim) {
  MG_CHECK(x.dim() > 0, "split_with_sizes: cannot split a 0-d tensor");
  dim = wrap_dim("split_with_sizes", dim, x.dim());
  int64_t total = 0;
  for (int64_t s : split_sizes) {
    MG_CHECK(s >= 0, "split_with_sizes: negative size ", s, " in ", shape_str(split_sizes),
             " for input of shape ", shape_str(x.sizes()));
    total += s;
  }
  MG_CHECK(total == x.size(dim), "split_with_sizes: sizes ", shape_str(split_sizes), " sum to ", total,
           " but dim ", dim, " of input shape ", shape_str(x.sizes()), " has size ", x.size(dim));
  TensorList pieces;
  int64_t start = 0;
  for (int64_t s : split_sizes) {
    pieces.push_back(x.narrow(dim, start, s));
    start += s;
  }
  return pieces;
}

TensorList split(const Tensor& x, int64_t split_size, int64_t dim) {
  MG_CHECK(x.dim() > 0, "split: cannot split a 0-d tensor");
  dim = wrap_dim("split", dim, x.dim());
  const int64_t n = x.size(dim);
  MG_CHECK(split_size > 0 || (split_size == 0 && n == 0), "split: split_size must be positive, got ",
           split_size, " for dim ", dim, " of input shape ", shape_str(x.sizes()));
  Shape sizes;
  for (int64_t start = 0; start < n; start += split_size) sizes.push_back(std::min(split_size, n - start));
  if (sizes.empty()) sizes.push_back(0);  // an empty dim still gives one (empty) piece, as torch
  return split_with_sizes(x, sizes, dim);
}

TensorList chunk(const Tensor& x, int64_t chunks, int64_t dim) {
  MG_CHECK(chunks > 0, "chunk: chunks must be positive, got ", chunks, " for input of shape ",
           shape_str(x.sizes()));
  MG_CHECK(x.dim() > 0, "chunk: cannot chunk a 0-d tensor");
  dim = wrap_dim("chunk", dim, x.dim());
  const int64_t n = x.size(dim);
  // As torch: pieces of ceil(n / chunks), so fewer than `chunks` can come back (6 in 4 -> 2, 2, 2);
  // an empty dim gives `chunks` empty pieces.
  if (n == 0) return split_with_sizes(x, Shape(chunks, 0), dim);
  return split(x, (n + chunks - 1) / chunks, dim);
}

// The slices are select() views; one node takes all their gradients and stacks them in a single
// pass (per-slice select backwards would each fill a zero tensor of x's size, then be added).
TensorList unbind(const Tensor& x, int64_t dim) {
  MG_CHECK(x.dim() > 0, "unbind: cannot unbind a 0-d tensor");
  dim = wrap_dim("unbind", dim, x.dim());
  MG_PROFILE("unbind");
  TensorList parts;
  {
    NoGradGuard no_grad;
    for (int64_t i = 0; i < x.size(dim); ++i) parts.push_back(x.detach().select(dim, i));
  }
  if (!any_requires_grad({&x}) || parts.empty()) return parts;
  return record_multi("unbind", std::move(parts), {x},
                      [dim](const TensorList& g) { return TensorList{stack(g, dim)}; });
}

Tensor repeat(const Tensor& x, const Shape& repeats) {
  MG_PROFILE("repeat");
  MG_CHECK(static_cast<int64_t>(repeats.size()) >= x.dim(), "repeat: ", repeats.size(),
           " repeat counts given for input of shape ", shape_str(x.sizes()), ", need at least ", x.dim());
  for (int64_t r : repeats)
    MG_CHECK(r >= 0, "repeat: negative count ", r, " in repeats ", shape_str(repeats),
             " for input of shape ", shape_str(x.sizes()));
  // Each dim i becomes a pair (copy, element): [1, s_i] expanded to [r_i, s_i], then merged.
  const size_t lead = repeats.size() - static_cast<size_t>(x.dim());
  Shape paired_ones, paired, out_shape, copy_dims;
  for (size_t i = 0; i < repeats.size(); ++i) {
    const int64_t s = i < lead ? 1 : x.size(static_cast<int64_t>(i - lead));
    paired_ones.insert(paired_ones.end(), {1, s});
    paired.insert(paired.end(), {repeats[i], s});
    out_shape.push_back(repeats[i] * s);
    copy_dims.push_back(static_cast<int64_t>(2 * i));
  }
  Tensor out;
  {
    NoGradGuard no_grad;
    // clone, not contiguous: the result owns fresh storage even when every count is 1, as torch
    out = x.reshape(paired_ones).expand(paired).clone().view(out_shape);
  }
  if (!any_requires_grad({&x})) return out;
  return record("repeat", out, {x}, [sizes = x.sizes(), paired, copy_dims](const TensorList& g) {
    if (numel_of(paired) == 0) return TensorList{zeros(sizes, g[0].options())};
    // every copy of an element sends its gradient back to it; an empty dims list would mean "all"
    Tensor grad = copy_dims.empty() ? g[0] : g[0].reshape(paired).sum(copy_dims);
    return TensorList{grad.reshape(sizes)};
  });
}

// ---- Tensor method forwards
Tensor Tensor::repeat(const Shape& repeats) const { return mg::repeat(*this, repeats); }
TensorList Tensor::split(int64_t split_size, int64_t dim) const { return mg::split(*this, split_size, dim); }
TensorList Tensor::chunk(int64_t chunks, int64_t dim) const { return mg::chunk(*this, chunks, dim); }

}  // namespace mg
