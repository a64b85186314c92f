// Products with a block-circulant (CirCNN) matrix.
//
// Four ways, all checked against the dense reconstruction in the tests:
//   * CirculantFft: the FFT method of CirCNN. Built once per matrix: FFTW
//     plans (real-to-complex, batched over blocks) and the spectra of every
//     w_IJ, stored split-complex as [I][f][J] so the per-frequency sums over
//     J are unit-stride SIMD dot products. A product then costs nb forward
//     FFTs of size p, mb·nb·(p/2+1) complex multiply-adds and mb inverse FFTs.
//   * direct: p² MACs per block, no FFT (wins for small p).
//   * exact int16 (direct, int64 accumulators) for the fixed-point path.
//   * CirculantChannelDft (below): the channel-frequency form, one GEMM per
//     frequency over many columns (a conv's positions, a batch's samples).
// Layouts follow kernels/permdiag.h (vectors; batched X feature-major).
// Every product of the first three reads the dispatch context (dispatch.h):
// on the reference path (or with its reference row forced) it runs
// ref::CirculantMatVec / ref::CirculantMatVecT on the matrix instead;
// table.h names the rows (circulant.fft for p >= 2, circulant.direct,
// circulant.matvec_t.fft). CirculantChannelDft is not a row: its callers
// take the FFT products on the reference path.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "permdnn/formats/circulant_matrix.h"

namespace permdnn::kernels {

class CirculantFft {
 public:
  // Keeps w (for the reference path) next to its spectra.
  explicit CirculantFft(BlockCirculantMatrix w);
  ~CirculantFft();
  CirculantFft(CirculantFft&&) noexcept;
  CirculantFft& operator=(CirculantFft&&) noexcept;

  // y = W·x + bias (bias may be empty).
  void MatVec(std::span<const float> x, std::span<const float> bias, std::span<float> y, int threads = 1) const;
  // x = Wᵀ·g.
  void MatVecT(std::span<const float> g, std::span<float> x, int threads = 1) const;
  // Y = W·X + bias, X feature-major (cols × batch). From kDftBatch samples
  // on (and p = 2..64) the channel-DFT form below with the batch as the
  // GEMMs' columns (CirculantChannelDft, made at the first such call;
  // threads split the samples), else one MatVec per sample.
  void MatMul(std::span<const float> x, int64_t batch, std::span<const float> bias, std::span<float> y,
              int threads = 1) const;
  static constexpr int64_t kDftBatch = 16;
  // Whether MatMul at this batch runs the channel-DFT form (not on the
  // reference path); its name in profiles and benchmarks then.
  static bool MatMulUsesDft(int p, int64_t batch);
  static constexpr const char* kDftMatMulName = "circulant.matmul.channel-dft";

  int64_t rows() const;
  int64_t cols() const;
  const BlockCirculantMatrix& matrix() const;
  // Bytes of the precomputed spectra (what a deployed FFT engine keeps).
  int64_t spectrum_bytes() const;

 private:
  struct State;
  std::unique_ptr<State> s_;
};

// The convolution form of a block-circulant layer in the channel-frequency
// domain (the conv of a CirCNN layer: every kernel tap's matrix over the
// channels is block-circulant, circulant.h's p × p blocks). A circulant
// block is diagonal in the DFT basis of its p channels, so after a real DFT
// of every block of p input channels (Forward), the layer splits into one
// independent convolution per frequency f = 0..p/2 over (out/p) × (in/p)
// channels: real for f = 0 and f = p/2, complex (as a real 2 × 2 block
// [[re, −im], [im, re]] per block pair) otherwise. Those are dense GEMMs on
// the im2col columns of the transformed input, one per frequency (Products,
// sgemm); an inverse real DFT of every block of p outputs adds the bias
// (Inverse). Multiply-adds per output position: about (2/p)·out·in·taps
// against out·in·taps for the dense conv (p = 4: 0.375x with the real
// frequencies' halves; p = 8: 0.22x), plus p per input and output channel
// for the transforms, against one FFT matrix-vector product per output
// position on the im2col path (CirculantFft on a [out, taps·in] matrix).
//
// Rows: Forward writes the transformed channels frequency by frequency
// (frequency f's block b, component c at row off(f)·nb + b·s(f) + c, s(f) =
// 1 for a real frequency and 2 for a complex one), so one frequency's rows
// of the im2col columns (row = channel·taps + tap, runtime Im2Col) are
// contiguous; Products writes u in the same order over the output blocks.
class CirculantChannelDft {
 public:
  // lifted: the layer's [out, taps·nb·p] matrix, taps side by side (tap t's
  // matrix over the channels in columns t·nb·p + channel; formats::Lift),
  // or with taps = 1 any block-circulant matrix (a linear layer: the
  // channels are its columns, the output channels its rows). Throws Error
  // when several taps' columns are not taps·nb·p, or p > 64.
  CirculantChannelDft(const BlockCirculantMatrix& lifted, int64_t taps);

  int p() const { return p_; }
  int64_t in_rows() const { return nb_ * p_; }   // rows of Forward's output
  int64_t out_rows() const { return mb_ * p_; }  // rows of Products' output
  // The multiply-adds per output position of Products (the GEMMs).
  int64_t product_macs() const;

  // t[in_rows][n] = the DFT of every block of p channels of x[in][n]
  // (channels in..in_rows−1 read as 0); row strides ldx, ldt.
  void Forward(const float* x, int64_t ldx, int64_t in, float* t, int64_t ldt, int64_t n) const;
  // u[out_rows][n] = per frequency, its GEMM on cols[in_rows·taps][n].
  void Products(const float* cols, int64_t ldc, float* u, int64_t ldu, int64_t n) const;
  // y[out][n] = scale ⊙ (the inverse DFT of u's blocks, first `out` rows)
  // + bias, per output channel (either may be null: 1, 0); the scale is a
  // folded BatchNormalization's.
  void Inverse(const float* u, int64_t ldu, const float* scale, const float* bias, float* y, int64_t ldy, int64_t out,
               int64_t n) const;

 private:
  struct Freq {
    int f = 0, s = 1;         // frequency, components (1 real, 2 complex)
    int64_t off = 0;          // components before it (rows off·nb in t, off·mb in u)
    std::vector<float> w;     // [s·mb][s·nb·taps]
  };
  int p_ = 1;
  int64_t mb_ = 0, nb_ = 0, taps_ = 1;
  std::vector<Freq> freqs_;
  std::vector<float> fwd_, inv_;  // [p][p]: component slot k <- channel d; channel c <- slot k
  std::vector<int> slot_freq_, slot_comp_;  // slot k: index into freqs_, component
};

// Direct products (p² MACs per block).
void CirculantMatVecDirect(const BlockCirculantMatrix& w, std::span<const float> x, std::span<const float> bias,
                           std::span<float> y);
// Exact fixed point: acc[r] = Σ q·x in int64 (q: int16 values of the matrix
// in its canonical layout, quantized by the caller).
void CirculantMatVecI16Acc(const CirculantView<int16_t>& w, std::span<const int16_t> x, std::span<int64_t> acc);

namespace ref {
void CirculantMatVec(const CirculantView<float>& w, const float* x, const float* bias, float* y);
void CirculantMatVecT(const CirculantView<float>& w, const float* g, float* x);
}  // namespace ref

}  // namespace permdnn::kernels
