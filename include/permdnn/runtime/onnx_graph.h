// A model file's graph without protobuf types: nodes with their attributes
// (read by the runtime's one ONNX attribute reader into formats::Attributes),
// initializers as Tensors, the graph's inputs and outputs. What components
// above the runtime (fine-tuning in permdnn::train) and the runtime's own
// tools (inspection) walk when they need the graph itself rather than
// runtime::Model's execution; only src/runtime sees onnx::ModelProto.
//
// WriteWithInitializers() writes the model back with new data for some
// float initializers (same names and shapes), everything else unchanged:
// how fine-tuning stores what it trained.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "permdnn/formats/attributes.h"
#include "permdnn/runtime/tensor.h"

namespace permdnn::runtime {

struct GraphNode {
  std::string name;     // "#<index>" when the file leaves it empty
  std::string op_type;
  std::string domain;   // "" for the standard domain ("ai.onnx" is normalized to "")
  int position = 0;     // index in the file's node list
  int opset = 1;        // of its domain
  std::vector<std::string> inputs, outputs;  // "" for an omitted optional
  formats::Attributes attrs;
  std::map<std::string, std::shared_ptr<Tensor>> tensor_attrs;  // TENSOR attributes

  // "node 'fc1' (ai.permdnn.PermDiagMatMul, #3)", as the runtime names nodes.
  std::string Where() const;
  // Input k's name, "" when omitted or absent.
  std::string In(int k) const { return k < static_cast<int>(inputs.size()) ? inputs[k] : std::string(); }
};

struct OnnxGraph {
  std::string name;  // prefixes errors (the path)
  int opset = 1;     // of the standard domain
  std::vector<GraphNode> nodes;
  std::vector<std::string> initializers;  // names, file order
  std::vector<std::string> inputs;        // graph inputs that are not initializers
  std::vector<std::string> outputs;
  std::map<std::string, std::string> metadata;

  // The initializer's data, converted on first use (Error naming the graph
  // and the initializer when it is malformed); nullptr when `value` is not
  // an initializer.
  const Tensor* Initializer(const std::string& value) const;

  // Parses a serialized ModelProto; Error naming `name` when it is not one.
  static OnnxGraph Parse(std::string_view bytes, const std::string& name);

 private:
  struct Raw;  // the parsed file and the tensors converted so far
  std::shared_ptr<Raw> raw_;
};

// model_bytes with the data of the float initializers named in `replace`
// swapped for the given tensors (each must be float32 of the initializer's
// shape), written atomically to out_path.
void WriteWithInitializers(std::string_view model_bytes, const std::string& name,
                           const std::map<std::string, Tensor>& replace, const std::string& out_path);

}  // namespace permdnn::runtime
