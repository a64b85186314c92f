// Fuzz target "npy": a .npy file as `permdnn run --input` and the run
// directory readers see it. ParseNpy, every typed view, the float
// conversion, and (when the array could be a batch of 4-wide rows) a run
// of a small built-in model on it, shaped as `permdnn run` shapes it.
#include <string_view>
#include <vector>

#include <onnx/onnx_pb.h>

#include "fuzz/targets.h"
#include "permdnn/core/error.h"
#include "permdnn/core/npy.h"
#include "permdnn/runtime/model.h"

namespace permdnn::fuzz {

namespace {

// x [N, 4] -> Relu -> Softmax -> y: what a classifier's head does.
runtime::Model& SmallModel() {
  static runtime::Model* model = [] {
    onnx::ModelProto m;
    m.set_ir_version(8);
    m.add_opset_import()->set_version(13);
    onnx::GraphProto* g = m.mutable_graph();
    g->set_name("npy-fuzz");
    auto* tt = g->add_input()->mutable_type()->mutable_tensor_type();
    g->mutable_input(0)->set_name("x");
    tt->set_elem_type(onnx::TensorProto::FLOAT);
    tt->mutable_shape()->add_dim()->set_dim_param("N");
    tt->mutable_shape()->add_dim()->set_dim_value(4);
    onnx::NodeProto* relu = g->add_node();
    relu->set_op_type("Relu");
    relu->add_input("x");
    relu->add_output("r");
    onnx::NodeProto* sm = g->add_node();
    sm->set_op_type("Softmax");
    sm->add_input("r");
    sm->add_output("y");
    g->add_output()->set_name("y");
    std::string bytes;
    m.SerializeToString(&bytes);
    return new runtime::Model(runtime::Model::FromBytes(bytes, "npy-fuzz.onnx"));
  }();
  return *model;
}

template <typename T>
void View(const NpyArray& a) {
  if (a.is<T>()) (void)a.as<T>("fuzz.npy");
}

}  // namespace

int FuzzNpy(const uint8_t* data, std::size_t size) {
  try {
    NpyArray a = ParseNpy(std::string_view(reinterpret_cast<const char*>(data), size), "fuzz.npy");
    View<float>(a);
    View<double>(a);
    View<int8_t>(a);
    View<uint8_t>(a);
    View<int16_t>(a);
    View<uint16_t>(a);
    View<int32_t>(a);
    View<int64_t>(a);
    std::vector<float> x = a.ToFloat("fuzz.npy");
    // `permdnn run`: a rank-1 array is one sample (batch 1 in front).
    std::vector<int64_t> shape = a.shape;
    if (shape.size() == 1) shape.insert(shape.begin(), 1);
    if (shape.size() == 2 && shape[1] == 4) {
      runtime::Model& m = SmallModel();
      std::vector<float> y(static_cast<std::size_t>(runtime::NumElements(m.OutputShape(shape))));
      m.Run(x, shape, y);
    }
    // Round trip: what permdnn writes it reads back identically.
    const std::string again = SerializeNpy(a.descr, a.shape, a.bytes.data(), a.bytes.size());
    NpyArray b = ParseNpy(again, "fuzz.npy (rewritten)");
    if (b.shape != a.shape || b.descr != a.descr || b.bytes != a.bytes) __builtin_trap();
  } catch (const Error&) {
  }
  return 0;
}

}  // namespace permdnn::fuzz
