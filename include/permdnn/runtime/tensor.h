// Tensors of the runtime: a dtype, a shape and 64-byte aligned storage.
//
// The runtime computes in two storage types only: float32 for activations
// and weights, and int64 for everything integer (shape arithmetic, indices,
// block offsets, booleans). An ONNX tensor of another integer type (uint8,
// int16, uint16, int32, bool) keeps its ONNX dtype as a tag but is stored
// widened to int64, which keeps every data-movement op a single byte-copy
// routine with two element sizes. float64, float16, strings and complex
// numbers are refused at load time (UnsupportedError).
#pragma once

#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <vector>

#include "permdnn/core/aligned_buffer.h"
#include "permdnn/core/error.h"

namespace permdnn::runtime {

// Values are ONNX TensorProto.DataType codes.
enum class DType : int {
  kFloat32 = 1,
  kUInt8 = 2,
  kInt8 = 3,
  kUInt16 = 4,
  kInt16 = 5,
  kInt32 = 6,
  kInt64 = 7,
  kBool = 9,
};

inline bool IsFloat(DType d) { return d == DType::kFloat32; }
// Bytes of one stored element (4 for float32, 8 for every integer type).
inline std::size_t StorageBytes(DType d) { return IsFloat(d) ? 4 : 8; }
const char* DTypeName(DType d);
// ONNX code -> DType; throws UnsupportedError for types the runtime lacks.
DType DTypeFromOnnx(int onnx_type, const std::string& where);

// A feature the runtime does not implement (operator, dtype, attribute
// value). Distinct from Error so that tools (the conformance test) can tell
// "not supported" from "wrong".
class UnsupportedError : public Error {
 public:
  using Error::Error;
};

int64_t NumElements(std::span<const int64_t> shape);
std::string ShapeString(std::span<const int64_t> shape);

class Tensor {
 public:
  Tensor() = default;
  // Zero-filled.
  Tensor(DType dtype, std::vector<int64_t> shape);
  static Tensor Float(std::vector<int64_t> shape, std::span<const float> data);
  static Tensor Int64(std::vector<int64_t> shape, std::span<const int64_t> data, DType tag = DType::kInt64);

  DType dtype() const { return dtype_; }
  const std::vector<int64_t>& shape() const { return shape_; }
  int64_t size() const { return NumElements(shape_); }
  std::size_t bytes() const { return static_cast<std::size_t>(size()) * StorageBytes(dtype_); }

  // Never null: a tensor of zero elements points at a shared empty block
  // that nothing reads or writes (pointers formed from it and a memcpy of
  // zero bytes from it stay defined).
  float* f() { return reinterpret_cast<float*>(Bytes()); }
  const float* f() const { return reinterpret_cast<const float*>(Bytes()); }
  int64_t* i() { return reinterpret_cast<int64_t*>(Bytes()); }
  const int64_t* i() const { return reinterpret_cast<const int64_t*>(Bytes()); }
  void* raw() { return Bytes(); }
  const void* raw() const { return Bytes(); }
  std::span<float> floats();
  std::span<const float> floats() const;
  std::span<const int64_t> ints() const;

 private:
  static uint8_t* EmptyBlock();
  uint8_t* Bytes() const { return data_.size() ? const_cast<uint8_t*>(data_.data()) : EmptyBlock(); }

  DType dtype_ = DType::kFloat32;
  std::vector<int64_t> shape_;
  AlignedBuffer<uint8_t> data_;
};

}  // namespace permdnn::runtime
