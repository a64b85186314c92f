// The format registry: one descriptor per compressed weight format, which
// every stage reads instead of knowing the format itself (ggml's
// type_traits table for the row-per-format idea, ONNX's OpSchema for the op
// contract).
//
// A format (FormatTraits) owns, in one place:
//   * its ONNX op schema, linear and conv form (OpSchema): domain, op name,
//     version, the attributes, and the stored arrays as input slots with
//     their dtypes, shapes and whether fine-tuning trains them (ArraySpec);
//   * validation: ReadNode() reads a node (an ONNX node through the
//     runtime, or a run directory's layer through `permdnn export`) into
//     Weights, and every error names the node or layer and the field;
//   * the stored arrays and the one byte count (StoredSize);
//   * projection from a dense weight (Project) and expansion back to it
//     (ToDense), the convolutions included: their weight is lifted to the
//     im2col matrix (Lift) that the simulator and the kernels multiply;
//   * its kernel entry points: the ops of the kernel table
//     (kernels/table.h) that run it.
//
// Formats:      kind            SPEC                     ops (ai.permdnn unless noted)
//   dense       kDense          dense                    Gemm (transB=1) / Conv (standard ONNX)
//   permdiag    kPermDiag       permdiag:p=8             PermDiagMatMul / PermDiagConv
//   permdiag-column kPermDiagColumn permdiag:p=8,offsets=column  the same ops with offset_layout="column"
//   circulant   kCirculant      circulant:p=8            BlockCirculantMatMul / BlockCirculantConv
//   csr         kCsr            prune:density=0.1        SparseMatMul / SparseConv
//   csr-codebook kCsrCodebook   prune:density=0.1,bits=4 SparseMatMul / SparseConv (+ codebook input)
//   csr-relative kCsrRelative   prune:density=0.1,bits=4,index=5  RelativeSparseMatMul / RelativeSparseConv
//   ternary     kTernary        ternary:group=16         TernaryMatMul / TernaryConv
// A new format is one more row here plus its kernels and tests
// (docs/adding-a-format.md); export, compress, inspect, fine-tuning and the
// runtime's op creation loop over the rows.
//
// Layouts (the canonical arrays; W is out × in, conv weights out × in × taps
// with taps = the product of the kernel dims):
//   dense       weight [out][in][taps]
//   permdiag    values [mb][nb][p][taps] (mb = ceil(out/p), nb = ceil(in/p)),
//               offsets [mb][nb]: out channel I·p + c reads in channel
//               J·p + (c + k_IJ) mod p (permdiag_matrix.h)
//   permdiag-column  values as permdiag, offsets [nb]: every block of column
//               block J has offset k_J (k_IJ = k_J for all I), so column
//               J·p + d meets every row block I at row I·p + (d − k_J) mod p.
//               Two rows share one op: the op's attribute offset_layout
//               ("block", the default that files without it mean, or
//               "column") selects the row (FindFormat); a node whose offsets
//               do not match its layout is rejected naming node and field.
//               In memory (Weights) the offsets are expanded to [mb][nb]
//               (all rows equal) so every permdiag consumer reads them alike.
//   circulant   values [mb][nb][p][taps]: W[I·p + c][J·p + d] = values[I][J][(c − d) mod p]
//   csr         row_ptr [out + 1], col_idx [nnz] over the [out, in·taps]
//               matrix (column = in channel · taps + tap), values [nnz]
//   csr-codebook the same with codes [nnz] (uint8) into codebook [K], K <= 256
//   csr-relative Deep Compression's storage (sparse_matrix.h, RelativeIndex):
//               attribute index_bits R in [2, 8]; row_len [ceil(out·L/8)]
//               (L = RowLengthBits(in·taps)), gaps [ceil(entries·R/8)],
//               codes [ceil(nnz·B/8)] (B = bit width of K − 1, at least 1)
//               into codebook [K], all uint8 bit-packed LSB first. In
//               memory (Weights) it is held as csr-codebook (row_ptr,
//               col_idx, one code per byte) plus index_bits, so every CSR
//               consumer reads it alike; ReadNode decodes, WriteNode encodes.
//   ternary     (ternary_matrix.h) g.p = group_ch, which must divide in;
//               group_mask [ceil(out·G/8)] (G = in / group_ch), plus and
//               minus [kept, ceil(group_ch·taps/8)] bit planes of the kept
//               groups (weight e of a group = in channel e / taps, tap
//               e % taps), scale [out]; attribute group_ch
//   every format: bias [out], optional.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "permdnn/formats/attributes.h"
#include "permdnn/formats/circulant_matrix.h"
#include "permdnn/formats/permdiag_matrix.h"
#include "permdnn/formats/sparse_matrix.h"
#include "permdnn/formats/spec.h"
#include "permdnn/formats/ternary_matrix.h"

namespace permdnn::formats {

// Element types of stored arrays; the values are ONNX's TensorProto codes
// (permdnn writes float32, uint8, uint16 and int32; readers may meet the others).
enum class ElemType : int {
  kFloat32 = 1, kUInt8 = 2, kInt8 = 3, kUInt16 = 4, kInt16 = 5, kInt32 = 6, kInt64 = 7, kBool = 9
};
int ElemBytes(ElemType t);
const char* ElemName(ElemType t);  // "float32", "uint8", ...

enum class Kind { kDense, kPermDiag, kPermDiagColumn, kCirculant, kCsr, kCsrCodebook, kCsrRelative, kTernary };

// The domain of permdnn's compressed operators.
inline constexpr const char* kDomain = "ai.permdnn";
inline constexpr int kDomainVersion = 1;

// The logical shape of a weight: out × in (features or channels), the
// kernel's spatial dims for a convolution (empty for a linear layer) and
// the block size of the blocked formats (1 otherwise).
struct Geometry {
  int64_t out = 0, in = 0;
  std::vector<int64_t> kernel;
  int p = 1;

  bool conv() const { return !kernel.empty(); }
  int64_t taps() const;  // product of kernel (1 for linear)
  int64_t row_blocks() const { return CeilDiv(out, p); }
  int64_t col_blocks() const { return CeilDiv(in, p); }
};

// One stored array of a format: an input slot of its op (X is slot 0), a
// tensor of a run directory (docs/run-format.md) under the same name.
struct ArraySpec {
  const char* name;        // "values", "offsets", "row_ptr", ...
  int slot;                // ONNX input index
  ElemType dtype;          // as permdnn writes it
  bool optional = false;   // bias
  bool trainable = false;  // fine-tuning trains it (float weights only)
  // Also read: any integer type (offsets, CSR indices: int64 from other
  // writers); "" when only dtype is.
  const char* accepted = "";
  const char* shape = "";  // for the docs and messages: "[mb, nb, p, kernel...]"
};

// An attribute of an op schema.
struct AttrSpec {
  const char* name;
  const char* type;  // "int", "ints", "string"
  bool required;
  const char* doc;
};

// The ONNX contract of one operator.
struct OpSchema {
  const char* domain;  // kDomain, or "" for standard ONNX
  const char* name;
  int since_version;
  bool conv;
  std::span<const AttrSpec> attributes;
};

// A format's weights as stored (canonical layouts above).
struct Weights {
  Kind kind = Kind::kDense;
  Geometry g;
  std::vector<float> values;              // dense weight, block values, or CSR nonzeros
  std::vector<uint16_t> offsets;          // permdiag [mb][nb] (permdiag-column too: rows equal)
  std::vector<int32_t> row_ptr, col_idx;  // csr
  std::vector<uint8_t> codes;             // csr-codebook, csr-relative
  std::vector<float> codebook;            // csr-codebook, csr-relative
  int index_bits = 0;                     // csr-relative: bits of a relative column index
  std::vector<uint8_t> group_mask, plus, minus;  // ternary (ternary_matrix.h)
  std::vector<float> scale;                      // ternary [out]
  std::vector<float> bias;                // [out] or empty

  int64_t nnz() const { return static_cast<int64_t>(col_idx.size()); }
  // The CSR nonzeros as floats (codebook[codes] for csr-codebook).
  std::vector<float> NonzeroValues() const;
};

// A stored array read from a file (non-owning).
struct ArrayRef {
  std::string name;  // the value's name in the file, for messages
  ElemType dtype = ElemType::kFloat32;
  std::vector<int64_t> shape;
  std::span<const float> f;    // float32 arrays
  std::span<const int64_t> i;  // integer arrays, widened to int64
  int64_t size() const;
};

// What ReadNode reads from: an ONNX node whose weights are constants (the
// runtime, inspection) or a run directory's layer (`permdnn export`).
class NodeSource {
 public:
  virtual ~NodeSource() = default;
  // Prefix of every error: the file and the node or layer.
  virtual std::string Where() const = 0;
  virtual const Attributes& attributes() const = 0;
  // The array of a slot (ONNX input index) or name (run directory).
  virtual bool HasInput(int slot, const char* name) const = 0;
  // Error naming where, the slot and the name when absent or not constant.
  virtual ArrayRef Input(int slot, const char* name) const = 0;
};

// What StoredSize counts. File: the arrays as permdnn writes them (ONNX
// initializers, .npy tensors: offsets uint16). Packed: offsets at the bytes
// p needs (OffsetBytes: 1 for p <= 256), the deployable minimum that the
// training summary and the matrices' bytes() report. value_bits: 32 for
// float32, 16 for the int16 fixed-point engines; a blocked format rounds
// each block's values down to whole bytes (a block is one SRAM row).
struct ByteModel {
  int value_bits = 32;
  bool packed_offsets = false;
};
struct Storage {
  int64_t numbers = 0;  // stored numbers: values (padding included), codebook entries, bias; not indices or codes
  int64_t bytes = 0;    // every stored byte
};

struct Projection {
  Weights weights;
  double kept_energy = 1.0;  // ‖W − Ŵ‖² = (1 − kept)·‖W‖²
};

// The im2col matrix of a layer (the lifted conv weight, or the linear
// weight): exactly one member is set.
struct LiftedMatrix {
  std::optional<PermDiagMatrix> permdiag;
  std::optional<BlockCirculantMatrix> circulant;
  std::optional<CsrMatrix> sparse;
  std::optional<TernaryMatrix> ternary;  // [out, in·taps], column = in channel · taps + tap
};

// One row of the registry.
struct FormatTraits {
  Kind kind;
  const char* name;          // "permdiag", ...
  const char* spec_kind;     // the SPEC KIND that selects it ("prune" for both CSR rows)
  bool blocked;              // has a block size p (attribute and SPEC parameter)
  int max_p;                 // largest p a file may carry (0 when not blocked)
  const OpSchema* linear;    // op of the linear form
  const OpSchema* conv;      // op of the conv form
  std::span<const ArraySpec> arrays;  // slot order, X excluded
  std::span<const char* const> kernels;  // its ops in the kernel table (KernelOpName)
  // Rows that share an op: the value of the op's `offset_layout` attribute
  // that selects this row ("block" answers an absent attribute); nullptr
  // for the formats whose op is theirs alone.
  const char* offset_layout = nullptr;
};

// The rows, in the order above.
std::span<const FormatTraits> Formats();
const FormatTraits& Format(Kind kind);
// The format a node is in: by domain and op type, the codebook row when the
// node has a codebook input (has_input(slot)), the permdiag row that its
// attribute offset_layout names (attributes: the node's; nullptr or an
// unknown value: the block row, whose ReadGeometry then names the bad
// value); nullptr when the node is no format's op (the dense row answers
// Gemm and Conv only when dense_ops).
const FormatTraits* FindFormat(const std::string& domain, const std::string& op_type,
                               const std::function<bool(int)>& has_input, bool dense_ops = false,
                               const Attributes* attributes = nullptr);
// The format a SPEC method names (training: p = 1 stays blocked), and the
// one it selects for `permdnn compress` (dense for p = 1 of a blocked kind).
Kind KindOf(const LayerCompression& method);
const FormatTraits& FormatOf(const LayerCompression& method);
// The row whose SPEC kind is `kind` ("dense", "permdiag", "circulant",
// "prune"; the codebook row for prune when codebook, the permdiag-column
// row for permdiag when column_offsets); nullptr when none is. csr-relative
// is never answered: it is how a file stores csr-codebook weights (a run
// directory keeps them as csr-codebook arrays).
const FormatTraits* FindBySpecKind(const std::string& kind, bool codebook, bool column_offsets = false);
// Both permuted-diagonal rows (block and column offsets).
bool IsPermDiag(Kind kind);
// What a report calls the stored weights: "dense", "permdiag:p=8",
// "permdiag:p=8:offsets=column",
// "circulant:p=8", "prune:density=0.1", "prune:density=0.1:bits=4" or
// "prune:density=0.1:bits=4:index=5" (the density reached, bits = the bits
// a code into the codebook needs: log2 K for a 2^bits-entry codebook).
std::string DescribeMethod(const Weights& w);
const OpSchema& Op(const FormatTraits& f, bool conv);
// The stored array `name` of f, nullptr when f has none.
const ArraySpec* FindArray(const FormatTraits& f, std::string_view name);
bool IsPermDnnDomain(const std::string& domain);

// The geometry of a node from its attributes alone (p, in/out, and for a
// conv the kernel_shape attribute, which the CSR forms require), validated:
// what an op can check before its weights are known.
Geometry ReadGeometry(const FormatTraits& f, bool conv, const Attributes& attributes, const std::string& where);

// Reads and validates a node's weights (dtypes, shapes against the
// attributes, offsets < p, CSR structure, codebook indices, finite values).
// codebook_entries > 0 additionally requires that many codebook entries
// (run directories: 2^bits).
Weights ReadNode(const FormatTraits& f, bool conv, const NodeSource& source, int64_t codebook_entries = 0);

// The arrays of w in slot order, as a writer emits them: name, dtype,
// shape and the data (one of the spans); an empty name marks an omitted
// optional input before a present one.
struct OutputArray {
  std::string name;
  ElemType dtype = ElemType::kFloat32;
  std::vector<int64_t> shape;
  std::span<const float> f;
  std::span<const uint16_t> u16;
  std::span<const int32_t> i32;
  std::span<const uint8_t> u8;
  // Arrays that exist only in the file (csr-relative's packed streams):
  // the data the span points into, shared so that copies stay valid.
  std::shared_ptr<const std::vector<uint8_t>> owned;
};
struct NodeSpec {
  const OpSchema* op = nullptr;
  Attributes attributes;             // p, in/out, kernel_shape for a conv
  std::vector<OutputArray> inputs;   // slots 1.., X excluded
};
// `window`: a conv's other attributes (strides, pads, dilations, auto_pad;
// kernel_shape is added when absent; group is dropped).
NodeSpec WriteNode(const Weights& w, const Attributes& window = {});

// Dense weight [out][in][taps] -> the format (kept energy), per the SPEC
// method's parameters (p, density, bits).
Projection Project(const FormatTraits& f, std::span<const float> dense, const Geometry& g,
                   const LayerCompression& method);
// The weight back as dense [out][in][taps] (zeros off the structure).
std::vector<float> ToDense(const Weights& w);
// The im2col matrix: linear layers as they are; convolutions (structure on
// the (out, in) channel pair) as [out, taps·nb·p] blocked matrices, block
// (I, t·nb + J) = tap t of block (I, J) (values on padded channels zeroed),
// CSR as stored [out, in·taps].
LiftedMatrix Lift(const Weights& w);

// The one byte count of every format. nnz: CSR nonzeros and
// codebook_entries: K of csr-codebook (both ignored by the other formats).
// csr-relative's bytes depend on where the nonzeros are: only the Weights
// form counts it (the other throws Error naming the format).
Storage StoredSize(Kind kind, const Geometry& g, int64_t nnz, int64_t codebook_entries, bool has_bias,
                   const ByteModel& model = {});
Storage StoredSize(const Weights& w, const ByteModel& model = {}, bool with_bias = true);

// ---- Recurrent layers (LSTM, GRU, RNN; issue #17) ----------------------------
//
// A compressed recurrent layer is the standard ONNX LSTM / GRU / RNN with its
// two weight products in a format: the op `<Format>LSTM` / `<Format>GRU` /
// `<Format>RNN` in ai.permdnn (PermDiagLSTM, ...: RecurrentOp) takes the
// standard op's inputs in the standard slots (X 0, B 3, sequence_lens 4,
// initial_h 5, initial_c 6, P 7; the dense W and R, slots 1 and 2, stay
// empty) and its attributes (direction, hidden_size (required), layout,
// activations, clip, input_forget, linear_before_reset), plus the format's
// attributes (p) and input_size. W [G·H, input_size] and R [G·H, H] (G = 4
// gates i, o, f, c; 3 z, r, h; 1; ONNX order) are each stored as the
// format's linear-form arrays (bias excluded), stacked over the directions
// (a leading num_directions dimension): W's arrays from slot
// kRecurrentArraySlot in the format's slot order, then R's. For permdiag:
// W.values [D, mb, nb_in, p] at 8, W.offsets [D, mb, nb_in] at 9,
// R.values [D, mb, nb_h, p] at 10, R.offsets [D, mb, nb_h] at 11.
// `permdnn export --portable` writes the standard op with dense W and R.
enum class RecurrentCell { kRnn, kGru, kLstm };
inline constexpr int kRecurrentArraySlot = 8;
// The op of f's recurrent form, nullptr when f has none (only permdiag
// with per-block offsets has one so far).
const OpSchema* RecurrentOp(const FormatTraits& f, RecurrentCell cell);
// The format and cell of an ai.permdnn recurrent op; nullptr when op_type is
// none.
const FormatTraits* FindRecurrentFormat(const std::string& domain, const std::string& op_type, RecurrentCell* cell);
// The input slot of array `a` of the W (r_matrix false) or R matrix.
int RecurrentSlot(const FormatTraits& f, bool r_matrix, const ArraySpec& a);
// One matrix of one direction of a recurrent node (rows = G·H, cols =
// input_size or H), read and validated by ReadNode (errors name the node,
// "W" / "R", the direction and the field).
Weights ReadRecurrentMatrix(const FormatTraits& f, const NodeSource& node, bool r_matrix, int64_t direction,
                            int64_t directions, int64_t rows, int64_t cols);

// permdiag-column weights whose offsets differ between row blocks of one
// block column: Error naming where and the first such block (no-op for
// the other formats). WriteNode checks it.
void CheckColumnOffsets(const Weights& w, const std::string& where);

// Permuted-diagonal weights whose padded positions (rows >= out or
// columns >= in of the last blocks) hold a nonzero: Error naming where and
// the first one (run directories must keep the padding zero).
void CheckPaddingIsZero(const Weights& w, const std::string& where);

}  // namespace permdnn::formats
