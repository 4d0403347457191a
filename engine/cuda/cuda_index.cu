// Indexing kernels, after cpu_index.cpp: index_select / index_add along a dim, gather /
// scatter_add, top-k and sort. Every tensor is contiguous. The indices' check reports later
// (cuda_index_check.cu), so the kernels skip an out-of-range index rather than trust it.
// The accumulating kernels give a thread to each run of sources that may collide (a column of
// index_add, or with many indices the positions of one destination after sorting them; a fiber
// of scatter_add along dim), which adds them in index order: duplicates sum in the CPU's order,
// deterministically, with no atomics. Top-k and sort rank every element by
// counting the elements that rank before it (ties by lower index, so the sort is stable):
// O(cols^2) per row, exact, and fast for the short rows of routers (E experts); a long single
// row (randperm of n) costs n^2 comparisons.
#include "engine/cuda/cuda_common.cuh"

namespace mg::cuda {
namespace {

template <class T>
__global__ void index_select_kernel(const T* x, const int32_t* index, T* out, Split3 s,
                                    int64_t n_index, int64_t total) {
  MG_GRID_STRIDE(i, total) {
    const int64_t c = i % s.inner, j = (i / s.inner) % n_index, outer = i / (s.inner * n_index);
    const int32_t k = index[j];
    if (k >= 0 && k < s.mid) out[i] = x[(outer * s.mid + k) * s.inner + c];
  }
}

// index_add with many indices: the positions sorted by destination (sort_by_key), a thread per
// (outer, run of equal destinations, column) adds its run in position order, as the CPU does.
template <class T>
__global__ void index_add_sorted_kernel(T* out, const int32_t* sorted_index,
                                        const int32_t* position, const T* src, Split3 s,
                                        int64_t n_index) {
  MG_GRID_STRIDE(i, s.outer * n_index * s.inner) {
    const int64_t c = i % s.inner, r = (i / s.inner) % n_index, outer = i / (s.inner * n_index);
    const int32_t k = sorted_index[r];
    if (k >= s.mid || (r > 0 && sorted_index[r - 1] == k)) continue;  // outsider, or not a run's head
    T& target = out[(outer * s.mid + k) * s.inner + c];
    T acc = target;
    for (int64_t q = r; q < n_index && sorted_index[q] == k; ++q)
      acc += src[(outer * n_index + position[q]) * s.inner + c];
    target = acc;
  }
}

template <class T>
__global__ void index_add_kernel(T* out, const int32_t* index, const T* src, Split3 s,
                                 int64_t n_index) {
  MG_GRID_STRIDE(i, s.outer * s.inner) {
    const int64_t c = i % s.inner, outer = i / s.inner;
    for (int64_t j = 0; j < n_index; ++j) {
      const int32_t k = index[j];
      if (k >= 0 && k < s.mid)
        out[(outer * s.mid + k) * s.inner + c] += src[(outer * n_index + j) * s.inner + c];
    }
  }
}

// The index tensor's shape, the strides (elements) of the tensor it addresses (the target, whose
// coordinate along `dim` is replaced by an index value in [0, bound)) and of scatter_add's source
// (which may be larger than the index: only the index's positions are read, as torch).
struct IndexGeometry {
  int ndim = 0, dim = 0;
  int64_t bound = 0;
  int64_t sizes[kMaxDims] = {};
  int64_t target_strides[kMaxDims] = {};
  int64_t source_strides[kMaxDims] = {};
};

IndexGeometry index_geometry(const Tensor& index, const Tensor& target, const Tensor& source,
                             int64_t dim) {
  MG_CHECK(index.dim() <= kMaxDims, "cuda: gather/scatter_add support up to ", kMaxDims, " dims");
  IndexGeometry g;
  g.ndim = static_cast<int>(index.dim());
  g.dim = static_cast<int>(dim);
  g.bound = target.size(dim);
  for (int d = 0; d < g.ndim; ++d) {
    g.sizes[d] = index.size(d);
    g.target_strides[d] = target.stride(d);
    g.source_strides[d] = source.defined() ? source.stride(d) : 0;
  }
  return g;
}

// Offset of index position `linear` in a tensor of the given strides, with the coordinate along
// dim set to `target` (target < 0: kept).
__device__ inline int64_t remapped(const IndexGeometry& g, const int64_t* strides, int64_t linear,
                                   int64_t target) {
  int64_t offset = 0;
  for (int d = g.ndim - 1; d >= 0; --d) {
    const int64_t coord = linear % g.sizes[d];
    linear /= g.sizes[d];
    offset += (d == g.dim && target >= 0 ? target : coord) * strides[d];
  }
  return offset;
}

template <class T>
__global__ void gather_kernel(const T* x, const int32_t* index, T* out, IndexGeometry g,
                              int64_t n) {
  MG_GRID_STRIDE(i, n) {
    if (index[i] >= 0 && index[i] < g.bound) out[i] = x[remapped(g, g.target_strides, i, index[i])];
  }
}

// A thread per fiber (the index positions that differ only along dim), in index order.
template <class T>
__global__ void scatter_add_kernel(T* out, const int32_t* index, const T* src, IndexGeometry g,
                                   int64_t fibers) {
  int64_t step = 1;  // the index's contiguous stride along dim
  for (int d = g.ndim - 1; d > g.dim; --d) step *= g.sizes[d];
  const int64_t along = g.sizes[g.dim];
  MG_GRID_STRIDE(f, fibers) {
    // fiber f: the index position with coordinate 0 along dim, counted without that dim
    const int64_t first = (f / step) * along * step + f % step;
    for (int64_t k = 0; k < along; ++k) {
      const int64_t i = first + k * step;
      if (index[i] < 0 || index[i] >= g.bound) continue;
      out[remapped(g, g.target_strides, i, index[i])] += src[remapped(g, g.source_strides, i, -1)];
    }
  }
}

template <class T>
__device__ bool ranks_before(T a, int64_t ia, T b, int64_t ib, bool largest) {
  if constexpr (std::is_floating_point_v<T>) {  // NaN counts as the largest value, as torch
    const bool na = a != a, nb = b != b;
    if (na || nb) {
      if (na && nb) return ia < ib;
      return largest ? na : nb;
    }
  }
  if (a != b) return largest ? a > b : a < b;
  return ia < ib;
}

// Element (row, c) goes to position rank (the number of elements ranking before it) when rank < k.
template <class T>
__global__ void rank_kernel(const T* x, T* values, int32_t* indices, int64_t rows, int64_t cols,
                            int64_t k, bool largest) {
  for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) {
    const T* row = x + r * cols;
    MG_GRID_STRIDE(c, cols) {
      const T v = row[c];
      int64_t rank = 0;
      for (int64_t j = 0; j < cols; ++j) rank += ranks_before(row[j], j, v, c, largest);
      if (rank < k) {
        values[r * k + rank] = v;
        indices[r * k + rank] = static_cast<int32_t>(c);
      }
    }
  }
}

template <class T>
const T* in(const Tensor& t) { return static_cast<const T*>(t.raw_data()); }
template <class T>
T* mut(const Tensor& t) { return static_cast<T*>(t.raw_data()); }

void rank_rows(int device, const Tensor& x, int64_t k, bool largest, const Tensor& values,
               const Tensor& indices, const char* name) {
  const int64_t rows = x.size(0), cols = x.size(1);
  if (rows == 0 || k == 0) return;
  // columns over grid x, rows over grid y (at most 65535; the kernel loops over the rest)
  const dim3 grid(std::min<unsigned>(blocks_for(cols), 1024),
                  static_cast<unsigned>(std::min<int64_t>(rows, 65535)));
  MG_DISPATCH_ALL_TYPES(x.dtype(), name, [&] {
    rank_kernel<<<grid, kThreads, 0, stream_for(device)>>>(in<scalar_t>(x), mut<scalar_t>(values),
                                                           mut<int32_t>(indices), rows, cols, k,
                                                           largest);
  });
  MG_CUDA_CHECK_LAUNCH(name);
}

}  // namespace

void CudaBackend::index_select(const Tensor& x, int64_t dim, const Tensor& index,
                               const Tensor& out) {
  DeviceGuard guard(device_);
  const Split3 s = split_at(x.sizes(), dim);
  const int64_t total = out.numel();
  if (total == 0) return;
  MG_DISPATCH_ALL_TYPES(x.dtype(), "index_select", [&] {
    index_select_kernel<<<blocks_for(total), kThreads, 0, stream_for(device_)>>>(
        in<scalar_t>(x), in<int32_t>(index), mut<scalar_t>(out), s, index.numel(), total);
  });
  MG_CUDA_CHECK_LAUNCH("index_select");
}

void CudaBackend::index_add(const Tensor& out, int64_t dim, const Tensor& index,
                            const Tensor& src) {
  DeviceGuard guard(device_);
  const Split3 s = split_at(out.sizes(), dim);
  const int64_t n = index.numel();
  if (n == 0 || s.outer * s.inner == 0) return;
  // A thread per column walking every index is fine for a few indices; the MoE combine and an
  // embedding's gradient have thousands, and sorting them by destination first spreads the work.
  constexpr int64_t kSortAbove = 64;
  if (n > kSortAbove) {
    const SortedKeys sorted = sort_by_key(device_, in<int32_t>(index), n, s.mid);
    MG_DISPATCH_ALL_TYPES(out.dtype(), "index_add", [&] {
      index_add_sorted_kernel<<<blocks_for(s.outer * n * s.inner), kThreads, 0, stream_for(device_)>>>(
          mut<scalar_t>(out), in<int32_t>(sorted.keys), in<int32_t>(sorted.position),
          in<scalar_t>(src), s, n);
    });
    MG_CUDA_CHECK_LAUNCH("index_add");
    return;
  }
  MG_DISPATCH_ALL_TYPES(out.dtype(), "index_add", [&] {
    index_add_kernel<<<blocks_for(s.outer * s.inner), kThreads, 0, stream_for(device_)>>>(
        mut<scalar_t>(out), in<int32_t>(index), in<scalar_t>(src), s, n);
  });
  MG_CUDA_CHECK_LAUNCH("index_add");
}

void CudaBackend::gather(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& out) {
  DeviceGuard guard(device_);
  const int64_t n = index.numel();
  if (n == 0) return;
  const IndexGeometry g = index_geometry(index, x, Tensor(), dim);
  MG_DISPATCH_ALL_TYPES(x.dtype(), "gather", [&] {
    gather_kernel<<<blocks_for(n), kThreads, 0, stream_for(device_)>>>(
        in<scalar_t>(x), in<int32_t>(index), mut<scalar_t>(out), g, n);
  });
  MG_CUDA_CHECK_LAUNCH("gather");
}

void CudaBackend::scatter_add(const Tensor& out, int64_t dim, const Tensor& index,
                              const Tensor& src) {
  DeviceGuard guard(device_);
  const int64_t n = index.numel();
  if (n == 0) return;
  const IndexGeometry g = index_geometry(index, out, src, dim);
  const int64_t fibers = n / index.size(dim);
  MG_DISPATCH_ALL_TYPES(out.dtype(), "scatter_add", [&] {
    scatter_add_kernel<<<blocks_for(fibers), kThreads, 0, stream_for(device_)>>>(
        mut<scalar_t>(out), in<int32_t>(index), in<scalar_t>(src), g, fibers);
  });
  MG_CUDA_CHECK_LAUNCH("scatter_add");
}

void CudaBackend::topk_rows(const Tensor& x, int64_t k, bool largest, const Tensor& values,
                            const Tensor& indices) {
  DeviceGuard guard(device_);
  rank_rows(device_, x, k, largest, values, indices, "topk");
}

void CudaBackend::sort_rows(const Tensor& x, bool descending, const Tensor& values,
                            const Tensor& indices) {
  DeviceGuard guard(device_);
  rank_rows(device_, x, x.size(1), descending, values, indices, "sort");
}

}  // namespace mg::cuda
