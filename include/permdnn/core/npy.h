// NumPy .npy files (format version 1.0/2.0), the tensor exchange format of
// permdnn: training runs store their weights as .npy next to model.json,
// `permdnn run` reads inputs and writes outputs as .npy, and anyone with
// NumPy can inspect them. Little-endian, C order only; supported dtypes:
// f4, f8, i1, u1, i2, u2, i4, i8. Errors name the file and what was wrong.
#pragma once

#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "permdnn/core/error.h"

namespace permdnn {

template <typename T>
constexpr const char* NpyDescr();
template <> constexpr const char* NpyDescr<float>() { return "<f4"; }
template <> constexpr const char* NpyDescr<double>() { return "<f8"; }
template <> constexpr const char* NpyDescr<int8_t>() { return "|i1"; }
template <> constexpr const char* NpyDescr<uint8_t>() { return "|u1"; }
template <> constexpr const char* NpyDescr<int16_t>() { return "<i2"; }
template <> constexpr const char* NpyDescr<uint16_t>() { return "<u2"; }
template <> constexpr const char* NpyDescr<int32_t>() { return "<i4"; }
template <> constexpr const char* NpyDescr<int64_t>() { return "<i8"; }

struct NpyArray {
  std::string descr;            // e.g. "<f4"
  std::vector<int64_t> shape;   // empty for a scalar
  std::vector<uint8_t> bytes;   // element data, C order

  int64_t size() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
  }
  template <typename T>
  bool is() const { return descr == NpyDescr<T>(); }
  // The data as T; throws Error if the dtype differs.
  template <typename T>
  std::vector<T> as(const std::string& what = "array") const {
    PERMDNN_CHECK(is<T>(), "{}: dtype is {}, expected {}", what, descr, NpyDescr<T>());
    std::vector<T> out(static_cast<std::size_t>(size()));
    if (!out.empty()) std::memcpy(out.data(), bytes.data(), out.size() * sizeof(T));
    return out;
  }
  // Any numeric dtype converted to float.
  std::vector<float> ToFloat(const std::string& what = "array") const;
};

// Parses .npy bytes; `name` is used in error messages.
NpyArray ParseNpy(std::string_view data, const std::string& name);
NpyArray ReadNpy(const std::string& path);

// Serializes / writes (atomically) one array.
std::string SerializeNpy(const std::string& descr, std::span<const int64_t> shape, const void* data,
                         std::size_t bytes);
template <typename T>
void WriteNpy(const std::string& path, std::span<const T> data, std::vector<int64_t> shape);

}  // namespace permdnn
