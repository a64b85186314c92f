// The CirCNN model (see engines.h): FFT -> spectral complex MAC -> IFFT with
// the PermDNN multiplier budget.
#include <algorithm>
#include <cmath>

#include <fmt/format.h>

#include "permdnn/core/error.h"
#include "permdnn/sim/engines.h"

namespace permdnn::sim {

using Kind = ParamDef::Kind;

std::vector<ParamDef> CirCnnParamDefs() {
  return {
      {"num_pe", Kind::kInt, 32, "", 1, 4096, {}, "PEs: the PermDNN engine's, for the same multiplier budget"},
      {"mults_per_pe", Kind::kInt, 8, "", 4, 1024, {}, "real multipliers per PE, grouped 4 per complex multiplier "
                                                       "(butterfly unit); must be a multiple of 4"},
      {"bits", Kind::kInt, 16, "", 2, 32, {}, "fixed-point width of weights, activations and spectra"},
      {"acc_bits", Kind::kInt, 32, "", 8, 64, {}, "spectral accumulator width (per real/imaginary part)"},
      {"pipeline_depth", Kind::kInt, 4, "", 1, 1024, {}, "pipeline fill per phase (FFT, MAC, IFFT)"},
      {"frequency_mhz", Kind::kReal, 1200, "", 1e-3, 1e5, {}, "clock: the PermDNN engine's"},
      {"node_nm", Kind::kReal, 28, "", 1, 1000, {}, "technology node"},
      {"block_size", Kind::kString, 0, "same", 0, 0, {"same", "pow2"},
       "same: circulant blocks of PermDNN's p, FFT cost counted as (L/2)log2(L) complex multiplies for any L "
       "(optimistic for non-powers of two); pow2: the power of two nearest to p"},
      {"weight_sram_kb", Kind::kReal, 128, "", 1e-3, 1e9, {}, "weight-spectrum SRAM per PE (PermDNN's budget)"},
      {"act_buffer_kb", Kind::kReal, 64, "", 1e-3, 1e9, {}, "input/spectrum buffer (PermDNN's)"},
  };
}

CirCnnEngine::CirCnnEngine(const nlohmann::json& section, const TechTable& tech)
    : spec_(ParamSpec::Parse("circnn", CirCnnParamDefs(), section)), tech_(tech) {
  p_.num_pe = static_cast<int>(spec_.Int("num_pe"));
  p_.mults_per_pe = static_cast<int>(spec_.Int("mults_per_pe"));
  p_.bits = static_cast<int>(spec_.Int("bits"));
  p_.acc_bits = static_cast<int>(spec_.Int("acc_bits"));
  p_.pipeline_depth = static_cast<int>(spec_.Int("pipeline_depth"));
  p_.frequency_mhz = spec_.Number("frequency_mhz");
  p_.node_nm = spec_.Number("node_nm");
  p_.block_size = spec_.String("block_size");
  p_.weight_sram_kb = spec_.Number("weight_sram_kb");
  p_.act_buffer_kb = spec_.Number("act_buffer_kb");
  PERMDNN_CHECK(p_.mults_per_pe % 4 == 0,
                "config circnn.mults_per_pe: {} is not a multiple of 4 (4 real multipliers per complex multiplier)",
                p_.mults_per_pe);
}

int CirCnnEngine::BlockSize(int p) const {
  if (p_.block_size == "same" || p <= 1) return p;
  int lo = 1;
  while (lo * 2 <= p) lo *= 2;
  const int hi = lo == p ? p : lo * 2;
  return std::log(static_cast<double>(p) / lo) <= std::log(static_cast<double>(hi) / p) ? lo : hi;
}

int64_t CirCnnEngine::RealFftComplexMults(int length) {
  if (length <= 1) return 0;
  // Complex radix-2 count (L/2)·log2 L, halved for a real input (two real
  // blocks packed into one complex FFT).
  const double complex_mults = 0.5 * length * std::log2(static_cast<double>(length));
  return static_cast<int64_t>(std::ceil(complex_mults / 2.0));
}

double CirCnnEngine::DatapathUm2() const {
  // A complex MAC is 4 multiplies and 4 adds; a butterfly adds 4 more adds
  // per complex multiply: 2 adders per real multiplier.
  return p_.mults_per_pe * (tech_.MultArea(p_.bits, p_.node_nm) + 2 * tech_.AddArea(p_.acc_bits, p_.node_nm));
}

AreaBreakdown CirCnnEngine::Area() const {
  const double N = p_.num_pe, U = p_.mults_per_pe / 4.0, nm = p_.node_nm;
  AreaBreakdown a;
  a.datapath = N * DatapathUm2();
  a.weight_mem = N * U * tech_.SramArea(p_.weight_sram_kb * 1024.0 / U, nm);
  // Spectral accumulators: the PermDNN engine's 512 entries, complex.
  a.accumulate = N * tech_.SramArea(512.0 * 2 * p_.acc_bits / 8.0, nm);
  // Input buffer (ping-pong) and the input spectrum buffer.
  a.act_mem = 3 * tech_.SramArea(p_.act_buffer_kb * 1024.0, nm);
  const double cells = a.total();
  a.other = cells * tech_.FillerFraction() / (1.0 - tech_.FillerFraction());
  for (double* v : {&a.datapath, &a.weight_mem, &a.index_mem, &a.act_mem, &a.accumulate, &a.other}) *v *= 1e-6;
  return a;
}

LayerResult CirCnnEngine::Run(const LayerWorkload& w, TraceSink* trace) const {
  const int L = BlockSize(w.p);
  const int N = p_.num_pe;
  const int64_t U = p_.mults_per_pe / 4;
  const int64_t m = w.m(), n = w.n();
  const int64_t rb = CeilDiv(m, L), cb = CeilDiv(n, L);
  // Input blocks with at least one nonzero (an all-zero block's spectrum is
  // zero and is skipped; single zeros cannot be).
  int64_t live_blocks = 0;
  {
    int64_t last = -1;
    for (int32_t j : w.nonzero_cols) {
      if (j / L != last) ++live_blocks;
      last = j / L;
    }
  }
  const int64_t bins = L / 2 + 1;  // Hermitian half spectrum
  const int64_t fft = RealFftComplexMults(L);
  std::vector<int64_t> owned(N);
  for (int e = 0; e < N; ++e) owned[e] = rb / N + (e < rb % N ? 1 : 0);
  const int64_t max_owned = *std::max_element(owned.begin(), owned.end());

  // Static schedule, phase by phase; every PE runs its share, the slowest
  // sets the phase length, and phases are separated by a pipeline drain.
  const int64_t fft_per_pe = CeilDiv(live_blocks, N);
  const int64_t phase_fft = CeilDiv(fft_per_pe * fft, U);
  const int64_t phase_mac = CeilDiv(max_owned * live_blocks * bins, U);
  const int64_t phase_ifft = CeilDiv(max_owned * fft, U);
  const int64_t cycles = phase_fft + phase_mac + phase_ifft + 3 * p_.pipeline_depth;
  if (trace) {
    trace->Line(name(), w.spec.name, phase_fft, fmt::format("phase=fft blocks={} cmults_each={}", live_blocks, fft));
    trace->Line(name(), w.spec.name, phase_fft + phase_mac, fmt::format("phase=spectral_mac bins={}", bins));
    trace->Line(name(), w.spec.name, cycles, "phase=ifft done");
  }

  const int64_t fft_cmults = live_blocks * fft + rb * fft;
  const int64_t spectral_cmacs = rb * live_blocks * bins;
  LayerResult r;
  r.arch = name();
  r.layer = w.spec.name;
  r.m = m;
  r.n = n;
  r.p = L;
  r.weight_density = 1.0 / L;
  r.act_density = w.act_density();
  r.num_pe = N;
  r.mults_per_pe = p_.mults_per_pe;
  r.frequency_mhz = p_.frequency_mhz;
  r.node_nm = p_.node_nm;
  r.cycles = cycles;
  r.useful_macs = 4 * (fft_cmults + spectral_cmacs);  // real multiplies of the algorithm
  r.issued_macs = r.useful_macs;
  std::vector<int64_t> work(N);
  for (int e = 0; e < N; ++e)
    work[e] = owned[e] * (live_blocks * bins + fft) + (live_blocks / N + (e < live_blocks % N ? 1 : 0)) * fft;
  double mean = 0;
  for (int64_t v : work) mean += static_cast<double>(v) / N;
  r.load_imbalance = mean > 0 ? static_cast<double>(*std::max_element(work.begin(), work.end())) / mean : 1.0;

  const double nm = p_.node_nm;
  const int b = p_.bits;
  EnergyBreakdown& E = r.energy;
  const double cmult = 4 * tech_.MultEnergy(b, nm) + 2 * tech_.AddEnergy(p_.acc_bits, nm);
  E.mac = fft_cmults * (cmult + 4 * tech_.AddEnergy(p_.acc_bits, nm)) +           // butterflies
          spectral_cmacs * (cmult + 2 * tech_.AddEnergy(p_.acc_bits, nm));         // complex accumulate
  E.weight_mem = spectral_cmacs * tech_.SramEnergy(p_.weight_sram_kb * 1024.0 / U, 2 * b, nm);
  E.index_mem = fft_cmults * tech_.RegfileReadEnergy(2 * b, nm);  // twiddle factors
  const double act_bytes = p_.act_buffer_kb * 1024.0;
  E.act_mem = n * tech_.ZeroTestEnergy(nm) + n * tech_.SramEnergy(act_bytes, b, nm) +
              static_cast<double>(N) * live_blocks * bins * tech_.SramEnergy(act_bytes, 2 * b, nm) +
              m * tech_.SramEnergy(act_bytes, b, nm);
  E.accumulate = spectral_cmacs * tech_.RegfileRmwEnergy(2 * p_.acc_bits, nm);
  E.clock = static_cast<double>(cycles) * N * tech_.ClockEnergyPerPeCycle(DatapathUm2(), nm);
  r.area = Area();

  r.weight_bytes = rb * cb * (2 * bins) * b / 8;  // stored spectra
  r.weight_capacity_bytes = static_cast<int64_t>(p_.weight_sram_kb * 1024.0) * N;
  const int64_t per_pe = max_owned * cb * (2 * bins) * b / 8;
  r.weights_fit = per_pe <= static_cast<int64_t>(p_.weight_sram_kb * 1024.0);
  if (!r.weights_fit)
    r.capacity_note = fmt::format("weight spectra need {:.0f} KB on the busiest PE, weight_sram_kb = {:.0f}",
                                  per_pe / 1024.0, p_.weight_sram_kb);
  r.counters = {{"block_size", L},          {"live_input_blocks", live_blocks}, {"fft_complex_mults", fft_cmults},
                {"spectral_cmacs", spectral_cmacs}, {"phase_fft_cycles", phase_fft}, {"phase_mac_cycles", phase_mac},
                {"phase_ifft_cycles", phase_ifft}};
  r.Finish();
  return r;
}

}  // namespace permdnn::sim
