// Device discovery, the CUDA error check, streams and the per-device backends. A failing
// cudaGetDeviceCount (no driver, no GPU: CI and most build machines) reads as zero devices, and
// its error string becomes the reason given to whoever asks for CUDA.
#include <atomic>
#include <mutex>
#include <string>
#include <vector>

#include "engine/cuda/cuda_common.cuh"
#include "engine/cuda_device.hpp"

namespace mg::cuda {
namespace {

struct Probe {
  int count = 0;
  std::string reason;
};

const Probe& probe() {
  static const Probe result = [] {
    Probe p;
    const cudaError_t status = cudaGetDeviceCount(&p.count);
    if (status != cudaSuccess) {
      (void)cudaGetLastError();  // clear the sticky error so later calls start clean
      p.count = 0;
      p.reason = cudaGetErrorString(status);
    } else if (p.count == 0) {
      p.reason = "the CUDA runtime reports 0 devices";
    }
    return p;
  }();
  return result;
}

std::atomic<bool> tf32_allowed{false};

// The devices' streams, made on first use: a device nothing ran on has none (and no context).
std::mutex streams_mutex;
std::vector<cudaStream_t>& streams() {
  static std::vector<cudaStream_t> all(static_cast<size_t>(device_count()), nullptr);
  return all;
}

}  // namespace

int device_count() { return probe().count; }
bool is_available() { return probe().count > 0; }
std::string unavailable_reason() { return probe().reason; }
void set_allow_tf32(bool allow) { tf32_allowed = allow; }

// Every device is waited for before any index error is thrown, so that the wait holds either way.
void synchronize() {
  for (int d = 0; d < device_count(); ++d) {
    cudaStream_t stream = nullptr;
    {
      std::lock_guard<std::mutex> lock(streams_mutex);
      stream = streams()[static_cast<size_t>(d)];
    }
    if (stream == nullptr) continue;  // nothing ever ran there
    DeviceGuard guard(d);
    MG_CUDA_CHECK(cudaStreamSynchronize(stream));
  }
  for (int d = 0; d < device_count(); ++d) report_index_errors(d);
}
bool allow_tf32() { return tf32_allowed; }

void check(cudaError_t status, const char* what) {
  if (status == cudaSuccess) return;
  throw Error(detail::concat("cuda: ", what, " failed: ", cudaGetErrorString(status)));
}

DeviceGuard::DeviceGuard(int device) {
  MG_CUDA_CHECK(cudaGetDevice(&previous_));
  if (previous_ != device) MG_CUDA_CHECK(cudaSetDevice(device));
}

DeviceGuard::~DeviceGuard() {
  int current = previous_;
  if (cudaGetDevice(&current) == cudaSuccess && current != previous_)
    (void)cudaSetDevice(previous_);
}

cudaStream_t stream_for(int device) {
  std::lock_guard<std::mutex> lock(streams_mutex);
  cudaStream_t& s = streams().at(static_cast<size_t>(device));
  if (s == nullptr) {
    DeviceGuard guard(device);
    MG_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  }
  return s;
}

Backend& backend_for_device(int index) {
  const int count = device_count();
  MG_CHECK(count > 0, "device cuda:", index, ": no CUDA device is available: ",
           unavailable_reason());
  MG_CHECK(index >= 0 && index < count, "device cuda:", index, ": this machine has ", count,
           " CUDA device(s)");
  // Never destroyed: tensors in static storage may be freed after any static object is gone.
  static std::vector<CudaBackend*>* backends = [count] {
    auto* list = new std::vector<CudaBackend*>();
    for (int d = 0; d < count; ++d) list->push_back(new CudaBackend(d));
    return list;
  }();
  return *(*backends)[static_cast<size_t>(index)];
}

}  // namespace mg::cuda
