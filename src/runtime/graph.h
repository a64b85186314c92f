// Internal graph of the runtime: values, nodes, attributes and the kernel
// interface every operator implements. Not installed; see model.h.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <typeindex>
#include <vector>

#include "permdnn/formats/attributes.h"
#include "permdnn/formats/registry.h"
#include "permdnn/runtime/model.h"
#include "permdnn/runtime/tensor.h"

namespace permdnn::runtime::detail {

// Memory layout of a float tensor of rank 3-5 [N, C, spatial...]:
//   kPlain         ONNX order (NCHW); every tensor the graph exchanges.
//   kChannelsLast  N, spatial..., C ("nhwc").
//   kBlocked       N, ceil(C/b), spatial..., b ("nChw16c" for b = 16): b
//                  consecutive channels of one position side by side, C
//                  padded to a multiple of b with zeros.
// The planner (model.cc) picks one activation layout per plan and gives it
// to a value when its producer can write it and every consumer can read it
// (OpKernel::OutputLayout, ReadsLayout); graph inputs, outputs and constants
// stay plain. Conversions: conv_util.h ConvertLayout.
enum class LayoutKind : uint8_t { kPlain, kChannelsLast, kBlocked };
struct Layout {
  LayoutKind kind = LayoutKind::kPlain;
  int block = 0;  // kBlocked only
  bool plain() const { return kind == LayoutKind::kPlain; }
  bool operator==(const Layout& o) const { return kind == o.kind && block == o.block; }
  bool operator!=(const Layout& o) const { return !(*this == o); }
  int64_t PaddedChannels(int64_t c) const { return kind == LayoutKind::kBlocked ? (c + block - 1) / block * block : c; }
  int64_t StoredElements(const std::vector<int64_t>& shape) const {
    const int64_t n = NumElements(shape);
    if (kind != LayoutKind::kBlocked || shape.size() < 2 || shape[1] == 0) return n;
    return n / shape[1] * PaddedChannels(shape[1]);
  }
  std::string Name() const {
    return kind == LayoutKind::kPlain ? "plain" : kind == LayoutKind::kChannelsLast ? "nhwc" : fmt::format("nC{}c", block);
  }
};

struct Value {
  std::string name;
  // Set by planning (or load for initializers).
  DType dtype = DType::kFloat32;
  std::vector<int64_t> shape;
  bool known = false;
  bool constant = false;   // data known at plan time (initializer or folded)
  bool initializer = false;
  // When constant. An initializer's is shared with the model's batch-
  // parallel replicas (model.cc), and nothing writes to it after load; a
  // plan makes its folded values anew.
  std::shared_ptr<Tensor> constant_data;
  void* data = nullptr;    // where the bytes live during Run
  int64_t arena_offset = -1;
  int producer = -1;       // node index, -1 for inputs/initializers
  int last_use = -1;       // last runtime node reading it
  bool graph_output = false;
  // Memory layout, fixed by the planner per plan (see Layout).
  Layout layout;
  int64_t size() const { return NumElements(shape); }
  std::size_t bytes() const { return static_cast<std::size_t>(size()) * StorageBytes(dtype); }
  // Bytes in memory: bytes(), with the padded channels when blocked.
  std::size_t stored_bytes() const { return static_cast<std::size_t>(layout.StoredElements(shape)) * StorageBytes(dtype); }
  float* f() const { return static_cast<float*>(data); }
  int64_t* i() const { return static_cast<int64_t*>(data); }
};

// An operator folded into the node before it by the load-time fusion pass
// (fusion.cc), applied to that node's output in order: BatchNormalization
// (inputs scale, B, mean, var; epsilon), Add (inputs: the other operand),
// Relu, Clip (lo, hi resolved at load).
struct PostOp {
  std::string op_type, name;
  std::vector<int> inputs;  // positions in the fused node's inputs
  float epsilon = 1e-5f, lo = 0, hi = 0;
};

struct NodeDef {
  std::string name, op_type, domain;
  int position = 0;  // index in the file's node list
  int opset = 13;    // of the node's domain
  std::vector<int> inputs, outputs;  // value indices, -1 for an omitted optional
  formats::Attributes attrs;  // read by detail::ReadAttributes (onnx_util.h)
  std::map<std::string, std::shared_ptr<Tensor>> tensor_attrs;  // TENSOR attributes (Constant's value)
  std::vector<PostOp> post_ops;  // fused into this node (fusion.cc)

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

// What kernels derive from a node's constant weights at plan time (packed
// or reordered copies), shared by a model and its replicas (batch
// parallelism's and the split check's, model.cc), which would otherwise each
// hold a copy. Used by the dense convolution (oneDNN's reordered weights),
// the permuted-diagonal convolution kernel's pack, the permuted-diagonal
// fully connected op's forms (decoded matrix, row pack, column pack,
// zero-skipping plan), the sparse ops' decoded CSR, the ternary ops' packs,
// the compressed recurrent ops' gate matrices, the block-circulant fully
// connected op's FFT engine and the block-circulant convolution's channel
// DFT. A kernel asks under its node's position in the file and a key
// naming the form (a layout, a block size); the first to ask makes it, the
// others get the same read-only object while any of them holds it (the
// cache keeps only weak references, so a form no plan uses any more is
// freed). Several models may plan at once: `make` runs under the lock, so
// each form is made once; a `make` may ask for another form (a pack made
// from the decoded weights), hence a recursive lock.
class PackCache {
 public:
  template <typename T, typename Key, typename Make>
  std::shared_ptr<const T> Get(int position, const Key& key, Make&& make) {
    std::lock_guard<std::recursive_mutex> lock(mu_);
    const std::type_index type(typeid(std::pair<Key, T>));
    for (auto it = entries_.begin(); it != entries_.end();) {
      std::shared_ptr<const void> held = it->value.lock();
      if (!held) {
        it = entries_.erase(it);
        continue;
      }
      if (it->position == position && it->type == type && *static_cast<const Key*>(it->key.get()) == key)
        return std::static_pointer_cast<const T>(held);
      ++it;
    }
    std::shared_ptr<const T> made = make();
    entries_.push_back({position, type, std::make_shared<const Key>(key), made});
    return made;
  }
 private:
  struct Entry {
    int position;
    std::type_index type;
    std::shared_ptr<const void> key;
    std::weak_ptr<const void> value;
  };
  std::recursive_mutex mu_;
  std::vector<Entry> entries_;
};

// State shared by kernels during a run.
struct RunState {
  int threads = 1;
  ZeroSkip zero_skip = ZeroSkip::kAuto;  // Options::zero_skip
  bool reference = false;       // Options::reference: no fusion, no dense library
  Layout act_layout;            // the plan's activation layout (see Layout)
  uint8_t* scratch = nullptr;   // scratch_bytes of the largest node
  bool int16 = false;
  bool int8 = false;  // Options::int8 (int16 is set with it)
  bool calibrating = false;
  PackCache* packs = nullptr;   // the model's (shared with its replicas); set by Plan
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
  // Its elements, checked to be of that kind (any integer dtype is held as
  // int64; the file decides the dtype, so an op never reads one as the other).
  std::vector<int64_t> ConstInts(std::size_t k, const char* what) const;
  std::vector<float> ConstFloats(std::size_t k, const char* what) const;
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
  // Layouts (see Layout). After every node's Prepare the planner asks, in
  // node order, whether the op can write output k in the plan's activation
  // layout and whether it can read input k in it; an output gets it when its
  // producer and all its consumers can. Then Finalize runs once per plan
  // with the layouts fixed (build layout-specific state such as library
  // primitives; it may raise ctx.scratch_bytes).
  virtual bool WritesLayout(const OpContext& ctx, std::size_t k, const Layout& layout) const { return false; }
  virtual bool ReadsLayout(const OpContext& ctx, std::size_t k, const Layout& layout) const { return false; }
  virtual void Finalize(OpContext& ctx, const RunState& rs) {}
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

// Helpers shared by op files (ops.cc).
// UnsupportedError naming the node: an op, attribute value or input the
// runtime does not implement.
[[noreturn]] void Unsupported(const OpContext& ctx, const std::string& what);
[[noreturn]] void UnsupportedNode(const NodeDef& n, const std::string& what);
// UnsupportedError unless v (`what`: "input X", ...) is float32.
void RequireFloat(const OpContext& ctx, const Value* v, const char* what);
// Input k, which the op requires (ctx.Fail naming it otherwise).
const Value& Req(const OpContext& ctx, std::size_t k, const char* what);
std::vector<int64_t> BroadcastShapes(const std::vector<int64_t>& a, const std::vector<int64_t>& b,
                                     const OpContext& ctx);
int64_t NormalizeAxis(int64_t axis, int64_t rank, const OpContext& ctx);

}  // namespace permdnn::runtime::detail
