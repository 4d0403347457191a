// Indexing and joining ops, the building blocks of MoE routing. Index tensors are int32; every
// index is bounds-checked and a bad one is reported with the op, the index and the valid range.
#pragma once
#include <tuple>
#include <vector>

#include "engine/tensor.hpp"

namespace mg {

// out = x selected at `index` (1-d) along dim. Backward: index_add.
Tensor index_select(const Tensor& x, int64_t dim, const Tensor& index);
// out = x with source's slices added at `index` (1-d) along dim (out-of-place index_add).
// Differentiable in x and source.
Tensor index_add(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& source);
// out[i][j] = x[i][index[i][j]] for dim 1 (torch.gather). Backward: scatter_add.
Tensor gather(const Tensor& x, int64_t dim, const Tensor& index);
// out = x with src[i][j] added at x[i][index[i][j]] for dim 1 (out-of-place scatter_add).
Tensor scatter_add(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& src);
// x with `value` where mask != 0 (mask broadcasts to x). Differentiable in x.
Tensor masked_fill(const Tensor& x, const Tensor& mask, double value);
// [..., num_classes] int32 one-hot of int32 labels; num_classes = max + 1 when negative.
Tensor one_hot(const Tensor& labels, int64_t num_classes = -1);
// k largest (or smallest) along dim; values differentiable, indices int32; ties: lower index first.
std::tuple<Tensor, Tensor> topk(const Tensor& x, int64_t k, int64_t dim = -1, bool largest = true,
                                bool sorted = true);
// Stable sort along dim; values differentiable, indices int32.
std::tuple<Tensor, Tensor> sort(const Tensor& x, int64_t dim = -1, bool descending = false);
Tensor argsort(const Tensor& x, int64_t dim = -1, bool descending = false);

// The positions of a 1-d int32 `keys` grouped by value, as a stable counting sort: first every i
// with keys[i] == 0 in increasing order, then those with 1, ... up to num_buckets - 1, each bucket
// cut after its first `limit` positions (limit < 0: no cut). The MoE dispatch: keys are the
// experts chosen for each (input, slot) pair, limit the expert capacity. Not differentiable.
struct Buckets {
  Tensor position;               // int32 [sum of kept], on keys' device
  std::vector<int64_t> total;    // [num_buckets] keys per bucket
  std::vector<int64_t> kept;     // [num_buckets] min(total, limit): bucket b's positions start at
                                 // the sum of kept[0 .. b)
};
// Keys outside [0, num_buckets) are an error that counts them.
Buckets bucket_by_key(const Tensor& keys, int64_t num_buckets, int64_t limit = -1);
Tensor cat(const TensorList& tensors, int64_t dim = 0);
Tensor stack(const TensorList& tensors, int64_t dim = 0);
TensorList split(const Tensor& x, int64_t split_size, int64_t dim = 0);
TensorList split_with_sizes(const Tensor& x, const Shape& split_sizes, int64_t dim = 0);
TensorList chunk(const Tensor& x, int64_t chunks, int64_t dim = 0);
// The slices x.select(dim, i) for every i, as torch.unbind; their gradients are stacked at once.
TensorList unbind(const Tensor& x, int64_t dim = 0);
Tensor repeat(const Tensor& x, const Shape& repeats);

}  // namespace mg
