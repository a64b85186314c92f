// The compression SPEC of DESIGN.md, parsed in the format registry
// (permdnn::formats) so that the trainer (`permdnn train --compress`) and
// the runtime (`permdnn compress`) read the same text the same way.
//
// Grammar: a comma-separated list of items; an item is either a global
// method, which applies to the compressible layers of a model, or
// NAME=METHOD, which sets one layer by name:
//
//     SPEC   := ITEM (',' ITEM)*
//     ITEM   := METHOD | NAME '=' METHOD
//     METHOD := KIND (':' KEY '=' VALUE)*
//     KIND   := dense | permdiag (p [, offsets]) | circulant (p) | prune (density [, bits [, index]])
//             | ternary (group [, density] [, t] [, lambda] [, wpc | wpcq] [, ternarize])
//
// e.g. `dense`, `permdiag:p=8`, `permdiag:p=8,fc3=dense`,
// `fc1=permdiag:p=4,fc2=permdiag:p=8`, `circulant:p=8`, `prune:density=0.1`,
// `prune:density=0.1:bits=4`, `ternary:group=16`, `ternary:group=16:density=0.5`, `ternary:group=16,density=0.5,wpc=0.7`. An item is per-layer when an '=' comes before
// the first ':'.
//
// Continuation rule (issue 6 writes `prune:density=0.1,bits=4`): the comma
// form of a parameter clashes with the item separator, so an item of the
// form KEY=NUMBER (no ':', NUMBER a decimal number) whose KEY is a parameter
// of the preceding item's KIND continues that method: `prune:density=0.1,
// bits=4` = `prune:density=0.1:bits=4`, and `fc2=prune:density=0.2,bits=4`
// gives fc2 4 bits. A KEY=NUMBER item whose KEY is a parameter of some other
// kind (`permdiag:p=8,bits=4`) is an error naming both items; any other
// NAME=... item is a layer. (So no layer may be called p, density, bits or index;
// no permdnn model has such a layer.) The one word-valued parameter,
// `offsets`, continues the same way when its value is no KIND:
// `permdiag:p=8,offsets=column` = `permdiag:p=8:offsets=column`.
//
// Parameters: p integer in [1, 4096]; density in (0, 1]; bits (prune only)
// integer in [1, 8]: k-means weight sharing with a 2^bits-entry codebook per
// layer (Deep Compression), absent = no sharing; index (prune with bits
// only) integer in [2, 8]: store each kept weight's column as the zeros
// skipped since the previous one in `index` bits, with padding entries for
// longer runs (Deep Compression's relative indices: the registry's
// csr-relative format, sparse_matrix.h), absent = int32 column indices; offsets (permdiag only)
// `block` (default: one offset per p×p block, PermDNN's general form) or
// `column` (one offset per block column, shared by every block of it: the
// `permdiag-column` format of the registry, a grouped layer with a channel
// shuffle; docs/shared-offsets.md); ternary (issue 18, docs/ternary.md):
// group integer in [1, 4096], the input channels of one PE-wise group
// (it must divide the layer's inputs), density in (0, 1] the fraction of
// groups kept (default 1: only groups whose codes come out all zero are
// pruned), t in [0, 1) the ternarizer's threshold Δ = t · max|w| of an
// output row (default 0.05), alpha = row (default: Δ and α per output row)
// or layer (one Δ = t · max|w| and one α over the whole layer: the
// issue's per-layer ternarizer, for comparison); training only (`permdnn train`, ignored by
// `permdnn compress`): lambda in [0, 1] the group-lasso strength λ of the
// loss CE + λ·Σ_g min(‖W_g‖₂, θ) (default 0: no penalty, the groups are
// pruned by magnitude alone; 5e-4 when wpc or wpcq is given), wpc > 0
// Weight Penalty Clipping with θ = wpc × the layer's mean group norm, wpcq
// in (0, 1) WPC with θ = that quantile of the sorted group norms (neither:
// plain group lasso, θ = ∞), ternarize 0 or 1 (default 1; 0 keeps the kept
// groups in float32, the group-pruning-only ablation, stored as CSR).
//
// Default rule (Resolve): a layer named in the SPEC gets its own method. A
// layer that is not named gets the global method, except the *edge* layers,
// which stay dense unless named: the first layer when it is a convolution
// (1–3 input channels leave nothing to block) and the last layer (the
// classifier, ~10 outputs). With no global method, unnamed layers are dense.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

namespace permdnn::formats {

enum class CompressKind { kDense, kPermDiag, kCirculant, kPrune, kTernary };

struct LayerCompression {
  CompressKind kind = CompressKind::kDense;
  int p = 1;             // block size (permdiag, circulant); group_ch (ternary)
  double density = 1.0;  // kept fraction (prune: weights, ternary: groups)
  double threshold = 0.05;  // ternary: Δ = threshold · max|w| of an output row
  bool alpha_per_layer = false;  // ternary: alpha=layer, one Δ and α for the whole layer
  int bits = 0;          // prune weight sharing: codebook of 2^bits values; 0 = none
  int index_bits = 0;    // prune with bits: relative column indices of this many bits (csr-relative); 0 = int32
  bool column_offsets = false;  // permdiag: offsets=column (one offset per block column)
  // ternary, training only (docs/ternary.md): λ, WPC's θ rule, ternarize.
  double penalty = 0;       // λ of the group lasso; 0 = none
  double wpc_ratio = 0;     // θ = wpc_ratio × mean group norm (0: not this rule)
  double wpc_quantile = 0;  // θ = this quantile of the group norms (0: not this rule)
  bool ternarize = true;    // false: group pruning only (float32 kept groups)

  bool is_dense() const { return kind == CompressKind::kDense; }
  // Canonical text, e.g. "permdiag:p=8", "permdiag:p=8:offsets=column", "dense", "prune:density=0.1",
  // "prune:density=0.1:bits=4", "ternary:group=16:density=0.5:t=0.05" (the ':' form, so it parses as one METHOD).
  std::string ToString() const;
  bool operator==(const LayerCompression&) const = default;
};

// Parses one METHOD ("permdiag:p=8"); `where` names the source for errors.
LayerCompression ParseLayerCompression(const std::string& text, const std::string& where = "--compress");

struct CompressSpec {
  std::optional<LayerCompression> global;          // from an unnamed item
  std::map<std::string, LayerCompression> layers;  // from NAME=METHOD items

  // Throws permdnn::Error naming the bad item (unknown kind, missing or bad
  // parameter, two global items, a layer named twice, empty SPEC).
  static CompressSpec Parse(const std::string& text);

  // The method for one layer under the default rule above.
  LayerCompression Resolve(const std::string& layer, bool edge_layer) const;

  // Throws if the SPEC names a layer not in `compressible` (lists them).
  void CheckLayerNames(const std::vector<std::string>& compressible) const;

  std::string ToString() const;
};

}  // namespace permdnn::formats
