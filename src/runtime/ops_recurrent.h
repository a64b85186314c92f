// The recurrent operators' shared parts (ops_recurrent.cc): the attributes
// of an ONNX LSTM / GRU / RNN node, the shape checks of its inputs, and the
// step loop over the gate products. The standard ops multiply dense W and R
// (OpenBLAS); a compressed recurrent op supplies its own GateProducts and
// runs the same loop. Not installed.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "permdnn/formats/registry.h"
#include "runtime/graph.h"

namespace permdnn::runtime::detail {

enum class Cell { kRnn, kGru, kLstm };
int RecurrentGates(Cell cell);   // 1, 3, 4
const char* CellName(Cell cell);  // "RNN", "GRU", "LSTM"

enum class ActKind {
  kSigmoid, kTanh, kRelu, kAffine, kLeakyRelu, kThresholdedRelu, kScaledTanh, kHardSigmoid, kElu, kSoftsign, kSoftplus
};
struct Activation {
  ActKind kind = ActKind::kTanh;
  float alpha = 0, beta = 0;
};

// The node's attributes, validated (errors name the node and attribute).
struct RecurrentConfig {
  Cell cell = Cell::kLstm;
  int64_t directions = 1;  // 2 for bidirectional
  bool reverse = false;    // direction = reverse (one direction)
  int64_t layout = 0;      // 0: X [T, B, I]; 1: X [B, T, I]
  int64_t hidden = -1;     // hidden_size, -1 when absent
  float clip = 0;          // 0: no clip
  bool input_forget = false, linear_before_reset = false;
  std::vector<Activation> activations;  // per direction: LSTM f, g, h; GRU f, g; RNN f
};
RecurrentConfig ReadRecurrentConfig(const NodeDef& n, Cell cell);

// The input shapes of a node (plan time).
struct RecurrentShapes {
  int64_t steps = 0, batch = 0, in = 0, hidden = 0;
  // Checks X, W, R (when weights_from_inputs; a compressed op checks its own
  // weights and needs config.hidden), B, sequence_lens, initial_h,
  // initial_c, P; errors name the node, the input, expected and got.
  void Check(const OpContext& ctx, const RecurrentConfig& config, bool weights_from_inputs);
  void CheckLengths(const OpContext& ctx, const int64_t* lens) const;
  void SetOutputs(OpContext& ctx, const RecurrentConfig& config) const;
  int64_t ScratchBytes(const RecurrentConfig& config) const;
};

// The two products of one direction, G·H gate rows.
class GateProducts {
 public:
  virtual ~GateProducts() = default;
  // y[r, :] = x[r, :] · Wᵀ for rows r (x: [rows, I], y: [rows, G·H]).
  virtual void Input(const float* x, int64_t rows, float* y) = 0;
  // y[b, 0 : g1 − g0] = h[b, :] · R[g0 : g1, :]ᵀ (h: [batch, H]; y row stride ldy).
  virtual void Recurrent(const float* h, int64_t batch, int64_t g0, int64_t g1, float* y, int64_t ldy) = 0;
  virtual std::string Name() const = 0;
};

// Runs the node: inputs as the ONNX op's (B at slot 3, sequence_lens 4,
// initial_h 5, initial_c 6, P 7), one GateProducts per direction.
void RunRecurrent(const OpContext& ctx, const RunState& rs, const RecurrentConfig& config,
                  const RecurrentShapes& shapes, const std::vector<GateProducts*>& products);

// A compressed recurrent op (formats/registry.h "Recurrent layers"): the
// format's W and R products on the permdnn kernels, the same step loop.
std::unique_ptr<OpKernel> CreateCompressedRecurrentKernel(const formats::FormatTraits& f, formats::RecurrentCell cell,
                                                          const NodeDef& node);

// LSTM / GRU / RNN, nullptr for another op.
std::unique_ptr<OpKernel> CreateRecurrentKernel(const NodeDef& node);

}  // namespace permdnn::runtime::detail
