// ONNX file helpers that do not expose protobuf types: reading a single
// TensorProto (.pb files of the ONNX backend tests) and a few facts about a
// model file. The ModelProto itself is only handled inside src/runtime.
#pragma once

#include <string>
#include <string_view>

#include "permdnn/runtime/tensor.h"

namespace permdnn::runtime {

// Parses a serialized onnx.TensorProto; errors name `name`.
Tensor ParseTensorProto(std::string_view bytes, const std::string& name);
Tensor ReadTensorProtoFile(const std::string& path);

// Reads a whole file; Error naming the path when it cannot.
std::string ReadFileBytes(const std::string& path);

}  // namespace permdnn::runtime
