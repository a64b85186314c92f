// Permuted-diagonal convolution vs oneDNN's dense convolution on resnet18's
// layer shapes and mobilenet_v2's pointwise ones (issue 14: "GF/s per
// stored weight at least 70% of the dense convolution's"; the last lines
// count the 3x3 and the 1x1 rows that meet it). Both on the same
// channel-blocked layout (nC16c on AVX-512, nC8c on AVX2), activations in
// huge-page buffers, one thread, thread CPU time, median of repeated
// runs after a warm-up. Rates count multiply-adds actually stored: dense
// out·in·kh·kw per output position, permdiag that / p. oneDNN runs its
// direct algorithm (the same multiply-adds as the definition); its Winograd
// time for 3x3 stride-1 layers is shown too (fewer multiplies, so its
// "rate" counts the direct convolution's multiply-adds).
//
// A layer with shared offsets (offsets=column, issue 15) is oneDNN's grouped
// convolution (groups = p) with a channel shuffle on each side, and the
// runtime runs it so where that measures faster (GroupedColumnConv in
// src/runtime/ops_permdiag.cc). The "grouped" columns time that: oneDNN's
// grouped convolution on the same blocked layout (its implementation
// named), plus one shuffle pass over the input and one over the output (the
// runtime's kernels::BlockedChannelGather); its rate counts the stored
// multiply-adds, as permdiag's.
//
//   permdnn_conv_bench [--batch 1,16] [--p 4,8,16] [--reps 9] [--rounds 3] [--only TEXT] [--simd-target T] [--json FILE]
//
// --rounds: dense and permdiag are timed in turn this many times (each a
// median of --reps runs after a warm-up); the table holds the medians over
// the rounds. --only: just the layers whose name contains TEXT (e.g. "s2").
// --simd-target: run permdiag on one compiled Highway target (e.g. AVX2 on
// an AVX-512 machine) and cap oneDNN at the same instruction set
// (runtime::RestrictSimdTarget; the header line names the ISA oneDNN then uses),
// so both sides use the same vectors. Block sizes p that do not divide the
// target's lanes are skipped (they would run the reference loops).
// --json: {"rows": [one object per table row], "issue": the rates below},
// written atomically (permdnn::WriteFileAtomic).
//
// "floor ms": an estimate of the least any convolution of the layer can
// take on this machine, one read of the input it uses and one write of its
// output (ActivationFloorMs), a median of as many rounds. Where
// 70% of the dense rate per stored weight (a time of dense / p / 0.7) is
// below it, no kernel can meet the target; a line counts those rows.
//
// Last lines: the counts at 70%, and this core's issue rates of FMAs,
// lane permutations and permutation + FMA pairs (ProbePermuteIssue,
// permdiag_conv.h), with the bound they put on a kernel that permutes
// once per FMA, as the padless 1x1 runs do, against the dense 1x1 rows.
#include <omp.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <dnnl.hpp>
#include <nlohmann/json.hpp>

#include "permdnn/core/aligned_buffer.h"
#include "permdnn/core/atomic_file.h"
#include "permdnn/core/error.h"
#include "permdnn/core/timing.h"
#include "permdnn/kernels/dispatch.h"
#include "permdnn/kernels/permdiag_conv.h"
#include "permdnn/kernels/stream.h"
#include "permdnn/kernels/table.h"
#include "permdnn/runtime/simd_target.h"

namespace {

using permdnn::kernels::PermDiagConvLanes;

struct Layer {
  const char* name;
  int c, o, hw, k, stride;
};
// resnet18's distinct convolution shapes after the stem (224x224 input),
// then mobilenet_v2's pointwise ones.
const Layer kLayers[] = {
    {"layer1 3x3", 64, 64, 56, 3, 1},      {"layer2.0 3x3 s2", 64, 128, 56, 3, 2}, {"layer2 3x3", 128, 128, 28, 3, 1},
    {"layer3.0 3x3 s2", 128, 256, 28, 3, 2}, {"layer3 3x3", 256, 256, 14, 3, 1}, {"layer4.0 3x3 s2", 256, 512, 14, 3, 2},
    {"layer4 3x3", 512, 512, 7, 3, 1},      {"layer4.0 down 1x1 s2", 256, 512, 14, 1, 2},
    // mobilenet_v2's pointwise (1x1 stride 1) shapes, expand and project, by
    // stage: most of its multiply-adds.
    {"mbv2 1x1 16>96 @112", 16, 96, 112, 1, 1},  {"mbv2 1x1 144>24 @56", 144, 24, 56, 1, 1},
    {"mbv2 1x1 32>192 @28", 32, 192, 28, 1, 1},  {"mbv2 1x1 384>64 @14", 384, 64, 14, 1, 1},
    {"mbv2 1x1 96>576 @14", 96, 576, 14, 1, 1},  {"mbv2 1x1 960>160 @7", 960, 160, 7, 1, 1},
    {"mbv2 1x1 320>1280 @7", 320, 1280, 7, 1, 1},
};

std::vector<float> Random(std::size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<float> v(n);
  for (float& x : v) x = nd(rng);
  return v;
}

// oneDNN dense convolution in nC{L}c with ReLU, weights reordered before timing.
double DenseMs(const Layer& l, int n, int lanes, bool winograd, int reps, bool* available) {
  using namespace dnnl;
  using tag = memory::format_tag;
  static engine eng(engine::kind::cpu, 0);
  stream st(eng);
  const int pad = l.k / 2, oh = (l.hw + 2 * pad - l.k) / l.stride + 1;
  const tag act = lanes == 16 ? tag::nChw16c : tag::nChw8c;
  memory::desc src({n, l.c, l.hw, l.hw}, memory::data_type::f32, act), dst({n, l.o, oh, oh}, memory::data_type::f32, act),
      wd({l.o, l.c, l.k, l.k}, memory::data_type::f32, tag::any), bd({l.o}, memory::data_type::f32, tag::a);
  post_ops po;
  po.append_eltwise(1.f, algorithm::eltwise_relu, 0.f, 0.f);
  primitive_attr attr;
  attr.set_post_ops(po);
  try {
    convolution_forward::desc d(prop_kind::forward_inference,
                                winograd ? algorithm::convolution_winograd : algorithm::convolution_direct, src, wd, bd,
                                dst, {l.stride, l.stride}, {pad, pad}, {pad, pad});
    convolution_forward::primitive_desc pd(d, attr, eng);
    // Activations in huge-page buffers, as permdiag's (PermDiagMs).
    permdnn::AlignedBuffer<float> sbuf(src.get_size() / sizeof(float)), dbuf(dst.get_size() / sizeof(float));
    memory sm(src, eng, sbuf.data()), wm(pd.weights_desc(), eng), bm(bd, eng), dm(dst, eng, dbuf.data());
    std::vector<float> w = Random(static_cast<std::size_t>(l.o) * l.c * l.k * l.k, 2);
    memory wp({{l.o, l.c, l.k, l.k}, memory::data_type::f32, tag::oihw}, eng, w.data());
    reorder(wp, wm).execute(st, wp, wm);
    std::vector<float> x = Random(static_cast<std::size_t>(n) * l.c * l.hw * l.hw, 1);
    std::memcpy(sm.get_data_handle(), x.data(), x.size() * sizeof(float));
    st.wait();
    convolution_forward conv(pd);
    *available = true;
    return permdnn::ThreadCpuMedianMs(
        [&] {
          conv.execute(st, {{DNNL_ARG_SRC, sm}, {DNNL_ARG_WEIGHTS, wm}, {DNNL_ARG_BIAS, bm}, {DNNL_ARG_DST, dm}});
          st.wait();
        },
        reps);
  } catch (const dnnl::error&) {
    *available = false;
    return 0;
  }
}

// Channel c of every sample of dst reads channel perm[c] of src, both in
// nC{lanes}c (c a multiple of lanes): the runtime's gather
// (kernels::BlockedChannelGather, what GroupedColumnConv runs around oneDNN).
void ShuffleChannels(const float* src, float* dst, int n, int c, int hw, int lanes, const std::vector<int>& perm) {
  std::vector<int32_t> from(static_cast<std::size_t>(c));
  for (int ch = 0; ch < c; ++ch) {
    const int s = perm[static_cast<std::size_t>(ch)];
    from[static_cast<std::size_t>(ch)] = s / lanes * hw * lanes + s % lanes;
  }
  const std::size_t per = static_cast<std::size_t>(c) * hw;
  for (int s = 0; s < n; ++s)
    permdnn::kernels::BlockedChannelGather(src + s * per, from.data(), c / lanes, hw, lanes, {}, dst + s * per);
}

// oneDNN grouped convolution (groups = p) in nC{L}c with ReLU; *shuffle_ms:
// the two channel shuffles around it. 0 and *impl = "" when oneDNN has no
// implementation but its reference one.
double GroupedMs(const Layer& l, int n, int p, int lanes, int reps, std::string* impl, double* shuffle_ms) {
  using namespace dnnl;
  using tag = memory::format_tag;
  static engine eng(engine::kind::cpu, 0);
  stream st(eng);
  *impl = "";
  *shuffle_ms = 0;
  if (l.c % p || l.o % p || l.c % lanes || l.o % lanes) return 0;
  const int pad = l.k / 2, oh = (l.hw + 2 * pad - l.k) / l.stride + 1;
  const tag act = lanes == 16 ? tag::nChw16c : tag::nChw8c;
  memory::desc src({n, l.c, l.hw, l.hw}, memory::data_type::f32, act), dst({n, l.o, oh, oh}, memory::data_type::f32, act),
      wd({p, l.o / p, l.c / p, l.k, l.k}, memory::data_type::f32, tag::any), bd({l.o}, memory::data_type::f32, tag::a);
  post_ops po;
  po.append_eltwise(1.f, algorithm::eltwise_relu, 0.f, 0.f);
  primitive_attr attr;
  attr.set_post_ops(po);
  try {
    convolution_forward::desc d(prop_kind::forward_inference, algorithm::convolution_direct, src, wd, bd, dst,
                                {l.stride, l.stride}, {pad, pad}, {pad, pad});
    convolution_forward::primitive_desc pd(d, attr, eng);
    const std::string name = pd.impl_info_str();
    if (name.find("ref") != std::string::npos) return 0;
    // Activations in huge-page buffers, as permdiag's (PermDiagMs).
    permdnn::AlignedBuffer<float> sbuf(src.get_size() / sizeof(float)), dbuf(dst.get_size() / sizeof(float));
    memory sm(src, eng, sbuf.data()), wm(pd.weights_desc(), eng), bm(bd, eng), dm(dst, eng, dbuf.data());
    std::vector<float> w = Random(static_cast<std::size_t>(l.o) * (l.c / p) * l.k * l.k, 2);
    memory wp({{p, l.o / p, l.c / p, l.k, l.k}, memory::data_type::f32, tag::goihw}, eng, w.data());
    reorder(wp, wm).execute(st, wp, wm);
    std::vector<float> x = Random(static_cast<std::size_t>(n) * l.c * l.hw * l.hw, 1);
    std::memcpy(sm.get_data_handle(), x.data(), x.size() * sizeof(float));
    st.wait();
    convolution_forward conv(pd);
    const double ms = permdnn::ThreadCpuMedianMs(
        [&] {
          conv.execute(st, {{DNNL_ARG_SRC, sm}, {DNNL_ARG_WEIGHTS, wm}, {DNNL_ARG_BIAS, bm}, {DNNL_ARG_DST, dm}});
          st.wait();
        },
        reps);
    // Input: group r takes one channel of every block of p (the residue
    // (d - k_J) mod p with k_J from random offsets); output: residue-major
    // back to natural order.
    std::mt19937 rng(5);
    std::vector<int> in_perm(static_cast<std::size_t>(l.c)), out_perm(static_cast<std::size_t>(l.o));
    const int in_per = l.c / p, out_per = l.o / p;
    for (int J = 0; J < in_per; ++J) {
      const int k = static_cast<int>(rng() % p);
      for (int d = 0; d < p; ++d) in_perm[static_cast<std::size_t>(((d - k + p) % p) * in_per + J)] = J * p + d;
    }
    for (int o = 0; o < l.o; ++o) out_perm[static_cast<std::size_t>(o)] = (o % p) * out_per + o / p;
    const int cbi = (l.c + lanes - 1) / lanes, cbo = (l.o + lanes - 1) / lanes;
    permdnn::AlignedBuffer<float> xs(static_cast<std::size_t>(n) * cbi * lanes * l.hw * l.hw),
        ys(static_cast<std::size_t>(n) * cbo * lanes * oh * oh);
    const float* xin = static_cast<const float*>(sm.get_data_handle());
    const float* yout = static_cast<const float*>(dm.get_data_handle());
    *shuffle_ms = permdnn::ThreadCpuMedianMs(
        [&] {
          ShuffleChannels(xin, xs.data(), n, l.c, l.hw * l.hw, lanes, in_perm);
          ShuffleChannels(yout, ys.data(), n, l.o, oh * oh, lanes, out_perm);
        },
        reps);
    *impl = name;
    return ms;
  } catch (const dnnl::error&) {
    return 0;
  }
}

// The permdiag kernel on the layer; shared: with offsets shared down each
// block column (the permdiag-column format: k_IJ = k_J, row block 0's).
double PermDiagMs(const Layer& l, int n, int p, int lanes, int reps, std::string* kernel, bool shared = false) {
  using namespace permdnn::kernels;
  const int pad = l.k / 2, oh = (l.hw + 2 * pad - l.k) / l.stride + 1, taps = l.k * l.k;
  const int64_t mb = (l.o + p - 1) / p, nb = (l.c + p - 1) / p;
  std::vector<float> values = Random(static_cast<std::size_t>(mb * nb * p * taps), 3);
  std::vector<uint16_t> offsets(static_cast<std::size_t>(mb * nb));
  std::mt19937 rng(4);
  for (auto& k : offsets) k = static_cast<uint16_t>(rng() % p);
  if (shared)
    for (int64_t b = nb; b < mb * nb; ++b) offsets[b] = offsets[b % nb];
  const PermDiagConvPack w = PermDiagConvPack::Build(values, offsets, l.o, l.c, p, l.k, l.k, lanes);
  const PermDiagConvShape s{n, l.c, l.o, l.hw, l.hw, oh, oh, l.k, l.k, l.stride, l.stride, pad, pad};
  // In buffers that ask for huge pages from 2 MiB, as the runtime's arena
  // does (AlignedBuffer).
  const std::vector<float> xr = Random(static_cast<std::size_t>(n) * l.c * l.hw * l.hw, 1);
  permdnn::AlignedBuffer<float> x(xr.size()),
      y(static_cast<std::size_t>(n) * ((l.o + lanes - 1) / lanes) * lanes * oh * oh);
  std::copy(xr.begin(), xr.end(), x.data());
  PermDiagConvEpilogue e;
  e.lo = 0.0f;
  KernelProblem q{KernelOp::kPermDiagConv, p, l.o, l.c, n, false};
  q.kh = q.kw = l.k;
  q.stride = l.stride;
  q.shared = w.shared_index;
  *kernel = SelectedKernel(q);
  return permdnn::ThreadCpuMedianMs([&] { PermDiagConv2D(w, s, x.data(), e, y.data(), 1); }, reps);
}

// An estimate of a layer's activation floor: one read of the input values
// it uses (kernels::StreamSum, the read bound of `permdnn bench`) and one
// write of its output (kernels::StreamFill, full-width stores), in buffers
// of the blocked layout's sizes (huge pages, as the kernels'). A
// convolution of that layer must read each input value it uses and store
// each output value, so it can hardly take less; a kernel that overlaps its
// loads and stores may come somewhat under the sum. A 1x1 layer at stride
// s uses one input position in s x s: its read is those positions only
// (as one contiguous buffer: the lines a strided kernel touches).
double ActivationFloorMs(const Layer& l, int n, int lanes, int reps) {
  const int pad = l.k / 2, oh = (l.hw + 2 * pad - l.k) / l.stride + 1;
  const int used_hw = l.k < l.stride ? oh : l.hw;  // input rows (and columns) the layer reads
  const std::size_t cpad_in = static_cast<std::size_t>((l.c + lanes - 1) / lanes) * lanes;
  const std::size_t cpad_out = static_cast<std::size_t>((l.o + lanes - 1) / lanes) * lanes;
  const std::vector<float> xr = Random(static_cast<std::size_t>(n) * cpad_in * used_hw * used_hw, 1);
  permdnn::AlignedBuffer<float> x(xr.size()), y(static_cast<std::size_t>(n) * cpad_out * oh * oh);
  std::copy(xr.begin(), xr.end(), x.data());
  volatile float sink = 0;
  return permdnn::ThreadCpuMedianMs(
      [&] {
        permdnn::kernels::StreamFill({y.data(), y.size()}, permdnn::kernels::StreamSum({x.data(), x.size()}));
        sink = sink + y.data()[y.size() - 1];
      },
      reps);
}

std::vector<int> Ints(const char* text) {
  std::vector<int> v;
  for (const char* p = text; *p;) {
    v.push_back(std::atoi(p));
    while (*p && *p != ',') ++p;
    if (*p) ++p;
  }
  return v;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<int> batches = {1, 16}, ps = {4, 8, 16};
  int reps = 9, rounds = 3;
  std::string json_path, only, target;
  for (int i = 1; i < argc; i += 2) {
    if (i + 1 >= argc)
      return std::fprintf(stderr, "%s: %s needs a value\n", argv[0], argv[i]), 2;
    if (!std::strcmp(argv[i], "--batch")) batches = Ints(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--p")) ps = Ints(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--reps")) reps = std::max(1, std::atoi(argv[i + 1]));
    else if (!std::strcmp(argv[i], "--rounds")) rounds = std::max(1, std::atoi(argv[i + 1]));
    else if (!std::strcmp(argv[i], "--json")) json_path = argv[i + 1];
    else if (!std::strcmp(argv[i], "--only")) only = argv[i + 1];
    else if (!std::strcmp(argv[i], "--simd-target")) target = argv[i + 1];
    else
      return std::fprintf(stderr, "usage: %s [--batch 1,16] [--p 4,8,16] [--reps 9] [--rounds 3] [--only TEXT] [--simd-target T] [--json FILE]\n",
                          argv[0]),
             2;
  }
  for (int p : ps)
    if (p <= 0) return std::fprintf(stderr, "%s: --p takes positive block sizes, got %d\n", argv[0], p), 2;
  for (int n : batches)
    if (n <= 0) return std::fprintf(stderr, "%s: --batch takes positive sizes, got %d\n", argv[0], n), 2;
  if (!target.empty()) {
    // Before oneDNN's first use (it fixes its ISA there).
    try {
      permdnn::runtime::RestrictSimdTarget(target);
    } catch (const permdnn::Error& e) {
      return std::fprintf(stderr, "--simd-target: %s\n", e.what()), 2;
    }
  }
  omp_set_num_threads(1);
  const int lanes = PermDiagConvLanes();
  std::printf(
      "one thread, thread CPU time, dense / permdiag: medians of %d rounds of %d runs, SIMD target %s (%d lanes), oneDNN %d.%d.%d (ISA %s)\n",
      rounds, reps, permdnn::kernels::ActiveSimdTarget().c_str(), lanes, dnnl_version()->major, dnnl_version()->minor,
      dnnl_version()->patch, permdnn::runtime::OneDnnIsa().c_str());
  std::printf("%-22s %5s %3s %11s %9s %11s %11s %9s %9s %9s %11s %11s %9s %10s %9s  %s\n", "layer", "batch", "p",
              "dense ms", "GMAC/s", "winograd ms", "permdiag ms", "GMAC/s", "vs dense", "floor ms", "grouped ms",
              "shuffles ms", "GMAC/s", "shared ms", "vs dense", "kernel / grouped impl");
  // Measured before the layers, while nothing else of ours runs.
  const permdnn::kernels::PermuteIssueRates issue = permdnn::kernels::ProbePermuteIssue(0.2);
  nlohmann::json records = nlohmann::json::array();
  int met = 0, total = 0, met1 = 0, total1 = 0;  // 3x3 rows, 1x1 rows
  int floored = 0, floored1 = 0;  // rows whose 70% time is below their activation floor
  int met_shared1 = 0;             // 1x1 rows whose shared-offset kernel reaches 70%
  std::vector<double> dense1_rates, pd1_shares;     // 1x1 rows: dense GMAC/s, permdiag's share of the bound
  for (int n : batches)
    for (const Layer& l : kLayers) {
      if (!only.empty() && std::strstr(l.name, only.c_str()) == nullptr) continue;
      const int pad = l.k / 2, oh = (l.hw + 2 * pad - l.k) / l.stride + 1;
      const double dense_macs = static_cast<double>(n) * l.o * oh * oh * l.c * l.k * l.k;
      bool ok = false, wino_ok = false;
      // Rounds of (dense, every p) in turn, medians over the rounds: a slow
      // spell of the machine then lands in one round of both sides instead
      // of in all of one side's repetitions.
      std::vector<double> dense_rounds, floor_rounds;
      std::vector<std::vector<double>> pd_rounds(ps.size()), shared_rounds(ps.size());
      std::vector<std::string> kernels(ps.size()), shared_kernels(ps.size());
      for (int r = 0; r < rounds; ++r) {
        dense_rounds.push_back(DenseMs(l, n, lanes, false, reps, &ok));
        for (std::size_t i = 0; i < ps.size(); ++i) {
          if (lanes % ps[i] != 0) continue;
          pd_rounds[i].push_back(PermDiagMs(l, n, ps[i], lanes, reps, &kernels[i]));
          // 1x1 layers also with shared offsets: one permutation per input
          // position and several output vectors (the .shared rows).
          if (l.k == 1) shared_rounds[i].push_back(PermDiagMs(l, n, ps[i], lanes, reps, &shared_kernels[i], true));
        }
      }
      const double dense = permdnn::MedianOf(dense_rounds);
      // The floor's rounds after the layer's: its buffers come and go
      // between the kernels' measurements otherwise (a permdiag row timed
      // right after them ran up to 8% slower in alternating runs).
      for (int r = 0; r < rounds; ++r) floor_rounds.push_back(ActivationFloorMs(l, n, lanes, reps));
      const double floor_ms = permdnn::MedianOf(floor_rounds);
      const double wino = l.k == 3 && l.stride == 1 ? DenseMs(l, n, lanes, true, reps, &wino_ok) : 0.0;
      for (std::size_t pi = 0; pi < ps.size(); ++pi) {
        const int p = ps[pi];
        if (lanes % p != 0) continue;  // the reference loops: nothing to compare
        const std::string& kernel = kernels[pi];
        const double pd = permdnn::MedianOf(pd_rounds[pi]);
        const double dense_rate = dense_macs / dense * 1e-6, pd_rate = dense_macs / p / pd * 1e-6;
        const double ratio = pd_rate / dense_rate;
        const double shared = shared_rounds[pi].empty() ? 0.0 : permdnn::MedianOf(shared_rounds[pi]);
        const double shared_ratio = shared > 0 ? dense_macs / p / shared * 1e-6 / dense_rate : 0.0;
        // 70% of the dense rate per stored weight is a time of dense / p / 0.7.
        const bool below_floor = dense / p / 0.7 < floor_ms;
        if (ok && l.k == 3) {
          ++total;
          met += ratio >= 0.7;
          floored += below_floor;
        } else if (ok && l.k == 1) {
          ++total1;
          met1 += ratio >= 0.7;
          met_shared1 += shared_ratio >= 0.7;
          floored1 += below_floor;
          dense1_rates.push_back(dense_rate);
          if (issue.pair_per_ns > 0) pd1_shares.push_back(pd_rate / (issue.pair_per_ns * lanes));
        }
        std::string grouped_impl;
        double shuffles = 0;
        const double grouped = GroupedMs(l, n, p, lanes, reps, &grouped_impl, &shuffles);
        const double grouped_rate = grouped > 0 ? dense_macs / p / (grouped + shuffles) * 1e-6 : 0.0;
        char wbuf[32] = "-", gbuf[32] = "-", sbuf[32] = "-", grbuf[32] = "-", shbuf[32] = "-", shrbuf[32] = "-";
        if (wino_ok) std::snprintf(wbuf, sizeof(wbuf), "%.3f", wino);
        if (shared > 0) {
          std::snprintf(shbuf, sizeof(shbuf), "%.3f", shared);
          std::snprintf(shrbuf, sizeof(shrbuf), "%.0f%%", 100 * shared_ratio);
        }
        if (grouped > 0) {
          std::snprintf(gbuf, sizeof(gbuf), "%.3f", grouped);
          std::snprintf(sbuf, sizeof(sbuf), "%.3f", shuffles);
          std::snprintf(grbuf, sizeof(grbuf), "%.1f", grouped_rate);
        }
        std::printf("%-22s %5d %3d %11.3f %9.1f %11s %11.3f %9.1f %8.0f%% %9.3f %11s %11s %9s %10s %9s  %s / %s\n", l.name,
                    n, p, dense, dense_rate, wbuf, pd, pd_rate, 100 * ratio, floor_ms, gbuf, sbuf, grbuf, shbuf, shrbuf,
                    kernel.c_str(), grouped > 0 ? grouped_impl.c_str() : "none");
        records.push_back({{"layer", l.name}, {"batch", n}, {"p", p}, {"dense_ms", dense}, {"winograd_ms", wino},
                           {"permdiag_ms", pd}, {"dense_gmacs", dense_rate}, {"permdiag_gmacs_stored", pd_rate},
                           {"ratio", ratio}, {"activation_floor_ms", floor_ms}, {"kernel", kernel}, {"grouped_ms", grouped},
                           {"grouped_shuffles_ms", shuffles}, {"grouped_gmacs_stored", grouped_rate},
                           {"grouped_impl", grouped > 0 ? grouped_impl : ""}, {"shared_ms", shared},
                           {"shared_ratio", shared_ratio}, {"shared_kernel", shared > 0 ? shared_kernels[pi] : ""}});
      }
    }
  std::printf("3x3 layers with permdiag GMAC/s per stored weight >= 70%% of oneDNN's direct dense: %d of %d\n", met,
              total);
  if (total1 > 0)
    std::printf("1x1 layers with permdiag GMAC/s per stored weight >= 70%% of oneDNN's direct dense: %d of %d\n", met1,
                total1);
  if (total1 > 0)
    std::printf("1x1 layers whose shared-offset kernel (permdiag-column, the .shared rows) reaches 70%% of oneDNN's "
                "direct dense per stored weight: %d of %d\n",
                met_shared1, total1);
  // A row whose 70% time (dense / p / 0.7) is below its activation floor
  // cannot meet the target with any kernel on this machine.
  std::printf("below the activation floor at 70%% (one read of the input and one write of the output take longer): "
              "%d of %d 3x3 rows, %d of %d 1x1 rows\n",
              floored, total, floored1, total1);
  // The padless 1x1 runs permute once per FMA, so this core's rate of
  // permutation + FMA pairs bounds them; set against the dense 1x1 rows.
  std::printf("issue rates (%s, 12 chains, 0.2 s each): %.2f FMAs/ns alone, %.2f permutations/ns alone, %.2f "
              "permutation+FMA pairs/ns\n",
              permdnn::kernels::ActiveSimdTarget().c_str(), issue.fma_per_ns, issue.permute_per_ns, issue.pair_per_ns);
  if (!dense1_rates.empty() && issue.pair_per_ns > 0) {
    const double bound = issue.pair_per_ns * lanes, dense1 = permdnn::MedianOf(dense1_rates);
    std::printf("one permutation per FMA (1x1 runs): at most %.1f GMAC/s per stored weight = %.0f%% of the median dense "
                "1x1 row (%.1f GMAC/s); the 1x1 rows reach a median %.0f%% of that bound (%.0f-%.0f%%)\n",
                bound, 100 * bound / dense1, dense1, 100 * permdnn::MedianOf(pd1_shares),
                100 * *std::min_element(pd1_shares.begin(), pd1_shares.end()),
                100 * *std::max_element(pd1_shares.begin(), pd1_shares.end()));
  }
  if (!json_path.empty()) {
    const nlohmann::json out = {{"rows", records},
                                {"issue", {{"target", permdnn::kernels::ActiveSimdTarget()},
                                           {"lanes", lanes},
                                           {"fma_per_ns", issue.fma_per_ns},
                                           {"permute_per_ns", issue.permute_per_ns},
                                           {"pair_per_ns", issue.pair_per_ns}}}};
    try {
      permdnn::WriteFileAtomic(json_path, out.dump(1));
    } catch (const permdnn::Error& e) {
      return std::fprintf(stderr, "%s\n", e.what()), 1;
    }
  }
  return 0;
}
