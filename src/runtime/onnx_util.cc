// TensorProto / ModelProto conversions and the small tensor helpers.
#include "runtime/onnx_util.h"

#include <cstring>
#include <fstream>
#include <limits>
#include <sstream>

#include "permdnn/core/atomic_file.h"
#include "permdnn/core/error.h"
#include "permdnn/runtime/model.h"
#include "permdnn/runtime/onnx_io.h"

namespace permdnn::runtime {

const char* DTypeName(DType d) {
  switch (d) {
    case DType::kFloat32: return "float32";
    case DType::kUInt8: return "uint8";
    case DType::kInt8: return "int8";
    case DType::kUInt16: return "uint16";
    case DType::kInt16: return "int16";
    case DType::kInt32: return "int32";
    case DType::kInt64: return "int64";
    case DType::kBool: return "bool";
  }
  return "?";
}

DType DTypeFromOnnx(int t, const std::string& where) {
  switch (t) {
    case 1: case 2: case 3: case 4: case 5: case 6: case 7: case 9: return static_cast<DType>(t);
    default: break;
  }
  static const char* kNames[] = {"undefined", "float", "uint8", "int8", "uint16", "int16", "int32", "int64",
                                 "string", "bool", "float16", "double", "uint32", "uint64", "complex64",
                                 "complex128", "bfloat16"};
  const char* name = t >= 0 && t <= 16 ? kNames[t] : "unknown";
  throw UnsupportedError(fmt::format("{}: dtype {} ({}) is not supported by the runtime", where, name, t));
}

int64_t NumElements(std::span<const int64_t> shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string ShapeProblem(std::span<const int64_t> shape) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) return "negative dimension";
    if (d == 0) continue;
    if (n > kMaxShapeElements / d) return fmt::format("too large (over 2^40 elements without its zero dims)");
    n *= d;
  }
  return {};
}

std::string ShapeString(std::span<const int64_t> shape) {
  std::string s = "[";
  for (std::size_t k = 0; k < shape.size(); ++k) s += (k ? ", " : "") + std::to_string(shape[k]);
  return s + "]";
}

Tensor::Tensor(DType dtype, std::vector<int64_t> shape) : dtype_(dtype), shape_(std::move(shape)) {
  for (int64_t d : shape_) PERMDNN_CHECK(d >= 0, "tensor shape {} has a negative dimension", ShapeString(shape_));
  data_.Resize(bytes());
  if (data_.size()) std::memset(data_.data(), 0, data_.size());
}
uint8_t* Tensor::EmptyBlock() {
  alignas(64) static uint8_t empty[64];
  return empty;
}
Tensor Tensor::Float(std::vector<int64_t> shape, std::span<const float> data) {
  Tensor t(DType::kFloat32, std::move(shape));
  PERMDNN_CHECK(static_cast<int64_t>(data.size()) == t.size(), "Tensor::Float: {} values for shape {}", data.size(),
                ShapeString(t.shape()));
  if (!data.empty()) std::memcpy(t.raw(), data.data(), t.bytes());
  return t;
}
Tensor Tensor::Int64(std::vector<int64_t> shape, std::span<const int64_t> data, DType tag) {
  PERMDNN_CHECK(!IsFloat(tag), "Tensor::Int64 with a float tag");
  Tensor t(tag, std::move(shape));
  PERMDNN_CHECK(static_cast<int64_t>(data.size()) == t.size(), "Tensor::Int64: {} values for shape {}", data.size(),
                ShapeString(t.shape()));
  if (!data.empty()) std::memcpy(t.raw(), data.data(), t.bytes());
  return t;
}
std::span<float> Tensor::floats() {
  PERMDNN_CHECK(IsFloat(dtype_), "tensor is {}, not float32", DTypeName(dtype_));
  return {f(), static_cast<std::size_t>(size())};
}
std::span<const float> Tensor::floats() const {
  PERMDNN_CHECK(IsFloat(dtype_), "tensor is {}, not float32", DTypeName(dtype_));
  return {f(), static_cast<std::size_t>(size())};
}
std::span<const int64_t> Tensor::ints() const {
  PERMDNN_CHECK(!IsFloat(dtype_), "tensor is float32, not an integer type");
  return {i(), static_cast<std::size_t>(size())};
}

std::string ReadFileBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  PERMDNN_CHECK(in.good(), "{}: cannot open file", path);
  std::ostringstream ss;
  ss << in.rdbuf();
  PERMDNN_CHECK(!in.bad(), "{}: read error", path);
  return ss.str();
}

Tensor ParseTensorProto(std::string_view bytes, const std::string& name) {
  onnx::TensorProto t;
  PERMDNN_CHECK(t.ParseFromArray(bytes.data(), static_cast<int>(bytes.size())),
                "{}: not a serialized onnx.TensorProto (protobuf parse failed)", name);
  return detail::TensorFromProto(t, name);
}
Tensor ReadTensorProtoFile(const std::string& path) { return ParseTensorProto(ReadFileBytes(path), path); }

namespace detail {

int OnnxElementBytes(int t) {
  switch (t) {
    case 1: case 6: case 12: return 4;
    case 2: case 3: case 9: return 1;
    case 4: case 5: case 10: case 16: return 2;
    case 7: case 11: case 13: case 14: return 8;
    case 15: return 16;
    default: return 0;
  }
}

namespace {
template <typename S>
void Widen(const std::string& raw, int64_t* dst, int64_t n) {
  for (int64_t k = 0; k < n; ++k) {
    S v;
    std::memcpy(&v, raw.data() + k * sizeof(S), sizeof(S));
    dst[k] = static_cast<int64_t>(v);
  }
}
}  // namespace

Tensor TensorFromProto(const onnx::TensorProto& t, const std::string& where) {
  const std::string what = t.name().empty() ? where : fmt::format("{}: tensor '{}'", where, t.name());
  if (t.data_location() == onnx::TensorProto::EXTERNAL || t.external_data_size() > 0)
    throw UnsupportedError(what + ": external data is not supported");
  if (t.has_segment()) throw UnsupportedError(what + ": segmented tensors are not supported");
  const DType dtype = DTypeFromOnnx(t.data_type(), what);
  std::vector<int64_t> shape(t.dims().begin(), t.dims().end());
  const std::string problem = ShapeProblem(shape);
  PERMDNN_CHECK(problem.empty(), "{}: shape {}: {}", what, ShapeString(shape), problem);
  const int64_t n = NumElements(shape);
  const int eb = OnnxElementBytes(t.data_type());
  // Sizes are checked against the data present before anything is allocated.
  if (t.has_raw_data()) {
    const std::string& raw = t.raw_data();
    PERMDNN_CHECK(static_cast<int64_t>(raw.size()) == n * eb,
                  "{}: shape {} needs {} bytes of {} data, raw_data has {}", what, ShapeString(shape), n * eb,
                  DTypeName(dtype), raw.size());
    Tensor out(dtype, shape);
    switch (dtype) {
      case DType::kFloat32: if (n) std::memcpy(out.raw(), raw.data(), n * 4); break;
      case DType::kUInt8: case DType::kBool: Widen<uint8_t>(raw, out.i(), n); break;
      case DType::kInt8: Widen<int8_t>(raw, out.i(), n); break;
      case DType::kUInt16: Widen<uint16_t>(raw, out.i(), n); break;
      case DType::kInt16: Widen<int16_t>(raw, out.i(), n); break;
      case DType::kInt32: Widen<int32_t>(raw, out.i(), n); break;
      case DType::kInt64: if (n) std::memcpy(out.raw(), raw.data(), n * 8); break;
    }
    return out;
  }
  const int64_t present = dtype == DType::kFloat32 ? t.float_data_size()
                          : dtype == DType::kInt64 ? t.int64_data_size()
                                                   : t.int32_data_size();
  PERMDNN_CHECK(present == n, "{}: shape {} has {} elements, the tensor holds {}", what, ShapeString(shape), n,
                present);
  Tensor out(dtype, shape);
  auto check = [&](int64_t got, const char* field) {
    PERMDNN_CHECK(got == n, "{}: shape {} has {} elements, {} holds {}", what, ShapeString(shape), n, field, got);
  };
  if (dtype == DType::kFloat32) {
    check(t.float_data_size(), "float_data");
    for (int64_t k = 0; k < n; ++k) out.f()[k] = t.float_data(static_cast<int>(k));
  } else if (dtype == DType::kInt64) {
    check(t.int64_data_size(), "int64_data");
    for (int64_t k = 0; k < n; ++k) out.i()[k] = t.int64_data(static_cast<int>(k));
  } else {
    check(t.int32_data_size(), "int32_data");
    for (int64_t k = 0; k < n; ++k) out.i()[k] = t.int32_data(static_cast<int>(k));
  }
  return out;
}

namespace {
void SetRaw(onnx::TensorProto* t, const std::string& name, int type, const void* data, std::size_t bytes,
            const std::vector<int64_t>& shape) {
  t->set_name(name);
  t->set_data_type(type);
  for (int64_t d : shape) t->add_dims(d);
  t->set_raw_data(std::string(static_cast<const char*>(data), bytes));
}
}  // namespace

void SetFloatTensor(onnx::TensorProto* t, const std::string& name, std::span<const float> data,
                    const std::vector<int64_t>& shape) {
  PERMDNN_CHECK(static_cast<int64_t>(data.size()) == NumElements(shape), "{}: {} values for shape {}", name,
                data.size(), ShapeString(shape));
  SetRaw(t, name, onnx::TensorProto::FLOAT, data.data(), data.size_bytes(), shape);
}
void SetUInt16Tensor(onnx::TensorProto* t, const std::string& name, std::span<const uint16_t> data,
                     const std::vector<int64_t>& shape) {
  PERMDNN_CHECK(static_cast<int64_t>(data.size()) == NumElements(shape), "{}: {} values for shape {}", name,
                data.size(), ShapeString(shape));
  SetRaw(t, name, onnx::TensorProto::UINT16, data.data(), data.size_bytes(), shape);
}
void SetInt32Tensor(onnx::TensorProto* t, const std::string& name, std::span<const int32_t> data,
                    const std::vector<int64_t>& shape) {
  PERMDNN_CHECK(static_cast<int64_t>(data.size()) == NumElements(shape), "{}: {} values for shape {}", name,
                data.size(), ShapeString(shape));
  SetRaw(t, name, onnx::TensorProto::INT32, data.data(), data.size_bytes(), shape);
}
void SetUInt8Tensor(onnx::TensorProto* t, const std::string& name, std::span<const uint8_t> data,
                    const std::vector<int64_t>& shape) {
  PERMDNN_CHECK(static_cast<int64_t>(data.size()) == NumElements(shape), "{}: {} values for shape {}", name,
                data.size(), ShapeString(shape));
  SetRaw(t, name, onnx::TensorProto::UINT8, data.data(), data.size_bytes(), shape);
}
void SetInt8Tensor(onnx::TensorProto* t, const std::string& name, std::span<const int8_t> data,
                   const std::vector<int64_t>& shape) {
  PERMDNN_CHECK(static_cast<int64_t>(data.size()) == NumElements(shape), "{}: {} values for shape {}", name,
                data.size(), ShapeString(shape));
  SetRaw(t, name, onnx::TensorProto::INT8, data.data(), data.size_bytes(), shape);
}
void SetInt64Tensor(onnx::TensorProto* t, const std::string& name, std::span<const int64_t> data,
                    const std::vector<int64_t>& shape) {
  PERMDNN_CHECK(static_cast<int64_t>(data.size()) == NumElements(shape), "{}: {} values for shape {}", name,
                data.size(), ShapeString(shape));
  SetRaw(t, name, onnx::TensorProto::INT64, data.data(), data.size_bytes(), shape);
}
void ReadAttributes(const onnx::NodeProto& n, const std::string& where, formats::Attributes* attrs,
                    std::map<std::string, std::shared_ptr<Tensor>>* tensors) {
  using V = formats::Attributes::Value;
  for (const onnx::AttributeProto& a : n.attribute()) {
    V v;
    switch (a.type()) {
      case onnx::AttributeProto::INT: v.kind = V::kInt; v.i = a.i(); break;
      case onnx::AttributeProto::FLOAT: v.kind = V::kFloat; v.f = a.f(); break;
      case onnx::AttributeProto::STRING: v.kind = V::kString; v.s = a.s(); break;
      case onnx::AttributeProto::INTS:
        v.kind = V::kInts;
        v.ints.assign(a.ints().begin(), a.ints().end());
        break;
      case onnx::AttributeProto::FLOATS:
        v.kind = V::kFloats;
        v.floats.assign(a.floats().begin(), a.floats().end());
        break;
      case onnx::AttributeProto::STRINGS:
        v.kind = V::kStrings;
        v.strings.assign(a.strings().begin(), a.strings().end());
        break;
      case onnx::AttributeProto::TENSOR:
        if (tensors) (*tensors)[a.name()] = std::make_shared<Tensor>(TensorFromProto(a.t(), where + ": attribute " + a.name()));
        continue;
      default: break;
    }
    attrs->Set(a.name(), std::move(v));
  }
}

void WriteAttributes(const formats::Attributes& attrs, onnx::NodeProto* n) {
  using V = formats::Attributes::Value;
  for (const auto& [name, v] : attrs.all()) {
    switch (v.kind) {
      case V::kInt: AddAttr(n, name, v.i); break;
      case V::kFloat: AddAttr(n, name, v.f); break;
      case V::kInts: AddAttr(n, name, v.ints); break;
      case V::kString: {
        auto* a = n->add_attribute();
        a->set_name(name);
        a->set_type(onnx::AttributeProto::STRING);
        a->set_s(v.s);
        break;
      }
      case V::kFloats: {
        auto* a = n->add_attribute();
        a->set_name(name);
        a->set_type(onnx::AttributeProto::FLOATS);
        for (float x : v.floats) a->add_floats(x);
        break;
      }
      case V::kStrings: {
        auto* a = n->add_attribute();
        a->set_name(name);
        a->set_type(onnx::AttributeProto::STRINGS);
        for (const std::string& x : v.strings) a->add_strings(x);
        break;
      }
      case V::kOther: break;
    }
  }
}

int OnnxType(formats::ElemType t) { return static_cast<int>(t); }

void EmitNode(const formats::NodeSpec& spec, const std::string& base, const std::string& input,
              const std::string& output, onnx::GraphProto* g, onnx::NodeProto* n, const std::string& bias_input) {
  n->set_op_type(spec.op->name);
  if (*spec.op->domain != '\0') n->set_domain(spec.op->domain);
  n->add_input(input);
  std::vector<std::string> inputs;
  for (const formats::OutputArray& a : spec.inputs) {
    const bool bias = a.name == "bias" || (a.name.empty() && !bias_input.empty());
    if (bias && !bias_input.empty()) {
      inputs.push_back(bias_input);
      continue;
    }
    if (a.name.empty()) {
      inputs.emplace_back();
      continue;
    }
    const std::string name = base + "." + a.name;
    onnx::TensorProto* t = g->add_initializer();
    switch (a.dtype) {
      case formats::ElemType::kFloat32: SetFloatTensor(t, name, a.f, a.shape); break;
      case formats::ElemType::kUInt16: SetUInt16Tensor(t, name, a.u16, a.shape); break;
      case formats::ElemType::kInt32: SetInt32Tensor(t, name, a.i32, a.shape); break;
      case formats::ElemType::kUInt8: SetUInt8Tensor(t, name, a.u8, a.shape); break;
      default: Fail("{}: permdnn writes no {} stored arrays", name, formats::ElemName(a.dtype));
    }
    inputs.push_back(name);
  }
  while (!inputs.empty() && inputs.back().empty()) inputs.pop_back();
  for (const auto& i : inputs) n->add_input(i);
  n->add_output(output);
  WriteAttributes(spec.attributes, n);
}

void AddAttr(onnx::NodeProto* n, const std::string& name, int64_t v) {
  auto* a = n->add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::INT);
  a->set_i(v);
}
void AddAttr(onnx::NodeProto* n, const std::string& name, float v) {
  auto* a = n->add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::FLOAT);
  a->set_f(v);
}
void AddAttr(onnx::NodeProto* n, const std::string& name, const std::vector<int64_t>& v) {
  auto* a = n->add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::INTS);
  for (int64_t x : v) a->add_ints(x);
}

std::string WriteLoadableModel(const onnx::ModelProto& m, const std::string& out_path, const std::string& source,
                               const char* what) {
  std::string bytes;
  PERMDNN_CHECK(m.SerializeToString(&bytes), "{}: cannot serialize the model", out_path);
  try {
    Model::FromBytes(bytes, out_path);
  } catch (const Error& e) {
    Fail("{}: the {} model does not load: {}", source, what, e.what());
  }
  WriteFileAtomic(out_path, bytes);
  return bytes;
}

void WriteModelProto(const onnx::ModelProto& m, const std::string& path) {
  std::string bytes;
  PERMDNN_CHECK(m.SerializeToString(&bytes), "{}: cannot serialize the model", path);
  WriteFileAtomic(path, bytes);
}

onnx::ModelProto ParseModelProto(std::string_view bytes, const std::string& name) {
  PERMDNN_CHECK(!bytes.empty(), "{}: empty file, not an ONNX model", name);
  auto starts = [&](std::string_view magic) { return bytes.substr(0, magic.size()) == magic; };
  if (starts("\x93NUMPY")) Fail("{}: this is a NumPy .npy file, not an ONNX model", name);
  if (starts("PK\x03\x04")) Fail("{}: this is a zip archive (a PyTorch .pt checkpoint?), not an ONNX model", name);
  if (starts("\x89HDF")) Fail("{}: this is an HDF5 file, not an ONNX model", name);
  if (starts("{") || starts("[")) Fail("{}: this looks like JSON text, not an ONNX model", name);
  if (bytes.size() > static_cast<std::size_t>(std::numeric_limits<int>::max()))
    Fail("{}: file of {} bytes exceeds the 2 GiB protobuf limit", name, bytes.size());
  onnx::ModelProto m;
  if (!m.ParseFromArray(bytes.data(), static_cast<int>(bytes.size())))
    Fail("{}: not an ONNX model: protobuf parse failed (truncated or corrupt file, {} bytes)", name, bytes.size());
  PERMDNN_CHECK(m.has_graph(), "{}: not an ONNX model: no graph in the file (wrong file type or truncated)", name);
  return m;
}

}  // namespace detail
}  // namespace permdnn::runtime
