// Index validation without a host round trip, as PyTorch's device-side asserts but reported as an
// ordinary mg::Error. A check is a kernel that records the first bad value of an index tensor in
// its device's error record, next to the check's number; the host keeps each pending check's
// message in a table. Nothing is read back at check time: the record is read where the host
// waits for the device anyway (report_index_errors, called after a copy to the host and by
// mg::cuda::synchronize()), and only when checks are pending.
//
// Checks run in stream order, so once one has failed the later ones leave the record alone: the
// error reported is the first failing check's, at its lowest failing position, deterministically
// (an atomicMin over position << 32 | value carries the value along with its position).
#include <climits>
#include <memory>
#include <mutex>
#include <vector>

#include "engine/cuda/cuda_common.cuh"
#include "engine/cuda_device.hpp"

namespace mg::cuda {
namespace {

struct ErrorRecord {
  unsigned int check;        // the failing check's number; 0: none has failed
  unsigned long long first;  // position << 32 | value bits of its first bad value
};
constexpr ErrorRecord kNoError{0, ULLONG_MAX};

// A bounded table: past this many pending checks, the next check first drains the device (a rare
// synchronization, for programs that queue many index ops without ever reading a result).
constexpr size_t kMaxPending = 4096;

struct PendingChecks {
  std::mutex mutex;
  ErrorRecord* record = nullptr;            // device memory, allocated at the first check
  std::vector<IndexErrorMessage> messages;  // check k's message is messages[k - 1]
};

// Never destroyed, like the allocators: static objects may still index or copy while others are
// being destroyed.
PendingChecks& pending_for(int device) {
  static std::vector<std::unique_ptr<PendingChecks>>* tables = [] {
    auto* list = new std::vector<std::unique_ptr<PendingChecks>>();
    for (int d = 0; d < device_count(); ++d) list->push_back(std::make_unique<PendingChecks>());
    return list;
  }();
  return *tables->at(static_cast<size_t>(device));
}

__global__ void check_index_kernel(const int32_t* index, int64_t n, int64_t size, bool has_ignore,
                                   int32_t ignore, unsigned int check, ErrorRecord* record) {
  if (record->check != 0 && record->check != check) return;  // an earlier check's error stands
  MG_GRID_STRIDE(i, n) {
    const int32_t v = index[i];
    if ((v >= 0 && v < size) || (has_ignore && v == ignore)) continue;
    record->check = check;  // every failing thread writes the same number
    const unsigned long long position = i;
    atomicMin(&record->first, (position << 32) | static_cast<uint32_t>(v));
    break;  // a thread's later positions are higher
  }
}

// With the table locked: waits for the device's stream, reads its record, empties the table and
// throws the recorded error, if any. The stream has drained, so every pending check has run.
void drain(PendingChecks& p, int device) {
  if (p.messages.empty()) return;
  DeviceGuard guard(device);
  cudaStream_t stream = stream_for(device);
  ErrorRecord found;
  MG_CUDA_CHECK(cudaMemcpyAsync(&found, p.record, sizeof found, cudaMemcpyDeviceToHost, stream));
  MG_CUDA_CHECK(cudaStreamSynchronize(stream));
  if (found.check == 0) {
    p.messages.clear();
    return;
  }
  const IndexErrorMessage message = std::move(p.messages.at(found.check - 1));
  p.messages.clear();
  MG_CUDA_CHECK(cudaMemcpyAsync(p.record, &kNoError, sizeof kNoError, cudaMemcpyHostToDevice,
                                stream));
  const auto value = static_cast<int32_t>(static_cast<uint32_t>(found.first));
  throw Error(detail::concat(message(value), " (found on cuda:", device,
                             " by a device-side check; reported at the next synchronization)"));
}

}  // namespace

void report_index_errors(int device) {
  PendingChecks& p = pending_for(device);
  std::lock_guard<std::mutex> lock(p.mutex);
  drain(p, device);
}

void CudaBackend::check_index_range(const Tensor& index, int64_t size,
                                    std::optional<int32_t> ignore, IndexErrorMessage message) {
  const int64_t n = index.numel();
  if (n == 0) return;
  MG_CHECK(n <= UINT_MAX, "cuda: index validation supports up to ", UINT_MAX,
           " indices, got an index of shape ", shape_str(index.sizes()));
  DeviceGuard guard(device_);
  PendingChecks& p = pending_for(device_);
  std::lock_guard<std::mutex> lock(p.mutex);
  if (p.messages.size() >= kMaxPending) drain(p, device_);
  cudaStream_t stream = stream_for(device_);
  if (p.record == nullptr) {
    MG_CUDA_CHECK(cudaMalloc(&p.record, sizeof(ErrorRecord)));
    MG_CUDA_CHECK(cudaMemcpyAsync(p.record, &kNoError, sizeof kNoError, cudaMemcpyHostToDevice,
                                  stream));
  }
  p.messages.push_back(std::move(message));
  const auto check = static_cast<unsigned int>(p.messages.size());
  check_index_kernel<<<blocks_for(n), kThreads, 0, stream>>>(
      static_cast<const int32_t*>(index.raw_data()), n, size, ignore.has_value(),
      ignore.value_or(0), check, p.record);
  MG_CUDA_CHECK_LAUNCH("check_index_range");
}

}  // namespace mg::cuda
