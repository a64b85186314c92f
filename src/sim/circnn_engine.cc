// The CirCNN model (see engines.h): FFT -> spectral complex MAC -> IFFT with
// the PermDNN multiplier budget.
#include <algorithm>
#include <cmath>

#include <fmt/format.h>

#include "permdnn/core/error.h"
#include "permdnn/sim/engines.h"

namespace permdnn::sim {

const ParamTable<CirCnnParams>& CirCnnParamTable() {
  using P = CirCnnParams;
  static const auto t =
      ParamTable<P>()
          .Int("num_pe", &P::num_pe, 32, 1, 4096, "PEs: the PermDNN engine's, for the same multiplier budget")
          .Int("mults_per_pe", &P::mults_per_pe, 8, 4, 1024,
               "real multipliers per PE, grouped 4 per complex multiplier (butterfly unit); must be a multiple of 4")
          .Int("bits", &P::bits, 16, 2, 32, "fixed-point width of weights, activations and spectra")
          .Int("acc_bits", &P::acc_bits, 32, 8, 64, "spectral accumulator width (per real/imaginary part)")
          .Int("pipeline_depth", &P::pipeline_depth, 4, 1, 1024, "pipeline fill per phase (FFT, MAC, IFFT)")
          .Real("frequency_mhz", &P::frequency_mhz, 1200, 1e-3, 1e5, "clock: the PermDNN engine's")
          .Real("node_nm", &P::node_nm, 28, 1, 1000, "technology node")
          .Choice("block_size", &P::block_size, "pow2", {"pow2", "same"},
                  "pow2: circulant blocks of the power of two nearest to PermDNN's p (CirCNN's FFTs are radix-2, "
                  "its block sizes powers of two); same: PermDNN's p, FFT cost counted as (L/2)log2(L) complex "
                  "multiplies for any L (optimistic for non-powers of two)")
          .Int("acc_entries", &P::acc_entries, 288, 1, 1 << 24,
               "complex spectral accumulators per PE (registers, like PermDNN's 288): owned row blocks x (L/2 + 1) "
               "bins, at most 35 x 5 = 175 on the EIE layers (NT-Wd)")
          .Real("weight_sram_kb", &P::weight_sram_kb, 128, 1e-3, 1e9,
                "weight-spectrum SRAM per PE (PermDNN's budget)")
          .Real("act_buffer_kb", &P::act_buffer_kb, 64, 1e-3, 1e9, "input/spectrum buffer (PermDNN's)");
  return t;
}

std::vector<ParamDef> CirCnnParamDefs() { return CirCnnParamTable().defs(); }

CirCnnEngine::CirCnnEngine(const nlohmann::json& section, const TechTable& tech)
    : p_(CirCnnParamTable().Parse("circnn", section, &spec_)), tech_(tech) {
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
  a.datapath = N * (DatapathUm2() + tech_.ControlLogicArea(nm));
  a.weight_mem = N * U * tech_.SramArea(p_.weight_sram_kb * 1024.0 / U, nm);
  // Complex spectral accumulators in registers.
  a.accumulate = N * tech_.RegisterBankArea(static_cast<double>(p_.acc_entries), 2 * p_.acc_bits, 1, nm);
  // Input buffer (ping-pong) and the input spectrum buffer.
  a.act_mem = 3 * tech_.SramArea(p_.act_buffer_kb * 1024.0, nm);
  const double cells = a.total();
  a.other = cells * tech_.FillerFraction() / (1.0 - tech_.FillerFraction());
  for (double* v : {&a.datapath, &a.weight_mem, &a.index_mem, &a.act_mem, &a.accumulate, &a.other}) *v *= 1e-6;
  return a;
}

// Phases (the schedule is static: work depends only on which input blocks
// are all zero): 0. map row blocks onto PEs (I ≡ e mod N); 1. detect the
// live input blocks and broadcast their spectra, computed by a real FFT
// spread over the PEs; 2. PE work: complex MACs on the half spectrum for
// the owned row blocks; 3. inverse FFT of every owned output block; each
// phase ends with a pipeline drain; then the energy accounting.
LayerResult CirCnnEngine::Run(const LayerWorkload& w, TraceSink* trace) const {
  const int L = BlockSize(w.p);
  const int N = p_.num_pe;
  const int64_t U = p_.mults_per_pe / 4;
  const int64_t m = w.m(), n = w.n();
  const int64_t rb = CeilDiv(m, L), cb = CeilDiv(n, L);
  // 0. Mapping.
  std::vector<int64_t> owned(N);
  for (int e = 0; e < N; ++e) owned[e] = rb / N + (e < rb % N ? 1 : 0);
  const int64_t max_owned = *std::max_element(owned.begin(), owned.end());
  // 1. Detect: input blocks with at least one nonzero (an all-zero block's
  // spectrum is zero and is skipped; single zeros cannot be).
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
  // Every PE runs its share of each phase; the slowest sets its length.
  const int64_t phase_fft = CeilDiv(CeilDiv(live_blocks, N) * fft, U) + p_.pipeline_depth;
  // 2. PE work.
  const int64_t phase_mac = CeilDiv(max_owned * live_blocks * bins, U) + p_.pipeline_depth;
  // 3. Inverse FFT (the drain of the outputs).
  const int64_t phase_ifft = CeilDiv(max_owned * fft, U) + p_.pipeline_depth;
  const int64_t cycles = phase_fft + phase_mac + phase_ifft;
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

  r.weight_bytes = rb * cb * (2 * bins) * p_.bits / 8;  // stored spectra
  r.weight_capacity_bytes = static_cast<int64_t>(p_.weight_sram_kb * 1024.0) * N;
  const int64_t per_pe = max_owned * cb * (2 * bins) * p_.bits / 8;
  r.weights_fit = per_pe <= static_cast<int64_t>(p_.weight_sram_kb * 1024.0);
  if (!r.weights_fit)
    r.capacity_note = fmt::format("weight spectra need {:.0f} KB on the busiest PE, weight_sram_kb = {:.0f}. ",
                                  per_pe / 1024.0, p_.weight_sram_kb);
  if (max_owned * bins > p_.acc_entries) {
    r.weights_fit = false;
    r.capacity_note += fmt::format("{} complex accumulators needed, acc_entries = {}", max_owned * bins,
                                   p_.acc_entries);
  }
  r.counters = {{"block_size", L},
                {"live_input_blocks", live_blocks},
                {"fft_complex_mults", fft_cmults},
                {"spectral_cmacs", spectral_cmacs},
                {"spectrum_words", live_blocks * bins},
                {"input_reads", n},
                {"zero_tests", n},
                {"output_writes", m},
                {"phase_fft_cycles", phase_fft},
                {"phase_mac_cycles", phase_mac},
                {"phase_ifft_cycles", phase_ifft}};
  Account(r);  // 4. energy accounting
  return r;
}

void CirCnnEngine::Account(LayerResult& r) const {
  const double nm = p_.node_nm;
  const int N = p_.num_pe, b = p_.bits;
  const double U = p_.mults_per_pe / 4.0;
  auto count = [&](const char* key) { return static_cast<double>(r.counters.at(key)); };
  const double fft_cmults = count("fft_complex_mults"), cmacs = count("spectral_cmacs");
  const double act_bytes = p_.act_buffer_kb * 1024.0;
  r.area = Area();
  EnergyBreakdown& E = r.energy;
  E = {};
  const double cmult = 4 * tech_.MultEnergy(b, nm) + 2 * tech_.AddEnergy(p_.acc_bits, nm);
  E.mac = fft_cmults * (cmult + 4 * tech_.AddEnergy(p_.acc_bits, nm)) +  // butterflies
          cmacs * (cmult + 2 * tech_.AddEnergy(p_.acc_bits, nm));         // complex accumulate
  E.weight_mem = cmacs * tech_.SramEnergy(p_.weight_sram_kb * 1024.0 / U, 2 * b, nm);
  E.index_mem = fft_cmults * tech_.RegfileReadEnergy(2 * b, nm);  // twiddle factors
  // Inputs read and zero-tested once, spectra written to and read from the
  // spectrum buffer once each (the broadcast carries them to every PE),
  // outputs written.
  E.act_mem = count("zero_tests") * tech_.ZeroTestEnergy(nm) +
              count("input_reads") * tech_.SramEnergy(act_bytes, b, nm) +
              2 * count("spectrum_words") * tech_.SramEnergy(act_bytes, 2 * b, nm) +
              count("output_writes") * tech_.SramEnergy(act_bytes, b, nm);
  // Complex accumulator registers: read and written per complex MAC.
  E.accumulate = cmacs * 2 * (2 * p_.acc_bits) * tech_.RegisterBitEnergy(nm);
  E.network = tech_.BroadcastEnergy(count("spectrum_words") * 2 * b, r.area.total(), N, nm);
  const double logic_um2 = DatapathUm2() + tech_.ControlLogicArea(nm);
  E.clock = tech_.ClockEnergy(r.cycles, N, r.area.total(), logic_um2, nm);
  r.Finish();
}

}  // namespace permdnn::sim
