// Elementwise activations of the recurrent cells (the sigmoid and tanh of
// the LSTM / GRU / RNN gates), Highway-dispatched like the products. At the
// small hidden sizes of a recurrent step at batch 1 the gate activations
// cost as much as a compressed product (an LSTM step at H = 600 runs
// 2400 sigmoid / tanh against 180 k multiply-adds of a p = 8 product), so
// they are vectorized rather than left to libm's scalar tanh / exp.
//
// Accuracy: Highway's contrib/math Exp and Tanh (a few ulp); sigmoid is
// 1 / (1 + exp(−x)) with exp's input clamped so that it never overflows.
// The reference path (KernelPath::kReference, `--reference-kernels`) runs
// the plain libm loops (the oracle of the tests).
#pragma once

#include <cstdint>

namespace permdnn::kernels {

// x[i] = 1 / (1 + e^{−x[i]}), in place.
void SigmoidInPlace(float* x, int64_t n);
// x[i] = tanh(x[i]), in place.
void TanhInPlace(float* x, int64_t n);
// The libm loops (the oracles).
void SigmoidInPlaceReference(float* x, int64_t n);
void TanhInPlaceReference(float* x, int64_t n);

}  // namespace permdnn::kernels
