// Device -> backend. CUDA is served only by a CUDA-enabled build on a machine with a GPU; every
// other request gets an error that says which of the two is missing.
#include "engine/backend.hpp"

#include "engine/cpu/cpu_backend.hpp"

namespace mg {

Backend& backend_for(Device device) {
  static cpu::CpuBackend cpu_backend;
  if (device.is_cpu()) return cpu_backend;
  throw Error(detail::concat("device ", device.str(), ": this build of moegrad has no CUDA "
                             "backend yet (configure with CUDA and a GPU present)"));
}

}  // namespace mg
