// The CUDA emulator's runtime (see include/cuda_runtime.h for what it keeps of the real one).
//
// Memory: device allocations are host memory, recorded so that copies can check the direction
// their kind claims. Streams: a queue per stream, drained in order when the host waits for it
// (cudaStreamSynchronize, cudaDeviceSynchronize, a copy into pageable host memory, cudaFree,
// cudaMemcpy). Kernels: the blocks of a grid run one after another; the threads of a block run
// as ucontext fibers scheduled round-robin, each until it finishes or blocks at __syncthreads or
// a warp shuffle; a barrier is released when every live thread of the block (of the warp, for a
// shuffle) waits at it.
#include <ucontext.h>

#include <cstdio>
#include <cstdlib>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "cuda_runtime.h"

namespace mg_cuda_emulator {

ThreadCoordinates current;

namespace {

// ---------------------------------------------------------------- devices, errors, memory

int device_count() {
  static const int count = [] {
    const char* env = std::getenv("MG_CUDA_EMULATOR_DEVICES");
    return env != nullptr ? std::atoi(env) : 1;
  }();
  return count;
}

thread_local int current_device = 0;
cudaError_t last_error = cudaSuccess;  // sticky until read, as the runtime's per-thread error

cudaError_t fail(cudaError_t error) {
  last_error = error;
  return error;
}

std::mutex memory_mutex;
std::map<uintptr_t, size_t> device_blocks;  // start -> size

bool is_device_range(const void* p, size_t n) {
  std::lock_guard<std::mutex> lock(memory_mutex);
  const auto address = reinterpret_cast<uintptr_t>(p);
  auto it = device_blocks.upper_bound(address);
  if (it == device_blocks.begin()) return false;
  --it;
  return address >= it->first && address + n <= it->first + it->second;
}

// ---------------------------------------------------------------- streams

struct Stream {
  int device = 0;
  std::deque<std::function<void()>> work;
};
std::mutex stream_mutex;
std::vector<std::unique_ptr<Stream>> streams;       // made by cudaStreamCreateWithFlags
std::vector<std::unique_ptr<Stream>> null_streams;  // one per device

Stream& stream_of(cudaStream_t s) {
  std::lock_guard<std::mutex> lock(stream_mutex);
  if (s != nullptr) return *reinterpret_cast<Stream*>(s);
  while (null_streams.size() < static_cast<size_t>(device_count())) {
    null_streams.push_back(std::make_unique<Stream>());
    null_streams.back()->device = static_cast<int>(null_streams.size()) - 1;
  }
  return *null_streams[static_cast<size_t>(current_device)];
}

void enqueue(cudaStream_t s, std::function<void()> work) { stream_of(s).work.push_back(std::move(work)); }

std::recursive_mutex execution_mutex;  // one host thread runs kernels at a time

cudaError_t drain(Stream& stream) {
  std::lock_guard<std::recursive_mutex> lock(execution_mutex);
  while (!stream.work.empty()) {
    std::function<void()> work = std::move(stream.work.front());
    stream.work.pop_front();
    work();
  }
  return last_error;
}

cudaError_t drain_all() {
  for (int d = 0; d < device_count(); ++d) (void)stream_of(nullptr);
  std::vector<Stream*> all;
  {
    std::lock_guard<std::mutex> lock(stream_mutex);
    for (const auto& s : null_streams) all.push_back(s.get());
    for (const auto& s : streams) all.push_back(s.get());
  }
  for (Stream* s : all) drain(*s);
  return last_error;
}

// ---------------------------------------------------------------- fibers

constexpr size_t kStackBytes = 128 * 1024;
enum class FiberState { Ready, AtBlockBarrier, AtWarpBarrier, Done };

// Fiber stacks, allocated once and reused by every block (at most 1024 threads per block).
char* stack_of(unsigned thread) {
  static std::vector<std::unique_ptr<char[]>> stacks;
  while (stacks.size() <= thread) stacks.emplace_back(new char[kStackBytes]);
  return stacks[thread].get();
}

struct Fiber {
  ucontext_t context;
  FiberState state = FiberState::Ready;
  uint3 thread_idx;
  int lane = 0, warp = 0;
  unsigned shuffles = 0;  // how many this thread has made: picks the exchange buffer
};

// A thread that blocks while the block runs without fibers (see run_block).
struct BlockedWithoutFiber {};

struct BlockRun {
  ucontext_t scheduler;
  std::vector<Fiber> fibers;
  Fiber* running = nullptr;
  bool direct = false;
  bool blocked = false;  // some thread has waited at a barrier
  const std::function<void()>* kernel = nullptr;
  // Two generations of shuffle slots per warp: a lane may run one shuffle ahead of the others.
  std::vector<uint64_t> slots[2];
};
BlockRun* block_run = nullptr;

void fiber_main() {
  (*block_run->kernel)();
  block_run->running->state = FiberState::Done;
  // returning resumes uc_link, the scheduler
}

void block_until_released(FiberState state) {
  if (block_run->direct) throw BlockedWithoutFiber{};
  block_run->blocked = true;
  Fiber& self = *block_run->running;
  self.state = state;
  swapcontext(&self.context, &block_run->scheduler);
}

void start_fiber(BlockRun& run, unsigned t) {
  Fiber& f = run.fibers[t];
  getcontext(&f.context);
  f.context.uc_stack.ss_sp = stack_of(t);
  f.context.uc_stack.ss_size = kStackBytes;
  f.context.uc_link = &run.scheduler;
  makecontext(&f.context, fiber_main, 0);
}

// Releases every warp whose live lanes all wait at a shuffle, else the block barrier when every
// live thread waits there; false when nothing could be released.
bool release_barriers(BlockRun& run, unsigned threads) {
  bool released = false;
  for (unsigned w = 0; w * 32 < threads; ++w) {
    bool any = false, all = true;
    for (unsigned t = w * 32; t < std::min(threads, (w + 1) * 32); ++t) {
      const FiberState s = run.fibers[t].state;
      if (s == FiberState::Done) continue;
      any = true;
      all &= s == FiberState::AtWarpBarrier;
    }
    if (!any || !all) continue;
    for (unsigned t = w * 32; t < std::min(threads, (w + 1) * 32); ++t)
      if (run.fibers[t].state == FiberState::AtWarpBarrier) run.fibers[t].state = FiberState::Ready;
    released = true;
  }
  if (released) return true;
  for (const Fiber& f : run.fibers)
    if (f.state != FiberState::Done && f.state != FiberState::AtBlockBarrier) return false;
  for (Fiber& f : run.fibers)
    if (f.state == FiberState::AtBlockBarrier) f.state = FiberState::Ready;
  return true;
}

// Runs one block; an empty string when it completed, else what went wrong. Most kernels never
// block, and switching fibers costs two system calls, so thread 0 runs first as a fiber: when it
// finishes without waiting at a barrier, the other threads run as plain calls, and one that does
// try to wait is reported (its block would otherwise have deadlocked on a GPU or run differently).
std::string run_block(const std::function<void()>& kernel, uint3 block_idx, dim3 grid, dim3 block) {
  const unsigned threads = block.x * block.y * block.z;
  BlockRun run;
  run.kernel = &kernel;
  run.fibers.resize(threads);
  run.slots[0].assign((threads + 31) / 32 * 32, 0);
  run.slots[1].assign((threads + 31) / 32 * 32, 0);
  for (unsigned t = 0; t < threads; ++t) {
    Fiber& f = run.fibers[t];
    f.thread_idx = {t % block.x, (t / block.x) % block.y, t / (block.x * block.y)};
    f.lane = static_cast<int>(t % 32);
    f.warp = static_cast<int>(t / 32);
  }
  BlockRun* outer = block_run;
  block_run = &run;
  auto resume = [&](Fiber& f) {
    run.running = &f;
    current = {f.thread_idx, block_idx, block, grid};
    swapcontext(&run.scheduler, &f.context);
  };
  std::string problem;
  start_fiber(run, 0);
  resume(run.fibers[0]);
  if (!run.blocked) {
    run.direct = true;
    for (unsigned t = 1; t < threads && problem.empty(); ++t) {
      current = {run.fibers[t].thread_idx, block_idx, block, grid};
      try {
        kernel();
      } catch (const BlockedWithoutFiber&) {
        problem = "thread " + std::to_string(t) + " waits at a barrier that thread 0 never reached";
      }
    }
  } else {
    for (unsigned t = 1; t < threads; ++t) start_fiber(run, t);
    for (;;) {
      bool ran = false;
      for (Fiber& f : run.fibers)
        if (f.state == FiberState::Ready) {
          ran = true;
          resume(f);
        }
      bool done = true;
      for (const Fiber& f : run.fibers) done &= f.state == FiberState::Done;
      if (done) break;
      if (!release_barriers(run, threads) && !ran) {
        problem = "threads wait at a __syncthreads or shuffle that other live threads never reach";
        break;
      }
    }
  }
  block_run = outer;
  return problem;
}

}  // namespace

void sync_threads() { block_until_released(FiberState::AtBlockBarrier); }

uint64_t shuffle(uint64_t bits, int source_lane) {
  Fiber& self = *block_run->running;
  std::vector<uint64_t>& slots = block_run->slots[self.shuffles++ % 2];
  const size_t base = static_cast<size_t>(self.warp) * 32;
  slots[base + static_cast<size_t>(self.lane)] = bits;
  block_until_released(FiberState::AtWarpBarrier);
  const size_t source = base + static_cast<size_t>(source_lane);
  if (source_lane < 0 || source_lane >= 32 || source >= block_run->fibers.size()) return bits;
  return slots[source];
}

void launch(dim3 grid, dim3 block, size_t shared_bytes, cudaStream_t stream,
            std::function<void()> kernel) {
  const uint64_t threads = uint64_t(block.x) * block.y * block.z;
  if (grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.x > 2147483647u || grid.y > 65535 ||
      grid.z > 65535 || threads == 0 || threads > 1024 || block.z > 64 || shared_bytes > 48 * 1024) {
    std::fprintf(stderr,
                 "cuda emulator: invalid launch grid (%u, %u, %u) block (%u, %u, %u) shared %zu\n",
                 grid.x, grid.y, grid.z, block.x, block.y, block.z, shared_bytes);
    fail(cudaErrorInvalidConfiguration);
    return;
  }
  enqueue(stream, [grid, block, kernel = std::move(kernel)] {
    for (unsigned z = 0; z < grid.z; ++z)
      for (unsigned y = 0; y < grid.y; ++y)
        for (unsigned x = 0; x < grid.x; ++x)
          if (const std::string problem = run_block(kernel, {x, y, z}, grid, block); !problem.empty()) {
            std::fprintf(stderr, "cuda emulator: block (%u, %u, %u): %s\n", x, y, z, problem.c_str());
            fail(cudaErrorLaunchFailure);
            return;
          }
  });
}

}  // namespace mg_cuda_emulator

using namespace mg_cuda_emulator;

cudaError_t cudaGetDeviceCount(int* count) {
  *count = device_count();
  return cudaSuccess;
}
cudaError_t cudaGetDevice(int* device) {
  *device = current_device;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int device) {
  if (device < 0 || device >= device_count()) return fail(cudaErrorInvalidDevice);
  current_device = device;
  return cudaSuccess;
}

cudaError_t cudaMalloc(void** ptr, size_t nbytes) {
  const size_t rounded = (std::max<size_t>(nbytes, 1) + 255) / 256 * 256;
  *ptr = std::aligned_alloc(256, rounded);
  if (*ptr == nullptr) return fail(cudaErrorMemoryAllocation);
  // fresh device memory holds garbage: NaN bytes, so a kernel that reads before writing shows
  std::memset(*ptr, 0xff, rounded);
  std::lock_guard<std::mutex> lock(memory_mutex);
  device_blocks[reinterpret_cast<uintptr_t>(*ptr)] = rounded;
  return cudaSuccess;
}

cudaError_t cudaFree(void* ptr) {
  if (ptr == nullptr) return cudaSuccess;
  drain_all();  // as the real cudaFree, which synchronizes the device
  {
    std::lock_guard<std::mutex> lock(memory_mutex);
    if (device_blocks.erase(reinterpret_cast<uintptr_t>(ptr)) == 0) return fail(cudaErrorInvalidDevicePointer);
  }
  std::free(ptr);
  return cudaSuccess;
}

namespace {

bool direction_ok(void* dst, const void* src, size_t n, cudaMemcpyKind kind) {
  const bool dst_device = is_device_range(dst, n), src_device = is_device_range(src, n);
  switch (kind) {
    case cudaMemcpyHostToDevice: return dst_device && !src_device;
    case cudaMemcpyDeviceToHost: return !dst_device && src_device;
    case cudaMemcpyDeviceToDevice: return dst_device && src_device;
    case cudaMemcpyHostToHost: return !dst_device && !src_device;
    case cudaMemcpyDefault: return true;
  }
  return false;
}

}  // namespace

cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t nbytes, cudaMemcpyKind kind,
                            cudaStream_t stream) {
  if (nbytes == 0) return cudaSuccess;
  if (!direction_ok(dst, src, nbytes, kind)) {
    std::fprintf(stderr, "cuda emulator: cudaMemcpy of %zu bytes with kind %d between %s and %s memory\n",
                 nbytes, static_cast<int>(kind), is_device_range(dst, nbytes) ? "device" : "host",
                 is_device_range(src, nbytes) ? "device" : "host");
    return fail(cudaErrorInvalidMemcpyDirection);
  }
  if (kind == cudaMemcpyHostToDevice) {
    // pageable host memory is staged before the call returns: the caller may free it at once
    auto staged = std::make_shared<std::vector<char>>(static_cast<const char*>(src),
                                                      static_cast<const char*>(src) + nbytes);
    enqueue(stream, [dst, staged] { std::memcpy(dst, staged->data(), staged->size()); });
    return cudaSuccess;
  }
  if (kind == cudaMemcpyDeviceToHost) {
    // into pageable host memory the copy is synchronous: the stream's earlier work first
    drain(stream_of(stream));
    std::memcpy(dst, src, nbytes);
    return last_error;
  }
  enqueue(stream, [dst, src, nbytes] { std::memcpy(dst, src, nbytes); });
  return cudaSuccess;
}

cudaError_t cudaMemcpy(void* dst, const void* src, size_t nbytes, cudaMemcpyKind kind) {
  const cudaError_t status = cudaMemcpyAsync(dst, src, nbytes, kind, nullptr);
  if (status != cudaSuccess) return status;
  return drain(stream_of(nullptr));
}

cudaError_t cudaMemcpyPeerAsync(void* dst, int dst_device, const void* src, int src_device,
                                size_t nbytes, cudaStream_t stream) {
  if (dst_device < 0 || dst_device >= device_count() || src_device < 0 || src_device >= device_count())
    return fail(cudaErrorInvalidDevice);
  return cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyDeviceToDevice, stream);
}

cudaError_t cudaMemsetAsync(void* ptr, int value, size_t nbytes, cudaStream_t stream) {
  if (nbytes == 0) return cudaSuccess;
  if (!is_device_range(ptr, nbytes)) return fail(cudaErrorInvalidValue);
  enqueue(stream, [ptr, value, nbytes] { std::memset(ptr, value, nbytes); });
  return cudaSuccess;
}

cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned /*flags*/) {
  std::lock_guard<std::mutex> lock(stream_mutex);
  streams.push_back(std::make_unique<Stream>());
  streams.back()->device = current_device;
  *stream = reinterpret_cast<cudaStream_t>(streams.back().get());
  return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t stream) { return drain(stream_of(stream)); }
cudaError_t cudaDeviceSynchronize() { return drain_all(); }

cudaError_t cudaGetLastError() {
  const cudaError_t error = last_error;
  last_error = cudaSuccess;
  return error;
}
cudaError_t cudaPeekAtLastError() { return last_error; }

const char* cudaGetErrorString(cudaError_t error) {
  switch (error) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidDevicePointer: return "invalid device pointer";
    case cudaErrorInvalidMemcpyDirection: return "invalid copy direction for memcpy";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorLaunchFailure: return "unspecified launch failure";
  }
  return "unknown error";
}
