// Internal protobuf <-> runtime conversions (include only inside src/runtime).
#pragma once

#include <span>
#include <string>
#include <vector>

#include <onnx/onnx_pb.h>

#include "permdnn/runtime/tensor.h"

namespace permdnn::runtime::detail {

// TensorProto -> Tensor, validating dims, dtype and data size. `where`
// prefixes every message.
Tensor TensorFromProto(const onnx::TensorProto& t, const std::string& where);
// Bytes of one element at its ONNX dtype (for file-size accounting).
int OnnxElementBytes(int onnx_type);

// Writers (raw_data, little endian).
void SetFloatTensor(onnx::TensorProto* t, const std::string& name, std::span<const float> data,
                    const std::vector<int64_t>& shape);
void SetUInt16Tensor(onnx::TensorProto* t, const std::string& name, std::span<const uint16_t> data,
                     const std::vector<int64_t>& shape);
void SetInt32Tensor(onnx::TensorProto* t, const std::string& name, std::span<const int32_t> data,
                    const std::vector<int64_t>& shape);
void SetUInt8Tensor(onnx::TensorProto* t, const std::string& name, std::span<const uint8_t> data,
                    const std::vector<int64_t>& shape);
void SetInt64Tensor(onnx::TensorProto* t, const std::string& name, std::span<const int64_t> data,
                    const std::vector<int64_t>& shape);
void AddAttr(onnx::NodeProto* n, const std::string& name, int64_t v);
void AddAttr(onnx::NodeProto* n, const std::string& name, float v);
void AddAttr(onnx::NodeProto* n, const std::string& name, const std::vector<int64_t>& v);
// Serializes and writes atomically.
void WriteModelProto(const onnx::ModelProto& m, const std::string& path);
onnx::ModelProto ParseModelProto(std::string_view bytes, const std::string& name);

}  // namespace permdnn::runtime::detail
