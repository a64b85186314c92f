// Internal protobuf <-> runtime conversions (include only inside src/runtime).
#pragma once

#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include <onnx/onnx_pb.h>

#include "permdnn/formats/attributes.h"
#include "permdnn/formats/registry.h"
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
void SetInt8Tensor(onnx::TensorProto* t, const std::string& name, std::span<const int8_t> data,
                   const std::vector<int64_t>& shape);
void SetInt64Tensor(onnx::TensorProto* t, const std::string& name, std::span<const int64_t> data,
                    const std::vector<int64_t>& shape);
// The one ONNX attribute reader: a node's attributes as formats::Attributes
// (TENSOR attributes into `tensors`; GRAPH and the other kinds are kept as
// Value::kOther, which no reader takes). `where` prefixes errors.
void ReadAttributes(const onnx::NodeProto& n, const std::string& where, formats::Attributes* attrs,
                    std::map<std::string, std::shared_ptr<Tensor>>* tensors = nullptr);
// Appends attrs to n (ints, floats, strings, lists).
void WriteAttributes(const formats::Attributes& attrs, onnx::NodeProto* n);
// A formats::NodeSpec as a node of g: op type and domain, attributes, X =
// input, Y = output, and one initializer per stored array named
// base + "." + array ("" for an omitted optional input before a present
// one, trailing ones dropped). bias_input, when not empty, names an
// existing bias initializer for the bias slot instead of writing one.
void EmitNode(const formats::NodeSpec& spec, const std::string& base, const std::string& input,
              const std::string& output, onnx::GraphProto* g, onnx::NodeProto* n,
              const std::string& bias_input = "");
// ONNX TensorProto data type of an ElemType.
int OnnxType(formats::ElemType t);

void AddAttr(onnx::NodeProto* n, const std::string& name, int64_t v);
void AddAttr(onnx::NodeProto* n, const std::string& name, float v);
void AddAttr(onnx::NodeProto* n, const std::string& name, const std::vector<int64_t>& v);
// Serializes and writes atomically.
void WriteModelProto(const onnx::ModelProto& m, const std::string& path);
// A model permdnn made (`what`: "exported", "compressed") from `source`:
// serialized, checked to load and plan in the runtime (Error naming source
// otherwise, nothing written), then written atomically; returns the bytes.
std::string WriteLoadableModel(const onnx::ModelProto& m, const std::string& out_path, const std::string& source,
                               const char* what);
onnx::ModelProto ParseModelProto(std::string_view bytes, const std::string& name);

}  // namespace permdnn::runtime::detail
