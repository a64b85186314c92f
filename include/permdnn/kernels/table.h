// The named kernel table: one row per inner kernel, XNNPACK style.
//
// Every product the kernels component computes is an op (KernelOp): the
// permuted-diagonal matvec on the row-major matrix, the same on the row
// pack, the batch-major and feature-major batched products, the transposed
// products, the zero-skipping product, the int16 product, the circulant FFT
// and direct products, and the CSR products. Each op has several inner
// kernels (a row each): the SIMD shapes of the permuted-diagonal matvec
// (`permdiag.matvec.multiple<2>`: p = 2 vectors, `permdiag.matvec.packed<4>`:
// several blocks of p = 4 per vector, ...), the batched tiles, and so on,
// plus one reference row per op (plain loops, the oracle).
//
// A row is (name, op, target, predicate on the problem: p, shape, batch and
// the row pack's layout). The SIMD rows are compiled once per Highway target,
// so a row's predicate knows that target's lane count: `multiple<2>` admits
// p = 16 on AVX2 and p = 32 on AVX-512. Dispatch walks the rows of the op on
// the active target and runs the first whose predicate admits the problem;
// the same walk answers SelectedKernel() (what `permdnn run --profile` and
// `permdnn bench` print) and the tests run every row on every compiled
// target against the reference on the shapes its predicate admits. A row
// listed here is therefore reachable: the tables hold only the rows whose
// vector shape exists on that target.
//
// The dispatch context (dispatch.h) chooses between the SIMD rows and the
// reference row for every op, and can force one named row (tests).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace permdnn::kernels {

enum class KernelOp : uint8_t {
  kPermDiagMatVec,             // y = W·x, row-major matrix (PermDiagMatVec)
  kPermDiagMatVecPacked,       // y = W·x on the row pack (PermDiagMatVec(PermDiagRowPack))
  kPermDiagMatMulRows,         // Y = X·Wᵀ, batch-major (PermDiagMatMulRows)
  kPermDiagMatMul,             // Y = W·X, feature-major (PermDiagMatMul)
  kPermDiagMatVecT,            // x = Wᵀ·g
  kPermDiagMatMulT,            // X = Wᵀ·G
  kPermDiagMatVecSparseInput,  // column-wise, zero inputs skipped
  kPermDiagMatVecI16,          // exact int16 accumulators
  kCirculantMatVec,            // y = W·x, block-circulant (FFT or direct)
  kCirculantMatVecT,           // x = Wᵀ·g, block-circulant
  kCsrMatVec,                  // y = A·x, CSR
  kCsrMatMul,                  // Y = A·X, CSR, feature-major
  kPermDiagConv,               // permuted-diagonal 2-D convolution, channel-blocked (permdiag_conv.h)
  kPermDiagColumnMatVec,       // shared offsets (permdiag_column.h): y = W·x, dense input
  kPermDiagColumnSparseInput,  // shared offsets: zero inputs skipped, contiguous AXPYs
  kPermDiagColumnMatMulRows,   // shared offsets: Y = X·Wᵀ, batch-major, p grouped GEMMs
  kTernaryMatVec,              // ternary, group-pruned (ternary.h): y = W·x, addition only
  kTernaryMatMul,              // ternary: Y = W·X, feature-major (batched linear, conv im2col)
  kTernaryMatMulI16,           // ternary: Y = W·X with int16 X (exact 16/32-bit sums), feature-major
  kTernaryMatMulU8,            // ternary: Y = W·X with 8-bit X in quads (exact 32-bit sums)
};
const char* KernelOpName(KernelOp op);  // "permdiag.matvec", ...

// What a row's predicate sees. rows × cols is the matrix; batch the number
// of samples (1 for the matvecs); chunked the row pack's layout
// (PermDiagRowPack::chunked, kPermDiagMatVecPacked only).
struct KernelProblem {
  KernelOp op = KernelOp::kPermDiagMatVec;
  int p = 1;
  int64_t rows = 0, cols = 0, batch = 1;
  bool chunked = false;
  int kh = 1, kw = 1, stride = 1;  // kPermDiagConv only: kernel size and stride (rows, cols: out, in channels)
  // kPermDiagConv only: the pack permutes the input the same way for every
  // output vector (PermDiagConvPack::shared_index: shared offsets).
  bool shared = false;
};

// One row of the table as the outside sees it (the function pointer is
// internal to the target's code).
struct KernelRow {
  std::string name;    // e.g. "permdiag.packed.full<1>"; "<op>.reference" for the oracle
  KernelOp op;
  std::string target;  // "AVX3", "AVX2", ..., or "reference"
  bool (*admits)(const KernelProblem&) = nullptr;
};

// The rows of the SIMD target dispatch uses now (ForceSimdTarget changes
// it), op by op in dispatch order, followed by the reference row of every op.
std::vector<KernelRow> KernelTable();

// The name of the row a product with this problem runs now: the first
// admitting SIMD row of the active target, the reference row on the
// reference path, or the forced row.
std::string SelectedKernel(const KernelProblem& problem);

// Whether the active target's row `name` of problem.op admits the problem
// (false for an unknown name). Callers that build state for one kernel (the
// circulant FFT's spectra) ask this rather than copying its predicate.
bool KernelAdmits(const std::string& name, const KernelProblem& problem);

}  // namespace permdnn::kernels
