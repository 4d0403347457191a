// Counting sorts on the device. The counting sort into buckets (the MoE dispatch: (input, slot)
// pairs grouped by expert), after CpuBackend::bucket_sort, in four kernels; only the counts go to
// the host, which needs them:
//   1. per chunk of kChunk keys, how many fall in each bucket (integer atomics: exact, so
//      deterministic);
//   2. per bucket, a scan over the chunks: each chunk's count becomes the number of the bucket's
//      keys in earlier chunks, and the bucket's total is kept;
//   3. each bucket's start: the kept (cut) totals of the buckets before it;
//   4. each key's rank in its bucket = its chunk's base + the equal keys before it in the chunk,
//      so the order within a bucket is the keys' order (stable), as on the CPU.
// sort_by_key (for index_add) sorts keys of any range with no host round trip: the same steps per
// 8-bit digit, least significant first (a stable LSD radix sort), so its tables stay [chunks, 256]
// however many distinct keys there are.
#include "engine/cuda/cuda_common.cuh"

namespace mg::cuda {
namespace {

constexpr int kChunk = kThreads;

// hist [chunks, B + 1]; column B counts the keys outside [0, B).
__global__ void chunk_histogram_kernel(const int32_t* key, int64_t n, int64_t B, int32_t* hist) {
  const int64_t i = blockIdx.x * int64_t(kChunk) + threadIdx.x;
  if (i >= n) return;
  const int32_t k = key[i];
  atomicAdd(&hist[blockIdx.x * (B + 1) + (k >= 0 && k < B ? k : B)], 1);
}

__global__ void scan_chunks_kernel(int32_t* hist, int64_t chunks, int64_t columns,
                                   int32_t* totals) {
  MG_GRID_STRIDE(b, columns) {
    int32_t before = 0;
    for (int64_t c = 0; c < chunks; ++c) {
      const int32_t count = hist[c * columns + b];
      hist[c * columns + b] = before;
      before += count;
    }
    totals[b] = before;
  }
}

// One thread: B is the number of experts, and the sum must be in order.
__global__ void bucket_starts_kernel(const int32_t* totals, int64_t B, int64_t limit, int32_t* start) {
  int64_t placed = 0;
  for (int64_t b = 0; b < B; ++b) {
    start[b] = static_cast<int32_t>(placed);
    placed += totals[b] < limit ? totals[b] : limit;
  }
}

// Radix pass: the digit (key >> shift) & 255 of each key, keys outside [0, bound) counted as
// `bound`, so they sort last.
__device__ inline int32_t digit_of(int32_t key, int64_t bound, int shift) {
  const int64_t k = key >= 0 && key < bound ? key : bound;
  return static_cast<int32_t>((k >> shift) & 255);
}

__global__ void digit_histogram_kernel(const int32_t* key, int64_t n, int64_t bound, int shift,
                                       int32_t* hist) {
  const int64_t i = blockIdx.x * int64_t(kChunk) + threadIdx.x;
  if (i >= n) return;
  atomicAdd(&hist[blockIdx.x * 256 + digit_of(key[i], bound, shift)], 1);
}

__global__ void place_digits_kernel(const int32_t* key, const int32_t* position, int64_t n,
                                    int64_t bound, int shift, const int32_t* chunk_base,
                                    const int32_t* start, int32_t* key_out, int32_t* position_out) {
  __shared__ int32_t chunk_digits[kChunk];
  const int64_t i = blockIdx.x * int64_t(kChunk) + threadIdx.x;
  chunk_digits[threadIdx.x] = i < n ? digit_of(key[i], bound, shift) : -1;
  __syncthreads();
  if (i >= n) return;
  const int32_t d = chunk_digits[threadIdx.x];
  int64_t rank = chunk_base[blockIdx.x * 256 + d];
  for (unsigned j = 0; j < threadIdx.x; ++j) rank += chunk_digits[j] == d;
  key_out[start[d] + rank] = key[i] >= 0 && key[i] < bound ? key[i] : static_cast<int32_t>(bound);
  position_out[start[d] + rank] = position != nullptr ? position[i] : static_cast<int32_t>(i);
}

__global__ void place_kernel(const int32_t* key, int64_t n, int64_t B, const int32_t* chunk_base,
                             const int32_t* start, int64_t limit, int32_t* out) {
  __shared__ int32_t chunk_keys[kChunk];
  const int64_t i = blockIdx.x * int64_t(kChunk) + threadIdx.x;
  chunk_keys[threadIdx.x] = i < n ? key[i] : -1;
  __syncthreads();
  const int32_t k = chunk_keys[threadIdx.x];
  if (i >= n || k < 0 || k >= B) return;
  int64_t rank = chunk_base[blockIdx.x * (B + 1) + k];
  for (unsigned j = 0; j < threadIdx.x; ++j) rank += chunk_keys[j] == k;
  if (rank < limit) out[start[k] + rank] = static_cast<int32_t>(i);
}

}  // namespace

SortedKeys sort_by_key(int device, const int32_t* keys, int64_t n, int64_t bound) {
  cudaStream_t stream = stream_for(device);
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  SortedKeys sorted{scratch({n}, kInt32, device), scratch({n}, kInt32, device)};
  Tensor keys_tmp = scratch({n}, kInt32, device), position_tmp = scratch({n}, kInt32, device);
  const Tensor hist = scratch({chunks, 256}, kInt32, device);
  const Tensor totals = scratch({256}, kInt32, device), start = scratch({256}, kInt32, device);
  auto* base = static_cast<int32_t*>(hist.raw_data());
  // the passes alternate between two buffer pairs, ending in `sorted`
  int passes = 1;
  while ((bound >> (8 * passes)) > 0) ++passes;  // digits of `bound` itself (the outsiders' key)
  const Tensor* into[2] = {passes % 2 == 1 ? &sorted.keys : &keys_tmp,
                           passes % 2 == 1 ? &keys_tmp : &sorted.keys};
  const Tensor* into_position[2] = {passes % 2 == 1 ? &sorted.position : &position_tmp,
                                    passes % 2 == 1 ? &position_tmp : &sorted.position};
  const int32_t* key_in = keys;
  const int32_t* position_in = nullptr;  // the first pass's positions are 0 .. n-1
  for (int pass = 0; pass < passes; ++pass) {
    const int shift = 8 * pass;
    auto* key_out = static_cast<int32_t*>(into[pass % 2]->raw_data());
    auto* position_out = static_cast<int32_t*>(into_position[pass % 2]->raw_data());
    MG_CUDA_CHECK(cudaMemsetAsync(base, 0, hist.numel() * sizeof(int32_t), stream));
    digit_histogram_kernel<<<static_cast<unsigned>(chunks), kChunk, 0, stream>>>(key_in, n, bound,
                                                                                shift, base);
    scan_chunks_kernel<<<1, 256, 0, stream>>>(base, chunks, 256,
                                              static_cast<int32_t*>(totals.raw_data()));
    bucket_starts_kernel<<<1, 1, 0, stream>>>(static_cast<const int32_t*>(totals.raw_data()), 256,
                                              n, static_cast<int32_t*>(start.raw_data()));
    place_digits_kernel<<<static_cast<unsigned>(chunks), kChunk, 0, stream>>>(
        key_in, position_in, n, bound, shift, base, static_cast<const int32_t*>(start.raw_data()),
        key_out, position_out);
    MG_CUDA_CHECK_LAUNCH("sort_by_key");
    key_in = key_out;
    position_in = position_out;
  }
  return sorted;
}

std::vector<int64_t> CudaBackend::bucket_sort(const Tensor& keys, int64_t num_buckets, int64_t limit,
                                              const Tensor& out) {
  DeviceGuard guard(device_);
  const int64_t n = keys.numel(), B = num_buckets;
  std::vector<int64_t> counts(B + 1, 0);
  if (n == 0) return counts;
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  cudaStream_t stream = stream_for(device_);
  const Tensor hist = scratch({chunks, B + 1}, kInt32, device_);
  const Tensor totals = scratch({B + 1}, kInt32, device_);
  MG_CUDA_CHECK(cudaMemsetAsync(hist.raw_data(), 0, hist.numel() * sizeof(int32_t), stream));
  const auto* key = static_cast<const int32_t*>(keys.raw_data());
  auto* base = static_cast<int32_t*>(hist.raw_data());
  chunk_histogram_kernel<<<static_cast<unsigned>(chunks), kChunk, 0, stream>>>(key, n, B, base);
  MG_CUDA_CHECK_LAUNCH("bucket_sort histogram");
  scan_chunks_kernel<<<blocks_for(B + 1), kThreads, 0, stream>>>(
      base, chunks, B + 1, static_cast<int32_t*>(totals.raw_data()));
  MG_CUDA_CHECK_LAUNCH("bucket_sort scan");
  const Tensor start = scratch({B}, kInt32, device_);
  bucket_starts_kernel<<<1, 1, 0, stream>>>(static_cast<const int32_t*>(totals.raw_data()), B,
                                            limit, static_cast<int32_t*>(start.raw_data()));
  MG_CUDA_CHECK_LAUNCH("bucket_sort starts");
  place_kernel<<<static_cast<unsigned>(chunks), kChunk, 0, stream>>>(
      key, n, B, base, static_cast<const int32_t*>(start.raw_data()), limit,
      static_cast<int32_t*>(out.raw_data()));
  MG_CUDA_CHECK_LAUNCH("bucket_sort place");
  const std::vector<int32_t> host_totals = totals.to_vector<int32_t>();  // waits for the sort
  counts.assign(host_totals.begin(), host_totals.end());
  return counts;
}

}  // namespace mg::cuda
