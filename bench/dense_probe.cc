// Which library runs the zoo's dense convolutions fastest on this CPU? Times
// every convolution of torchvision's resnet18, mobilenet_v2 and
// squeezenet1_1 (shapes written out below from the architectures, input
// 224x224) in oneDNN (activations in the layout oneDNN picks, `format_tag::any`,
// and forced to nChw16c (also with Winograd for the 3x3 stride-1 convolutions)
// and to nhwc; weights always `any`; ReLU as a post-op). GMAC/s count the
// direct convolution's multiply-adds. and in XNNPACK (NHWC, ReLU as the output clamp), one
// thread, and prints per network the summed median times and GMAC/s.
// Activations and weights are reordered once before timing, as a runtime that
// plans its layouts would; only the convolution primitives are timed.
//
//   permdnn_dense_probe [--batch 1,16] [--reps 7] [--nets resnet18,mobilenet_v2,squeezenet1_1]
//
// The issue-14 choice of the dense library (docs/runtime.md) rests on it;
// ONNX Runtime's whole-network times come from scripts/bench-runtime.py.
#include <omp.h>
#include <pthreadpool.h>
#include <xnnpack.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <dnnl.hpp>

#include "permdnn/core/timing.h"

namespace {

struct ConvSpec {
  int c, o, h, w, k, stride, pad, groups;
  int oh() const { return (h + 2 * pad - k) / stride + 1; }
  int ow() const { return (w + 2 * pad - k) / stride + 1; }
  double macs(int n) const { return double(n) * o * oh() * ow() * (c / groups) * k * k; }
};

std::vector<ConvSpec> Resnet18() {
  std::vector<ConvSpec> v = {{3, 64, 224, 224, 7, 2, 3, 1}};
  int c = 64, s = 56;
  for (int stage = 0; stage < 4; ++stage) {
    const int o = 64 << stage;
    for (int blk = 0; blk < 2; ++blk) {
      const int stride = (stage > 0 && blk == 0) ? 2 : 1;
      v.push_back({c, o, s, s, 3, stride, 1, 1});
      if (stride == 2) v.push_back({c, o, s, s, 1, 2, 0, 1});  // downsample
      s /= stride;
      v.push_back({o, o, s, s, 3, 1, 1, 1});
      c = o;
    }
  }
  return v;
}

std::vector<ConvSpec> MobilenetV2() {
  std::vector<ConvSpec> v = {{3, 32, 224, 224, 3, 2, 1, 1}};
  const int cfg[7][4] = {{1, 16, 1, 1}, {6, 24, 2, 2}, {6, 32, 3, 2}, {6, 64, 4, 2},
                         {6, 96, 3, 1}, {6, 160, 3, 2}, {6, 320, 1, 1}};
  int c = 32, s = 112;
  for (const auto& r : cfg)
    for (int i = 0; i < r[2]; ++i) {
      const int stride = i == 0 ? r[3] : 1, hid = c * r[0];
      if (r[0] != 1) v.push_back({c, hid, s, s, 1, 1, 0, 1});
      v.push_back({hid, hid, s, s, 3, stride, 1, hid});
      s = (s + 2 - 3) / stride + 1;
      v.push_back({hid, r[1], s, s, 1, 1, 0, 1});
      c = r[1];
    }
  v.push_back({320, 1280, 7, 7, 1, 1, 0, 1});
  return v;
}

std::vector<ConvSpec> Squeezenet11() {
  std::vector<ConvSpec> v = {{3, 64, 224, 224, 3, 2, 0, 1}};
  auto fire = [&](int in, int sq, int e, int s) {
    v.push_back({in, sq, s, s, 1, 1, 0, 1});
    v.push_back({sq, e, s, s, 1, 1, 0, 1});
    v.push_back({sq, e, s, s, 3, 1, 1, 1});
  };
  fire(64, 16, 64, 55);
  fire(128, 16, 64, 55);
  fire(128, 32, 128, 27);
  fire(256, 32, 128, 27);
  fire(256, 48, 192, 13);
  fire(384, 48, 192, 13);
  fire(384, 64, 256, 13);
  fire(512, 64, 256, 13);
  v.push_back({512, 1000, 13, 13, 1, 1, 0, 1});
  return v;
}

std::vector<float> Random(std::size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<float> v(n);
  for (float& x : v) x = nd(rng);
  return v;
}

double OneDnnMs(const ConvSpec& s, int n, int reps, dnnl::memory::format_tag act, bool winograd = false) {
  using namespace dnnl;
  using tag = memory::format_tag;
  using dt = memory::data_type;
  static engine eng(engine::kind::cpu, 0);
  stream st(eng);
  const int g = s.groups;
  memory::dims src_d = {n, s.c, s.h, s.w}, dst_d = {n, s.o, s.oh(), s.ow()}, bias_d = {s.o};
  memory::dims wei_d = g == 1 ? memory::dims{s.o, s.c, s.k, s.k} : memory::dims{g, s.o / g, s.c / g, s.k, s.k};
  const tag src_tag = (act == tag::nChw16c && s.c < 16) ? tag::nchw : act;
  memory::desc src_any(src_d, dt::f32, src_tag), wei_any(wei_d, dt::f32, tag::any), dst_any(dst_d, dt::f32, act),
      bias_md(bias_d, dt::f32, tag::a);
  const bool wino = winograd && s.k == 3 && s.stride == 1 && s.groups == 1 && s.c >= 16;
  convolution_forward::desc d(prop_kind::forward_inference,
                              wino ? algorithm::convolution_winograd : algorithm::convolution_direct, src_any, wei_any, bias_md,
                              dst_any, {s.stride, s.stride}, {s.pad, s.pad}, {s.pad, s.pad});
  post_ops po;
  po.append_eltwise(1.f, algorithm::eltwise_relu, 0.f, 0.f);
  primitive_attr attr;
  attr.set_post_ops(po);
  convolution_forward::primitive_desc pd(d, attr, eng);
  std::vector<float> x = Random(std::size_t(n) * s.c * s.h * s.w, 1), wv = Random(std::size_t(s.o) * s.c / g * s.k * s.k, 2),
                     b = Random(s.o, 3);
  memory x_plain({src_d, dt::f32, tag::nchw}, eng, x.data());
  memory w_plain({wei_d, dt::f32, g == 1 ? tag::oihw : tag::goihw}, eng, wv.data());
  memory x_mem(pd.src_desc(), eng), w_mem(pd.weights_desc(), eng), y_mem(pd.dst_desc(), eng),
      b_mem(bias_md, eng, b.data());
  reorder(x_plain, x_mem).execute(st, x_plain, x_mem);
  reorder(w_plain, w_mem).execute(st, w_plain, w_mem);
  st.wait();
  convolution_forward conv(pd);
  // Thread CPU time: everything runs on the calling thread (one OpenMP
  // thread, no XNNPACK thread pool), so time slices lost to other processes
  // on a shared machine stay out of the medians.
  return permdnn::ThreadCpuMedianMs(
      [&] {
        conv.execute(st, {{DNNL_ARG_SRC, x_mem}, {DNNL_ARG_WEIGHTS, w_mem}, {DNNL_ARG_BIAS, b_mem}, {DNNL_ARG_DST, y_mem}});
        st.wait();
      },
      reps);
}

double XnnpackMs(const ConvSpec& s, int n, int reps) {
  const int g = s.groups;
  std::vector<float> x = Random(std::size_t(n) * s.c * s.h * s.w + 16, 1), wv = Random(std::size_t(s.o) * s.c / g * s.k * s.k, 2),
                     b = Random(s.o, 3), y(std::size_t(n) * s.o * s.oh() * s.ow() + 16);
  xnn_operator_t op = nullptr;
  if (xnn_create_convolution2d_nhwc_f32(s.pad, s.pad, s.pad, s.pad, s.k, s.k, s.stride, s.stride, 1, 1, g, s.c / g,
                                        s.o / g, s.c, s.o, wv.data(), b.data(), 0.f, INFINITY, 0, &op) != xnn_status_success)
    return -1;
  if (xnn_setup_convolution2d_nhwc_f32(op, n, s.h, s.w, x.data(), y.data(), nullptr) != xnn_status_success) return -1;
  const double ms = permdnn::ThreadCpuMedianMs([&] { xnn_run_operator(op, nullptr); }, reps);
  xnn_delete_operator(op);
  return ms;
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
  std::vector<int> batches = {1, 16};
  int reps = 7;
  std::string nets = "resnet18,mobilenet_v2,squeezenet1_1";
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--batch")) batches = Ints(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--reps")) reps = std::max(1, std::atoi(argv[i + 1]));
    else if (!std::strcmp(argv[i], "--nets")) nets = argv[i + 1];
    else return std::fprintf(stderr, "usage: %s [--batch 1,16] [--reps 7] [--nets LIST]\n", argv[0]), 2;
  }
  omp_set_num_threads(1);
  if (xnn_initialize(nullptr) != xnn_status_success) return std::fprintf(stderr, "xnn_initialize failed\n"), 1;
  std::printf("one thread, thread CPU time; oneDNN %d.%d.%d (activation layout: chosen by oneDNN / nChw16c / nhwc; ReLU post-op), XNNPACK (NHWC)\n", dnnl_version()->major,
              dnnl_version()->minor, dnnl_version()->patch);
  std::printf("%-14s %5s %6s %14s %8s %14s %8s %14s %8s %14s %8s %12s %8s\n", "network", "batch", "convs",
              "oneDNN any ms", "GMAC/s", "nChw16c ms", "GMAC/s", "+winograd ms", "GMAC/s", "nhwc ms", "GMAC/s",
              "XNNPACK ms", "GMAC/s");
  const std::pair<const char*, std::vector<ConvSpec> (*)()> all[] = {
      {"resnet18", Resnet18}, {"mobilenet_v2", MobilenetV2}, {"squeezenet1_1", Squeezenet11}};
  for (const auto& [name, make] : all) {
    if (nets.find(name) == std::string::npos) continue;
    const std::vector<ConvSpec> convs = make();
    for (int n : batches) {
      using tag = dnnl::memory::format_tag;
      double any_ms = 0, blk_ms = 0, wino_ms = 0, nhwc_ms = 0, xnn_ms = 0, macs = 0;
      for (const ConvSpec& s : convs) {
        any_ms += OneDnnMs(s, n, reps, tag::any);
        blk_ms += OneDnnMs(s, n, reps, tag::nChw16c);
        wino_ms += OneDnnMs(s, n, reps, tag::nChw16c, true);
        nhwc_ms += OneDnnMs(s, n, reps, tag::nhwc);
        xnn_ms += XnnpackMs(s, n, reps);
        macs += s.macs(n);
      }
      auto rate = [&](double ms) { return macs / ms * 1e-6; };
      std::printf("%-14s %5d %6zu %14.3f %8.1f %14.3f %8.1f %14.3f %8.1f %14.3f %8.1f %12.3f %8.1f\n", name, n,
                  convs.size(), any_ms, rate(any_ms), blk_ms, rate(blk_ms), wino_ms, rate(wino_ms), nhwc_ms,
                  rate(nhwc_ms), xnn_ms, rate(xnn_ms));
    }
  }
  return 0;
}
