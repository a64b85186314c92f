// The format registry (see registry.h): the descriptor rows, the one node
// reader and writer, and each format's projection, expansion and lifting.
#include "permdnn/formats/registry.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <limits>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "permdnn/core/error.h"
#include "permdnn/formats/pruning.h"

namespace permdnn::formats {

namespace {

std::string ShapeText(std::span<const int64_t> shape) { return fmt::format("[{}]", fmt::join(shape, ", ")); }

// ---- The op schemas and stored arrays ----------------------------------------

constexpr AttrSpec kBlockedLinearAttrs[] = {
    {"p", "int", true, "block size"},
    {"in_features", "int", true, "columns of W (the last dimension of X)"},
    {"out_features", "int", true, "rows of W"},
};
constexpr AttrSpec kPermDiagLinearAttrs[] = {
    {"p", "int", true, "block size"},
    {"in_features", "int", true, "columns of W (the last dimension of X)"},
    {"out_features", "int", true, "rows of W"},
    {"offset_layout", "string", false, "\"block\" (default: offsets [mb, nb]) or \"column\" (offsets [nb])"},
};
constexpr AttrSpec kSparseLinearAttrs[] = {
    {"in_features", "int", true, "columns of W"},
    {"out_features", "int", true, "rows of W"},
};
constexpr AttrSpec kRelativeSparseLinearAttrs[] = {
    {"in_features", "int", true, "columns of W"},
    {"out_features", "int", true, "rows of W"},
    {"index_bits", "int", true, "bits of a relative column index, 2-8"},
};
constexpr AttrSpec kBlockedConvAttrs[] = {
    {"p", "int", true, "block size over the (out, in) channel pair"},
    {"in_channels", "int", true, "channels of X"},
    {"out_channels", "int", true, "channels of Y"},
    {"kernel_shape", "ints", false, "1-3 dims; must equal the values' kernel dims"},
    {"strides", "ints", false, "as Conv"},
    {"pads", "ints", false, "as Conv"},
    {"dilations", "ints", false, "as Conv"},
    {"auto_pad", "string", false, "as Conv"},
    {"group", "int", false, "must be 1"},
};
constexpr AttrSpec kPermDiagConvAttrs[] = {
    {"p", "int", true, "block size over the (out, in) channel pair"},
    {"in_channels", "int", true, "channels of X"},
    {"out_channels", "int", true, "channels of Y"},
    {"kernel_shape", "ints", false, "1-3 dims; must equal the values' kernel dims"},
    {"strides", "ints", false, "as Conv"},
    {"pads", "ints", false, "as Conv"},
    {"dilations", "ints", false, "as Conv"},
    {"auto_pad", "string", false, "as Conv"},
    {"group", "int", false, "must be 1"},
    {"offset_layout", "string", false, "\"block\" (default: offsets [mb, nb]) or \"column\" (offsets [nb])"},
};
constexpr AttrSpec kSparseConvAttrs[] = {
    {"in_channels", "int", true, "channels of X"},
    {"out_channels", "int", true, "channels of Y"},
    {"kernel_shape", "ints", true, "1-3 dims (the CSR does not carry them)"},
    {"strides", "ints", false, "as Conv"},
    {"pads", "ints", false, "as Conv"},
    {"dilations", "ints", false, "as Conv"},
    {"auto_pad", "string", false, "as Conv"},
    {"group", "int", false, "must be 1"},
};
constexpr AttrSpec kRelativeSparseConvAttrs[] = {
    {"in_channels", "int", true, "channels of X"},
    {"out_channels", "int", true, "channels of Y"},
    {"kernel_shape", "ints", true, "1-3 dims (the indices do not carry them)"},
    {"strides", "ints", false, "as Conv"},
    {"pads", "ints", false, "as Conv"},
    {"dilations", "ints", false, "as Conv"},
    {"auto_pad", "string", false, "as Conv"},
    {"group", "int", false, "must be 1"},
    {"index_bits", "int", true, "bits of a relative column index, 2-8"},
};
constexpr AttrSpec kTernaryLinearAttrs[] = {
    {"group_ch", "int", true, "inputs per PE-wise group; must divide in_features"},
    {"in_features", "int", true, "columns of W"},
    {"out_features", "int", true, "rows of W"},
};
constexpr AttrSpec kTernaryConvAttrs[] = {
    {"group_ch", "int", true, "input channels per PE-wise group (x the whole kernel); must divide in_channels"},
    {"in_channels", "int", true, "channels of X"},
    {"out_channels", "int", true, "channels of Y"},
    {"kernel_shape", "ints", true, "1-3 dims (the bit planes do not carry them)"},
    {"strides", "ints", false, "as Conv"},
    {"pads", "ints", false, "as Conv"},
    {"dilations", "ints", false, "as Conv"},
    {"auto_pad", "string", false, "as Conv"},
    {"group", "int", false, "must be 1"},
};
constexpr AttrSpec kGemmAttrs[] = {{"transB", "int", true, "1: the weight is [out, in]"}};
constexpr AttrSpec kConvAttrs[] = {
    {"kernel_shape", "ints", false, ""}, {"strides", "ints", false, ""}, {"pads", "ints", false, ""},
    {"dilations", "ints", false, ""},    {"auto_pad", "string", false, ""}, {"group", "int", false, ""},
};

// Every ai.permdnn op name is written here and nowhere else.
constexpr OpSchema kGemm = {"", "Gemm", 13, false, kGemmAttrs};
constexpr OpSchema kConv = {"", "Conv", 11, true, kConvAttrs};
// Shared by the permdiag and permdiag-column rows (attribute offset_layout).
constexpr OpSchema kPermDiagMatMul = {kDomain, "PermDiagMatMul", 1, false, kPermDiagLinearAttrs};
constexpr OpSchema kPermDiagConv = {kDomain, "PermDiagConv", 1, true, kPermDiagConvAttrs};
constexpr OpSchema kCirculantMatMul = {kDomain, "BlockCirculantMatMul", 1, false, kBlockedLinearAttrs};
constexpr OpSchema kCirculantConv = {kDomain, "BlockCirculantConv", 1, true, kBlockedConvAttrs};
constexpr OpSchema kSparseMatMul = {kDomain, "SparseMatMul", 1, false, kSparseLinearAttrs};
constexpr OpSchema kSparseConv = {kDomain, "SparseConv", 1, true, kSparseConvAttrs};
constexpr OpSchema kRelativeSparseMatMul = {kDomain, "RelativeSparseMatMul", 1, false, kRelativeSparseLinearAttrs};
constexpr OpSchema kRelativeSparseConv = {kDomain, "RelativeSparseConv", 1, true, kRelativeSparseConvAttrs};
constexpr OpSchema kTernaryMatMul = {kDomain, "TernaryMatMul", 1, false, kTernaryLinearAttrs};
constexpr OpSchema kTernaryConv = {kDomain, "TernaryConv", 1, true, kTernaryConvAttrs};

// The recurrent forms (registry.h, "Recurrent layers").
constexpr AttrSpec kPermDiagRecurrentAttrs[] = {
    {"p", "int", true, "block size of W and R (hidden_size a multiple of p: no block straddles two gates)"},
    {"input_size", "int", true, "columns of W (the last dimension of X)"},
    {"hidden_size", "int", true, "H; W has G·H rows, R is G·H × H"},
    {"direction", "string", false, "as the ONNX op: forward, reverse, bidirectional"},
    {"layout", "int", false, "as the ONNX op (opset 14)"},
    {"activations", "strings", false, "as the ONNX op"},
    {"activation_alpha", "floats", false, "as the ONNX op"},
    {"activation_beta", "floats", false, "as the ONNX op"},
    {"clip", "float", false, "as the ONNX op"},
    {"input_forget", "int", false, "LSTM: as the ONNX op"},
    {"linear_before_reset", "int", false, "GRU: as the ONNX op"},
};
constexpr OpSchema kPermDiagRecurrent[] = {
    {kDomain, "PermDiagRNN", 1, false, kPermDiagRecurrentAttrs},
    {kDomain, "PermDiagGRU", 1, false, kPermDiagRecurrentAttrs},
    {kDomain, "PermDiagLSTM", 1, false, kPermDiagRecurrentAttrs},
};

constexpr ArraySpec kDenseArrays[] = {
    {"weight", 1, ElemType::kFloat32, false, true, "", "[out, in, kernel...]"},
    {"bias", 2, ElemType::kFloat32, true, true, "", "[out]"},
};
constexpr ArraySpec kPermDiagArrays[] = {
    {"values", 1, ElemType::kFloat32, false, true, "", "[mb, nb, p, kernel...]"},
    {"offsets", 2, ElemType::kUInt16, false, false, "any integer type", "[mb, nb]"},
    {"bias", 3, ElemType::kFloat32, true, true, "", "[out]"},
};
constexpr ArraySpec kPermDiagColumnArrays[] = {
    {"values", 1, ElemType::kFloat32, false, true, "", "[mb, nb, p, kernel...]"},
    {"offsets", 2, ElemType::kUInt16, false, false, "any integer type", "[nb]"},
    {"bias", 3, ElemType::kFloat32, true, true, "", "[out]"},
};
constexpr ArraySpec kCirculantArrays[] = {
    {"values", 1, ElemType::kFloat32, false, true, "", "[mb, nb, p, kernel...]"},
    {"bias", 2, ElemType::kFloat32, true, true, "", "[out]"},
};
constexpr ArraySpec kCsrArrays[] = {
    {"row_ptr", 1, ElemType::kInt32, false, false, "int64", "[out + 1]"},
    {"col_idx", 2, ElemType::kInt32, false, false, "int64", "[nnz]"},
    {"values", 3, ElemType::kFloat32, false, true, "", "[nnz]"},
    {"bias", 4, ElemType::kFloat32, true, true, "", "[out]"},
};
constexpr ArraySpec kCsrCodebookArrays[] = {
    {"row_ptr", 1, ElemType::kInt32, false, false, "int64", "[out + 1]"},
    {"col_idx", 2, ElemType::kInt32, false, false, "int64", "[nnz]"},
    {"codes", 3, ElemType::kUInt8, false, false, "", "[nnz]"},
    {"bias", 4, ElemType::kFloat32, true, true, "", "[out]"},
    {"codebook", 5, ElemType::kFloat32, false, true, "", "[K], 1 <= K <= 256"},
};
constexpr ArraySpec kCsrRelativeArrays[] = {
    {"row_len", 1, ElemType::kUInt8, false, false, "", "[ceil(out * L / 8)], L = RowLengthBits(in * taps)"},
    {"gaps", 2, ElemType::kUInt8, false, false, "", "[ceil(entries * index_bits / 8)]"},
    {"codes", 3, ElemType::kUInt8, false, false, "", "[ceil(nnz * B / 8)], B = max(1, bit width of K - 1)"},
    {"bias", 4, ElemType::kFloat32, true, true, "", "[out]"},
    {"codebook", 5, ElemType::kFloat32, false, true, "", "[K], 1 <= K <= 256"},
};

constexpr ArraySpec kTernaryArrays[] = {
    {"group_mask", 1, ElemType::kUInt8, false, false, "", "[ceil(out * G / 8)], G = in / group_ch"},
    {"plus", 2, ElemType::kUInt8, false, false, "", "[kept groups, ceil(group_ch * taps / 8)]"},
    {"minus", 3, ElemType::kUInt8, false, false, "", "[kept groups, ceil(group_ch * taps / 8)]"},
    {"scale", 4, ElemType::kFloat32, false, true, "", "[out]"},
    {"bias", 5, ElemType::kFloat32, true, true, "", "[out]"},
};

constexpr const char* kPermDiagKernels[] = {"permdiag.packed", "permdiag.matmul_rows", "permdiag.matvec_i16"};
constexpr const char* kPermDiagColumnKernels[] = {"permdiag.packed", "permdiag.matmul_rows", "permdiag.matvec_i16"};
constexpr const char* kCirculantKernels[] = {"circulant.matvec"};
// The values of the permdiag ops' offset_layout attribute.
constexpr const char* kLayoutBlock = "block";
constexpr const char* kLayoutColumn = "column";
constexpr const char* kCsrKernels[] = {"csr.matvec", "csr.matmul"};
constexpr const char* kTernaryKernels[] = {"ternary.matvec", "ternary.matmul"};

// Largest codebook a node may carry (codes are uint8).
constexpr int64_t kMaxCodebook = 256;
// Largest kernel extent per dim a file may declare (bounds allocation).
constexpr int64_t kMaxKernel = 4096;

const FormatTraits kFormats[] = {
    {Kind::kDense, "dense", "dense", false, 0, &kGemm, &kConv, kDenseArrays, {}},
    {Kind::kPermDiag, "permdiag", "permdiag", true, 65535, &kPermDiagMatMul, &kPermDiagConv, kPermDiagArrays,
     kPermDiagKernels, kLayoutBlock},
    {Kind::kPermDiagColumn, "permdiag-column", "permdiag", true, 65535, &kPermDiagMatMul, &kPermDiagConv,
     kPermDiagColumnArrays, kPermDiagColumnKernels, kLayoutColumn},
    // FFTW and the spectra layout take any p; 4096 bounds what a file can make
    // the loader allocate per block.
    {Kind::kCirculant, "circulant", "circulant", true, 4096, &kCirculantMatMul, &kCirculantConv, kCirculantArrays,
     kCirculantKernels},
    // Listed before csr: a SparseMatMul with a codebook input is this row.
    {Kind::kCsrCodebook, "csr-codebook", "prune", false, 0, &kSparseMatMul, &kSparseConv, kCsrCodebookArrays,
     kCsrKernels},
    {Kind::kCsr, "csr", "prune", false, 0, &kSparseMatMul, &kSparseConv, kCsrArrays, kCsrKernels},
    // csr-codebook's weights stored with relative indices: its own ops, the
    // same kernels (the weights are decoded into CSR).
    {Kind::kCsrRelative, "csr-relative", "prune", false, 0, &kRelativeSparseMatMul, &kRelativeSparseConv,
     kCsrRelativeArrays, kCsrKernels},
    // Not `blocked`: its size parameter is the attribute group_ch (Geometry::p).
    {Kind::kTernary, "ternary", "ternary", false, 0, &kTernaryMatMul, &kTernaryConv, kTernaryArrays,
     kTernaryKernels},
};

const ArraySpec& Spec(const FormatTraits& f, const char* name) {
  for (const ArraySpec& a : f.arrays)
    if (std::string_view(a.name) == name) return a;
  Fail("format {} has no array '{}'", f.name, name);
}

bool IsCsr(Kind k) { return k == Kind::kCsr || k == Kind::kCsrCodebook || k == Kind::kCsrRelative; }
bool HasCodebook(Kind k) { return k == Kind::kCsrCodebook || k == Kind::kCsrRelative; }


// The offset_layout attribute of a permdiag node ("block" when absent).
std::string OffsetLayout(const Attributes& a, const std::string& where) {
  return a.String("offset_layout", kLayoutBlock, where);
}

// ---- Reading ----------------------------------------------------------------

// The array of spec from source, its dtype checked (float32 exactly; an
// integer spec takes the integer types it accepts).
ArrayRef Take(const NodeSource& src, const FormatTraits& f, const char* name, const char* hint = "") {
  const ArraySpec& spec = Spec(f, name);
  ArrayRef a = src.Input(spec.slot, spec.name);
  const std::string where = src.Where();
  if (spec.dtype == ElemType::kFloat32) {
    PERMDNN_CHECK(a.dtype == ElemType::kFloat32, "{}: {} '{}' must be float32{}, got {}", where, spec.name, a.name,
                  hint, ElemName(a.dtype));
  } else if (*spec.accepted != '\0') {
    PERMDNN_CHECK(a.dtype != ElemType::kFloat32, "{}: {} '{}' must be {} ({} accepted), got float32", where,
                  spec.name, a.name, ElemName(spec.dtype), spec.accepted);
  } else {
    PERMDNN_CHECK(a.dtype == spec.dtype, "{}: {} '{}' must be {}, got {}", where, spec.name, a.name,
                  ElemName(spec.dtype), ElemName(a.dtype));
  }
  return a;
}

void CheckFinite(const std::string& where, const ArrayRef& a, const char* what) {
  for (std::size_t e = 0; e < a.f.size(); ++e)
    PERMDNN_CHECK(std::isfinite(a.f[e]), "{}: {} '{}'[{}] = {} is not finite", where, what, a.name, e, a.f[e]);
}

std::vector<float> ReadBias(const NodeSource& src, const FormatTraits& f, int64_t out) {
  const ArraySpec& spec = Spec(f, "bias");
  if (!src.HasInput(spec.slot, spec.name)) return {};
  const ArrayRef b = src.Input(spec.slot, spec.name);
  PERMDNN_CHECK(b.dtype == ElemType::kFloat32 && b.shape.size() == 1 && b.size() == out,
                "{}: bias '{}' is {} {}, expected float32 [{}]", src.Where(), b.name, ElemName(b.dtype),
                ShapeText(b.shape), out);
  return {b.f.begin(), b.f.end()};
}

std::vector<int64_t> CheckedKernel(std::vector<int64_t> k, const std::string& where, const char* what) {
  PERMDNN_CHECK(!k.empty() && k.size() <= 3, "{}: {} {} must have 1 to 3 dims", where, what, ShapeText(k));
  for (int64_t d : k)
    PERMDNN_CHECK(d >= 1 && d <= kMaxKernel, "{}: {} {} must hold sizes in [1, {}]", where, what, ShapeText(k),
                  kMaxKernel);
  return k;
}

// values of a blocked format: [mb, nb, p] or [mb, nb, p, kernel...]; the
// conv's kernel dims come from here (and must agree with kernel_shape).
void ReadBlockValues(const NodeSource& src, const FormatTraits& f, bool conv, Geometry* g, std::vector<float>* out) {
  const std::string where = src.Where();
  const ArrayRef v = Take(src, f, "values");
  const int64_t mb = g->row_blocks(), nb = g->col_blocks();
  const char* in_name = conv ? "in_channels" : "in_features";
  const char* out_name = conv ? "out_channels" : "out_features";
  if (!conv) {
    const std::vector<int64_t> want = {mb, nb, g->p};
    PERMDNN_CHECK(v.shape == want, "{}: values '{}' has shape {}, but attributes p={}, {}={}, {}={} need {}", where,
                  v.name, ShapeText(v.shape), g->p, in_name, g->in, out_name, g->out, ShapeText(want));
  } else {
    PERMDNN_CHECK(v.shape.size() >= 4 && v.shape.size() <= 6 && v.shape[0] == mb && v.shape[1] == nb &&
                      v.shape[2] == g->p,
                  "{}: values '{}' has shape {}, but attributes p={}, {}={}, {}={} need [{}, {}, {}, kernel...]",
                  where, v.name, ShapeText(v.shape), g->p, in_name, g->in, out_name, g->out, mb, nb, g->p);
    std::vector<int64_t> kernel(v.shape.begin() + 3, v.shape.end());
    PERMDNN_CHECK(g->kernel.empty() || g->kernel == kernel, "{}: kernel_shape {} differs from values {}", where,
                  ShapeText(g->kernel), ShapeText(v.shape));
    g->kernel = CheckedKernel(kernel, where, "kernel");
  }
  CheckFinite(where, v, "values");
  out->assign(v.f.begin(), v.f.end());
}

void ReadOffsets(const NodeSource& src, const FormatTraits& f, const Geometry& g, std::vector<uint16_t>* out) {
  const std::string where = src.Where();
  const ArrayRef o = Take(src, f, "offsets");
  const int64_t mb = g.row_blocks(), nb = g.col_blocks();
  PERMDNN_CHECK(o.size() == mb * nb, "{}: offsets '{}' has shape {} ({} elements), expected [{}, {}]{}", where, o.name,
                ShapeText(o.shape), o.size(), mb, nb,
                o.size() == nb ? " (one offset per block column is offset_layout=\"column\", which the node does not set)"
                               : "");
  out->resize(static_cast<std::size_t>(mb * nb));
  for (int64_t b = 0; b < mb * nb; ++b) {
    const int64_t k = o.i[b];
    PERMDNN_CHECK(k >= 0 && k < g.p, "{}: offsets '{}': block ({}, {}) has offset {}, must be in [0, p={})", where,
                  o.name, b / nb, b % nb, k, g.p);
    (*out)[b] = static_cast<uint16_t>(k);
  }
}

// offsets [nb] of the column layout, expanded to [mb][nb] (every row block
// the same). A [mb, nb] array is rejected even when its rows agree: the
// layout is the attribute's, and a writer that means it stores [nb].
void ReadColumnOffsets(const NodeSource& src, const FormatTraits& f, const Geometry& g, std::vector<uint16_t>* out) {
  const std::string where = src.Where();
  const ArrayRef o = Take(src, f, "offsets");
  const int64_t mb = g.row_blocks(), nb = g.col_blocks();
  PERMDNN_CHECK(o.shape.size() == 1 && o.size() == nb,
                "{}: offsets '{}' has shape {}, but offset_layout=\"column\" stores one offset per block column: "
                "expected [{}]{}", where, o.name, ShapeText(o.shape), nb,
                o.size() == mb * nb ? " (a [mb, nb] array is the block layout: drop offset_layout)" : "");
  out->resize(static_cast<std::size_t>(mb * nb));
  for (int64_t J = 0; J < nb; ++J) {
    const int64_t k = o.i[J];
    PERMDNN_CHECK(k >= 0 && k < g.p, "{}: offsets '{}': block column {} has offset {}, must be in [0, p={})", where,
                  o.name, J, k, g.p);
    for (int64_t I = 0; I < mb; ++I) (*out)[I * nb + J] = static_cast<uint16_t>(k);
  }
}

// A 1-D integer array (CSR indices).
std::vector<int64_t> ReadIndexVector(const NodeSource& src, const FormatTraits& f, const char* name) {
  const ArrayRef a = Take(src, f, name);
  PERMDNN_CHECK(a.shape.size() == 1, "{}: {} '{}' must be 1-D, got shape {}", src.Where(), name, a.name,
                ShapeText(a.shape));
  return {a.i.begin(), a.i.end()};
}

// row_ptr [rows+1] / col_idx [nnz] of a rows x cols CSR matrix: row_ptr
// starts at 0, never decreases, ends at nnz; col_idx in [0, cols) and
// strictly increasing inside a row.
void ValidateCsr(const std::string& where, int64_t rows, int64_t cols, std::span<const int64_t> row_ptr,
                 std::span<const int64_t> col_idx) {
  const int64_t nnz = static_cast<int64_t>(col_idx.size());
  PERMDNN_CHECK(nnz < (int64_t{1} << 31), "{}: col_idx has {} entries, more than int32 indices allow", where, nnz);
  PERMDNN_CHECK(static_cast<int64_t>(row_ptr.size()) == rows + 1,
                "{}: row_ptr has {} entries, expected out_features + 1 = {}", where, row_ptr.size(), rows + 1);
  PERMDNN_CHECK(row_ptr[0] == 0, "{}: row_ptr[0] = {}, must be 0", where, row_ptr[0]);
  for (int64_t r = 0; r < rows; ++r)
    PERMDNN_CHECK(row_ptr[r + 1] >= row_ptr[r], "{}: row_ptr is not monotone: row_ptr[{}] = {} < row_ptr[{}] = {}",
                  where, r + 1, row_ptr[r + 1], r, row_ptr[r]);
  PERMDNN_CHECK(row_ptr[rows] == nnz, "{}: row_ptr[{}] = {} must equal nnz = {} (the length of col_idx)", where, rows,
                row_ptr[rows], nnz);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t e = row_ptr[r]; e < row_ptr[r + 1]; ++e) {
      PERMDNN_CHECK(col_idx[e] >= 0 && col_idx[e] < cols, "{}: col_idx[{}] = {} (row {}) is out of range [0, {})",
                    where, e, col_idx[e], r, cols);
      PERMDNN_CHECK(e == row_ptr[r] || col_idx[e] > col_idx[e - 1],
                    "{}: unsorted CSR rows: row {} has col_idx[{}] = {} after {} (must be strictly increasing)",
                    where, r, e, col_idx[e], col_idx[e - 1]);
    }
  }
}

void ReadCsr(const NodeSource& src, const FormatTraits& f, int64_t codebook_entries, Weights* w) {
  const std::string where = src.Where();
  const int64_t rows = w->g.out, cols = w->g.in * w->g.taps();
  const std::vector<int64_t> rp = ReadIndexVector(src, f, "row_ptr"), ci = ReadIndexVector(src, f, "col_idx");
  const int64_t nnz = static_cast<int64_t>(ci.size());
  if (f.kind == Kind::kCsrCodebook) {
    const ArrayRef codes = Take(src, f, "codes");
    PERMDNN_CHECK(codes.shape.size() == 1 && codes.size() == nnz, "{}: codes '{}' has shape {}, expected [nnz = {}]",
                  where, codes.name, ShapeText(codes.shape), nnz);
    const ArrayRef cb = Take(src, f, "codebook");
    const int64_t k = cb.size();
    PERMDNN_CHECK(cb.shape.size() == 1, "{}: codebook '{}' must be 1-D, got shape {}", where, cb.name,
                  ShapeText(cb.shape));
    PERMDNN_CHECK(k >= 1 && k <= kMaxCodebook, "{}: codebook has {} entries, must have 1 to {}", where, k,
                  kMaxCodebook);
    PERMDNN_CHECK(codebook_entries <= 0 || k == codebook_entries, "{}: codebook has {} entries, expected 2^bits = {}",
                  where, k, codebook_entries);
    CheckFinite(where, cb, "codebook");
    w->codes.resize(static_cast<std::size_t>(nnz));
    for (int64_t e = 0; e < nnz; ++e) {
      PERMDNN_CHECK(codes.i[e] >= 0 && codes.i[e] < k,
                    "{}: codes[{}] = {} is not an index into the codebook of {} entries", where, e, codes.i[e], k);
      w->codes[e] = static_cast<uint8_t>(codes.i[e]);
    }
    w->codebook.assign(cb.f.begin(), cb.f.end());
  } else {
    const ArrayRef v = Take(src, f, "values", " (integer codes need a codebook input)");
    PERMDNN_CHECK(v.shape.size() == 1 && v.size() == nnz, "{}: values '{}' has shape {}, expected [nnz = {}]", where,
                  v.name, ShapeText(v.shape), nnz);
    CheckFinite(where, v, "values");
    w->values.assign(v.f.begin(), v.f.end());
  }
  ValidateCsr(where, rows, cols, rp, ci);
  w->row_ptr.assign(rp.begin(), rp.end());
  w->col_idx.assign(ci.begin(), ci.end());
}

// A bit-packed uint8 stream of exactly `fields` fields of `bits` bits: its
// length and its unused high bits (zero) checked.
std::vector<uint8_t> ReadPacked(const NodeSource& src, const FormatTraits& f, const char* name, int64_t fields,
                                int bits, const char* meaning) {
  const ArrayRef a = Take(src, f, name);
  const int64_t want = PackedBytes(fields, bits);
  PERMDNN_CHECK(a.shape.size() == 1 && a.size() == want, "{}: {} '{}' has shape {}, expected [{}] ({} {} of {} bits)",
                src.Where(), name, a.name, ShapeText(a.shape), want, fields, meaning, bits);
  std::vector<uint8_t> bytes(a.i.begin(), a.i.end());
  const int used = static_cast<int>((fields * bits) % 8);
  PERMDNN_CHECK(used == 0 || (bytes.back() >> used) == 0,
                "{}: {} '{}': the unused high {} bits of the last byte must be zero, got byte {:#04x}", src.Where(),
                name, a.name, 8 - used, bytes.back());
  return bytes;
}

// csr-relative: codebook, row lengths, gaps (padding entries dropped: the
// columns they skip), then one code per kept weight; decoded into the
// csr-codebook arrays.
void ReadCsrRelative(const NodeSource& src, const FormatTraits& f, int64_t codebook_entries, Weights* w) {
  const std::string where = src.Where();
  const int64_t rows = w->g.out, cols = w->g.in * w->g.taps();
  const int64_t r_bits = src.attributes().RequirePositive("index_bits", where);
  PERMDNN_CHECK(r_bits >= kMinIndexBits && r_bits <= kMaxIndexBits, "{}: attribute index_bits = {} must be in [{}, {}]",
                where, r_bits, kMinIndexBits, kMaxIndexBits);
  PERMDNN_CHECK(cols <= std::numeric_limits<int32_t>::max(), "{}: {} columns exceed int32 indices", where, cols);
  w->index_bits = static_cast<int>(r_bits);
  const ArrayRef cb = Take(src, f, "codebook");
  const int64_t k = cb.size();
  PERMDNN_CHECK(cb.shape.size() == 1 && k >= 1 && k <= kMaxCodebook,
                "{}: codebook '{}' has shape {}, expected [K] with 1 <= K <= {}", where, cb.name, ShapeText(cb.shape),
                kMaxCodebook);
  PERMDNN_CHECK(codebook_entries <= 0 || k == codebook_entries, "{}: codebook has {} entries, expected 2^bits = {}",
                where, k, codebook_entries);
  CheckFinite(where, cb, "codebook");
  w->codebook.assign(cb.f.begin(), cb.f.end());

  const int len_bits = RowLengthBits(cols);
  const std::vector<uint8_t> row_len = ReadPacked(src, f, "row_len", rows, len_bits, "row lengths");
  int64_t entries = 0;
  for (int64_t r = 0; r < rows; ++r) entries += UnpackBits(row_len, r, len_bits);
  const std::vector<uint8_t> gaps = ReadPacked(src, f, "gaps", entries, w->index_bits, "entries");
  CsrPattern pattern = DecodeRelative(row_len, gaps, rows, cols, w->index_bits, where);
  w->row_ptr = std::move(pattern.row_ptr);
  w->col_idx = std::move(pattern.col_idx);
  const int64_t nnz = w->nnz(), code_bits = CodeBits(k);
  const std::vector<uint8_t> codes = ReadPacked(src, f, "codes", nnz, static_cast<int>(code_bits), "codes");
  w->codes.resize(static_cast<std::size_t>(nnz));
  for (int64_t i = 0; i < nnz; ++i) {
    const uint32_t c = UnpackBits(codes, i, static_cast<int>(code_bits));
    PERMDNN_CHECK(c < k, "{}: codes[{}] = {} is not an index into the codebook of {} entries", where, i, c, k);
    w->codes[i] = static_cast<uint8_t>(c);
  }
}

void ReadDenseWeight(const NodeSource& src, const FormatTraits& f, bool conv, Weights* w) {
  const ArrayRef a = Take(src, f, "weight");
  if (w->g.out == 0) {  // the shape from the weight: [out, in] (Gemm, transB = 1) or [out, in, kernel...]
    PERMDNN_CHECK(a.shape.size() == (conv ? 4u : 2u) || (conv && a.shape.size() >= 3 && a.shape.size() <= 5),
                  "{}: weight '{}' has shape {}, expected [out, in{}]", src.Where(), a.name, ShapeText(a.shape),
                  conv ? ", kernel..." : "");
    w->g.out = a.shape[0];
    w->g.in = a.shape[1];
    if (conv) w->g.kernel = CheckedKernel({a.shape.begin() + 2, a.shape.end()}, src.Where(), "kernel");
  }
  std::vector<int64_t> want = {w->g.out, w->g.in};
  want.insert(want.end(), w->g.kernel.begin(), w->g.kernel.end());
  PERMDNN_CHECK(a.shape == want, "{}: weight '{}' has shape {}, expected {}", src.Where(), a.name, ShapeText(a.shape),
                ShapeText(want));
  CheckFinite(src.Where(), a, "weight");
  w->values.assign(a.f.begin(), a.f.end());
}

// A uint8 array of ternary's with exactly `want` elements (1-D for the
// mask, [kept, bytes] for the planes).
std::vector<uint8_t> ReadBytes(const NodeSource& src, const FormatTraits& f, const char* name,
                               const std::vector<int64_t>& want, const char* meaning) {
  const ArrayRef a = Take(src, f, name);
  PERMDNN_CHECK(a.shape == want, "{}: {} '{}' has shape {}, expected {} ({})", src.Where(), name, a.name,
                ShapeText(a.shape), ShapeText(want), meaning);
  return {a.i.begin(), a.i.end()};
}

// group_mask, then the planes sized by its kept groups, then scale [out];
// the structure (overlapping planes, padding bits) by TernaryMatrix.
void ReadTernary(const NodeSource& src, const FormatTraits& f, Weights* w) {
  const std::string where = src.Where();
  const Geometry& g = w->g;
  const int64_t G = g.in / g.p, L = g.p * g.taps(), gb = (L + 7) / 8;
  w->group_mask = ReadBytes(src, f, "group_mask", {(g.out * G + 7) / 8},
                            fmt::format("one bit per group: {} out x {} groups of group_ch={}", g.out, G, g.p).c_str());
  int64_t kept = 0;
  for (uint8_t b : w->group_mask) kept += std::popcount(b);
  const std::string planes = fmt::format("the {} kept groups of group_mask x ceil({} weights / 8)", kept, L);
  w->plus = ReadBytes(src, f, "plus", {kept, gb}, planes.c_str());
  w->minus = ReadBytes(src, f, "minus", {kept, gb}, planes.c_str());
  const ArrayRef sc = Take(src, f, "scale");
  PERMDNN_CHECK(sc.shape == std::vector<int64_t>{g.out}, "{}: scale '{}' has shape {}, expected [{}] (one alpha per "
                "output {})", where, sc.name, ShapeText(sc.shape), g.out, g.conv() ? "channel" : "feature");
  CheckFinite(where, sc, "scale");
  w->scale.assign(sc.f.begin(), sc.f.end());
  // The structural checks (a weight both +1 and -1, padding bits) name the node.
  TernaryMatrix::FromParts(g.out, g.in * g.taps(), L, w->group_mask, w->plus, w->minus, w->scale, where);
}

// The lifted matrix of ternary weights: the stored arrays as they are.
TernaryMatrix TernaryOf(const Weights& w) {
  return TernaryMatrix::FromParts(w.g.out, w.g.in * w.g.taps(), w.g.p * w.g.taps(), w.group_mask, w.plus, w.minus,
                                  w.scale);
}

Projection ProjectTernary(std::span<const float> dense, const Geometry& g, const LayerCompression& method) {
  PERMDNN_CHECK(g.p >= 1 && g.in % g.p == 0, "ternary projection: group={} does not divide the {} input {}", g.p,
                g.in, g.conv() ? "channels" : "features");
  TernaryProjection tp = Ternarize(dense, g.out, g.in * g.taps(), g.p * g.taps(), method.threshold, method.density,
                                   method.alpha_per_layer);
  Projection r;
  r.kept_energy = tp.kept_energy;
  r.weights.group_mask.assign(tp.matrix.group_mask().begin(), tp.matrix.group_mask().end());
  r.weights.plus.assign(tp.matrix.plus().begin(), tp.matrix.plus().end());
  r.weights.minus.assign(tp.matrix.minus().begin(), tp.matrix.minus().end());
  r.weights.scale.assign(tp.matrix.scale().begin(), tp.matrix.scale().end());
  return r;
}

// ---- Conversions ------------------------------------------------------------

// Permuted-diagonal conv weight -> dense [out][in][taps]; positions outside
// out × in (the padding) are skipped.
std::vector<float> PermDiagToDense(const Weights& w) {
  const Geometry& g = w.g;
  const int64_t p = g.p, nb = g.col_blocks(), K = g.taps();
  std::vector<float> dense(static_cast<std::size_t>(g.out * g.in * K), 0.0f);
  for (int64_t I = 0; I < g.row_blocks(); ++I)
    for (int64_t J = 0; J < nb; ++J)
      for (int64_t c = 0; c < p; ++c) {
        const int64_t o = I * p + c, ic = J * p + (c + w.offsets[I * nb + J]) % p;
        if (o >= g.out || ic >= g.in) continue;
        const float* v = w.values.data() + ((I * nb + J) * p + c) * K;
        std::copy(v, v + K, dense.begin() + (o * g.in + ic) * K);
      }
  return dense;
}

// Block-circulant [mb][nb][p][taps] -> dense [out][in][taps].
std::vector<float> CirculantToDense(const Weights& w) {
  const Geometry& g = w.g;
  const int64_t p = g.p, nb = g.col_blocks(), K = g.taps();
  std::vector<float> dense(static_cast<std::size_t>(g.out * g.in * K));
  for (int64_t o = 0; o < g.out; ++o)
    for (int64_t i = 0; i < g.in; ++i) {
      const int64_t I = o / p, J = i / p, c = o % p, d = i % p;
      const float* v = w.values.data() + ((I * nb + J) * p + ((c - d) % p + p) % p) * K;
      std::copy(v, v + K, dense.begin() + (o * g.in + i) * K);
    }
  return dense;
}

// Per block the offset that keeps the most kernel energy (chosen by
// PermDiagMatrix::FromDense on the per-(out, in) kernel norms), kernels
// copied; for a linear layer that is FromDense itself.
Projection ProjectPermDiag(std::span<const float> dense, const Geometry& g) {
  Projection r;
  Weights& w = r.weights;
  const int64_t K = g.taps(), p = g.p, nb = g.col_blocks();
  std::vector<float> norms(static_cast<std::size_t>(g.out * g.in));
  double total = 0;
  for (int64_t k = 0; k < g.out * g.in; ++k) {
    double e = 0;
    for (int64_t t = 0; t < K; ++t) e += double(dense[k * K + t]) * dense[k * K + t];
    norms[k] = K == 1 ? dense[k] : static_cast<float>(std::sqrt(e));
    total += e;
  }
  PermDiagProjection pr = PermDiagMatrix::FromDense(norms, g.out, g.in, g.p);
  w.offsets.assign(pr.matrix.offsets().begin(), pr.matrix.offsets().end());
  if (K == 1) {
    w.values.assign(pr.matrix.values().begin(), pr.matrix.values().end());
    r.kept_energy = pr.kept_energy;
    return r;
  }
  w.values.assign(static_cast<std::size_t>(g.row_blocks() * nb * p * K), 0.0f);
  double kept = 0;
  for (int64_t I = 0; I < g.row_blocks(); ++I)
    for (int64_t J = 0; J < nb; ++J)
      for (int64_t c = 0; c < p; ++c) {
        const int64_t o = I * p + c, ic = J * p + (c + w.offsets[I * nb + J]) % p;
        if (o >= g.out || ic >= g.in) continue;
        for (int64_t t = 0; t < K; ++t) {
          const float x = dense[(o * g.in + ic) * K + t];
          w.values[((I * nb + J) * p + c) * K + t] = x;
          kept += double(x) * x;
        }
      }
  r.kept_energy = total > 0 ? kept / total : 1.0;
  return r;
}

// Shared offsets: per block column J the one offset k_J that keeps the most
// energy Σ_I Σ_c Σ_t W[I·p + c, J·p + (c + k) mod p, t]² over all its row
// blocks (ties: the smallest k), then the kept kernels copied as permdiag's.
Projection ProjectPermDiagColumn(std::span<const float> dense, const Geometry& g) {
  Projection r;
  Weights& w = r.weights;
  const int64_t K = g.taps(), p = g.p, mb = g.row_blocks(), nb = g.col_blocks();
  std::vector<double> energy(static_cast<std::size_t>(g.out * g.in));
  double total = 0;
  for (int64_t e = 0; e < g.out * g.in; ++e) {
    double s = 0;
    for (int64_t t = 0; t < K; ++t) s += double(dense[e * K + t]) * dense[e * K + t];
    energy[e] = s;
    total += s;
  }
  w.offsets.assign(static_cast<std::size_t>(mb * nb), 0);
  std::vector<double> score(static_cast<std::size_t>(p));
  for (int64_t J = 0; J < nb; ++J) {
    std::fill(score.begin(), score.end(), 0.0);
    // Row o = I·p + c meets column J·p + d for k = (d − c) mod p.
    for (int64_t o = 0; o < g.out; ++o)
      for (int64_t d = 0; d < p && J * p + d < g.in; ++d)
        score[((d - o % p) % p + p) % p] += energy[o * g.in + J * p + d];
    const int64_t best = std::max_element(score.begin(), score.end()) - score.begin();
    for (int64_t I = 0; I < mb; ++I) w.offsets[I * nb + J] = static_cast<uint16_t>(best);
  }
  w.values.assign(static_cast<std::size_t>(mb * nb * p * K), 0.0f);
  double kept = 0;
  for (int64_t I = 0; I < mb; ++I)
    for (int64_t J = 0; J < nb; ++J)
      for (int64_t c = 0; c < p; ++c) {
        const int64_t o = I * p + c, ic = J * p + (c + w.offsets[I * nb + J]) % p;
        if (o >= g.out || ic >= g.in) continue;
        std::copy_n(dense.begin() + (o * g.in + ic) * K, K, w.values.begin() + ((I * nb + J) * p + c) * K);
        kept += energy[o * g.in + ic];
      }
  r.kept_energy = total > 0 ? kept / total : 1.0;
  return r;
}

// Least squares per kernel tap (BlockCirculantMatrix::FromDense of each
// [out, in] slice); kept energy over the whole weight.
Projection ProjectCirculant(std::span<const float> dense, const Geometry& g) {
  Projection r;
  const int64_t K = g.taps(), p = g.p, blocks = g.row_blocks() * g.col_blocks();
  r.weights.values.assign(static_cast<std::size_t>(blocks * p * K), 0.0f);
  std::vector<float> slice(static_cast<std::size_t>(g.out * g.in));
  double total = 0, kept = 0;
  for (int64_t t = 0; t < K; ++t) {
    for (int64_t k = 0; k < g.out * g.in; ++k) slice[k] = dense[k * K + t];
    CirculantProjection pr = BlockCirculantMatrix::FromDense(slice, g.out, g.in, g.p);
    double e = 0;
    for (float v : slice) e += double(v) * v;
    total += e;
    kept += pr.kept_energy * e;
    for (int64_t b = 0; b < blocks; ++b)
      for (int64_t s = 0; s < p; ++s) r.weights.values[(b * p + s) * K + t] = pr.matrix.values()[b * p + s];
  }
  r.kept_energy = total > 0 ? kept / total : 1.0;
  return r;
}

// Magnitude pruning (and, with bits, k-means sharing) of the [out, in·taps]
// weight as CSR.
Projection ProjectCsr(std::span<const float> dense, const Geometry& g, double density, int bits) {
  Projection r;
  Weights& w = r.weights;
  w.kind = bits > 0 ? Kind::kCsrCodebook : Kind::kCsr;
  const int64_t rows = g.out, cols = g.in * g.taps();
  const std::vector<uint8_t> mask = MagnitudeMask(dense, density);
  std::vector<float> kept;
  w.row_ptr.push_back(0);
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t j = 0; j < cols; ++j)
      if (mask[i * cols + j]) {
        w.col_idx.push_back(static_cast<int32_t>(j));
        kept.push_back(dense[i * cols + j]);
      }
    w.row_ptr.push_back(static_cast<int32_t>(w.col_idx.size()));
  }
  if (bits > 0 && !kept.empty()) {
    SharedWeights sw = KMeansCodebook(kept, bits);
    w.codes = std::move(sw.codes);
    w.codebook = std::move(sw.centroids);
  } else if (bits > 0) {
    w.codebook.assign(std::size_t{1} << bits, 0.0f);
  } else {
    w.values = std::move(kept);
  }
  const std::vector<float> nz = w.NonzeroValues();
  double total = 0, err = 0;
  for (int64_t i = 0; i < rows; ++i) {
    int64_t e = w.row_ptr[i];
    for (int64_t j = 0; j < cols; ++j) {
      const double x = dense[i * cols + j];
      const double y = e < w.row_ptr[i + 1] && w.col_idx[e] == j ? nz[e++] : 0.0;
      total += x * x;
      err += (x - y) * (x - y);
    }
  }
  r.kept_energy = total > 0 ? 1.0 - err / total : 1.0;
  return r;
}

}  // namespace

// ---- Public -------------------------------------------------------------------

int ElemBytes(ElemType t) {
  switch (t) {
    case ElemType::kFloat32: case ElemType::kInt32: return 4;
    case ElemType::kUInt8: case ElemType::kInt8: case ElemType::kBool: return 1;
    case ElemType::kUInt16: case ElemType::kInt16: return 2;
    case ElemType::kInt64: return 8;
  }
  return 0;
}

const char* ElemName(ElemType t) {
  switch (t) {
    case ElemType::kFloat32: return "float32";
    case ElemType::kUInt8: return "uint8";
    case ElemType::kInt8: return "int8";
    case ElemType::kUInt16: return "uint16";
    case ElemType::kInt16: return "int16";
    case ElemType::kBool: return "bool";
    case ElemType::kInt32: return "int32";
    case ElemType::kInt64: return "int64";
  }
  return "?";
}

int64_t Geometry::taps() const {
  int64_t n = 1;
  for (int64_t k : kernel) n *= k;
  return n;
}

int64_t ArrayRef::size() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::vector<float> Weights::NonzeroValues() const {
  if (!HasCodebook(kind)) return values;
  std::vector<float> v(codes.size());
  for (std::size_t e = 0; e < codes.size(); ++e) v[e] = codebook[codes[e]];
  return v;
}

std::span<const FormatTraits> Formats() { return kFormats; }

const FormatTraits& Format(Kind kind) {
  for (const FormatTraits& f : kFormats)
    if (f.kind == kind) return f;
  Fail("no format row for kind {}", static_cast<int>(kind));
}

bool IsPermDnnDomain(const std::string& domain) { return domain == kDomain; }

const OpSchema* RecurrentOp(const FormatTraits& f, RecurrentCell cell) {
  if (f.kind != Kind::kPermDiag) return nullptr;
  return &kPermDiagRecurrent[static_cast<int>(cell)];
}

const FormatTraits* FindRecurrentFormat(const std::string& domain, const std::string& op_type, RecurrentCell* cell) {
  if (domain != kDomain) return nullptr;
  for (const FormatTraits& f : kFormats)
    for (RecurrentCell c : {RecurrentCell::kRnn, RecurrentCell::kGru, RecurrentCell::kLstm})
      if (const OpSchema* op = RecurrentOp(f, c); op && op_type == op->name) {
        if (cell) *cell = c;
        return &f;
      }
  return nullptr;
}

int RecurrentSlot(const FormatTraits& f, bool r_matrix, const ArraySpec& a) {
  int per = 0, index = -1;
  for (const ArraySpec& s : f.arrays) {
    if (std::string_view(s.name) == "bias") continue;
    if (&s == &a) index = per;
    ++per;
  }
  PERMDNN_CHECK(index >= 0, "RecurrentSlot: array {} is not a matrix array of {}", a.name, f.name);
  return kRecurrentArraySlot + (r_matrix ? per : 0) + index;
}

namespace {

// One matrix of one direction of a recurrent node, as the linear form's
// node: slots and attributes mapped, the direction's slice of each array.
class RecurrentMatrixSource : public NodeSource {
 public:
  RecurrentMatrixSource(const FormatTraits& f, const NodeSource& node, bool r_matrix, int64_t direction,
                        int64_t directions, int64_t rows, int64_t cols)
      : f_(f), node_(node), r_(r_matrix), d_(direction), dirs_(directions) {
    if (const Attributes::Value* p = node.attributes().Find("p")) attrs_.Set("p", *p);
    attrs_.SetInt("in_features", cols);
    attrs_.SetInt("out_features", rows);
  }
  std::string Where() const override {
    return fmt::format("{}: {}{}", node_.Where(), r_ ? "R" : "W", dirs_ > 1 ? fmt::format(" (direction {})", d_) : "");
  }
  const Attributes& attributes() const override { return attrs_; }
  bool HasInput(int slot, const char* name) const override {
    const ArraySpec* a = Spec(slot);
    return a && node_.HasInput(RecurrentSlot(f_, r_, *a), name);
  }
  ArrayRef Input(int slot, const char* name) const override {
    const ArraySpec* a = Spec(slot);
    PERMDNN_CHECK(a != nullptr, "{}: no input {}", Where(), name);
    ArrayRef full = node_.Input(RecurrentSlot(f_, r_, *a), name);
    PERMDNN_CHECK(!full.shape.empty() && full.shape[0] == dirs_,
                  "{}: array {} '{}' has shape {}, expected a leading num_directions = {} dimension", Where(), name,
                  full.name, ShapeText(full.shape), dirs_);
    ArrayRef one = full;
    one.shape.erase(one.shape.begin());
    const int64_t n = one.size();
    if (!full.f.empty()) one.f = full.f.subspan(static_cast<std::size_t>(d_ * n), static_cast<std::size_t>(n));
    if (!full.i.empty()) one.i = full.i.subspan(static_cast<std::size_t>(d_ * n), static_cast<std::size_t>(n));
    return one;
  }

 private:
  const ArraySpec* Spec(int slot) const {
    for (const ArraySpec& a : f_.arrays)
      if (a.slot == slot && std::string_view(a.name) != "bias") return &a;
    return nullptr;
  }
  const FormatTraits& f_;
  const NodeSource& node_;
  bool r_;
  int64_t d_, dirs_;
  Attributes attrs_;
};

}  // namespace

Weights ReadRecurrentMatrix(const FormatTraits& f, const NodeSource& node, bool r_matrix, int64_t direction,
                            int64_t directions, int64_t rows, int64_t cols) {
  return ReadNode(f, false, RecurrentMatrixSource(f, node, r_matrix, direction, directions, rows, cols));
}

bool IsPermDiag(Kind kind) { return kind == Kind::kPermDiag || kind == Kind::kPermDiagColumn; }

const FormatTraits* FindFormat(const std::string& domain, const std::string& op_type,
                               const std::function<bool(int)>& has_input, bool dense_ops,
                               const Attributes* attributes) {
  // The rows whose op this is; among several (csr-codebook, csr), the first
  // whose required arrays are all present, else the last (whose reader then
  // names the missing input). Rows with an offset_layout (permdiag) answer
  // only their layout; a value that no row has goes to the block row.
  const bool standard = domain.empty() || domain == "ai.onnx";
  const Attributes::Value* v = attributes ? attributes->Find("offset_layout") : nullptr;
  const std::string_view layout =
      v && v->kind == Attributes::Value::kString && v->s == kLayoutColumn ? kLayoutColumn : kLayoutBlock;
  const FormatTraits* last = nullptr;
  for (const FormatTraits& f : kFormats) {
    if (f.kind == Kind::kDense && !dense_ops) continue;
    if (f.offset_layout != nullptr && layout != f.offset_layout) continue;
    for (const OpSchema* op : {f.linear, f.conv}) {
      if (op_type != op->name || (standard ? *op->domain != '\0' : domain != op->domain)) continue;
      bool present = true;
      for (const ArraySpec& a : f.arrays) present = present && (a.optional || has_input(a.slot));
      if (present) return &f;
      last = &f;
    }
  }
  return last;
}

Kind KindOf(const LayerCompression& m) {
  switch (m.kind) {
    case CompressKind::kDense: return Kind::kDense;
    case CompressKind::kPermDiag: return m.column_offsets ? Kind::kPermDiagColumn : Kind::kPermDiag;
    case CompressKind::kCirculant: return Kind::kCirculant;
    case CompressKind::kPrune:
      return m.bits > 0 ? (m.index_bits > 0 ? Kind::kCsrRelative : Kind::kCsrCodebook) : Kind::kCsr;
    case CompressKind::kTernary: return Kind::kTernary;
  }
  return Kind::kDense;
}

const FormatTraits& FormatOf(const LayerCompression& m) {
  const FormatTraits& f = Format(KindOf(m));
  return f.blocked && m.p <= 1 ? Format(Kind::kDense) : f;
}

const FormatTraits* FindBySpecKind(const std::string& kind, bool codebook, bool column_offsets) {
  for (const FormatTraits& f : kFormats)
    if (kind == f.spec_kind && f.kind != Kind::kCsrRelative &&
        (!IsCsr(f.kind) || codebook == (f.kind == Kind::kCsrCodebook)) &&
        (!IsPermDiag(f.kind) || column_offsets == (f.kind == Kind::kPermDiagColumn)))
      return &f;
  return nullptr;
}

std::string DescribeMethod(const Weights& w) {
  const FormatTraits& f = Format(w.kind);
  if (w.kind == Kind::kPermDiagColumn) return fmt::format("{}:p={}:offsets={}", f.spec_kind, w.g.p, kLayoutColumn);
  if (f.blocked) return fmt::format("{}:p={}", f.spec_kind, w.g.p);
  if (w.kind == Kind::kTernary) {
    const int64_t groups = w.g.out * (w.g.in / w.g.p);
    int64_t kept = 0;
    for (uint8_t b : w.group_mask) kept += std::popcount(b);
    return fmt::format("ternary:group={}:density={:.3g}", w.g.p,
                       groups > 0 ? static_cast<double>(kept) / static_cast<double>(groups) : 0.0);
  }
  if (!IsCsr(w.kind)) return f.spec_kind;
  std::string s = fmt::format("prune:density={:.3g}", static_cast<double>(w.nnz()) /
                                                          static_cast<double>(w.g.out * w.g.in * w.g.taps()));
  // The bits a code needs (a 2^bits codebook: bits).
  if (HasCodebook(w.kind)) s += fmt::format(":bits={}", CodeBits(static_cast<int64_t>(w.codebook.size())));
  if (w.kind == Kind::kCsrRelative) s += fmt::format(":index={}", w.index_bits);
  return s;
}

const OpSchema& Op(const FormatTraits& f, bool conv) { return conv ? *f.conv : *f.linear; }

const ArraySpec* FindArray(const FormatTraits& f, std::string_view name) {
  for (const ArraySpec& a : f.arrays)
    if (name == a.name) return &a;
  return nullptr;
}

Geometry ReadGeometry(const FormatTraits& f, bool conv, const Attributes& a, const std::string& where) {
  Geometry g;
  if (f.blocked) {
    const int64_t p = a.RequirePositive("p", where);
    PERMDNN_CHECK(p <= f.max_p, "{}: p = {} exceeds {}", where, p, f.max_p);
    g.p = static_cast<int>(p);
  }
  if (f.offset_layout != nullptr) {  // the row's own value, or absent
    const std::string layout = a.Has("offset_layout") ? OffsetLayout(a, where) : f.offset_layout;
    PERMDNN_CHECK(layout == kLayoutBlock || layout == kLayoutColumn,
                  "{}: attribute offset_layout = '{}' must be 'block' (offsets [mb, nb]) or 'column' (offsets [nb])",
                  where, layout);
    PERMDNN_CHECK(layout == f.offset_layout, "{}: attribute offset_layout = '{}' but the {} format is read",
                  where, layout, f.name);
  }
  const char* in_name = conv ? "in_channels" : "in_features";
  const char* out_name = conv ? "out_channels" : "out_features";
  // A dense Gemm / Conv carries its shape in the weight; permdnn's own
  // sources (a run directory) name it as the compressed ops do.
  if (f.kind == Kind::kDense && !a.Has(in_name)) return g;
  g.in = a.RequirePositive(in_name, where);
  g.out = a.RequirePositive(out_name, where);
  if (f.kind == Kind::kTernary) {
    const int64_t gc = a.RequirePositive("group_ch", where);
    PERMDNN_CHECK(g.in % gc == 0, "{}: group_ch = {} does not divide {} = {} (a PE-wise group is group_ch whole "
                  "input {})", where, gc, in_name, g.in, conv ? "channels" : "features");
    g.p = static_cast<int>(gc);
  }
  if (!conv) return g;
  const int64_t group = a.Int("group", 1, where);
  PERMDNN_CHECK(group == 1, "{}: group = {} is not supported (must be 1)", where, group);
  if (a.Has("kernel_shape")) g.kernel = CheckedKernel(a.Ints("kernel_shape", {}, where), where, "kernel_shape");
  PERMDNN_CHECK(f.blocked || !g.kernel.empty(), "{}: missing attribute 'kernel_shape' (the weights do not carry it)",
                where);
  return g;
}

Weights ReadNode(const FormatTraits& f, bool conv, const NodeSource& src, int64_t codebook_entries) {
  Weights w;
  w.kind = f.kind;
  w.g = ReadGeometry(f, conv, src.attributes(), src.Where());
  switch (f.kind) {
    case Kind::kDense: ReadDenseWeight(src, f, conv, &w); break;
    case Kind::kPermDiag:
      ReadBlockValues(src, f, conv, &w.g, &w.values);
      ReadOffsets(src, f, w.g, &w.offsets);
      break;
    case Kind::kPermDiagColumn:
      ReadBlockValues(src, f, conv, &w.g, &w.values);
      ReadColumnOffsets(src, f, w.g, &w.offsets);
      break;
    case Kind::kCirculant: ReadBlockValues(src, f, conv, &w.g, &w.values); break;
    case Kind::kCsr:
    case Kind::kCsrCodebook: ReadCsr(src, f, codebook_entries, &w); break;
    case Kind::kCsrRelative: ReadCsrRelative(src, f, codebook_entries, &w); break;
    case Kind::kTernary: ReadTernary(src, f, &w); break;
  }
  w.bias = ReadBias(src, f, w.g.out);
  return w;
}

NodeSpec WriteNode(const Weights& w, const Attributes& window) {
  const FormatTraits& f = Format(w.kind);
  const bool conv = w.g.conv();
  NodeSpec n;
  n.op = &Op(f, conv);
  if (f.blocked) n.attributes.SetInt("p", w.g.p);
  if (w.kind == Kind::kTernary) n.attributes.SetInt("group_ch", w.g.p);
  std::optional<RelativeIndex> rel;
  if (w.kind == Kind::kCsrRelative) {
    rel = EncodeRelative(w.row_ptr, w.col_idx, w.index_bits);
    n.attributes.SetInt("index_bits", w.index_bits);
  }
  // A packed stream that exists only in the file.
  auto packed = [](OutputArray& o, std::vector<uint8_t> bytes) {
    auto data = std::make_shared<const std::vector<uint8_t>>(std::move(bytes));
    o.shape = {static_cast<int64_t>(data->size())};
    o.u8 = *data;
    o.owned = std::move(data);
  };
  if (w.kind == Kind::kPermDiagColumn) {
    n.attributes.SetString("offset_layout", kLayoutColumn);
    CheckColumnOffsets(w, "WriteNode");
  }
  if (w.kind == Kind::kDense) {
    if (!conv) n.attributes.SetInt("transB", 1);
  } else {
    n.attributes.SetInt(conv ? "in_channels" : "in_features", w.g.in);
    n.attributes.SetInt(conv ? "out_channels" : "out_features", w.g.out);
  }
  if (conv) {
    for (const auto& [name, v] : window.all())
      if (name != "group") n.attributes.Set(name, v);
    if (!window.Has("kernel_shape")) n.attributes.SetInts("kernel_shape", w.g.kernel);
  }
  const int64_t mb = w.g.row_blocks(), nb = w.g.col_blocks();
  std::vector<int64_t> block_shape = {mb, nb, w.g.p};
  block_shape.insert(block_shape.end(), w.g.kernel.begin(), w.g.kernel.end());
  for (const ArraySpec& a : f.arrays) {
    OutputArray o;
    o.name = a.name;
    o.dtype = a.dtype;
    const std::string_view name = a.name;
    if (name == "weight") {
      o.shape = {w.g.out, w.g.in};
      o.shape.insert(o.shape.end(), w.g.kernel.begin(), w.g.kernel.end());
      o.f = w.values;
    } else if (name == "values" && !IsCsr(w.kind)) {
      o.shape = block_shape;
      o.f = w.values;
    } else if (name == "values") {
      o.shape = {w.nnz()};
      o.f = w.values;
    } else if (name == "offsets" && w.kind == Kind::kPermDiagColumn) {
      o.shape = {nb};  // row block 0's, which every row block shares
      o.u16 = std::span<const uint16_t>(w.offsets).first(static_cast<std::size_t>(nb));
    } else if (name == "offsets") {
      o.shape = {mb, nb};
      o.u16 = w.offsets;
    } else if (name == "row_ptr") {
      o.shape = {w.g.out + 1};
      o.i32 = w.row_ptr;
    } else if (name == "col_idx") {
      o.shape = {w.nnz()};
      o.i32 = w.col_idx;
    } else if (name == "codes" && w.kind == Kind::kCsrRelative) {
      packed(o, PackBits(std::vector<uint32_t>(w.codes.begin(), w.codes.end()),
                         CodeBits(static_cast<int64_t>(w.codebook.size()))));
    } else if (name == "codes") {
      o.shape = {w.nnz()};
      o.u8 = w.codes;
    } else if (name == "row_len") {
      packed(o, PackBits(rel->row_len, RowLengthBits(w.g.in * w.g.taps())));
    } else if (name == "gaps") {
      packed(o, PackBits(rel->gaps, w.index_bits));
    } else if (name == "group_mask") {
      o.shape = {static_cast<int64_t>(w.group_mask.size())};
      o.u8 = w.group_mask;
    } else if (name == "plus" || name == "minus") {
      const int64_t gb = (w.g.p * w.g.taps() + 7) / 8;
      const std::vector<uint8_t>& plane = name == "plus" ? w.plus : w.minus;
      o.shape = {static_cast<int64_t>(plane.size()) / gb, gb};
      o.u8 = plane;
    } else if (name == "scale") {
      o.shape = {w.g.out};
      o.f = w.scale;
    } else if (name == "codebook") {
      o.shape = {static_cast<int64_t>(w.codebook.size())};
      o.f = w.codebook;
    } else if (name == "bias") {
      o.shape = {w.g.out};
      o.f = w.bias;
      if (w.bias.empty()) o.name.clear();  // omitted (a writer may still name an existing bias here)
    }
    n.inputs.push_back(std::move(o));
  }
  return n;
}

Projection Project(const FormatTraits& f, std::span<const float> dense, const Geometry& g,
                   const LayerCompression& method) {
  PERMDNN_CHECK(static_cast<int64_t>(dense.size()) == g.out * g.in * g.taps(),
                "{} projection: {} values for a {}x{}x{} weight", f.name, dense.size(), g.out, g.in, g.taps());
  Projection r;
  switch (f.kind) {
    case Kind::kDense: r.weights.values.assign(dense.begin(), dense.end()); break;
    case Kind::kPermDiag: r = ProjectPermDiag(dense, g); break;
    case Kind::kPermDiagColumn: r = ProjectPermDiagColumn(dense, g); break;
    case Kind::kCirculant: r = ProjectCirculant(dense, g); break;
    case Kind::kCsr: r = ProjectCsr(dense, g, method.density, 0); break;
    case Kind::kCsrCodebook: r = ProjectCsr(dense, g, method.density, method.bits); break;
    case Kind::kCsrRelative:
      PERMDNN_CHECK(method.bits > 0 && method.index_bits >= kMinIndexBits && method.index_bits <= kMaxIndexBits,
                    "csr-relative projection: needs bits >= 1 and index in [{}, {}], got '{}'", kMinIndexBits,
                    kMaxIndexBits, method.ToString());
      r = ProjectCsr(dense, g, method.density, method.bits);
      r.weights.index_bits = method.index_bits;
      break;
    case Kind::kTernary: {  // the group size is the SPEC's (method.p), whatever g.p says
      Geometry tg = g;
      tg.p = method.p;
      r = ProjectTernary(dense, tg, method);
      r.weights.kind = f.kind;
      r.weights.g = tg;
      return r;
    }
  }
  r.weights.kind = f.kind;
  r.weights.g = g;
  return r;
}

std::vector<float> ToDense(const Weights& w) {
  switch (w.kind) {
    case Kind::kDense: return w.values;
    case Kind::kPermDiag:
    case Kind::kPermDiagColumn: return PermDiagToDense(w);
    case Kind::kCirculant: return CirculantToDense(w);
    case Kind::kCsr:
    case Kind::kCsrCodebook:
    case Kind::kCsrRelative: {
      const int64_t cols = w.g.in * w.g.taps();
      std::vector<float> dense(static_cast<std::size_t>(w.g.out * cols), 0.0f);
      const std::vector<float> nz = w.NonzeroValues();
      for (int64_t r = 0; r < w.g.out; ++r)
        for (int64_t e = w.row_ptr[r]; e < w.row_ptr[r + 1]; ++e) dense[r * cols + w.col_idx[e]] = nz[e];
      return dense;
    }
    case Kind::kTernary: return TernaryOf(w).ToDense();  // [out][in·taps] is [out][in][taps]
  }
  return {};
}

LiftedMatrix Lift(const Weights& w) {
  LiftedMatrix m;
  const Geometry& g = w.g;
  const int64_t p = g.p, mb = g.row_blocks(), nb = g.col_blocks(), K = g.taps();
  // Conv: the im2col matrix has K·nb column blocks, tap-major.
  const int64_t cols = g.conv() ? K * nb * p : g.in;
  switch (w.kind) {
    case Kind::kDense: Fail("Lift: a dense weight has no compressed matrix");
    case Kind::kPermDiag:
    case Kind::kPermDiagColumn: {  // offsets held expanded: the same matrix
      if (!g.conv()) {
        m.permdiag = PermDiagMatrix::FromParts(g.out, g.in, g.p, w.values, w.offsets);
        break;
      }
      const int64_t wide = K * nb;
      std::vector<float> values(static_cast<std::size_t>(mb * wide * p));
      std::vector<uint16_t> offsets(static_cast<std::size_t>(mb * wide));
      for (int64_t I = 0; I < mb; ++I)
        for (int64_t J = 0; J < nb; ++J) {
          const int64_t k = w.offsets[I * nb + J];
          for (int64_t t = 0; t < K; ++t) {
            const int64_t blk = I * wide + t * nb + J;
            offsets[blk] = static_cast<uint16_t>(k);
            for (int64_t c = 0; c < p; ++c) {
              const bool used = I * p + c < g.out && J * p + (c + k) % p < g.in;
              values[blk * p + c] = used ? w.values[((I * nb + J) * p + c) * K + t] : 0.0f;
            }
          }
        }
      m.permdiag = PermDiagMatrix::FromParts(g.out, cols, g.p, values, offsets);
      break;
    }
    case Kind::kCirculant: {
      std::vector<float> values(w.values.size());
      for (std::size_t src = 0; src < values.size(); ++src) {
        // src = ((I·nb + J)·p + s)·K + t  ->  ((I·K·nb + t·nb + J)·p + s)
        const int64_t t = static_cast<int64_t>(src) % K, rest = static_cast<int64_t>(src) / K;
        const int64_t s = rest % p, IJ = rest / p, I = IJ / nb, J = IJ % nb;
        values[static_cast<std::size_t>((I * K * nb + t * nb + J) * p + s)] = w.values[src];
      }
      m.circulant = BlockCirculantMatrix::FromParts(g.out, cols, g.p, values);
      break;
    }
    case Kind::kCsr:
    case Kind::kCsrCodebook:
    case Kind::kCsrRelative:
      m.sparse = CsrMatrix::FromParts(g.out, g.in * K, w.row_ptr, w.col_idx, w.NonzeroValues());
      break;
    case Kind::kTernary: m.ternary = TernaryOf(w); break;
  }
  return m;
}

Storage StoredSize(Kind kind, const Geometry& g, int64_t nnz, int64_t codebook_entries, bool has_bias,
                   const ByteModel& model) {
  Storage s;
  const int64_t bias = has_bias ? g.out : 0, vb = model.value_bits;
  const int64_t blocks = g.row_blocks() * g.col_blocks();
  auto value_bytes = [&](int64_t numbers) { return numbers * vb / 8; };
  switch (kind) {
    case Kind::kDense:
      s.numbers = g.out * g.in * g.taps() + bias;
      s.bytes = value_bytes(s.numbers);
      break;
    case Kind::kPermDiag:
    case Kind::kPermDiagColumn:
    case Kind::kCirculant: {
      s.numbers = blocks * g.p * g.taps() + bias;
      s.bytes = blocks * value_bytes(g.p * g.taps()) + value_bytes(bias);
      // One offset per block, or per block column for the shared layout.
      const int64_t offsets = kind == Kind::kPermDiag ? blocks : kind == Kind::kPermDiagColumn ? g.col_blocks() : 0;
      s.bytes += offsets * (model.packed_offsets ? OffsetBytes(g.p) : ElemBytes(ElemType::kUInt16));
      break;
    }
    case Kind::kCsr:
    case Kind::kCsrCodebook: {
      const int64_t index_bytes = (g.out + 1 + nnz) * ElemBytes(ElemType::kInt32);  // row_ptr + col_idx
      if (kind == Kind::kCsrCodebook) {
        s.numbers = codebook_entries + bias;
        s.bytes = index_bytes + nnz * ElemBytes(ElemType::kUInt8) + value_bytes(s.numbers);
      } else {
        s.numbers = nnz + bias;
        s.bytes = index_bytes + value_bytes(s.numbers);
      }
      break;
    }
    case Kind::kCsrRelative:
      Fail("StoredSize: the bytes of {} depend on where the nonzeros are; count it from its Weights",
           Format(kind).name);
    case Kind::kTernary: {  // nnz: the kept groups
      const int64_t groups = g.out * (g.p > 0 ? g.in / g.p : 0), gb = (g.p * g.taps() + 7) / 8;
      s.numbers = g.out + bias;  // scale, bias
      s.bytes = (groups + 7) / 8 + 2 * nnz * gb + value_bytes(s.numbers);
      break;
    }
  }
  return s;
}

Storage StoredSize(const Weights& w, const ByteModel& model, bool with_bias) {
  int64_t nnz = w.nnz();
  if (w.kind == Kind::kTernary) nnz = static_cast<int64_t>(w.plus.size()) / std::max<int64_t>(1, (w.g.p * w.g.taps() + 7) / 8);
  if (w.kind == Kind::kCsrRelative) {  // the packed streams WriteNode writes
    const bool bias = with_bias && !w.bias.empty();
    const int64_t k = static_cast<int64_t>(w.codebook.size());
    Storage s;
    s.numbers = k + (bias ? w.g.out : 0);
    s.bytes = PackedBytes(w.g.out, RowLengthBits(w.g.in * w.g.taps())) +
              PackedBytes(EncodeRelative(w.row_ptr, w.col_idx, w.index_bits).entries(), w.index_bits) +
              PackedBytes(nnz, CodeBits(k)) + s.numbers * model.value_bits / 8;
    return s;
  }
  return StoredSize(w.kind, w.g, nnz, static_cast<int64_t>(w.codebook.size()), with_bias && !w.bias.empty(), model);
}

void CheckColumnOffsets(const Weights& w, const std::string& where) {
  if (w.kind != Kind::kPermDiagColumn) return;
  const int64_t mb = w.g.row_blocks(), nb = w.g.col_blocks();
  PERMDNN_CHECK(static_cast<int64_t>(w.offsets.size()) == mb * nb, "{}: {} offsets, expected [{}][{}]", where,
                w.offsets.size(), mb, nb);
  for (int64_t I = 1; I < mb; ++I)
    for (int64_t J = 0; J < nb; ++J)
      PERMDNN_CHECK(w.offsets[I * nb + J] == w.offsets[J],
                    "{}: offsets: block ({}, {}) has offset {} but block (0, {}) has {}: permdiag-column "
                    "(offset_layout=\"column\") needs one offset per block column", where, I, J,
                    w.offsets[I * nb + J], J, w.offsets[J]);
}

void CheckPaddingIsZero(const Weights& w, const std::string& where) {
  if (!IsPermDiag(w.kind)) return;
  const Geometry& g = w.g;
  const int64_t p = g.p, nb = g.col_blocks(), K = g.taps();
  for (int64_t I = 0; I < g.row_blocks(); ++I)
    for (int64_t J = 0; J < nb; ++J)
      for (int64_t c = 0; c < p; ++c) {
        const int64_t o = I * p + c, ic = J * p + (c + w.offsets[I * nb + J]) % p;
        if (o < g.out && ic < g.in) continue;
        for (int64_t t = 0; t < K; ++t) {
          const float v = w.values[((I * nb + J) * p + c) * K + t];
          PERMDNN_CHECK(v == 0.0f, "{}: block ({}, {}): padded position (out {}, in {}) holds {}, must be 0", where, I,
                        J, o, ic, v);
        }
      }
}

}  // namespace permdnn::formats
