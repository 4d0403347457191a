// Element types (float32, float64 for exact checks, int32 for labels/indices) and devices.
// Names follow the libtorch C++ frontend (kFloat32, kInt32, Device, kCPU) so habits carry over.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "engine/error.hpp"

namespace mg {

enum class ScalarType : uint8_t { Float32, Float64, Int32 };
using Dtype = ScalarType;
inline constexpr ScalarType kFloat32 = ScalarType::Float32;
inline constexpr ScalarType kFloat = ScalarType::Float32;
inline constexpr ScalarType kFloat64 = ScalarType::Float64;
inline constexpr ScalarType kDouble = ScalarType::Float64;
inline constexpr ScalarType kInt32 = ScalarType::Int32;
inline constexpr ScalarType kInt = ScalarType::Int32;

size_t element_size(ScalarType t);
const char* dtype_name(ScalarType t);
inline bool is_floating_point(ScalarType t) { return t != ScalarType::Int32; }

template <class T> struct dtype_of;
template <> struct dtype_of<float> { static constexpr ScalarType value = kFloat32; };
template <> struct dtype_of<double> { static constexpr ScalarType value = kFloat64; };
template <> struct dtype_of<int32_t> { static constexpr ScalarType value = kInt32; };

enum class DeviceType : uint8_t { CPU, CUDA };
inline constexpr DeviceType kCPU = DeviceType::CPU;
inline constexpr DeviceType kCUDA = DeviceType::CUDA;

struct Device {
  DeviceType type = DeviceType::CPU;
  int index = 0;
  Device() = default;
  Device(DeviceType t, int i = 0) : type(t), index(i) {}  // NOLINT: implicit like torch::Device
  static Device cpu() { return Device(kCPU); }
  static Device cuda(int i = 0) { return Device(kCUDA, i); }
  bool is_cpu() const { return type == kCPU; }
  bool is_cuda() const { return type == kCUDA; }
  bool operator==(const Device& o) const { return type == o.type && index == o.index; }
  bool operator!=(const Device& o) const { return !(*this == o); }
  std::string str() const;
};

}  // namespace mg

// Runs the lambda with `scalar_t` bound to the C++ type of DTYPE (PyTorch's AT_DISPATCH idiom).
#define MG_DISPATCH_ALL_TYPES(DTYPE, NAME, ...)                                        \
  [&] {                                                                                \
    switch (DTYPE) {                                                                   \
      case ::mg::ScalarType::Float32: { using scalar_t = float; return __VA_ARGS__(); }   \
      case ::mg::ScalarType::Float64: { using scalar_t = double; return __VA_ARGS__(); }  \
      case ::mg::ScalarType::Int32: { using scalar_t = int32_t; return __VA_ARGS__(); }   \
    }                                                                                  \
    throw ::mg::Error(::mg::detail::concat(NAME, ": unknown dtype"));                  \
  }()

#define MG_DISPATCH_FLOATING_TYPES(DTYPE, NAME, ...)                                   \
  [&] {                                                                                \
    switch (DTYPE) {                                                                   \
      case ::mg::ScalarType::Float32: { using scalar_t = float; return __VA_ARGS__(); }   \
      case ::mg::ScalarType::Float64: { using scalar_t = double; return __VA_ARGS__(); }  \
      default: break;                                                                  \
    }                                                                                  \
    throw ::mg::Error(::mg::detail::concat(NAME, ": expected a floating-point tensor, got ", \
                                           ::mg::dtype_name(DTYPE)));                  \
  }()
