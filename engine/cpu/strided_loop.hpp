// The CPU backend's one loop over strided operands (a small TensorIterator). Operands share a
// shape and have arbitrary strides (0 for broadcast dims). Dims of size 1 are dropped and dims
// that are contiguous in every operand are merged, so a contiguous tensor becomes a single row
// and a broadcast add [N, C] + [C] becomes N rows of C. The innermost row is handed to a kernel
// with its byte strides, so kernels write one tight loop for the contiguous case and one general
// loop; the elements are spread over the thread pool in contiguous ranges.
#pragma once
#include <algorithm>
#include <array>
#include <cstdint>
#include <vector>

#include "engine/parallel.hpp"
#include "engine/shape.hpp"

namespace mg::cpu {

template <size_t N>
struct Operands {
  std::array<char*, N> data;            // address of element 0
  std::array<const Shape*, N> strides;  // in elements
  std::array<int64_t, N> element_size;  // in bytes
};

// inner(ptrs, byte_strides, n) processes n elements starting at ptrs with the given strides.
template <size_t N, class Inner>
void for_each_strided(const Shape& sizes, const Operands<N>& ops, const Inner& inner) {
  struct Dim {
    int64_t size;
    std::array<int64_t, N> stride;  // bytes
  };
  std::vector<Dim> dims;  // outermost first
  for (size_t d = 0; d < sizes.size(); ++d) {
    if (sizes[d] == 0) return;
    if (sizes[d] == 1) continue;
    Dim dim{sizes[d], {}};
    for (size_t k = 0; k < N; ++k) dim.stride[k] = (*ops.strides[k])[d] * ops.element_size[k];
    dims.push_back(dim);
  }
  // Merge dim i into dim i+1 (inner) when every operand steps over i exactly like one full row
  // of i+1.
  std::vector<Dim> merged;
  for (const Dim& d : dims) {
    if (!merged.empty()) {
      Dim& outer = merged.back();
      bool can_merge = true;
      for (size_t k = 0; k < N; ++k) can_merge &= outer.stride[k] == d.stride[k] * d.size;
      if (can_merge) {
        outer.size *= d.size;
        outer.stride = d.stride;
        continue;
      }
    }
    merged.push_back(d);
  }
  if (merged.empty()) {
    std::array<int64_t, N> zero{};
    std::array<char*, N> ptrs = ops.data;
    inner(ptrs, zero, int64_t{1});
    return;
  }
  const Dim row = merged.back();
  merged.pop_back();
  int64_t rows = 1;
  for (const Dim& d : merged) rows *= d.size;
  const int64_t total = rows * row.size;
  // Threads take contiguous ranges of elements, not whole rows: a contiguous tensor is a single
  // row, which would otherwise run on one thread. A range may start and end inside a row; the
  // kernels are element-wise, so where the ranges fall never changes a result.
  parallel_for(total, total, [&](int64_t begin, int64_t end) {
    // Odometer over the outer dims, started at the row holding element `begin`.
    const size_t depth = merged.size();
    std::vector<int64_t> counter(depth);
    std::array<char*, N> ptrs = ops.data;
    int64_t rest = begin / row.size;
    int64_t col = begin % row.size;  // where the first (partial) row starts
    for (size_t i = depth; i-- > 0;) {
      counter[i] = rest % merged[i].size;
      rest /= merged[i].size;
      for (size_t k = 0; k < N; ++k) ptrs[k] += counter[i] * merged[i].stride[k];
    }
    for (int64_t pos = begin; pos < end;) {
      const int64_t n = std::min(row.size - col, end - pos);
      std::array<char*, N> start = ptrs;
      for (size_t k = 0; k < N; ++k) start[k] += col * row.stride[k];
      inner(start, row.stride, n);
      pos += n;
      col = 0;
      if (pos == end) break;
      for (size_t i = depth; i-- > 0;) {
        for (size_t k = 0; k < N; ++k) ptrs[k] += merged[i].stride[k];
        if (++counter[i] < merged[i].size) break;
        for (size_t k = 0; k < N; ++k) ptrs[k] -= merged[i].size * merged[i].stride[k];
        counter[i] = 0;
      }
    }
  });
}

}  // namespace mg::cpu
