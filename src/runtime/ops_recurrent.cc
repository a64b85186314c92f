// The standard ONNX recurrent operators LSTM, GRU and RNN (opsets 7 and 14):
// forward, reverse and bidirectional; initial_h / initial_c; sequence_lens;
// the opset-14 `layout` attribute; LSTM peepholes (P) and input_forget; GRU
// linear_before_reset; clip; every activation the schema lists, with
// activation_alpha / activation_beta.
//
// Computation per direction (G gates: LSTM 4 in ONNX order i, o, f, c; GRU 3
// in order z, r, h; RNN 1):
//   1. the input projection of all time steps at once, one OpenBLAS sgemm
//      XW[T·B, G·H] = X[T·B, I] · Wᵀ, with the biases Wb + Rb folded in
//      (GRU with linear_before_reset keeps Rb_h apart: it is inside r ⊙ (.));
//   2. per step s, the recurrent product of the whole batch, one sgemm (sgemv
//      at batch 1) RP[B, G·H] = H_{t-1} · Rᵀ, then the gate equations row by
//      row on whole gate vectors (activations run over arrays of H).
// The two products go through GateProducts, so a compressed recurrent layer
// (permuted-diagonal W and R, ops_permdiag.cc) reuses steps 1-2 unchanged.
//
// sequence_lens: batch entry b runs L_b steps (reverse: t = L_b − 1 .. 0);
// Y is zero at t >= L_b, Y_h / Y_c hold the state after the entry's last
// step (the initial state when L_b = 0). A length outside [0, seq_length]
// is an error naming the node. Activation parameters are consumed in the
// order of the activations list, alpha by those that take an alpha (Affine,
// LeakyRelu, ThresholdedRelu, ScaledTanh, HardSigmoid, Elu) and beta by those
// that take a beta (Affine, ScaledTanh, HardSigmoid), as ONNX Runtime reads
// them; when a list runs out, the function's own default applies. clip
// bounds every gate's input to its activation (not the cell state).
#include "runtime/ops_recurrent.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <string>

#include <cblas.h>

#include "permdnn/core/fixed_point.h"
#include "permdnn/kernels/activation.h"
#include "permdnn/kernels/permdiag.h"
#include "permdnn/kernels/table.h"
#include "runtime/ops_compressed.h"
#include "runtime/graph.h"

namespace permdnn::runtime::detail {

int RecurrentGates(Cell cell) { return cell == Cell::kLstm ? 4 : cell == Cell::kGru ? 3 : 1; }
const char* CellName(Cell cell) { return cell == Cell::kLstm ? "LSTM" : cell == Cell::kGru ? "GRU" : "RNN"; }

namespace {

int ActsPerDirection(Cell cell) { return cell == Cell::kLstm ? 3 : cell == Cell::kGru ? 2 : 1; }

struct ActInfo {
  const char* name;
  ActKind kind;
  bool alpha, beta;      // which parameters it takes
  float alpha0, beta0;   // defaults
};
constexpr ActInfo kActivations[] = {
    {"Sigmoid", ActKind::kSigmoid, false, false, 0, 0},
    {"Tanh", ActKind::kTanh, false, false, 0, 0},
    {"Relu", ActKind::kRelu, false, false, 0, 0},
    {"Affine", ActKind::kAffine, true, true, 1.0f, 0.0f},
    {"LeakyRelu", ActKind::kLeakyRelu, true, false, 0.01f, 0},
    {"ThresholdedRelu", ActKind::kThresholdedRelu, true, false, 1.0f, 0},
    {"ScaledTanh", ActKind::kScaledTanh, true, true, 1.0f, 1.0f},
    {"HardSigmoid", ActKind::kHardSigmoid, true, true, 0.2f, 0.5f},
    {"Elu", ActKind::kElu, true, false, 1.0f, 0},
    {"Softsign", ActKind::kSoftsign, false, false, 0, 0},
    {"Softplus", ActKind::kSoftplus, false, false, 0, 0},
};

bool EqualNoCase(const std::string& a, const char* b) {
  if (a.size() != std::strlen(b)) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(a[i])) != std::tolower(static_cast<unsigned char>(b[i]))) return false;
  return true;
}

// In place over n values, the input clipped to [-clip, clip] first when clip > 0.
void Apply(const Activation& a, float* x, int64_t n, float clip) {
  if (clip > 0)
    for (int64_t i = 0; i < n; ++i) x[i] = std::clamp(x[i], -clip, clip);
  const float al = a.alpha, be = a.beta;
  switch (a.kind) {
    case ActKind::kSigmoid: kernels::SigmoidInPlace(x, n); return;
    case ActKind::kTanh: kernels::TanhInPlace(x, n); return;
    case ActKind::kRelu:
      for (int64_t i = 0; i < n; ++i) x[i] = x[i] > 0 ? x[i] : 0.0f;
      return;
    case ActKind::kAffine:
      for (int64_t i = 0; i < n; ++i) x[i] = al * x[i] + be;
      return;
    case ActKind::kLeakyRelu:
      for (int64_t i = 0; i < n; ++i) x[i] = x[i] >= 0 ? x[i] : al * x[i];
      return;
    case ActKind::kThresholdedRelu:
      for (int64_t i = 0; i < n; ++i) x[i] = x[i] > al ? x[i] : 0.0f;
      return;
    case ActKind::kScaledTanh:
      for (int64_t i = 0; i < n; ++i) x[i] = be * x[i];
      kernels::TanhInPlace(x, n);
      for (int64_t i = 0; i < n; ++i) x[i] *= al;
      return;
    case ActKind::kHardSigmoid:
      for (int64_t i = 0; i < n; ++i) x[i] = std::clamp(al * x[i] + be, 0.0f, 1.0f);
      return;
    case ActKind::kElu:
      for (int64_t i = 0; i < n; ++i) x[i] = x[i] >= 0 ? x[i] : al * (std::exp(x[i]) - 1.0f);
      return;
    case ActKind::kSoftsign:
      for (int64_t i = 0; i < n; ++i) x[i] = x[i] / (1.0f + std::fabs(x[i]));
      return;
    case ActKind::kSoftplus:
      // log(1 + e^x) without overflow for large x.
      for (int64_t i = 0; i < n; ++i) x[i] = x[i] > 20 ? x[i] : std::log1p(std::exp(x[i]));
      return;
  }
}

int64_t Align16(int64_t n) { return (n + 15) / 16 * 16; }

// Dense W and R read from the node's inputs at run time (they may be graph
// inputs, as in the ONNX backend tests).
class DenseProducts : public GateProducts {
 public:
  void Bind(const float* w, const float* r, int64_t gh, int64_t in, int64_t hidden) {
    w_ = w, r_ = r, gh_ = gh, in_ = in, h_ = hidden;
  }
  void Input(const float* x, int64_t rows, float* y) override {
    if (rows == 0) return;
    if (in_ == 0) {
      std::fill_n(y, rows * gh_, 0.0f);
      return;
    }
    if (rows == 1) {  // one step of one sample: OpenBLAS's gemv beats its gemm at M = 1
      cblas_sgemv(CblasRowMajor, CblasNoTrans, static_cast<int>(gh_), static_cast<int>(in_), 1.0f, w_,
                  static_cast<int>(in_), x, 1, 0.0f, y, 1);
      return;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(rows), static_cast<int>(gh_),
                static_cast<int>(in_), 1.0f, x, static_cast<int>(in_), w_, static_cast<int>(in_), 0.0f, y,
                static_cast<int>(gh_));
  }
  void Recurrent(const float* h, int64_t batch, int64_t g0, int64_t g1, float* y, int64_t ldy) override {
    const float* r = r_ + g0 * h_;
    const int n = static_cast<int>(g1 - g0);
    if (batch == 1) {
      cblas_sgemv(CblasRowMajor, CblasNoTrans, n, static_cast<int>(h_), 1.0f, r, static_cast<int>(h_), h, 1, 0.0f,
                  y, 1);
    } else {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(batch), n, static_cast<int>(h_), 1.0f, h,
                  static_cast<int>(h_), r, static_cast<int>(h_), 0.0f, y, static_cast<int>(ldy));
    }
  }
  std::string Name() const override { return "dense-blas"; }

 private:
  const float* w_ = nullptr;
  const float* r_ = nullptr;
  int64_t gh_ = 0, in_ = 0, h_ = 0;
};

}  // namespace

RecurrentConfig ReadRecurrentConfig(const NodeDef& n, Cell cell) {
  const std::string where = n.Where();
  RecurrentConfig c;
  c.cell = cell;
  const std::string dir = n.String("direction", "forward");
  if (dir == "forward") {
    c.directions = 1;
  } else if (dir == "reverse") {
    c.directions = 1, c.reverse = true;
  } else if (dir == "bidirectional") {
    c.directions = 2;
  } else {
    throw Error(fmt::format("{}: attribute direction = '{}', expected forward, reverse or bidirectional", where, dir));
  }
  c.layout = n.Int("layout", 0);
  if (c.layout != 0 && c.layout != 1)
    throw Error(fmt::format("{}: attribute layout = {}, expected 0 ([seq, batch, ...]) or 1 ([batch, seq, ...])",
                            where, c.layout));
  if (n.Has("hidden_size")) {
    c.hidden = n.Int("hidden_size", 0);
    if (c.hidden < 1 || c.hidden > (int64_t{1} << 24))
      throw Error(fmt::format("{}: attribute hidden_size = {} must be >= 1", where, c.hidden));
  }
  if (n.Has("clip")) {
    c.clip = n.Float("clip", 0);
    if (!(c.clip > 0)) throw Error(fmt::format("{}: attribute clip = {} must be > 0", where, c.clip));
  }
  if (cell == Cell::kLstm) c.input_forget = n.Int("input_forget", 0) != 0;
  if (cell == Cell::kGru) c.linear_before_reset = n.Int("linear_before_reset", 0) != 0;
  const int per = ActsPerDirection(cell);
  std::vector<std::string> names = n.attrs.Strings("activations", where);
  if (names.empty()) {
    const std::vector<std::string> dflt = cell == Cell::kLstm  ? std::vector<std::string>{"Sigmoid", "Tanh", "Tanh"}
                                          : cell == Cell::kGru ? std::vector<std::string>{"Sigmoid", "Tanh"}
                                                               : std::vector<std::string>{"Tanh"};
    for (int d = 0; d < c.directions; ++d) names.insert(names.end(), dflt.begin(), dflt.end());
  } else if (static_cast<int>(names.size()) != per * c.directions) {
    throw Error(fmt::format("{}: attribute activations has {} entries, expected {} ({} per direction, direction = {})",
                            where, names.size(), per * c.directions, per, dir));
  }
  const std::vector<float> alphas = n.attrs.Floats("activation_alpha", where);
  const std::vector<float> betas = n.attrs.Floats("activation_beta", where);
  std::size_t ia = 0, ib = 0;
  for (std::size_t k = 0; k < names.size(); ++k) {
    const ActInfo* info = nullptr;
    for (const ActInfo& a : kActivations)
      if (EqualNoCase(names[k], a.name)) info = &a;
    if (!info) {
      std::string known;
      for (const ActInfo& a : kActivations) known += (known.empty() ? "" : ", ") + std::string(a.name);
      throw Error(fmt::format("{}: activations[{}] = '{}' is not an activation of the schema ({})", where, k,
                              names[k], known));
    }
    Activation a{info->kind, info->alpha0, info->beta0};
    if (info->alpha && ia < alphas.size()) a.alpha = alphas[ia++];
    if (info->beta && ib < betas.size()) a.beta = betas[ib++];
    c.activations.push_back(a);
  }
  return c;
}

void RecurrentShapes::Check(const OpContext& ctx, const RecurrentConfig& c, bool weights_from_inputs) {
  const Value& x = Req(ctx, 0, "X");
  RequireFloat(ctx, &x, "X");
  if (x.shape.size() != 3)
    ctx.Fail("X has shape {}, expected rank 3 ({})", ShapeString(x.shape),
             c.layout == 0 ? "[seq_length, batch_size, input_size]" : "[batch_size, seq_length, input_size]");
  steps = c.layout == 0 ? x.shape[0] : x.shape[1];
  batch = c.layout == 0 ? x.shape[1] : x.shape[0];
  in = x.shape[2];
  const int64_t d = c.directions, g = RecurrentGates(c.cell);
  const char* gate_note = c.cell == Cell::kLstm ? "4·hidden_size (gates i, o, f, c)"
                          : c.cell == Cell::kGru ? "3·hidden_size (gates z, r, h)"
                                                 : "hidden_size";
  if (weights_from_inputs) {
    const Value& w = Req(ctx, 1, "W");
    const Value& r = Req(ctx, 2, "R");
    RequireFloat(ctx, &w, "W");
    RequireFloat(ctx, &r, "R");
    if (r.shape.size() != 3) ctx.Fail("R has shape {}, expected rank 3 [num_directions, {}, hidden_size]",
                                      ShapeString(r.shape), gate_note);
    hidden = c.hidden > 0 ? c.hidden : r.shape[2];
    const std::vector<int64_t> want_w{d, g * hidden, in}, want_r{d, g * hidden, hidden};
    if (w.shape.size() == 3 && w.shape[0] != d)
      ctx.Fail("W has {} directions (shape {}), but direction = {} needs {}", w.shape[0], ShapeString(w.shape),
               c.directions == 2 ? "bidirectional" : c.reverse ? "reverse" : "forward", d);
    if (w.shape != want_w)
      ctx.Fail("W has shape {}, expected {} ([num_directions, {}, input_size] with hidden_size = {}{})",
               ShapeString(w.shape), ShapeString(want_w), gate_note, hidden,
               c.hidden > 0 ? "" : " taken from R");
    if (r.shape != want_r)
      ctx.Fail("R has shape {}, expected {} ([num_directions, {}, hidden_size] with hidden_size = {})",
               ShapeString(r.shape), ShapeString(want_r), gate_note, hidden);
  } else {
    hidden = c.hidden;
  }
  const int64_t gh = g * hidden;
  if (const Value* b = ctx.In(3)) {
    RequireFloat(ctx, b, "B");
    if (b->shape != std::vector<int64_t>{d, 2 * gh})
      ctx.Fail("B has shape {}, expected [{}, {}] ([num_directions, 2·{}]: Wb then Rb)", ShapeString(b->shape), d,
               2 * gh, gate_note);
  }
  if (const Value* s = ctx.In(4)) {
    if (IsFloat(s->dtype)) ctx.Fail("sequence_lens '{}' has dtype float32, expected int32", s->name);
    if (s->shape != std::vector<int64_t>{batch})
      ctx.Fail("sequence_lens has shape {}, expected [{}] (batch_size)", ShapeString(s->shape), batch);
    if (s->constant) CheckLengths(ctx, s->constant_data->i());
  }
  const std::vector<int64_t> state = c.layout == 0 ? std::vector<int64_t>{d, batch, hidden}
                                                   : std::vector<int64_t>{batch, d, hidden};
  const char* state_note = c.layout == 0 ? "[num_directions, batch_size, hidden_size]"
                                         : "[batch_size, num_directions, hidden_size]";
  auto check_state = [&](std::size_t k, const char* what) {
    if (const Value* v = ctx.In(k)) {
      RequireFloat(ctx, v, what);
      if (v->shape != state)
        ctx.Fail("{} has shape {}, expected {} {}", what, ShapeString(v->shape), ShapeString(state), state_note);
    }
  };
  check_state(5, "initial_h");
  if (c.cell == Cell::kLstm) {
    check_state(6, "initial_c");
    if (const Value* p = ctx.In(7)) {
      RequireFloat(ctx, p, "P");
      if (p->shape != std::vector<int64_t>{d, 3 * hidden})
        ctx.Fail("P has shape {}, expected [{}, {}] ([num_directions, 3·hidden_size]: peepholes i, o, f)",
                 ShapeString(p->shape), d, 3 * hidden);
    }
  } else if (weights_from_inputs && ctx.in.size() > 6) {
    ctx.Fail("has {} inputs; {} takes at most 6 (X, W, R, B, sequence_lens, initial_h)", ctx.in.size(),
             CellName(c.cell));
  }
}

void RecurrentShapes::CheckLengths(const OpContext& ctx, const int64_t* lens) const {
  for (int64_t b = 0; b < batch; ++b)
    if (lens[b] < 0 || lens[b] > steps)
      ctx.Fail("sequence_lens[{}] = {} is outside [0, seq_length = {}]", b, lens[b], steps);
}

void RecurrentShapes::SetOutputs(OpContext& ctx, const RecurrentConfig& c) const {
  const int64_t d = c.directions;
  if (c.layout == 0) {
    ctx.SetOut(0, DType::kFloat32, {steps, d, batch, hidden});
    ctx.SetOut(1, DType::kFloat32, {d, batch, hidden});
    if (c.cell == Cell::kLstm) ctx.SetOut(2, DType::kFloat32, {d, batch, hidden});
  } else {
    ctx.SetOut(0, DType::kFloat32, {batch, steps, d, hidden});
    ctx.SetOut(1, DType::kFloat32, {batch, d, hidden});
    if (c.cell == Cell::kLstm) ctx.SetOut(2, DType::kFloat32, {batch, d, hidden});
  }
}

int64_t RecurrentShapes::ScratchBytes(const RecurrentConfig& c) const {
  const int64_t gh = RecurrentGates(c.cell) * hidden;
  return static_cast<int64_t>(sizeof(float)) *
         (Align16(steps * batch * gh) + Align16(batch * gh) + 3 * Align16(batch * hidden) + Align16(gh) +
          Align16(hidden));
}

void RunRecurrent(const OpContext& ctx, const RunState& rs, const RecurrentConfig& c, const RecurrentShapes& s,
                  const std::vector<GateProducts*>& products) {
  const int64_t T = s.steps, B = s.batch, H = s.hidden, D = c.directions;
  const int G = RecurrentGates(c.cell);
  const int64_t GH = G * H;
  float* scratch = reinterpret_cast<float*>(rs.scratch);
  float* xw = scratch;
  float* rp = xw + Align16(T * B * GH);
  float* h = rp + Align16(B * GH);
  float* cs = h + Align16(B * H);
  float* tmp = cs + Align16(B * H);
  float* bias = tmp + Align16(B * H);
  float* rbh = bias + Align16(GH);

  std::vector<int64_t> lens(static_cast<std::size_t>(B), T);
  if (const Value* sl = ctx.In(4)) {
    s.CheckLengths(ctx, sl->i());
    lens.assign(sl->i(), sl->i() + B);
  }
  const int64_t max_len = B == 0 ? 0 : *std::max_element(lens.begin(), lens.end());
  float* y = ctx.out[0]->f();
  float* yh = ctx.out[1]->f();
  float* yc = c.cell == Cell::kLstm ? ctx.out[2]->f() : nullptr;
  if (std::any_of(lens.begin(), lens.end(), [&](int64_t l) { return l < T; }))
    std::fill_n(y, T * D * B * H, 0.0f);

  const Value* bv = ctx.In(3);
  const Value* h0 = ctx.In(5);
  const Value* c0 = c.cell == Cell::kLstm ? ctx.In(6) : nullptr;
  const Value* pv = c.cell == Cell::kLstm ? ctx.In(7) : nullptr;
  const bool lbr = c.cell == Cell::kGru && c.linear_before_reset;
  const int per = ActsPerDirection(c.cell);
  // Offsets of (t, b) in X / XW rows, Y and the [D, B, H] states by layout.
  auto row = [&](int64_t t, int64_t b) { return c.layout == 0 ? t * B + b : b * T + t; };
  auto y_at = [&](int64_t t, int64_t d, int64_t b) {
    return c.layout == 0 ? ((t * D + d) * B + b) * H : ((b * T + t) * D + d) * H;
  };
  auto state_at = [&](int64_t d, int64_t b) { return c.layout == 0 ? (d * B + b) * H : (b * D + d) * H; };

  for (int64_t d = 0; d < D; ++d) {
    const bool reverse = D == 2 ? d == 1 : c.reverse;
    const Activation* act = &c.activations[static_cast<std::size_t>(d * per)];
    GateProducts& prod = *products[static_cast<std::size_t>(d)];
    // 1. Input projection of every step, biases folded in.
    prod.Input(ctx.in[0]->f(), T * B, xw);
    std::fill_n(bias, GH, 0.0f);
    std::fill_n(rbh, H, 0.0f);
    if (bv) {
      const float* wb = bv->f() + d * 2 * GH;
      const float* rb = wb + GH;
      for (int64_t k = 0; k < GH; ++k) bias[k] = wb[k] + (lbr && k >= 2 * H ? 0.0f : rb[k]);
      if (lbr) std::copy_n(rb + 2 * H, H, rbh);
    }
    if (bv)
      for (int64_t r = 0; r < T * B; ++r) {
        float* xr = xw + r * GH;
        for (int64_t k = 0; k < GH; ++k) xr[k] += bias[k];
      }
    for (int64_t b = 0; b < B; ++b) {
      if (h0) std::copy_n(h0->f() + state_at(d, b), H, h + b * H);
      else std::fill_n(h + b * H, H, 0.0f);
      if (c0) std::copy_n(c0->f() + state_at(d, b), H, cs + b * H);
      else std::fill_n(cs + b * H, H, 0.0f);
    }
    const float* peep = pv ? pv->f() + d * 3 * H : nullptr;

    // 2. The steps. Without initial_h the first step's H_{t-1} is zero, and
    // so is its recurrent product (skipped, as ONNX Runtime does).
    for (int64_t st = 0; st < max_len; ++st) {
      const bool h_zero = st == 0 && !h0;
      // Recurrent product of the whole batch (GRU without linear_before_reset:
      // z and r first, the h gate after the reset).
      const int64_t g_end = c.cell == Cell::kGru && !lbr ? 2 * H : GH;
      if (h_zero) {
        for (int64_t b = 0; b < B; ++b) std::fill_n(rp + b * GH, g_end, 0.0f);
      } else {
        prod.Recurrent(h, B, 0, g_end, rp, GH);
      }
      for (int64_t b = 0; b < B; ++b) {
        if (st >= lens[b]) continue;
        const int64_t t = reverse ? lens[b] - 1 - st : st;
        const float* xr = xw + row(t, b) * GH;
        float* g = rp + b * GH;
        float* hb = h + b * H;
        if (c.cell == Cell::kRnn) {
          for (int64_t k = 0; k < H; ++k) g[k] += xr[k];
          Apply(act[0], g, H, c.clip);
          std::copy_n(g, H, hb);
        } else if (c.cell == Cell::kLstm) {
          for (int64_t k = 0; k < GH; ++k) g[k] += xr[k];
          float *gi = g, *go = g + H, *gf = g + 2 * H, *gc = g + 3 * H, *cb = cs + b * H;
          if (peep)
            for (int64_t k = 0; k < H; ++k) gi[k] += peep[k] * cb[k], gf[k] += peep[2 * H + k] * cb[k];
          Apply(act[0], gi, H, c.clip);
          if (c.input_forget) {
            for (int64_t k = 0; k < H; ++k) gf[k] = 1.0f - gi[k];
          } else {
            Apply(act[0], gf, H, c.clip);
          }
          Apply(act[1], gc, H, c.clip);
          for (int64_t k = 0; k < H; ++k) cb[k] = gf[k] * cb[k] + gi[k] * gc[k];
          if (peep)
            for (int64_t k = 0; k < H; ++k) go[k] += peep[H + k] * cb[k];
          Apply(act[0], go, H, c.clip);
          float* th = tmp + b * H;
          std::copy_n(cb, H, th);
          Apply(act[2], th, H, 0);
          for (int64_t k = 0; k < H; ++k) hb[k] = go[k] * th[k];
        } else {  // GRU: z and r here, h below once the batch has them
          for (int64_t k = 0; k < 2 * H; ++k) g[k] += xr[k];
          Apply(act[0], g, 2 * H, c.clip);
          float* rb_h = tmp + b * H;
          if (lbr) {
            for (int64_t k = 0; k < H; ++k) g[2 * H + k] = xr[2 * H + k] + g[H + k] * (g[2 * H + k] + rbh[k]);
          } else {
            for (int64_t k = 0; k < H; ++k) rb_h[k] = g[H + k] * hb[k];
          }
        }
      }
      if (c.cell == Cell::kGru) {
        if (!lbr && h_zero) {
          for (int64_t b = 0; b < B; ++b) std::fill_n(rp + b * GH + 2 * H, H, 0.0f);
        } else if (!lbr) {
          prod.Recurrent(tmp, B, 2 * H, GH, rp + 2 * H, GH);
        }
        for (int64_t b = 0; b < B; ++b) {
          if (st >= lens[b]) continue;
          const int64_t t = reverse ? lens[b] - 1 - st : st;
          const float* xr = xw + row(t, b) * GH;
          float* g = rp + b * GH;
          float* hb = h + b * H;
          float* gh = g + 2 * H;
          if (!lbr)
            for (int64_t k = 0; k < H; ++k) gh[k] += xr[2 * H + k];
          Apply(act[1], gh, H, c.clip);
          for (int64_t k = 0; k < H; ++k) hb[k] = (1.0f - g[k]) * gh[k] + g[k] * hb[k];
        }
      }
      for (int64_t b = 0; b < B; ++b) {
        if (st >= lens[b]) continue;
        const int64_t t = reverse ? lens[b] - 1 - st : st;
        std::copy_n(h + b * H, H, y + y_at(t, d, b));
      }
    }
    for (int64_t b = 0; b < B; ++b) {
      std::copy_n(h + b * H, H, yh + state_at(d, b));
      if (yc) std::copy_n(cs + b * H, H, yc + state_at(d, b));
    }
  }
}

namespace {

class RecurrentOp : public OpKernel {
 public:
  RecurrentOp(const NodeDef& n, Cell cell) : config_(ReadRecurrentConfig(n, cell)) {}
  void Prepare(OpContext& ctx) override {
    shapes_.Check(ctx, config_, true);
    shapes_.SetOutputs(ctx, config_);
    ctx.scratch_bytes = shapes_.ScratchBytes(config_);
  }
  void Run(OpContext& ctx, RunState& rs) override {
    const int64_t gh = RecurrentGates(config_.cell) * shapes_.hidden;
    dense_.resize(static_cast<std::size_t>(config_.directions));
    std::vector<GateProducts*> products;
    for (int64_t d = 0; d < config_.directions; ++d) {
      dense_[d].Bind(ctx.in[1]->f() + d * gh * shapes_.in, ctx.in[2]->f() + d * gh * shapes_.hidden, gh, shapes_.in,
                     shapes_.hidden);
      products.push_back(&dense_[d]);
    }
    RunRecurrent(ctx, rs, config_, shapes_, products);
  }
  std::string KernelName() const override { return "recurrent.dense-blas"; }

 private:
  RecurrentConfig config_;
  RecurrentShapes shapes_;
  std::vector<DenseProducts> dense_;
};

// Permuted-diagonal W and R (one matrix each per direction: the four (three)
// gates stacked, so each product is one kernel call). The input projection
// of all steps is the batch-major PermDiagMatMulRows; a step at batch 1 is
// the row-pack matvec (the kernel of PermDiagMatMul at batch 1), larger
// batches PermDiagMatMulRows.
// One direction's weights, shared with the model's replicas (SharedForm).
struct PermDiagGateWeights {
  PermDiagMatrix w, r;
  kernels::PermDiagRowPack pack;  // of r
};

class PermDiagProducts : public GateProducts {
 public:
  PermDiagProducts(std::shared_ptr<const PermDiagGateWeights> m, int threads)
      : m_(std::move(m)), w_(m_->w), r_(m_->r), pack_(m_->pack), threads_(threads) {}
  PermDiagProducts(const PermDiagProducts&) = delete;  // (w_, r_, pack_ refer into m_)
  PermDiagProducts& operator=(const PermDiagProducts&) = delete;
  void Input(const float* x, int64_t rows, float* y) override {
    if (rows == 0) return;
    if (mode_ == Mode::kInt16) {
      for (int64_t k = 0; k < rows; ++k) in16_.Run(w16_, x + k * w_.cols(), y + k * w_.rows(), threads_);
      return;
    }
    kernels::PermDiagMatMulRows(w_, {x, static_cast<std::size_t>(rows * w_.cols())}, rows, {},
                                {y, static_cast<std::size_t>(rows * w_.rows())}, threads_);
    if (mode_ == Mode::kCalibrating) in16_.Record(x, rows * w_.cols(), y, rows * w_.rows());
  }
  void Recurrent(const float* h, int64_t batch, int64_t g0, int64_t g1, float* y, int64_t ldy) override {
    const int64_t gh = r_.rows(), H = r_.cols();
    const bool whole = g0 == 0 && g1 == gh && (batch == 1 || ldy == gh);
    float* out = whole ? y : Tmp(batch * gh);
    if (mode_ == Mode::kInt16) {
      for (int64_t b = 0; b < batch; ++b) rec16_.Run(r16_, h + b * H, out + b * gh, threads_);
    } else if (batch == 1) {
      kernels::PermDiagMatVec(pack_, {h, static_cast<std::size_t>(H)}, {}, {out, static_cast<std::size_t>(gh)},
                              threads_);
    } else {
      kernels::PermDiagMatMulRows(r_, {h, static_cast<std::size_t>(batch * H)}, batch, {},
                                  {out, static_cast<std::size_t>(batch * gh)}, threads_);
    }
    if (mode_ == Mode::kCalibrating) rec16_.Record(h, batch * H, out, batch * gh);
    if (!whole)  // GRU without linear_before_reset: the rows of one gate
      for (int64_t b = 0; b < batch; ++b) std::copy(out + b * gh + g0, out + b * gh + g1, y + b * ldy);
  }
  std::string Name() const override {
    kernels::KernelProblem q{mode_ == Mode::kInt16 ? kernels::KernelOp::kPermDiagMatVecI16
                                                   : kernels::KernelOp::kPermDiagMatVecPacked,
                             r_.p(), r_.rows(), r_.cols(), 1, pack_.chunked};
    return "recurrent." + kernels::SelectedKernel(q);
  }
  void SetThreads(int threads) { threads_ = threads; }

  // Fixed point, as PermDiagMatMul's: calibration records max |input| and
  // max |product| of each of the two products; then weights at the largest
  // non-saturating frac bits (PermDiagMatrixI16::Quantize), inputs and
  // products at ChooseFracBits of their maxima, exact int64 accumulation
  // and one requantizing shift (kernels::PermDiagMatVecI16). The gate
  // equations stay in float.
  void BeginCalibration() {
    in16_ = {}, rec16_ = {};
    mode_ = Mode::kCalibrating;
  }
  void EndCalibration() {
    w16_ = PermDiagMatrixI16::Quantize(w_);
    r16_ = PermDiagMatrixI16::Quantize(r_);
    in16_.Finish(w16_), rec16_.Finish(r16_);
    mode_ = Mode::kFloat;
    calibrated_ = true;
  }
  void SetInt16(bool on) { mode_ = on && calibrated_ ? Mode::kInt16 : mode_ == Mode::kInt16 ? Mode::kFloat : mode_; }

 private:
  enum class Mode { kFloat, kCalibrating, kInt16 };
  // One product's scales and staging.
  struct Fixed {
    double x_max = 0, y_max = 0;
    int fx = 0, fy = 0, shift = 0;
    std::vector<int16_t> xq, yq;
    void Record(const float* x, int64_t nx, const float* y, int64_t ny) {
      x_max = std::max(x_max, MaxAbs({x, static_cast<std::size_t>(nx)}));
      y_max = std::max(y_max, MaxAbs({y, static_cast<std::size_t>(ny)}));
    }
    void Finish(const PermDiagMatrixI16& w) {
      fx = ChooseFracBits<int16_t>(x_max);
      fy = ChooseFracBits<int16_t>(y_max);
      shift = w.frac_bits() + fx - fy;
      xq.resize(static_cast<std::size_t>(w.cols()));
      yq.resize(static_cast<std::size_t>(w.rows()));
    }
    void Run(const PermDiagMatrixI16& w, const float* x, float* y, int threads) {
      QuantizeSpan<int16_t>({x, xq.size()}, fx, xq);
      kernels::PermDiagMatVecI16(w, xq, {}, shift, yq, threads);
      DequantizeSpan<int16_t>(yq, fy, {y, yq.size()});
    }
  };
  float* Tmp(int64_t n) {
    if (static_cast<int64_t>(tmp_.size()) < n) tmp_.resize(static_cast<std::size_t>(n));
    return tmp_.data();
  }
  std::shared_ptr<const PermDiagGateWeights> m_;
  const PermDiagMatrix &w_, &r_;
  const kernels::PermDiagRowPack& pack_;
  int threads_ = 1;
  std::vector<float> tmp_;
  Mode mode_ = Mode::kFloat;
  bool calibrated_ = false;
  PermDiagMatrixI16 w16_, r16_;
  Fixed in16_, rec16_;
};

class CompressedRecurrentOp : public OpKernel, public Int16Op {
 public:
  CompressedRecurrentOp(const formats::FormatTraits& f, Cell cell, const NodeDef& n)
      : format_(f), config_(ReadRecurrentConfig(n, cell)) {
    const std::string where = n.Where();
    if (config_.hidden < 1) throw Error(where + ": missing attribute 'hidden_size'");
    in_ = n.attrs.RequirePositive("input_size", where);
    p_ = n.attrs.RequirePositive("p", where);
    if (config_.hidden % p_ != 0)
      throw Error(fmt::format("{}: hidden_size = {} must be a multiple of p = {} (a block would straddle two gates)",
                              where, config_.hidden, p_));
  }
  bool Foldable() const override { return false; }
  bool Fast() const override { return true; }
  void Prepare(OpContext& ctx) override {
    for (int k : {1, 2})
      if (ctx.In(static_cast<std::size_t>(k)))
        ctx.Fail("input {} ({}) must be empty: a {} op stores W and R as its format's arrays from slot {}", k,
                 k == 1 ? "W" : "R", ctx.node->op_type, formats::kRecurrentArraySlot);
    shapes_.Check(ctx, config_, false);
    if (shapes_.in != in_) ctx.Fail("X has input_size {} (shape {}), attribute input_size = {}", shapes_.in,
                                    ShapeString(ctx.in[0]->shape), in_);
    ctx.scratch_bytes = shapes_.ScratchBytes(config_);
    shapes_.SetOutputs(ctx, config_);
  }
  // Each direction's W, R and R's row pack, read at the first plan and
  // shared with the model's replicas.
  void Finalize(OpContext& ctx, const RunState& rs) override {
    if (!products_.empty()) return;
    const int64_t gh = RecurrentGates(config_.cell) * config_.hidden;
    std::vector<std::unique_ptr<PermDiagProducts>> products;
    for (int64_t d = 0; d < config_.directions; ++d)
      products.push_back(std::make_unique<PermDiagProducts>(
          SharedForm<PermDiagGateWeights>(rs.packs, ctx.node->position, "gates-" + std::to_string(d), [&] {
            formats::Weights w = ReadRecurrentWeights(ctx, format_, false, d, config_.directions, gh, in_);
            formats::Weights r = ReadRecurrentWeights(ctx, format_, true, d, config_.directions, gh, config_.hidden);
            PermDiagGateWeights g{PermDiagMatrix::FromParts(gh, in_, static_cast<int>(p_), w.values, w.offsets),
                                  PermDiagMatrix::FromParts(gh, config_.hidden, static_cast<int>(p_), r.values,
                                                            r.offsets),
                                  {}};
            g.pack = kernels::PermDiagRowPack::Build(g.r);
            return g;
          }),
          1));
    products_ = std::move(products);  // only once every direction's weights were valid
  }
  void Run(OpContext& ctx, RunState& rs) override {
    std::vector<GateProducts*> products;
    for (auto& p : products_) {
      p->SetThreads(rs.threads);
      if (!rs.calibrating) p->SetInt16(rs.int16);
      products.push_back(p.get());
    }
    RunRecurrent(ctx, rs, config_, shapes_, products);
  }
  void BeginCalibration() override {
    for (auto& p : products_) p->BeginCalibration();
  }
  void EndCalibration() override {
    for (auto& p : products_) p->EndCalibration();
  }
  std::string KernelName() const override { return products_.empty() ? "recurrent" : products_[0]->Name(); }

 private:
  const formats::FormatTraits& format_;
  RecurrentConfig config_;
  RecurrentShapes shapes_;
  int64_t in_ = 0, p_ = 1;
  std::vector<std::unique_ptr<PermDiagProducts>> products_;
};

}  // namespace

std::unique_ptr<OpKernel> CreateCompressedRecurrentKernel(const formats::FormatTraits& f, formats::RecurrentCell cell,
                                                          const NodeDef& n) {
  const Cell c = cell == formats::RecurrentCell::kLstm ? Cell::kLstm
                 : cell == formats::RecurrentCell::kGru ? Cell::kGru
                                                        : Cell::kRnn;
  if (!formats::IsPermDiag(f.kind)) throw UnsupportedError(n.Where() + ": no runtime op for recurrent format " + f.name);
  return std::make_unique<CompressedRecurrentOp>(f, c, n);
}

std::unique_ptr<OpKernel> CreateRecurrentKernel(const NodeDef& n) {
  if (n.op_type == "LSTM") return std::make_unique<RecurrentOp>(n, Cell::kLstm);
  if (n.op_type == "GRU") return std::make_unique<RecurrentOp>(n, Cell::kGru);
  if (n.op_type == "RNN") return std::make_unique<RecurrentOp>(n, Cell::kRnn);
  return nullptr;
}

}  // namespace permdnn::runtime::detail
