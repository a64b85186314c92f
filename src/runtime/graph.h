// Internal graph of the runtime: values, nodes, attributes and the kernel
// interface every operator implements. Not installed; see model.h.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "permdnn/formats/attributes.h"
#include "permdnn/formats/registry.h"
#include "permdnn/runtime/model.h"
#include "permdnn/runtime/tensor.h"

namespace permdnn::runtime::detail {

struct Value {
  std::string name;
  // Set by planning (or load for initializers).
  DType dtype = DType::kFloat32;
  std::vector<int64_t> shape;
  bool known = false;
  bool constant = false;   // data known at plan time (initializer or folded)
  bool initializer = false;
  Tensor constant_data;    // when constant
  void* data = nullptr;    // where the bytes live during Run
  int64_t arena_offset = -1;
  int producer = -1;       // node index, -1 for inputs/initializers
  int last_use = -1;       // last runtime node reading it
  bool graph_output = false;

  int64_t size() const { return NumElements(shape); }
  std::size_t bytes() const { return static_cast<std::size_t>(size()) * StorageBytes(dtype); }
  float* f() const { return static_cast<float*>(data); }
  int64_t* i() const { return static_cast<int64_t*>(data); }
};

struct NodeDef {
  std::string name, op_type, domain;
  int position = 0;  // index in the file's node list
  int opset = 13;    // of the node's domain
  std::vector<int> inputs, outputs;  // value indices, -1 for an omitted optional
  formats::Attributes attrs;  // read by detail::ReadAttributes (onnx_util.h)
  std::map<std::string, std::shared_ptr<Tensor>> tensor_attrs;  // TENSOR attributes (Constant's value)

  // "node 'fc1' (Gemm, #3)" for messages.
  std::string Where() const;
  bool Has(const std::string& a) const { return attrs.Has(a) || tensor_attrs.count(a) != 0; }
  int64_t Int(const std::string& a, int64_t dflt) const;
  float Float(const std::string& a, float dflt) const;
  std::string String(const std::string& a, const std::string& dflt) const;
  std::vector<int64_t> Ints(const std::string& a, std::vector<int64_t> dflt = {}) const;
  std::vector<float> Floats(const std::string& a) const;
  // A TENSOR attribute; Error when it is missing or of another type.
  const Tensor& TensorAttr(const std::string& a) const;
};

// State shared by kernels during a run.
struct RunState {
  int threads = 1;
  uint8_t* scratch = nullptr;   // scratch_bytes of the largest node
  bool int16 = false;
  bool calibrating = false;
};

struct OpContext {
  const NodeDef* node = nullptr;
  std::vector<Value*> in;   // nullptr for omitted optional inputs
  // One per output the op writes once Prepare has run: the node's named
  // outputs, and for a slot the file leaves out (an empty name, or fewer
  // outputs than the op has) one of `unnamed`, so that Run never writes
  // through a missing value.
  std::vector<Value*> out;
  std::vector<std::unique_ptr<Value>> unnamed;  // planner-owned, read by no node
  int64_t scratch_bytes = 0;  // set by Prepare

  Value* In(std::size_t k) const { return k < in.size() ? in[k] : nullptr; }
  // Fails naming the node.
  template <typename... Args>
  [[noreturn]] void Fail(fmt::format_string<Args...> f, Args&&... args) const {
    throw Error(node->Where() + ": " + fmt::format(f, std::forward<Args>(args)...));
  }
  // Input k must exist and be known at plan time (constant).
  const Value& Const(std::size_t k, const char* what) const;
  // Output k gets this dtype and shape; a slot the node leaves out gets an
  // unnamed value.
  void SetOut(std::size_t k, DType dtype, std::vector<int64_t> shape);
};

class OpKernel {
 public:
  virtual ~OpKernel() = default;
  // Plan time: check input shapes/dtypes (ctx.Fail on mismatch), set output
  // shapes/dtypes, set ctx.scratch_bytes.
  virtual void Prepare(OpContext& ctx) = 0;
  virtual void Run(OpContext& ctx, RunState& rs) = 0;
  // May run at plan time when all inputs are constant.
  virtual bool Foldable() const { return true; }
  // Its output depends on the input shapes only (Shape): folded at plan time
  // even when the inputs' values are not constant, so that a Reshape fed by
  // Shape(x) (PyTorch's x.view(x.size(0), -1)) plans for each batch size.
  virtual bool ShapeOnly() const { return false; }
  // Label for --profile.
  virtual std::string KernelName() const { return "dense"; }
  virtual bool Fast() const { return false; }
};

// An op with an int16 fixed-point path (PermDiagMatMul): the model finds it
// with dynamic_cast. Calibration brackets a float run that records the
// activation ranges; RunState::int16 then selects the fixed-point path.
class Int16Op {
 public:
  virtual ~Int16Op() = default;
  virtual void BeginCalibration() = 0;
  virtual void EndCalibration() = 0;
};

// Builds the kernel of a node; throws UnsupportedError naming the node for
// an unknown op or an unsupported attribute value.
std::unique_ptr<OpKernel> CreateKernel(const NodeDef& node);
// For the summary / compress: is this a custom-domain compressed op?
bool IsPermDnnDomain(const std::string& domain);
inline constexpr const char* kPermDnnDomain = formats::kDomain;

// Helpers shared by op files.
std::vector<int64_t> BroadcastShapes(const std::vector<int64_t>& a, const std::vector<int64_t>& b,
                                     const OpContext& ctx);
int64_t NormalizeAxis(int64_t axis, int64_t rank, const OpContext& ctx);

}  // namespace permdnn::runtime::detail
