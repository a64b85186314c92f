// Products with a block-circulant (CirCNN) matrix.
//
// Three ways, all checked against the dense reconstruction in the tests:
//   * CirculantFft: the FFT method of CirCNN. Built once per matrix: FFTW
//     plans (real-to-complex, batched over blocks) and the spectra of every
//     w_IJ, stored split-complex as [I][f][J] so the per-frequency sums over
//     J are unit-stride SIMD dot products. A product then costs nb forward
//     FFTs of size p, mb·nb·(p/2+1) complex multiply-adds and mb inverse FFTs.
//   * direct: p² MACs per block, no FFT (wins for small p).
//   * exact int16 (direct, int64 accumulators) for the fixed-point path.
// Layouts follow kernels/permdiag.h (vectors; batched X feature-major).
// Every product reads the dispatch context (dispatch.h): on the reference
// path (or with its reference row forced) it runs ref::CirculantMatVec /
// ref::CirculantMatVecT on the matrix instead; table.h names the rows
// (circulant.fft for p >= 2, circulant.direct, circulant.matvec_t.fft).
#pragma once

#include <cstdint>
#include <memory>
#include <span>

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
  // Y = W·X + bias, X feature-major (cols × batch).
  void MatMul(std::span<const float> x, int64_t batch, std::span<const float> bias, std::span<float> y,
              int threads = 1) const;

  int64_t rows() const;
  int64_t cols() const;
  const BlockCirculantMatrix& matrix() const;
  // Bytes of the precomputed spectra (what a deployed FFT engine keeps).
  int64_t spectrum_bytes() const;

 private:
  struct State;
  std::unique_ptr<State> s_;
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
