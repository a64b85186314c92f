// Permuted-diagonal 2-D convolution on channel-blocked activations.
//
// The structure is on the (out-channel, in-channel) pair (DESIGN.md): out
// channel I·p + c reads in channel J·p + (c + k_IJ) mod p through its own
// kh×kw kernel q_IJ[c], and no other channel of column block J. So a layer
// stores out·in·kh·kw / p weights and does that many multiply-adds per
// output position.
//
// Layout. Activations are channel-blocked, [N][ceil(C/L)][H][W][L] (the
// runtime's nC16c / nC8c layout), L = the SIMD target's float lanes
// (PermDiagConvLanes()); padded channels hold zeros. A vector of L output
// channels holds L/p row blocks; for each column block J (inside one input
// vector, since p divides L) the L lanes read one input vector through one
// lane permutation (TableLookupLanes: lane (a, c) takes lane
// (J·p mod L) + (c + k_{I_a,J}) mod p) and one FMA with the L weights
// q_{I_a,J}[c][tap]: L useful multiply-adds per FMA, the dense kernel's rate
// (chained packs, below, where the input channels are not a multiple of L:
// fewer in the last input vector's passes).
// No im2col: a register tile of R output rows × T output columns keeps R·T
// accumulators; each input position of the tile's halo is loaded once and
// feeds every tap that reads it, and the accumulators change frame once per
// column block (chained packs, below: 16 permutes per 144 FMAs where
// permuting each input position of a 2×8 tile at stride 1 took 40; with 16
// lanes two output vectors of 2×4 share each loaded input position for
// every 3×3, on 8 lanes two of 2×2 at stride 2;
// src/kernels/permdiag_conv_simd.cc). 1×1 layers with no padding on any
// side run on runs of positions instead, each input vector loaded once for
// all the column blocks inside it and two output vectors (16 lanes; on 8
// lanes one vector, at p < 8 only); padded 1×1 layers, the other p = 8
// layers on 8 lanes and 4 lanes keep the tiles (four output vectors per
// tile for 1×1 at stride 2 on 16 lanes). Where every output vector permutes its input the same way
// (shared_index below: offsets shared down each block column), the
// padless 1×1 runs permute each input position once for four output vectors
// (two on 8 lanes, at p = 8 too). On 8 lanes at p = 8 (each block's
// permutation a rotation of the whole vector: `rotated` below) padless 1×1
// layers at stride 1 of at least 4 column blocks, offsets not shared, sum
// each output vector's blocks in the order of their shifts, two blocks per
// rotation of the accumulators.
// Measured in a standalone prototype
// (Zen 5, AVX-512, one thread): 77-104 GMAC/s per stored weight on
// resnet18's 3×3 layers, where oneDNN's direct dense convolution ran 62-88
// GMAC/s. Packing (Build) is apart from compute: per output vector and
// column block, the L permutation indices and the taps × L weights, a fused
// per-channel scale (BatchNormalization) folded in.
//
// Reads: x only inside the image (padding is tested, not read); no
// over-reads. x, y and the residual need no alignment (64-byte aligned, as
// the runtime's arena is, loads never split cache lines). The epilogue adds the bias and optionally a residual tensor
// in y's layout, clamps to [lo, hi] (Relu: [0, inf)) and stores; padded
// output lanes are stored as zeros.
#pragma once

#include <cstdint>
#include <limits>
#include <span>

#include "permdnn/core/aligned_buffer.h"

namespace permdnn::kernels {

struct PermDiagConvShape {
  int64_t batch = 1, in_channels = 0, out_channels = 0;
  int64_t in_h = 0, in_w = 0, out_h = 0, out_w = 0;
  int kh = 1, kw = 1, stride_h = 1, stride_w = 1;
  int pad_top = 0, pad_left = 0;  // the bottom / right padding follows from the output size
};

// Weights in the kernel's order for `lanes`-channel blocks.
struct PermDiagConvPack {
  int p = 1, lanes = 1, kh = 1, kw = 1;
  int64_t out_channels = 0, in_channels = 0;
  int64_t out_vectors = 0, col_blocks = 0;  // ceil(out / lanes), ceil(in / p)
  // Passes over the input per output vector: col_blocks, or for a chained
  // pack every (input vector, shift) pair (below).
  int64_t passes = 0;
  // [out_vectors][passes][lanes]: per output lane, its input channel
  // counted from the first channel of input vector (pass·p) / lanes (for p
  // <= lanes: the lane of that vector it reads; the unchained kernels
  // permute it in).
  AlignedBuffer<int32_t> index;
  AlignedBuffer<float> weights;   // [out_vectors][passes][kh·kw][lanes]
  AlignedBuffer<float> bias;      // [out_vectors·lanes], zero where absent or padded
  // Chained (kh·kw > 1 and p dividing lanes > 1): the tiles permute their
  // accumulators once per pass instead of every input position of their
  // halo once per pass. Pass v = g·(lanes/p) + k reads input vector g, and
  // output block b of a vector (lanes b·p ...) reads the input vector's
  // block (b + k) mod (lanes/p), so that its index F_v is a permutation of
  // the lanes (rows and columns past the matrix: zero weights); the passes
  // of the last input vector run all lanes/p shifts, those past nb with
  // zero weights. The kernel accumulates pass v in F_v's frame: lane
  // F_v[l] holds output lane l, so that the input vector is used as loaded
  // and weights[v][t][F_v[l]] holds output lane l's weight of tap t (the
  // index gives the reference the output order back). Between passes the
  // accumulators move by chain[v][m] = F_{v-1}[F_v⁻¹[m]] (a gather), after
  // the last by F_last, which chain[0] holds (the first pass starts from
  // zero in any frame).
  bool chained = false;
  AlignedBuffer<int32_t> chain;  // [out_vectors][passes][lanes], chained packs only
  // Unchained packs of more than one output vector whose index is the same
  // for every vector on its real lanes: k_IJ = k_(I mod lanes/p),J on the
  // real rows, e.g. offsets shared down each block column (k_IJ = k_J, the
  // permdiag-column format: output lane (b, c) of every vector reads lane
  // (c + k_J) mod p of block J). The 1×1 runs then permute each input
  // position once for several output vectors (the `.shared` rows of
  // permdiag_conv_simd.cc). False for one vector (nothing to share).
  bool shared_index = false;
  // Rotated (packs of one tap with p = lanes = 8, at least 4 column blocks
  // and offsets not shared, those permdiag_conv_simd.cc's `.rotated` row
  // may run): each
  // block's permutation is a rotation of the whole vector, output lane c
  // reading input lane (c + k) mod lanes of its block's vector, so an output
  // vector can sum its blocks of one shift k in k's frame (lane (c + k) mod
  // lanes holds output lane c: the input used as loaded, no permutation)
  // and rotate its accumulators between shifts instead of permuting every
  // input. Per output vector its blocks sorted by shift (by block within
  // one) and cut into pairs within each shift (a shift's odd block paired
  // with itself at zero weights): one rotation before each pair (by 0
  // inside a shift), one at the end, so the runs have no branch on the
  // shifts and at most one permutation per two FMAs.
  bool rotated = false;
  static constexpr int64_t kRotatedMinBlocks = 4;  // the fewest column blocks a rotated pack has
  AlignedBuffer<int32_t> rot_first;    // [out_vectors + 1]: the vector's first pair
  AlignedBuffer<int32_t> rot_pairs;    // [pairs][4]: blocks a and b, the rotation r before the pair, 0
  AlignedBuffer<float> rot_weights;    // [pairs][2][lanes]: a's then b's, lane (c + k) mod lanes holds lane c's
  AlignedBuffer<int32_t> rot_final;    // [out_vectors]: the last pair's shift (the rotation back)

  // values [mb][nb][p][kh·kw] and offsets [mb][nb] (the canonical layout of
  // the PermDiagConv operator); bias [out] or empty; scale [out] or empty
  // multiplies output channel o's weights and bias (a folded normalization:
  // y = scale·conv + shift, shift then added to bias by the caller).
  static PermDiagConvPack Build(std::span<const float> values, std::span<const uint16_t> offsets,
                                int64_t out_channels, int64_t in_channels, int p, int kh, int kw, int lanes,
                                std::span<const float> bias = {}, std::span<const float> scale = {},
                                std::span<const float> shift = {});
};

struct PermDiagConvEpilogue {
  const float* residual = nullptr;  // added before the clamp (same layout and shape as y), or null
  float lo = -std::numeric_limits<float>::infinity();
  float hi = std::numeric_limits<float>::infinity();
};

// The float lanes of the active SIMD target: the block size the SIMD kernel
// wants its activations in.
int PermDiagConvLanes();

// Whether the SIMD kernel runs this problem on the active target (p divides
// the pack's lanes, which equal PermDiagConvLanes(); kernel 1×1 or 3×3,
// stride 1 or 2). Otherwise PermDiagConv2D runs the reference loops.
bool PermDiagConvSimdAdmits(const PermDiagConvPack& w, const PermDiagConvShape& s);

// y = epilogue(conv(x) + bias), x and y blocked by w.lanes channels. Threads
// split samples, row tiles (padless 1×1: chunks of positions) and groups of
// output vectors.
void PermDiagConv2D(const PermDiagConvPack& w, const PermDiagConvShape& s, const float* x,
                    const PermDiagConvEpilogue& e, float* y, int threads);

// What one core issues under the active SIMD target, measured for about
// `seconds` each (thread CPU time): vector FMAs alone, lane permutations
// alone (TableLookupLanes with indices from memory, as the kernel's), and
// permutation + FMA pairs, each on 12 independent chains, in operations per
// nanosecond. A kernel that permutes once per FMA (the padless 1×1 runs: one
// permutation per stored weight vector and position) issues at most
// pair_per_ns FMAs per ns; where permutations and FMAs share an execution
// port that is below fma_per_ns (permdnn_conv_bench prints both and the
// resulting bound next to its 1×1 rows). lanes = PermDiagConvLanes(); on a
// target without vectors (lanes = 1) the rates are 0.
struct PermuteIssueRates {
  double fma_per_ns = 0, permute_per_ns = 0, pair_per_ns = 0;
  int lanes = 1;
};
PermuteIssueRates ProbePermuteIssue(double seconds);

// Plain loops over the same layouts, double accumulators: the oracle.
void PermDiagConv2DReference(const PermDiagConvPack& w, const PermDiagConvShape& s, const float* x,
                             const PermDiagConvEpilogue& e, float* y);

// The channel gathers of a shared-offset convolution run as a grouped
// convolution (the runtime's GroupedColumnConv), on one sample in the
// blocked layout of `lanes` channels per vector: for every destination
// vector v < vectors and position q < positions,
//   dst[(v·positions + q)·lanes + l] = min(max(src[q·lanes + from[v·lanes + l]] + r, e.lo), e.hi)
// with r = e.residual[(v·positions + q)·lanes + l] (0 without one). from[]
// holds each destination lane's source offset within the sample (source
// vector · positions · lanes + source lane). SIMD gathers when lanes equals
// PermDiagConvLanes(), else (and on the reference path) plain loops.
void BlockedChannelGather(const float* src, const int32_t* from, int64_t vectors, int64_t positions, int lanes,
                          const PermDiagConvEpilogue& e, float* dst);

}  // namespace permdnn::kernels
