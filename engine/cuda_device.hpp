// Questions about CUDA that every build can ask (like torch::cuda::is_available): a build without
// the CUDA backend, or a machine without a GPU or driver, answers "no" / 0 rather than failing.
// The TF32 switch follows torch.backends.cuda.matmul.allow_tf32: off by default, so float32
// GEMMs on the GPU round like the CPU's; on, cuBLAS may use TF32 tensor cores (10-bit mantissa).
#pragma once
#include <string>

namespace mg::cuda {

int device_count();
bool is_available();
// Why no device can be used ("" when one can): the CUDA runtime's error string, or the build.
std::string unavailable_reason();

// Waits until every device has finished the work queued so far (kernels run asynchronously; a
// timing must wait for them), then throws mg::Error for a bad index that a device-side check has
// found since the last synchronization (so does a copy to the host). A no-op without devices.
void synchronize();

void set_allow_tf32(bool allow);
bool allow_tf32();

}  // namespace mg::cuda
