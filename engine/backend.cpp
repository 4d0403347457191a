// Device -> backend. CUDA is served only by a CUDA-enabled build on a machine with a GPU; every
// other request gets an error that says which of the two is missing. A build without CUDA also
// answers the questions of engine/cuda_device.hpp here (no device, and why).
#include "engine/backend.hpp"

#include <atomic>

#include "engine/cpu/cpu_backend.hpp"
#include "engine/cuda_device.hpp"
#if defined(MOEGRAD_HAVE_CUDA)
#include "engine/cuda/cuda_backend.hpp"
#endif

namespace mg {

Backend& backend_for(Device device) {
  static cpu::CpuBackend cpu_backend;
  if (device.is_cpu()) return cpu_backend;
#if defined(MOEGRAD_HAVE_CUDA)
  return cuda::backend_for_device(device.index);
#else
  throw Error(detail::concat("device ", device.str(), ": CUDA requested but this build has no "
                             "CUDA backend (configure where nvcc exists, with -DMOEGRAD_CUDA=ON "
                             "or AUTO)"));
#endif
}

#if !defined(MOEGRAD_HAVE_CUDA)
namespace cuda {
namespace {
std::atomic<bool> tf32_allowed{false};
}  // namespace
int device_count() { return 0; }
bool is_available() { return false; }
std::string unavailable_reason() { return "this build has no CUDA backend"; }
void synchronize() {}
void set_allow_tf32(bool allow) { tf32_allowed = allow; }
bool allow_tf32() { return tf32_allowed; }
}  // namespace cuda
#endif

}  // namespace mg
