// The kernel table (kernels/table.h): every named row of every compiled SIMD
// target against the reference kernel of its op, on each test shape its
// predicate admits (tiny shapes, multiples of p, non-multiples, batches that
// leave every tile tail), forced by name through the dispatch context. Also:
// every row admits some shape (no dead rows), SelectedKernel() names the row
// dispatch runs, and the reference path reaches every op, the circulant FFT
// and the CSR products included.
#include "permdnn/kernels/table.h"

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <hwy/targets.h>

#include "permdnn/core/error.h"
#include "permdnn/core/fixed_point.h"
#include "permdnn/formats/registry.h"
#include "permdnn/kernels/circulant.h"
#include "permdnn/kernels/dispatch.h"
#include "permdnn/kernels/permdiag.h"
#include "permdnn/kernels/permdiag_column.h"
#include "permdnn/kernels/permdiag_conv.h"
#include "permdnn/kernels/sparse.h"
#include "permdnn/kernels/ternary.h"
#include "support/compare.h"

namespace permdnn::kernels {
namespace {

using permdnn::testing::AllEqual;
using permdnn::testing::AllNear;
using permdnn::testing::RandomVector;
using permdnn::testing::Tolerance;

bool IsPermDiag(KernelOp op) {
  return op != KernelOp::kCirculantMatVec && op != KernelOp::kCirculantMatVecT && op != KernelOp::kCsrMatVec &&
         op != KernelOp::kCsrMatMul && op != KernelOp::kTernaryMatVec && op != KernelOp::kTernaryMatMul &&
         op != KernelOp::kTernaryMatMulI16 && op != KernelOp::kTernaryMatMulU8;
}
bool Batched(KernelOp op) {
  return op == KernelOp::kPermDiagMatMulRows || op == KernelOp::kPermDiagMatMul ||
         op == KernelOp::kPermDiagMatMulT || op == KernelOp::kCsrMatMul || op == KernelOp::kPermDiagColumnMatMulRows ||
         op == KernelOp::kTernaryMatMul || op == KernelOp::kTernaryMatMulI16 || op == KernelOp::kTernaryMatMulU8;
}

// A random permuted-diagonal matrix whose blocks share one offset per block
// column (row block 0's), padded positions zero.
PermDiagMatrix RandomColumnMatrix(int64_t m, int64_t n, int p, uint64_t seed) {
  return PermDiagMatrix::RandomWithStddev(m, n, p, seed, 1.0).WithColumnOffsets();
}

// The test problems of an op: for each block size, tiny shapes, multiples
// of p and non-multiples; batches 1..64 for the batched ops; both row-pack
// layouts where the shape allows the chunked one.
std::vector<KernelProblem> Candidates(KernelOp op) {
  if (op == KernelOp::kPermDiagConv) {
    // Channels: one vector, several, and non-multiples of p and of the lanes.
    std::vector<KernelProblem> out;
    for (int p : {1, 2, 4, 8, 16, 32})
      for (int k : {1, 3})
        for (int stride : {1, 2})
          for (auto [o, i] : std::vector<std::pair<int64_t, int64_t>>{{p, p}, {2 * p + 1, 3 * p - 1}, {48, 40}})
            for (int64_t batch : {1, 2}) {
              KernelProblem q{op, p, o, i, batch, false};
              q.kh = q.kw = k;
              q.stride = stride;
              out.push_back(q);
              // 1x1 with offsets shared down each block column (.shared rows;
              // a pack of one output vector has nothing to share).
              const int L = PermDiagConvLanes();
              if (k == 1 && L > 1 && (o + L - 1) / L > 1) {
                q.shared = true;
                out.push_back(q);
              }
            }
    // 1x1 layers with 25 column blocks, a partial last one, and a partial
    // last output vector (the .rotated row on 8 lanes at p = 8).
    for (int p : {4, 8, 16}) {
      KernelProblem q{op, p, 2 * p + 4, 24 * p + 5, 2, false};
      out.push_back(q);
    }
    return out;
  }
  if (op == KernelOp::kTernaryMatVec || op == KernelOp::kTernaryMatMul || op == KernelOp::kTernaryMatMulI16 ||
      op == KernelOp::kTernaryMatMulU8) {
    // p = the group length: below, at and past the lane counts and one
    // 64-bit plane word, and a 16-channel 3x3 conv group (144).
    std::vector<KernelProblem> out;
    for (int L : {1, 3, 8, 16, 17, 64, 65, 144})
      for (auto [rows, groups] : std::vector<std::pair<int64_t, int64_t>>{{1, 1}, {5, 3}, {37, 2}})
        // 1024: X's rows 1024 floats apart share L1 sets, so the lists row
        // copies its strips (StripCrowdsL1).
        for (int64_t batch : op != KernelOp::kTernaryMatVec ? std::vector<int64_t>{1, 3, 17, 64, 100, 130, 1024}
                                                            : std::vector<int64_t>{1})
          out.push_back({op, L, rows, groups * L, batch, false});
    return out;
  }
  // 128 and 256: the widest vector rows on AVX-512; 300: two-byte offsets.
  std::vector<int> ps = {1, 2, 3, 4, 5, 7, 8, 16, 32, 64, 128, 256, 300};
  if (!IsPermDiag(op)) ps = {1, 2, 3, 4, 8, 16};
  std::vector<int64_t> batches = {1};
  if (Batched(op)) batches = {1, 2, 3, 7, 13, 64};
  std::vector<KernelProblem> out;
  for (int p : ps) {
    // 64 and 192 rows: whole row-pack groups for every p dividing 64.
    std::vector<std::pair<int64_t, int64_t>> shapes = {{1, 1},           {3, 10},           {p, p},
                                                       {2 * p + 1, 3 * p - 1}, {4 * p, 5 * p + 3}, {7 * p - 1, 2 * p},
                                                       {64, 37},         {192, 5 * p + 1}};
    if (p > 64) shapes = {{p, p}, {2 * p + 1, p - 1}};
    for (auto [rows, cols] : shapes)
      for (int64_t batch : batches) {
        KernelProblem q{op, p, rows, cols, batch, false};
        out.push_back(q);
        if (op == KernelOp::kPermDiagMatVecPacked &&
            PermDiagRowPack::UsesChunks(PermDiagMatrix(rows, cols, p), int64_t{1} << 40)) {
          q.chunked = true;
          out.push_back(q);
        }
      }
  }
  return out;
}

// Runs q's op through its public entry point (dispatch honours the forced
// row) and through the reference kernel; the two must agree.
::testing::AssertionResult MatchesReference(const KernelProblem& q, int threads) {
  const uint64_t seed = static_cast<uint64_t>(q.rows * 131 + q.cols * 7 + q.p);
  const int64_t m = q.rows, n = q.cols, B = q.batch;
  const auto bias = RandomVector(m, 1.0, seed + 1);
  switch (q.op) {
    case KernelOp::kPermDiagMatVec:
    case KernelOp::kPermDiagMatVecPacked:
    case KernelOp::kPermDiagMatVecSparseInput: {
      const PermDiagMatrix w = PermDiagMatrix::RandomWithStddev(m, n, q.p, seed, 1.0);
      const auto x = RandomVector(n, q.op == KernelOp::kPermDiagMatVecSparseInput ? 0.35 : 1.0, seed + 2);
      std::vector<float> expect(m), got(m, -1.0f);
      ref::MatVec(w.view(), x.data(), bias.data(), expect.data());
      if (q.op == KernelOp::kPermDiagMatVec) {
        PermDiagMatVec(w, x, bias, got, threads);
      } else if (q.op == KernelOp::kPermDiagMatVecPacked) {
        const PermDiagRowPack pack = PermDiagRowPack::Build(w, q.chunked ? int64_t{1} << 40 : 0);
        if (pack.chunked != q.chunked) return ::testing::AssertionFailure() << "pack layout differs from the problem";
        PermDiagMatVec(pack, x, bias, got, threads);
      } else {
        PermDiagMatVecSparseInput(PermDiagColumnPack::Build(w), x, bias, got, threads);
      }
      return AllNear<float>(expect, got, Tolerance(w.col_blocks() + 1, 2.0));
    }
    // Shared offsets: against the general permdiag reference on the same
    // matrix (the column layout's math, not only its own loops).
    case KernelOp::kPermDiagColumnMatVec:
    case KernelOp::kPermDiagColumnSparseInput:
    case KernelOp::kPermDiagColumnMatMulRows: {
      const PermDiagMatrix w = RandomColumnMatrix(m, n, q.p, seed);
      const PermDiagColumnWeights cw = PermDiagColumnWeights::Build(w);
      const auto x = RandomVector(n * B, q.op == KernelOp::kPermDiagColumnSparseInput ? 0.35 : 1.0, seed + 2);
      std::vector<float> expect(m * B), got(m * B, -1.0f);
      ref::MatMulRows(w.view(), x.data(), B, bias.data(), expect.data());
      if (q.op == KernelOp::kPermDiagColumnMatVec) PermDiagColumnMatVec(cw, x, bias, got, threads);
      else if (q.op == KernelOp::kPermDiagColumnSparseInput) PermDiagColumnMatVecSparseInput(cw, x, bias, got, threads);
      else PermDiagColumnMatMulRows(cw, x, B, bias, got, threads);
      return AllNear<float>(expect, got, Tolerance(w.col_blocks() + 1, 2.0));
    }
    case KernelOp::kPermDiagMatMulRows:
    case KernelOp::kPermDiagMatMul: {
      const PermDiagMatrix w = PermDiagMatrix::RandomWithStddev(m, n, q.p, seed, 1.0);
      const auto x = RandomVector(n * B, 1.0, seed + 3);
      std::vector<float> expect(m * B), got(m * B, -1.0f);
      if (q.op == KernelOp::kPermDiagMatMulRows) {
        ref::MatMulRows(w.view(), x.data(), B, bias.data(), expect.data());
        PermDiagMatMulRows(w, x, B, bias, got, threads);
      } else {
        ref::MatMul(w.view(), x.data(), B, bias.data(), expect.data());
        PermDiagMatMul(w, x, B, bias, got, threads);
      }
      return AllNear<float>(expect, got, Tolerance(w.col_blocks() + 1, 2.0));
    }
    case KernelOp::kPermDiagMatVecT:
    case KernelOp::kPermDiagMatMulT: {
      const PermDiagMatrix w = PermDiagMatrix::RandomWithStddev(m, n, q.p, seed, 1.0);
      const auto g = RandomVector(m * B, 1.0, seed + 4);
      std::vector<float> expect(n * B), got(n * B, -1.0f);
      if (q.op == KernelOp::kPermDiagMatVecT) {
        ref::MatVecT(w.view(), g.data(), expect.data());
        PermDiagMatVecT(w, g, got, threads);
      } else {
        ref::MatMulT(w.view(), g.data(), B, expect.data());
        PermDiagMatMulT(w, g, B, got, threads);
      }
      return AllNear<float>(expect, got, Tolerance(w.row_blocks() + 1, 1.0));
    }
    case KernelOp::kPermDiagMatVecI16: {
      const PermDiagMatrixI16 w = PermDiagMatrixI16::Quantize(PermDiagMatrix::RandomWithStddev(m, n, q.p, seed, 1.0));
      std::vector<int16_t> x(static_cast<std::size_t>(n));
      std::mt19937 rng(static_cast<uint32_t>(seed));
      for (auto& v : x) v = static_cast<int16_t>(static_cast<int>(rng() % 65535) - 32767);
      std::vector<int64_t> expect(m), got(m, -1);
      ref::MatVecI16Acc(w.view(), x.data(), expect.data());
      PermDiagMatVecI16Acc(w, x, got, threads);
      return AllEqual<int64_t>(expect, got);
    }
    case KernelOp::kCirculantMatVec:
    case KernelOp::kCirculantMatVecT: {
      const BlockCirculantMatrix w = BlockCirculantMatrix::Random(m, n, q.p, seed);
      const bool forward = q.op == KernelOp::kCirculantMatVec;
      const auto x = RandomVector(forward ? n : m, 1.0, seed + 5);
      std::vector<float> expect(forward ? m : n), got(expect.size(), -1.0f);
      const char* forced = ForcedKernel();
      if (forward) {
        ref::CirculantMatVec(w.view(), x.data(), bias.data(), expect.data());
        if (forced != nullptr && std::string(forced) == "circulant.direct") CirculantMatVecDirect(w, x, bias, got);
        else CirculantFft(w).MatVec(x, bias, got, threads);
      } else {
        ref::CirculantMatVecT(w.view(), x.data(), expect.data());
        CirculantFft(w).MatVecT(x, got, threads);
      }
      return AllNear<float>(expect, got, Tolerance(n + m + 1, 2.0));
    }
    case KernelOp::kCsrMatVec:
    case KernelOp::kCsrMatMul: {
      const CsrMatrix a = CsrMatrix::FromDense(RandomVector(m * n, 0.3, seed + 6), m, n);
      const auto x = RandomVector(n * B, 1.0, seed + 7);
      std::vector<float> expect(m * B), got(m * B, -1.0f);
      if (q.op == KernelOp::kCsrMatVec) {
        ref::CsrMatVec(a, x.data(), bias.data(), expect.data());
        CsrMatVec(a, x, bias, got, threads);
      } else {
        ref::CsrMatMul(a, x.data(), B, bias.data(), expect.data());
        CsrMatMul(a, x, B, bias, got, threads);
      }
      return AllNear<float>(expect, got, Tolerance(n + 1, 2.0));
    }
    case KernelOp::kTernaryMatVec:
    case KernelOp::kTernaryMatMul: {
      // Random weights ternarized with a high threshold (zero codes) and
      // half the groups pruned.
      const TernaryPack w = TernaryPack::Build(Ternarize(RandomVector(m * n, 1.0, seed + 8), m, n, q.p, 0.4, 0.5).matrix);
      auto x = RandomVector(n * B, 1.0, seed + 9);
      // Runs of zero inputs (ReLU-like): whole four-input chunks of the
      // lookup-table rows are left out.
      for (std::size_t i = 0; i < x.size(); ++i)
        if (i % 7 < 4) x[i] = 0.0f;
      std::vector<float> expect(m * B), got(m * B, -1.0f);
      ref::TernaryMatMul(w.matrix, x.data(), B, bias.data(), expect.data());
      if (q.op == KernelOp::kTernaryMatVec) TernaryMatVec(w, x, bias, got, threads);
      else TernaryMatMul(w, x, B, bias, got, threads);
      return AllNear<float>(expect, got, Tolerance(n + 1, 2.0));
    }
    case KernelOp::kTernaryMatMulI16: {
      // int16 inputs at the bound (+-1023, runs of zeros): the rows' 16-bit
      // sums must not wrap, so the result is the reference's to float rounding.
      const TernaryPack w =
          TernaryPack::Build(Ternarize(RandomVector(m * n, 1.0, seed + 8), m, n, q.p, 0.4, 0.5).matrix);
      std::vector<int16_t> x(static_cast<std::size_t>(n * B));
      const auto u = RandomVector(n * B, 1.0, seed + 9);
      // Batch columns 1 and 2 mod 4 hold +1023 / -1023 in every row: their
      // sums reach kTernaryI16Run · 1023 between widenings.
      for (int64_t k = 0; k < n; ++k)
        for (int64_t b = 0; b < B; ++b) {
          const std::size_t i = static_cast<std::size_t>(k * B + b);
          x[i] = b % 4 == 1 ? int16_t{1023} : b % 4 == 2 ? int16_t{-1023} : i % 7 < 2 ? int16_t{0}
                 : static_cast<int16_t>(std::lrint(std::clamp(u[i] * 400.0f, -1023.0f, 1023.0f)));
        }
      std::vector<float> expect(m * B), got(m * B, -1.0f);
      ref::TernaryMatMulI16(w.matrix, x.data(), B, 0.01f, bias.data(), expect.data());
      TernaryMatMulI16(w, x, B, 0.01f, bias, got, threads);
      // A wrapped 16-bit sum is off by 65536 · 0.01 · scale; float rounding
      // of the exact sum by far less.
      return AllNear<float>(expect, got, Tolerance(n + 1, 0.01 * 1023 * 2.0));
    }
    case KernelOp::kTernaryMatMulU8: {
      // Bytes at both ends (0 and 255) in whole batch columns, zero point
      // 128 (a signed input): the 16-bit sums of the .madd row reach
      // kU8Run quads of 2 · 255 between widenings; padded columns past n
      // hold the zero point.
      const TernaryPack w =
          TernaryPack::Build(Ternarize(RandomVector(m * n, 1.0, seed + 8), m, n, q.p, 0.4, 0.5).matrix);
      const auto u = RandomVector(n * B, 1.0, seed + 9);
      std::vector<float> xf(static_cast<std::size_t>(n * B));
      for (int64_t k = 0; k < n; ++k)
        for (int64_t b = 0; b < B; ++b) {
          const std::size_t i = static_cast<std::size_t>(k * B + b);
          xf[i] = b % 4 == 1 ? 127.0f : b % 4 == 2 ? -128.0f : i % 7 < 2 ? 0.0f : std::round(u[i] * 60.0f);
        }
      std::vector<uint8_t> x(static_cast<std::size_t>(TernaryU8Quads(n) * TernaryU8RowBytes(B)));
      const TernaryU8Scale s{0.01f, 128};
      QuantizeTernaryInputU8At(xf, B, {1.0f, 128}, x);
      std::vector<float> expect(m * B), got(m * B, -1.0f);
      ref::TernaryMatMulU8(w.matrix, 1, x.data(), B, s, bias.data(), expect.data());
      TernaryMatMulU8(w, x, B, s, bias, got, threads);
      // A wrapped 16-bit sum is off by 65536 · 0.01 · scale; float rounding
      // of the exact sum by far less.
      return AllNear<float>(expect, got, Tolerance(n + 1, 0.01 * 255 * 2.0));
    }
    case KernelOp::kPermDiagConv: {
      // Spatial sizes that leave row and column tile tails; pads 1 for 3x3.
      const int64_t h = 5 + seed % 7, wd = 3 + seed % 13;
      const int pad = q.kh / 2, L = PermDiagConvLanes();
      PermDiagConvShape s{B, n, m, h, wd, (h + 2 * pad - q.kh) / q.stride + 1, (wd + 2 * pad - q.kw) / q.stride + 1,
                          q.kh, q.kw, q.stride, q.stride, pad, pad};
      const int64_t mb = (m + q.p - 1) / q.p, nb = (n + q.p - 1) / q.p, taps = int64_t{q.kh} * q.kw;
      const auto values = RandomVector(mb * nb * q.p * taps, 1.0, seed + 2);
      std::vector<uint16_t> offsets(mb * nb);
      for (int64_t b = 0; b < mb * nb; ++b)
        offsets[b] = static_cast<uint16_t>(((q.shared ? b % nb : b) * 7 + seed) % q.p);  // shared: one per column
      const PermDiagConvPack w = PermDiagConvPack::Build(values, offsets, m, n, q.p, q.kh, q.kw, L, bias);
      const int64_t iv = (n + L - 1) / L, ovn = (m + L - 1) / L;
      std::vector<float> x(B * iv * h * wd * L, 0.0f);
      const auto xr = RandomVector(static_cast<int64_t>(x.size()), 1.0, seed + 3);
      for (std::size_t i = 0; i < x.size(); ++i)
        if (static_cast<int64_t>(i / (h * wd * L) % iv * L + i % L) < n) x[i] = xr[i];  // padded channels stay 0
      const std::size_t ysize = B * ovn * s.out_h * s.out_w * L;
      const auto residual = RandomVector(static_cast<int64_t>(ysize), 1.0, seed + 4);
      std::vector<float> expect(ysize), got(ysize, 7.0f);
      const PermDiagConvEpilogue e{residual.data(), 0.0f, 6.0f};
      PermDiagConv2DReference(w, s, x.data(), e, expect.data());
      PermDiagConv2D(w, s, x.data(), e, got.data(), threads);
      return AllNear<float>(expect, got, Tolerance(nb * taps + 2, 2.0));
    }
  }
  return ::testing::AssertionFailure() << "unknown op";
}

std::string Describe(const KernelProblem& q) {
  return std::string(KernelOpName(q.op)) + " p=" + std::to_string(q.p) + " " + std::to_string(q.rows) + "x" +
         std::to_string(q.cols) + " batch " + std::to_string(q.batch) + (q.chunked ? " chunked" : "") +
         (q.op == KernelOp::kPermDiagConv
              ? " kernel " + std::to_string(q.kh) + "x" + std::to_string(q.kw) + " stride " + std::to_string(q.stride) +
                    (q.shared ? " shared" : "")
              : "");
}

class KernelTableTest : public ::testing::TestWithParam<int64_t> {
 protected:
  void SetUp() override { ForceSimdTarget(GetParam()); }
  void TearDown() override {
    ForceKernel("");
    SetPath(KernelPath::kSimd);
    ForceSimdTarget(0);
  }
};

TEST_P(KernelTableTest, EveryRowMatchesTheReferenceOnTheShapesItAdmits) {
  const std::vector<KernelRow> table = KernelTable();
  int simd_rows = 0, checks = 0;
  for (const KernelRow& row : table) {
    if (row.target == "reference") continue;
    ++simd_rows;
    int admitted = 0;
    for (const KernelProblem& q : Candidates(row.op)) {
      if (!row.admits(q)) continue;
      ++admitted;
      ++checks;
      ForceKernel(row.name);
      EXPECT_EQ(SelectedKernel(q), row.name) << Describe(q);
      for (int threads : {1, 2}) ASSERT_TRUE(MatchesReference(q, threads)) << row.name << " on " << Describe(q);
      ForceKernel("");
    }
    EXPECT_GT(admitted, 0) << row.name << " (" << row.target << ") admits none of the test shapes: a dead row";
  }
  EXPECT_GT(simd_rows, 20) << "the table lost its SIMD rows on " << SimdTargetName(GetParam());
  RecordProperty("rows", simd_rows);
  RecordProperty("checks", checks);
}

// Without a forced row, dispatch runs the first row of the op that admits
// the problem, and SelectedKernel() says which.
TEST_P(KernelTableTest, SelectedKernelIsTheFirstAdmittingRow) {
  const std::vector<KernelRow> table = KernelTable();
  for (const KernelRow& head : table) {
    if (head.target == "reference") continue;
    for (KernelProblem q : Candidates(head.op)) {
      KernelProblem m = q;
      if (q.op == KernelOp::kPermDiagMatVecPacked && !q.chunked) m.op = KernelOp::kPermDiagMatVec;  // row-major pack
      std::string first;
      for (const KernelRow& r : table)
        if (first.empty() && r.op == m.op && r.admits(m)) first = r.name;
      EXPECT_EQ(SelectedKernel(q), first) << Describe(q);
    }
  }
}

TEST_P(KernelTableTest, ReferencePathReachesEveryOp) {
  SetPath(KernelPath::kReference);
  for (KernelOp op : {KernelOp::kPermDiagMatVec, KernelOp::kPermDiagMatVecPacked, KernelOp::kPermDiagMatMulRows,
                      KernelOp::kCirculantMatVec, KernelOp::kCirculantMatVecT, KernelOp::kCsrMatVec,
                      KernelOp::kCsrMatMul, KernelOp::kPermDiagConv, KernelOp::kPermDiagColumnMatVec,
                      KernelOp::kPermDiagColumnSparseInput, KernelOp::kPermDiagColumnMatMulRows,
                      KernelOp::kTernaryMatVec, KernelOp::kTernaryMatMul, KernelOp::kTernaryMatMulI16,
                      KernelOp::kTernaryMatMulU8})
    EXPECT_EQ(SelectedKernel({op, 8, 64, 64, 4, false}), std::string(KernelOpName(op)) + ".reference");
  // The FFT engine honours the reference path: its result is the reference
  // kernel's to the bit (the FFT rounds differently).
  const BlockCirculantMatrix w = BlockCirculantMatrix::Random(37, 45, 8, 3);
  const auto x = RandomVector(45, 1.0, 4), g = RandomVector(37, 1.0, 5);
  std::vector<float> expect(37), got(37), expect_t(45), got_t(45);
  ref::CirculantMatVec(w.view(), x.data(), nullptr, expect.data());
  ref::CirculantMatVecT(w.view(), g.data(), expect_t.data());
  const CirculantFft fft(w);
  fft.MatVec(x, {}, got);
  fft.MatVecT(g, got_t);
  EXPECT_TRUE(AllEqual<float>(expect, got));
  EXPECT_TRUE(AllEqual<float>(expect_t, got_t));
  CirculantMatVecDirect(w, x, {}, got);
  EXPECT_TRUE(AllEqual<float>(expect, got));
  // So do the CSR products.
  const CsrMatrix a = CsrMatrix::FromDense(RandomVector(37 * 45, 0.3, 6), 37, 45);
  ref::CsrMatVec(a, x.data(), nullptr, expect.data());
  CsrMatVec(a, x, {}, got, 2);
  EXPECT_TRUE(AllEqual<float>(expect, got));
  SetPath(KernelPath::kSimd);
  fft.MatVec(x, {}, got);
  EXPECT_FALSE(AllEqual<float>(expect, got)) << "the SIMD path should run the FFT, which rounds differently";
}

INSTANTIATE_TEST_SUITE_P(Targets, KernelTableTest, ::testing::ValuesIn(AvailableSimdTargets()),
                         [](const ::testing::TestParamInfo<int64_t>& i) { return SimdTargetName(i.param); });

// A format's kernel entry points (formats/registry.h) are ops of this table,
// each with a reference row and at least one row of the active target.
TEST(KernelTable, EveryFormatsKernelsAreTableOps) {
  const std::vector<KernelRow> table = KernelTable();
  for (const formats::FormatTraits& f : formats::Formats()) {
    for (const char* op : f.kernels) {
      int simd = 0, reference = 0;
      for (const KernelRow& r : table)
        if (op == std::string(KernelOpName(r.op))) (r.target == "reference" ? reference : simd)++;
      EXPECT_EQ(reference, 1) << f.name << ": " << op;
      EXPECT_GT(simd, 0) << f.name << ": " << op;
    }
    if (f.kind != formats::Kind::kDense) EXPECT_FALSE(f.kernels.empty()) << f.name;
  }
}

TEST(KernelTable, ForcingAnUnknownKernelIsAnError) {
  EXPECT_THROW(ForceKernel("permdiag.matvec.nonexistent"), Error);
  EXPECT_EQ(ForcedKernel(), nullptr);
}

}  // namespace
}  // namespace permdnn::kernels

namespace permdnn::kernels {
namespace {

// A per-kernel target preference (PreferredSimdTarget): row-major p=16 past
// L3 runs AVX2's row on a CPU whose best target is AVX-512, its result equal
// to the reference's; preferences off (or a restricted target set) give the
// usual dispatch.
TEST(KernelTable, PreferredTargetRunsTheMeasuredBest) {
  const std::vector<int64_t> targets = AvailableSimdTargets();
  if (targets.empty() || SimdTargetName(targets.front()) != "AVX3" ||
      std::find(targets.begin(), targets.end(), int64_t{HWY_AVX2}) == targets.end())
    GTEST_SKIP() << "needs AVX-512 and AVX2";
  const int64_t m = 1024, n = 24 * 1024 * 1024 / 4 * 16 / 1024;  // values: exactly 24 MiB
  const KernelProblem q{KernelOp::kPermDiagMatVec, 16, m, n, 1, false};
  EXPECT_EQ(PreferredSimdTarget(q), int64_t{HWY_AVX2});
  EXPECT_EQ(SelectedKernel(q), "permdiag.matvec.multiple<2>@AVX2");
  KernelProblem small = q;
  small.cols = n / 2;
  EXPECT_EQ(PreferredSimdTarget(small), 0);
  const PermDiagMatrix w = PermDiagMatrix::Random(m, n, 16, 7);
  const auto x = RandomVector(n, 1.0, 8);
  std::vector<float> expect(m), got(m);
  ref::MatVec(w.view(), x.data(), nullptr, expect.data());
  PermDiagMatVec(w, x, {}, got, 1);
  EXPECT_TRUE(AllNear<float>(expect, got, Tolerance(n / 16, 2.0)));
  SetSimdPreferences(false);
  EXPECT_EQ(PreferredSimdTarget(q), 0);
  EXPECT_EQ(SelectedKernel(q), "permdiag.matvec.multiple<1>");
  SetSimdPreferences(true);
  ForceSimdTarget(targets.front());
  EXPECT_EQ(PreferredSimdTarget(q), 0) << "a restricted target set measures each target as it is";
  ForceSimdTarget(0);
}

// The available targets are detected once (dispatch.cc: CPUID traps in a
// virtual machine) and follow ForceSimdTarget both ways.
TEST(KernelTable, AvailableTargetsFollowForceSimdTarget) {
  const std::vector<int64_t> targets = AvailableSimdTargets();
  ASSERT_FALSE(targets.empty());
  EXPECT_EQ(targets, hwy::SupportedAndGeneratedTargets());
  for (int64_t t : targets) {
    ForceSimdTarget(t);
    EXPECT_EQ(AvailableSimdTargets(), std::vector<int64_t>{t}) << SimdTargetName(t);
    EXPECT_EQ(ActiveSimdTarget(), SimdTargetName(t));
    EXPECT_EQ(SimdTargetByName(SimdTargetName(targets.front())), t == targets.front() ? t : 0);
  }
  ForceSimdTarget(0);
  EXPECT_EQ(AvailableSimdTargets(), targets);
  EXPECT_EQ(ActiveSimdTarget(), SimdTargetName(targets.front()));
}

}  // namespace
}  // namespace permdnn::kernels
