// Building simulator workloads (see workload.h).
#include "permdnn/sim/workload.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include "permdnn/core/error.h"
#include "permdnn/core/fixed_point.h"
#include "permdnn/core/random.h"

namespace permdnn::sim {

// Workload generators use SplitMix64 (core/random.h): the same offsets
// whether or not the values are materialized, so timing runs see the
// functional run's matrix.

int MatchBlockSize(double density) {
  PERMDNN_CHECK(density > 0 && density <= 1, "weight density must be in (0, 1] to match a block size, got {}",
                density);
  int best = 1;
  double best_err = std::fabs(1.0 - density);
  const int hi = static_cast<int>(std::ceil(1.0 / density)) + 1;
  for (int p = 2; p <= hi; ++p) {
    double err = std::fabs(1.0 / p - density);
    if (err <= best_err) {
      best_err = err;
      best = p;
    }
  }
  return best;
}

LayerWorkload BuildWorkload(const FcLayerSpec& spec, const WorkloadOptions& o) {
  const std::string& L = spec.name;
  PERMDNN_CHECK(spec.inputs >= 1 && spec.outputs >= 1, "layer {}: shape {}x{} must be at least 1x1", L,
                spec.outputs, spec.inputs);
  PERMDNN_CHECK(spec.weight_density > 0 && spec.weight_density <= 1,
                "layer {}: weight density must be in (0, 1], got {}", L, spec.weight_density);
  PERMDNN_CHECK(spec.act_density >= 0 && spec.act_density <= 1,
                "layer {}: activation density must be in [0, 1], got {}", L, spec.act_density);
  LayerWorkload w;
  w.spec = spec;
  w.seed = o.seed;
  w.p = o.p > 0 ? o.p : MatchBlockSize(spec.weight_density);
  PERMDNN_CHECK(o.p >= 0, "layer {}: p must be >= 1 (or 0 for matched), got {}", L, o.p);
  // The padded shape must hold at least one full p×p block in each
  // direction; a larger p would make every block mostly padding.
  PERMDNN_CHECK(w.p <= std::min(spec.inputs, spec.outputs),
                "layer {}: p = {} does not divide the padded shape {}x{} into p x p blocks (p must be <= {})", L,
                w.p, spec.outputs, spec.inputs, std::min(spec.inputs, spec.outputs));

  // Layer-specific seeds so that one layer's matrices do not depend on the
  // others in the list.
  uint64_t layer_seed = o.seed * 0x9E3779B97F4A7C15ull;
  for (char c : spec.name) layer_seed = (layer_seed ^ static_cast<unsigned char>(c)) * 0x100000001B3ull;
  layer_seed ^= static_cast<uint64_t>(spec.inputs) * 31 + static_cast<uint64_t>(spec.outputs);

  // Activations: exactly round(d·n) nonzeros, positive values.
  {
    std::mt19937_64 rng(layer_seed + 1);
    const int64_t n = spec.inputs;
    const int64_t nz = std::llround(spec.act_density * static_cast<double>(n));
    std::vector<int32_t> cols(static_cast<std::size_t>(n));
    std::iota(cols.begin(), cols.end(), 0);
    for (int64_t i = 0; i < nz; ++i) {
      std::uniform_int_distribution<int64_t> pick(i, n - 1);
      std::swap(cols[i], cols[pick(rng)]);
    }
    cols.resize(static_cast<std::size_t>(nz));
    std::sort(cols.begin(), cols.end());
    std::normal_distribution<float> value(0.0f, 1.0f);
    std::vector<float> xf(static_cast<std::size_t>(n), 0.0f);
    for (int32_t j : cols) {
      float v = std::fabs(value(rng));
      xf[j] = v > 1e-3f ? v : 1e-3f;
    }
    w.x_frac_bits = ChooseFracBits<int16_t>(MaxAbs(xf));
    w.x.resize(static_cast<std::size_t>(n));
    QuantizeSpan<int16_t>(xf, w.x_frac_bits, w.x);
    for (int32_t j : cols)
      if (w.x[j] != 0) w.nonzero_cols.push_back(j);
  }

  // PermDNN: offsets always, values when functional.
  if (o.functional) {
    // Seeded offsets, then He-uniform values (variance 2 / fan_in, fan_in =
    // nonzeros per row) drawn directly on the int16 grid of the frac_bits
    // that fixed_point.h's ChooseFracBits picks for the bound a: uniform
    // integers in [-Quantize(a), Quantize(a)]. Padding positions hold 0.
    PermDiagMatrixI16 q(spec.outputs, spec.inputs, w.p);
    SplitMix64 rng{layer_seed + 2};
    for (auto& k : q.offsets()) k = static_cast<uint16_t>(rng.Next() % static_cast<uint64_t>(w.p));
    const double a = std::sqrt(6.0 / static_cast<double>(q.col_blocks()));
    const int frac_bits = ChooseFracBits<int16_t>(a);
    const int64_t qmax = Quantize<int16_t>(static_cast<float>(a), frac_bits);
    for (auto& v : q.values())
      v = static_cast<int16_t>(static_cast<int64_t>(rng.Next() % static_cast<uint64_t>(2 * qmax + 1)) - qmax);
    for (int64_t I = 0; I < q.row_blocks(); ++I)
      for (int64_t J = 0; J < q.col_blocks(); ++J) {
        if ((I + 1) * w.p <= spec.outputs && (J + 1) * w.p <= spec.inputs) continue;
        int16_t* b = q.block(I, J);
        for (int c = 0; c < w.p; ++c)
          if (I * w.p + c >= spec.outputs || J * w.p + (c + q.offset(I, J)) % w.p >= spec.inputs) b[c] = 0;
      }
    q.set_frac_bits(frac_bits);
    q.Validate();
    w.weights = std::move(q);
    w.row_blocks = w.weights->row_blocks();
    w.col_blocks = w.weights->col_blocks();
    w.offsets.assign(w.weights->offsets().begin(), w.weights->offsets().end());
    // Output in the input's format: y = acc · 2^-(fw + fx) brought to 2^-fx.
    w.output_shift = w.weights->frac_bits();
  } else {
    w.row_blocks = CeilDiv(spec.outputs, w.p);
    w.col_blocks = CeilDiv(spec.inputs, w.p);
    SplitMix64 rng{layer_seed + 2};
    w.offsets.resize(static_cast<std::size_t>(w.row_blocks * w.col_blocks));
    for (auto& k : w.offsets) k = static_cast<uint16_t>(rng.Next() % static_cast<uint64_t>(w.p));
  }

  if (o.build_csc) w.csc = CscMatrix::Random(spec.outputs, spec.inputs, spec.weight_density, layer_seed + 3);
  return w;
}

}  // namespace permdnn::sim
