// Indexing kernels: index validation, index_select / index_add along a dim, gather / scatter_add,
// top-k, sort and the counting sort into buckets. Every tensor is contiguous and every index
// already checked (on the CPU the check throws before the op runs a kernel). Accumulating kernels
// (index_add, scatter_add) visit sources in index order, so duplicates sum deterministically.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "engine/cpu/cpu_backend.hpp"
#include "engine/parallel.hpp"

namespace mg::cpu {
namespace {

// Offset in `x` (contiguous strides xs) of the element at index-tensor position `linear`, with
// the coordinate along dim replaced by `target`.
int64_t remapped_offset(int64_t linear, const Shape& index_sizes, const Shape& xs, int64_t dim,
                        int64_t target) {
  int64_t offset = 0;
  for (int64_t d = static_cast<int64_t>(index_sizes.size()) - 1; d >= 0; --d) {
    const int64_t coord = linear % index_sizes[d];
    linear /= index_sizes[d];
    offset += (d == dim ? target : coord) * xs[d];
  }
  return offset;
}

template <class T>
bool ranks_before(T a, int64_t ia, T b, int64_t ib, bool largest) {
  if constexpr (std::is_floating_point_v<T>) {  // NaN counts as the largest value, as torch
    const bool na = std::isnan(a), nb = std::isnan(b);
    if (na || nb) {
      if (na && nb) return ia < ib;
      return largest ? na : nb;
    }
  }
  if (a != b) return largest ? a > b : a < b;
  return ia < ib;
}

}  // namespace

void CpuBackend::check_index_range(const Tensor& index, int64_t size, std::optional<int32_t> ignore,
                                   IndexErrorMessage message) {
  const int32_t* idx = index.data_ptr<int32_t>();
  for (int64_t i = 0, n = index.numel(); i < n; ++i)
    if ((idx[i] < 0 || idx[i] >= size) && idx[i] != ignore) throw Error(message(idx[i]));
}

void CpuBackend::index_select(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& out) {
  const Split3 s = split_at(x.sizes(), dim);
  const int64_t n = index.numel();
  const int32_t* idx = index.data_ptr<int32_t>();
  MG_DISPATCH_ALL_TYPES(x.dtype(), "index_select", [&] {
    const scalar_t* in = x.data_ptr<scalar_t>();
    scalar_t* o = out.data_ptr<scalar_t>();
    parallel_for(s.outer * n, s.outer * n * s.inner, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t outer = r / n, j = r % n;
        std::copy_n(in + (outer * s.mid + idx[j]) * s.inner, s.inner, o + r * s.inner);
      }
    });
  });
}

void CpuBackend::index_add(const Tensor& out, int64_t dim, const Tensor& index, const Tensor& src) {
  const Split3 s = split_at(out.sizes(), dim);
  const int64_t n = index.numel();
  const int32_t* idx = index.data_ptr<int32_t>();
  MG_DISPATCH_ALL_TYPES(out.dtype(), "index_add", [&] {
    scalar_t* o = out.data_ptr<scalar_t>();
    const scalar_t* in = src.data_ptr<scalar_t>();
    // Threads own disjoint column ranges of the inner dim, so no two write the same element.
    parallel_for(s.inner, s.outer * n * s.inner, [&](int64_t c0, int64_t c1) {
      for (int64_t outer = 0; outer < s.outer; ++outer)
        for (int64_t j = 0; j < n; ++j) {
          scalar_t* dst = o + (outer * s.mid + idx[j]) * s.inner;
          const scalar_t* from = in + (outer * n + j) * s.inner;
          for (int64_t c = c0; c < c1; ++c) dst[c] += from[c];
        }
    });
  });
}

void CpuBackend::gather(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& out) {
  const int64_t n = index.numel();
  const int32_t* idx = index.data_ptr<int32_t>();
  const Shape& xs = x.strides();
  const Shape& is = index.sizes();
  MG_DISPATCH_ALL_TYPES(x.dtype(), "gather", [&] {
    const scalar_t* in = x.data_ptr<scalar_t>();
    scalar_t* o = out.data_ptr<scalar_t>();
    parallel_for(n, n * 4, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) o[i] = in[remapped_offset(i, is, xs, dim, idx[i])];
    });
  });
}

void CpuBackend::scatter_add(const Tensor& out, int64_t dim, const Tensor& index, const Tensor& src) {
  const int64_t n = index.numel();
  const int32_t* idx = index.data_ptr<int32_t>();
  const Shape& os = out.strides();
  const Shape& is = index.sizes();
  const Shape ss = src.strides();
  MG_DISPATCH_ALL_TYPES(out.dtype(), "scatter_add", [&] {
    scalar_t* o = out.data_ptr<scalar_t>();
    const scalar_t* in = src.data_ptr<scalar_t>();
    for (int64_t i = 0; i < n; ++i) {
      const int64_t src_offset = remapped_offset(i, is, ss, -1, 0);
      o[remapped_offset(i, is, os, dim, idx[i])] += in[src_offset];
    }
  });
}

void CpuBackend::topk_rows(const Tensor& x, int64_t k, bool largest, const Tensor& values,
                           const Tensor& indices) {
  const int64_t rows = x.size(0), cols = x.size(1);
  MG_DISPATCH_ALL_TYPES(x.dtype(), "topk", [&] {
    using T = scalar_t;
    const T* in = x.data_ptr<T>();
    T* v = values.data_ptr<T>();
    int32_t* ix = indices.data_ptr<int32_t>();
    parallel_for(rows, rows * cols * 4, [&](int64_t r0, int64_t r1) {
      std::vector<int32_t> order(cols);
      for (int64_t r = r0; r < r1; ++r) {
        const T* row = in + r * cols;
        std::iota(order.begin(), order.end(), 0);
        std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](int32_t a, int32_t b) {
          return ranks_before(row[a], a, row[b], b, largest);
        });
        for (int64_t j = 0; j < k; ++j) {
          v[r * k + j] = row[order[j]];
          ix[r * k + j] = order[j];
        }
      }
    });
  });
}

void CpuBackend::sort_rows(const Tensor& x, bool descending, const Tensor& values,
                           const Tensor& indices) {
  const int64_t rows = x.size(0), cols = x.size(1);
  MG_DISPATCH_ALL_TYPES(x.dtype(), "sort", [&] {
    using T = scalar_t;
    const T* in = x.data_ptr<T>();
    T* v = values.data_ptr<T>();
    int32_t* ix = indices.data_ptr<int32_t>();
    parallel_for(rows, rows * cols * 8, [&](int64_t r0, int64_t r1) {
      std::vector<int32_t> order(cols);
      for (int64_t r = r0; r < r1; ++r) {
        const T* row = in + r * cols;
        std::iota(order.begin(), order.end(), 0);
        // ranks_before breaks ties by index, which is exactly stability
        std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
          return ranks_before(row[a], a, row[b], b, descending);
        });
        for (int64_t j = 0; j < cols; ++j) {
          v[r * cols + j] = row[order[j]];
          ix[r * cols + j] = order[j];
        }
      }
    });
  });
}

// Two passes over the keys: counts, then each key to the next free slot of its bucket. Serial: the
// keys are the router's T * k choices, a few thousand, and one pass keeps the order stable.
std::vector<int64_t> CpuBackend::bucket_sort(const Tensor& keys, int64_t num_buckets, int64_t limit,
                                             const Tensor& out) {
  const int64_t n = keys.numel();
  const int32_t* key = keys.data_ptr<int32_t>();
  std::vector<int64_t> counts(num_buckets + 1, 0);
  for (int64_t i = 0; i < n; ++i) ++counts[key[i] >= 0 && key[i] < num_buckets ? key[i] : num_buckets];
  std::vector<int64_t> next(num_buckets), end(num_buckets);
  int64_t start = 0;
  for (int64_t b = 0; b < num_buckets; ++b) {
    next[b] = start;
    start += std::min(counts[b], limit);
    end[b] = start;
  }
  int32_t* position = out.data_ptr<int32_t>();
  for (int64_t i = 0; i < n; ++i) {
    const int32_t b = key[i];
    if (b >= 0 && b < num_buckets && next[b] < end[b]) position[next[b]++] = static_cast<int32_t>(i);
  }
  return counts;
}

}  // namespace mg::cpu
