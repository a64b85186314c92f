// The format registry: every row's op schema, its writer and reader agree
// (WriteNode then ReadNode gives the weights back), the one byte count is
// what the writer writes, projections report the energy they keep, the
// lifted conv matrix is the conv, and bad arrays are errors naming the node
// and the field.
#include "permdnn/formats/registry.h"

#include <cmath>
#include <map>
#include <random>
#include <set>

#include <gtest/gtest.h>

#include "permdnn/core/error.h"
#include "support/compare.h"

namespace permdnn::formats {
namespace {

using permdnn::testing::RandomVector;

// A node held in memory: the arrays a WriteNode emitted, by slot.
class MemorySource : public NodeSource {
 public:
  explicit MemorySource(const NodeSpec& spec) : attrs_(spec.attributes) {
    for (std::size_t k = 0; k < spec.inputs.size(); ++k) {
      const OutputArray& a = spec.inputs[k];
      if (a.name.empty()) continue;
      Stored& s = arrays_[static_cast<int>(k) + 1];
      s.ref.name = a.name;
      s.ref.dtype = a.dtype;
      s.ref.shape = a.shape;
      if (!a.f.empty() || a.dtype == ElemType::kFloat32) {
        s.f.assign(a.f.begin(), a.f.end());
      } else {
        for (uint16_t v : a.u16) s.i.push_back(v);
        for (int32_t v : a.i32) s.i.push_back(v);
        for (uint8_t v : a.u8) s.i.push_back(v);
      }
    }
    for (auto& [slot, s] : arrays_) {
      s.ref.f = s.f;
      s.ref.i = s.i;
    }
  }
  std::string Where() const override { return "node 'n' (test)"; }
  const Attributes& attributes() const override { return attrs_; }
  bool HasInput(int slot, const char*) const override { return arrays_.count(slot) != 0; }
  ArrayRef Input(int slot, const char* name) const override {
    auto it = arrays_.find(slot);
    PERMDNN_CHECK(it != arrays_.end(), "{}: missing input {} ({})", Where(), slot, name);
    return it->second.ref;
  }
  Attributes& attrs() { return attrs_; }
  std::vector<float>& floats(int slot) { return arrays_.at(slot).f; }
  std::vector<int64_t>& ints(int slot) { return arrays_.at(slot).i; }

 private:
  struct Stored {
    ArrayRef ref;
    std::vector<float> f;
    std::vector<int64_t> i;
  };
  Attributes attrs_;
  std::map<int, Stored> arrays_;
};

// What ReadNode (as the row of `read_as`) throws for w as WriteNode writes
// it, changed by mutate(MemorySource&); "" when it reads.
template <typename Mutate>
std::string ReadError(Kind read_as, const Weights& w, Mutate&& mutate) {
  MemorySource src(WriteNode(w));
  mutate(src);
  try {
    ReadNode(Format(read_as), false, src);
  } catch (const Error& e) {
    return std::string(e.what());
  }
  return std::string();
}

double Energy(std::span<const float> v) {
  double e = 0;
  for (float x : v) e += double(x) * x;
  return e;
}

struct Case {
  Kind kind;
  bool conv;
  int64_t out, in;
  int p;
};

LayerCompression MethodFor(Kind kind, int p) {
  LayerCompression m;
  m.p = p;
  switch (kind) {
    case Kind::kDense: m.kind = CompressKind::kDense; break;
    case Kind::kPermDiag: m.kind = CompressKind::kPermDiag; break;
    case Kind::kPermDiagColumn: m.kind = CompressKind::kPermDiag; m.column_offsets = true; break;
    case Kind::kCirculant: m.kind = CompressKind::kCirculant; break;
    case Kind::kCsr: m.kind = CompressKind::kPrune; m.density = 0.3; break;
    case Kind::kCsrCodebook: m.kind = CompressKind::kPrune; m.density = 0.3; m.bits = 3; break;
    // index=2: gaps of 3 or more zeros (frequent at density 0.3) need padding entries.
    case Kind::kCsrRelative: m.kind = CompressKind::kPrune; m.density = 0.3; m.bits = 3; m.index_bits = 2; break;
    case Kind::kTernary: m.kind = CompressKind::kTernary; m.density = 0.6; m.threshold = 0.2; break;
  }
  return m;
}

std::vector<Case> Cases() {
  std::vector<Case> cs;
  for (const FormatTraits& f : Formats())
    for (bool conv : {false, true})
      for (auto [out, in] : {std::pair<int64_t, int64_t>{12, 20}, {7, 5}, {16, 16}})
        cs.push_back({f.kind, conv, out, in, f.blocked ? 4 : 1});
  return cs;
}

TEST(FormatRegistry, EveryPermDnnOpBelongsToOneOpSchemaAndIsFound) {
  std::set<std::string> ops;
  for (const FormatTraits& f : Formats()) {
    EXPECT_EQ(&Format(f.kind), &f);
    EXPECT_FALSE(f.arrays.empty()) << f.name;
    for (const OpSchema* op : {f.linear, f.conv}) {
      ASSERT_NE(op, nullptr) << f.name;
      EXPECT_EQ(op->conv, op == f.conv) << op->name;
      if (!IsPermDnnDomain(op->domain)) continue;
      ops.insert(op->name);
      // Every op is found again; the sparse ops pick the codebook row only
      // with a codebook input, the permdiag ops the row of their
      // offset_layout attribute (absent: block); the relative sparse ops
      // are csr-relative's alone.
      Attributes attrs;
      if (f.offset_layout) attrs.SetString("offset_layout", f.offset_layout);
      const FormatTraits* found = FindFormat(kDomain, op->name, [&](int slot) {
        return f.kind == Kind::kCsrCodebook || f.kind == Kind::kCsrRelative || slot != 5;
      }, false, &attrs);
      ASSERT_NE(found, nullptr) << op->name;
      EXPECT_EQ(found->kind, f.kind) << op->name;
    }
  }
  EXPECT_EQ(ops.size(), 10u);
  EXPECT_EQ(FindFormat(kDomain, "PermDiagMatMul", [](int) { return true; })->kind, Kind::kPermDiag);  // old files
  EXPECT_EQ(FindFormat(kDomain, "NoSuchOp", [](int) { return true; }), nullptr);
  EXPECT_EQ(FindFormat("", "Gemm", [](int) { return true; }), nullptr);  // dense only when asked
  EXPECT_EQ(FindFormat("", "Gemm", [](int) { return true; }, true)->kind, Kind::kDense);
}

// Project -> WriteNode -> ReadNode gives the same weights; the file byte
// count is the sum of what WriteNode emits; the projection's kept energy is
// 1 − ‖W − Ŵ‖²/‖W‖² of its dense expansion.
TEST(FormatRegistry, WriteReadRoundTripBytesAndKeptEnergy) {
  for (const Case& c : Cases()) {
    const FormatTraits& f = Format(c.kind);
    Geometry g{c.out, c.in, c.conv ? std::vector<int64_t>{3, 2} : std::vector<int64_t>{}, c.p};
    const std::vector<float> dense = RandomVector(g.out * g.in * g.taps(), 1.0, c.out * 7 + c.in);
    Projection pr = Project(f, dense, g, MethodFor(c.kind, c.p));
    pr.weights.bias = RandomVector(g.out, 1.0, 3);
    const std::string what = std::string(f.name) + (c.conv ? " conv " : " linear ") + std::to_string(c.out) + "x" +
                             std::to_string(c.in);
    const NodeSpec spec = WriteNode(pr.weights);
    EXPECT_EQ(spec.op, &Op(f, c.conv)) << what;
    int64_t written = 0;
    for (const OutputArray& a : spec.inputs) {
      int64_t n = 1;
      for (int64_t d : a.shape) n *= d;
      if (!a.name.empty()) written += n * ElemBytes(a.dtype);
    }
    EXPECT_EQ(StoredSize(pr.weights).bytes, written) << what;

    const Weights back = ReadNode(f, c.conv, MemorySource(spec));
    EXPECT_EQ(back.kind, c.kind) << what;
    EXPECT_EQ(back.g.kernel, g.kernel) << what;
    EXPECT_EQ(back.values, pr.weights.values) << what;
    EXPECT_EQ(back.offsets, pr.weights.offsets) << what;
    EXPECT_EQ(back.row_ptr, pr.weights.row_ptr) << what;
    EXPECT_EQ(back.col_idx, pr.weights.col_idx) << what;
    EXPECT_EQ(back.codes, pr.weights.codes) << what;
    EXPECT_EQ(back.codebook, pr.weights.codebook) << what;
    EXPECT_EQ(back.group_mask, pr.weights.group_mask) << what;
    EXPECT_EQ(back.plus, pr.weights.plus) << what;
    EXPECT_EQ(back.minus, pr.weights.minus) << what;
    EXPECT_EQ(back.scale, pr.weights.scale) << what;
    EXPECT_EQ(back.bias, pr.weights.bias) << what;

    const std::vector<float> approx = ToDense(pr.weights);
    ASSERT_EQ(approx.size(), dense.size()) << what;
    double err = 0;
    for (std::size_t k = 0; k < dense.size(); ++k) err += (double(dense[k]) - approx[k]) * (double(dense[k]) - approx[k]);
    EXPECT_NEAR(pr.kept_energy, 1.0 - err / Energy(dense), 1e-5) << what;
    if (c.kind == Kind::kDense) EXPECT_EQ(pr.kept_energy, 1.0);
    else EXPECT_LT(pr.kept_energy, 1.0) << what;
  }
}

// The lifted (im2col) matrix times the columns of one output position is the
// conv: W·col with col[t·nb·p + ic] (blocked) or col[ic·taps + t] (CSR).
TEST(FormatRegistry, LiftedMatrixIsTheConvolution) {
  for (const FormatTraits& f : Formats()) {
    if (f.kind == Kind::kDense) continue;
    Geometry g{6, 5, {2, 2}, f.blocked ? 4 : 1};
    const std::vector<float> dense = RandomVector(g.out * g.in * g.taps(), 1.0, 11);
    const Weights w = Project(f, dense, g, MethodFor(f.kind, g.p)).weights;
    const std::vector<float> wd = ToDense(w);  // [out][in][taps]
    const LiftedMatrix m = Lift(w);
    std::vector<float> lifted = m.permdiag ? m.permdiag->ToDense() : m.circulant ? m.circulant->ToDense()
                                : m.ternary ? m.ternary->ToDense() : m.sparse->ToDense();
    const int64_t K = g.taps(), cols = static_cast<int64_t>(lifted.size()) / g.out;
    const bool tap_major = f.blocked;
    for (int64_t o = 0; o < g.out; ++o)
      for (int64_t ic = 0; ic < g.in; ++ic)
        for (int64_t t = 0; t < K; ++t) {
          const int64_t col = tap_major ? t * g.col_blocks() * g.p + ic : ic * K + t;
          EXPECT_EQ(lifted[o * cols + col], wd[(o * g.in + ic) * K + t]) << f.name << " o=" << o << " ic=" << ic;
        }
  }
}

TEST(FormatRegistry, StoredSizeCountsEveryFormat) {
  const Geometry g{10, 20, {}, 8};  // mb = 2, nb = 3
  EXPECT_EQ(StoredSize(Kind::kDense, g, 0, 0, true).bytes, (200 + 10) * 4);
  EXPECT_EQ(StoredSize(Kind::kPermDiag, g, 0, 0, false).bytes, 6 * 8 * 4 + 6 * 2);
  EXPECT_EQ(StoredSize(Kind::kPermDiag, g, 0, 0, false, {32, true}).bytes, 6 * 8 * 4 + 6 * 1);
  EXPECT_EQ(StoredSize(Kind::kPermDiag, g, 0, 0, false, {16, true}).bytes, 6 * 8 * 2 + 6 * 1);
  EXPECT_EQ(StoredSize(Kind::kCirculant, g, 0, 0, true).numbers, 6 * 8 + 10);
  EXPECT_EQ(StoredSize(Kind::kCsr, g, 30, 0, false).bytes, 11 * 4 + 30 * 4 + 30 * 4);
  EXPECT_EQ(StoredSize(Kind::kCsrCodebook, g, 30, 16, true).bytes, 11 * 4 + 30 * 4 + 30 + (16 + 10) * 4);
  EXPECT_EQ(PermDiagMatrix(10, 20, 8).bytes(), StoredSize(Kind::kPermDiag, g, 0, 0, false, {32, true}).bytes);
  // Shared offsets: one per block column (nb = 3) instead of per block.
  EXPECT_EQ(StoredSize(Kind::kPermDiagColumn, g, 0, 0, false).bytes, 6 * 8 * 4 + 3 * 2);
  EXPECT_EQ(StoredSize(Kind::kPermDiagColumn, g, 0, 0, true, {16, true}).bytes, 6 * 8 * 2 + 3 * 1 + 10 * 2);
  // Ternary: nnz = kept groups. 10 x 20 in groups of 4: 50 groups (7 mask
  // bytes), 30 kept x 2 planes x 1 byte, scale and bias floats.
  EXPECT_EQ(StoredSize(Kind::kTernary, {10, 20, {}, 4}, 30, 0, true).bytes, 7 + 2 * 30 + (10 + 10) * 4);
  // A ResNet-20 conv, 16 -> 32 channels 3x3 in groups of 16: 64 groups of
  // 144 weights (18 bytes a plane), half kept.
  EXPECT_EQ(StoredSize(Kind::kTernary, {32, 16, {3, 3}, 16}, 16, 0, false).bytes, 4 + 2 * 16 * 18 + 32 * 4);
}

// The ternarizer of issue 18 on a worked example: group pruning by norm,
// then per row Δ = t·max|w|, α = mean |w| over |w| > Δ, codes sign(w);
// groups whose codes are all zero are pruned; values outside {-1, 0, +1}
// are errors naming the source.
TEST(FormatRegistry, TernarizeWorkedExample) {
  // 2 rows x 4 columns, groups of 2: norms² row 0: 1.0+0.01, 0.04+0.0; row 1: 0.25+0.25, 0.81+0.
  const std::vector<float> w = {1.0f, -0.1f, 0.2f, 0.0f, 0.5f, -0.5f, 0.0f, -0.9f};
  // Keep 3 of 4 groups: group (0, 1) (the smallest norm) goes.
  const TernaryProjection tp = Ternarize(w, 2, 4, 2, 0.3, 0.75);
  const TernaryMatrix& m = tp.matrix;
  EXPECT_EQ(m.kept_groups(), 3);
  EXPECT_TRUE(m.Kept(0, 0));
  EXPECT_FALSE(m.Kept(0, 1));
  // Row 0: Δ = 0.3 · 1.0, only 1.0 passes: α = 1; row 1: Δ = 0.27, α = (0.5 + 0.5 + 0.9) / 3.
  EXPECT_EQ(m.Codes(), (std::vector<int8_t>{1, 0, 0, 0, 1, -1, 0, -1}));
  EXPECT_FLOAT_EQ(m.scale()[0], 1.0f);
  EXPECT_FLOAT_EQ(m.scale()[1], static_cast<float>(1.9 / 3));
  // One Δ and α per layer (alpha=layer): Δ = 0.3 · 1.0 over the kept
  // weights, so 1.0, 0.5, -0.5, -0.9 pass: α = 2.9 / 4 in both rows.
  const TernaryMatrix pl = Ternarize(w, 2, 4, 2, 0.3, 0.75, true).matrix;
  EXPECT_EQ(pl.Codes(), (std::vector<int8_t>{1, 0, 0, 0, 1, -1, 0, -1}));
  EXPECT_FLOAT_EQ(pl.scale()[0], static_cast<float>(2.9 / 4));
  EXPECT_FLOAT_EQ(pl.scale()[1], static_cast<float>(2.9 / 4));
  // t = 0.95 leaves row 1's group (1, 0) all zero: pruned as well.
  EXPECT_EQ(Ternarize(w, 2, 4, 2, 0.95, 1.0).matrix.kept_groups(), 2);
  const std::vector<int8_t> bad = {1, 0, 2, 0};
  try {
    TernaryMatrix::FromCodes(1, 4, 2, bad, {1.0f}, "layer 'fc1'");
    ADD_FAILURE() << "a code of 2 was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("layer 'fc1': code (0, 2) = 2 is not a ternary value"), std::string::npos)
        << e.what();
  }
}

// permdiag-column: the projection picks per block column the offset that
// keeps the most energy over all its row blocks (checked against every
// choice by brute force), every block of a column shares it, and the node
// carries offset_layout="column" with offsets [nb].
TEST(FormatRegistry, ColumnOffsetsProjectionKeepsTheMostEnergyPerBlockColumn) {
  const FormatTraits& f = Format(Kind::kPermDiagColumn);
  for (auto [out, in, p] : {std::tuple<int64_t, int64_t, int>{16, 24, 4}, {13, 10, 4}, {32, 32, 8}}) {
    const Geometry g{out, in, {}, p};
    const std::vector<float> dense = RandomVector(out * in, 1.0, out + in);
    const Projection pr = Project(f, dense, g, MethodFor(Kind::kPermDiagColumn, p));
    const int64_t mb = g.row_blocks(), nb = g.col_blocks();
    for (int64_t J = 0; J < nb; ++J) {
      auto kept = [&](int64_t k) {
        double e = 0;
        for (int64_t o = 0; o < out; ++o) {
          const int64_t i = J * p + (o % p + k) % p;
          if (i < in) e += double(dense[o * in + i]) * dense[o * in + i];
        }
        return e;
      };
      const int64_t chosen = pr.weights.offsets[J];
      for (int64_t I = 1; I < mb; ++I) EXPECT_EQ(pr.weights.offsets[I * nb + J], chosen);
      for (int64_t k = 0; k < p; ++k) EXPECT_GE(kept(chosen), kept(k)) << "column block " << J << " k=" << k;
    }
    const NodeSpec spec = WriteNode(pr.weights);
    EXPECT_EQ(spec.attributes.String("offset_layout", "", "test"), "column");
    EXPECT_EQ(spec.inputs[1].shape, (std::vector<int64_t>{nb}));
    EXPECT_EQ(FindFormat(kDomain, spec.op->name, [](int) { return true; }, false, &spec.attributes), &f);
    EXPECT_EQ(DescribeMethod(pr.weights), "permdiag:p=" + std::to_string(p) + ":offsets=column");
  }
}

// A node whose offsets do not match its offset_layout, or weights in memory
// whose row blocks disagree, are rejected naming the node and the field.
TEST(FormatRegistry, MixedOffsetLayoutsAreRejected) {
  const Geometry g{8, 12, {}, 4};  // mb = 2, nb = 3
  const Weights block = Project(Format(Kind::kPermDiag), RandomVector(96, 1.0, 5), g,
                                MethodFor(Kind::kPermDiag, 4)).weights;
  const Weights column = Project(Format(Kind::kPermDiagColumn), RandomVector(96, 1.0, 5), g,
                                 MethodFor(Kind::kPermDiagColumn, 4)).weights;
  auto error = [&](Kind read_as, const Weights& w, auto&& mutate) { return ReadError(read_as, w, mutate); };
  // [mb, nb] offsets under offset_layout="column".
  std::string e = error(Kind::kPermDiagColumn, block, [](MemorySource& s) { s.attrs().SetString("offset_layout", "column"); });
  EXPECT_NE(e.find("node 'n' (test): offsets 'offsets' has shape [2, 3], but offset_layout=\"column\" stores one "
                   "offset per block column: expected [3]"), std::string::npos) << e;
  // [nb] offsets without the attribute.
  e = error(Kind::kPermDiag, column, [](MemorySource& s) { s.attrs().Erase("offset_layout"); });
  EXPECT_NE(e.find("node 'n' (test): offsets 'offsets' has shape [3] (3 elements), expected [2, 3] (one offset per "
                   "block column is offset_layout=\"column\""), std::string::npos) << e;
  // An unknown layout; the block row read under the column attribute.
  e = error(Kind::kPermDiag, block, [](MemorySource& s) { s.attrs().SetString("offset_layout", "diagonal"); });
  EXPECT_NE(e.find("node 'n' (test): attribute offset_layout = 'diagonal' must be 'block'"), std::string::npos) << e;
  e = error(Kind::kPermDiag, column, [](MemorySource&) {});
  EXPECT_NE(e.find("attribute offset_layout = 'column' but the permdiag format is read"), std::string::npos) << e;
  e = error(Kind::kPermDiagColumn, column, [](MemorySource& s) { s.ints(2)[1] = 7; });
  EXPECT_NE(e.find("offsets 'offsets': block column 1 has offset 7, must be in [0, p=4)"), std::string::npos) << e;
  EXPECT_EQ(error(Kind::kPermDiagColumn, column, [](MemorySource&) {}), "");
  // In memory: row blocks that disagree cannot be written as the column layout.
  Weights bad = column;
  bad.offsets[1 * 3 + 2] = static_cast<uint16_t>((bad.offsets[2] + 1) % 4);
  try {
    WriteNode(bad);
    ADD_FAILURE() << "WriteNode accepted mixed offsets";
  } catch (const Error& ex) {
    EXPECT_NE(std::string(ex.what()).find("block (1, 2) has offset"), std::string::npos) << ex.what();
  }
}

TEST(FormatRegistry, BadArraysNameTheNodeAndTheField) {
  const FormatTraits& f = Format(Kind::kPermDiag);
  Geometry g{8, 8, {}, 4};
  const Weights w = Project(f, RandomVector(64, 1.0, 1), g, MethodFor(Kind::kPermDiag, 4)).weights;
  auto error = [&](auto&& mutate) { return ReadError(f.kind, w, mutate); };
  std::string e = error([](MemorySource& s) { s.ints(2)[3] = 4; });
  EXPECT_NE(e.find("node 'n'"), std::string::npos) << e;
  EXPECT_NE(e.find("offsets 'offsets': block (1, 1) has offset 4, must be in [0, p=4)"), std::string::npos) << e;
  e = error([](MemorySource& s) { s.floats(1)[5] = NAN; });
  EXPECT_NE(e.find("values 'values'[5] = nan is not finite"), std::string::npos) << e;
  e = error([](MemorySource& s) { s.attrs().SetInt("p", 2); });
  EXPECT_NE(e.find("values 'values' has shape [2, 2, 4], but attributes p=2"), std::string::npos) << e;
  e = error([](MemorySource& s) { s.attrs().Erase("in_features"); });
  EXPECT_NE(e.find("missing attribute 'in_features'"), std::string::npos) << e;
  e = error([](MemorySource& s) { s.attrs().SetInt("p", 70000); });
  EXPECT_NE(e.find("p = 70000 exceeds 65535"), std::string::npos) << e;
  EXPECT_EQ(error([](MemorySource&) {}), "");
}

TEST(FormatRegistry, SpecMethodsSelectTheirRows) {
  EXPECT_EQ(FormatOf(ParseLayerCompression("permdiag:p=8")).kind, Kind::kPermDiag);
  EXPECT_EQ(FormatOf(ParseLayerCompression("permdiag:p=1")).kind, Kind::kDense);
  EXPECT_EQ(KindOf(ParseLayerCompression("permdiag:p=1")), Kind::kPermDiag);
  EXPECT_EQ(FormatOf(ParseLayerCompression("prune:density=0.1")).kind, Kind::kCsr);
  EXPECT_EQ(FormatOf(ParseLayerCompression("prune:density=0.1:bits=4")).kind, Kind::kCsrCodebook);
  EXPECT_EQ(FindBySpecKind("circulant", false)->kind, Kind::kCirculant);
  EXPECT_EQ(FormatOf(ParseLayerCompression("permdiag:p=8:offsets=column")).kind, Kind::kPermDiagColumn);
  EXPECT_EQ(FormatOf(ParseLayerCompression("permdiag:p=8:offsets=block")).kind, Kind::kPermDiag);
  EXPECT_EQ(FindBySpecKind("permdiag", false, true)->kind, Kind::kPermDiagColumn);
  EXPECT_EQ(FindBySpecKind("permdiag", false)->kind, Kind::kPermDiag);
  EXPECT_EQ(FindBySpecKind("ternary", false)->kind, Kind::kTernary);
  EXPECT_EQ(FormatOf(ParseLayerCompression("ternary:group=16")).kind, Kind::kTernary);
  EXPECT_EQ(FindBySpecKind("admm", false), nullptr);
  EXPECT_EQ(FormatOf(ParseLayerCompression("prune:density=0.1:bits=4:index=5")).kind, Kind::kCsrRelative);
  EXPECT_EQ(FindBySpecKind("prune", true)->kind, Kind::kCsrCodebook);  // a run directory's arrays
  EXPECT_EQ(FindBySpecKind("prune", false)->kind, Kind::kCsr);
}

// Deep Compression's relative indices, worked by hand: a 2 x 40 pattern at
// index_bits = 2 (M = 3: a kept weight's gap is 0-2, a padding entry skips 3).
TEST(FormatRegistry, RelativeIndicesWorkedExample) {
  const std::vector<int32_t> row_ptr = {0, 4, 4, 5}, col_idx = {0, 3, 20, 39, 2};
  const RelativeIndex rel = EncodeRelative(row_ptr, col_idx, 2);
  // Row 0: col 0 gap 0; col 3 gap 2; col 20: 16 zeros = 5 pads + gap 1;
  // col 39: 18 zeros = 6 pads + gap 0. Row 1 empty. Row 2: col 2 gap 2.
  const std::vector<uint32_t> want_gaps = {0, 2, 3, 3, 3, 3, 3, 1, 3, 3, 3, 3, 3, 3, 0, 2};
  EXPECT_EQ(rel.gaps, want_gaps);
  EXPECT_EQ(rel.row_len, (std::vector<uint32_t>{15, 0, 1}));
  EXPECT_EQ(RowLengthBits(40), 6);
  const std::vector<uint8_t> row_len = PackBits(rel.row_len, 6), gaps = PackBits(rel.gaps, 2);
  EXPECT_EQ(row_len, (std::vector<uint8_t>{15, 16, 0}));  // 15 | 0 << 6 | 1 << 12: bytes 0x0F, 0x10, 0x00
  EXPECT_EQ(gaps.size(), 4u);                            // 16 entries x 2 bits
  EXPECT_EQ(gaps[0], 0 | 2 << 2 | 3 << 4 | 3 << 6);
  const CsrPattern back = DecodeRelative(row_len, gaps, 3, 40, 2, "test");
  EXPECT_EQ(back.row_ptr, row_ptr);
  EXPECT_EQ(back.col_idx, col_idx);

  // As a stored layer (K = 6 levels: 3-bit codes): every byte of the file.
  Weights w;
  w.kind = Kind::kCsrRelative;
  w.g = {3, 40, {}, 1};
  w.index_bits = 2;
  w.row_ptr = row_ptr;
  w.col_idx = col_idx;
  w.codes = {0, 5, 1, 2, 4};
  w.codebook = {-2, -1, -0.5f, 0.5f, 1, 2};
  const NodeSpec spec = WriteNode(w);
  EXPECT_STREQ(spec.op->name, "RelativeSparseMatMul");
  EXPECT_EQ(spec.attributes.Int("index_bits", 0, "test"), 2);
  // row_len 3 + gaps 4 + codes ceil(5·3/8) = 2 + codebook 6·4.
  EXPECT_EQ(StoredSize(w).bytes, 3 + 4 + 2 + 6 * 4);
  const Weights read = ReadNode(Format(Kind::kCsrRelative), false, MemorySource(spec));
  EXPECT_EQ(read.codes, w.codes);
  EXPECT_EQ(read.col_idx, w.col_idx);
  EXPECT_EQ(DescribeMethod(read), "prune:density=0.0417:bits=3:index=2");
  EXPECT_THROW(StoredSize(Kind::kCsrRelative, w.g, 5, 6, false), Error);
}

TEST(FormatRegistry, BadRelativeIndicesNameTheNodeAndTheField) {
  Weights w;
  w.kind = Kind::kCsrRelative;
  w.g = {2, 10, {}, 1};
  w.index_bits = 2;
  w.row_ptr = {0, 2, 3};
  w.col_idx = {1, 9, 4};  // row 0: gaps 1, pad, pad, gap 1; row 1: pad, gap 1
  w.codes = {0, 1, 2};
  w.codebook = {-1, 0.5f, 1};  // 2-bit codes
  const FormatTraits& f = Format(Kind::kCsrRelative);
  auto error = [&](auto&& mutate) { return ReadError(f.kind, w, mutate); };
  EXPECT_EQ(error([](MemorySource&) {}), "");
  // row_len: 4 bits per row (10 columns) -> one byte, rows 4 and 2 entries.
  std::string e = error([](MemorySource& s) { s.ints(2)[0] = 0xFF; });  // gaps 1,3,3,3: row 0 ends with a pad
  EXPECT_NE(e.find("node 'n'"), std::string::npos) << e;
  EXPECT_NE(e.find("row 0 ends with a padding entry"), std::string::npos) << e;
  e = error([](MemorySource& s) { s.ints(2)[0] = 0x7F; });  // gaps 3,3,3,1: column 10 of 10
  EXPECT_NE(e.find("row 0 entry 3 reaches column 10, past the 10 columns"), std::string::npos) << e;
  e = error([](MemorySource& s) { s.ints(1)[0] = 0x28; });  // rows of 8 and 2 entries: 20 bits of gaps
  EXPECT_NE(e.find("gaps 'gaps' has shape [2], expected [3]"), std::string::npos) << e;
  e = error([](MemorySource& s) { s.ints(3)[0] |= 0xC0; });  // 3 codes x 2 bits: the top 2 bits unused
  EXPECT_NE(e.find("codes 'codes': the unused high 2 bits of the last byte must be zero"), std::string::npos) << e;
  e = error([](MemorySource& s) { s.ints(3)[0] = 0x30; });  // code 3 of a 3-entry codebook
  EXPECT_NE(e.find("codes[2] = 3 is not an index into the codebook of 3 entries"), std::string::npos) << e;
  e = error([](MemorySource& s) { s.attrs().SetInt("index_bits", 9); });
  EXPECT_NE(e.find("attribute index_bits = 9 must be in [2, 8]"), std::string::npos) << e;
  e = error([](MemorySource& s) { s.attrs().Erase("index_bits"); });
  EXPECT_NE(e.find("index_bits"), std::string::npos) << e;
}

}  // namespace
}  // namespace permdnn::formats
