#include "runtime/conv_util.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "permdnn/core/error.h"
#include "permdnn/core/thread_pool.h"

namespace permdnn::runtime::detail {

BatchSplit SplitBatch(int64_t batch, double work, int threads) {
  PERMDNN_CHECK(batch >= 1, "internal: SplitBatch of an empty batch (the fast paths are planned for batch >= 1)");
  const int64_t t = std::min<int64_t>(ThreadsForWork(work, threads), batch);
  BatchSplit b;
  b.per = (batch + t - 1) / t;
  b.count = (batch + b.per - 1) / b.per;
  b.last = batch - (b.count - 1) * b.per;
  return b;
}

WindowGeometry MakeWindowGeometry(const OpContext& ctx, const std::vector<int64_t>& x_shape,
                                  const std::vector<int64_t>& kernel, const NodeDef& node, bool allow_dilation) {
  const int s = static_cast<int>(x_shape.size()) - 2;
  if (s < 1 || s > 3 || static_cast<int>(kernel.size()) != s)
    ctx.Fail("kernel {} does not fit input {}", ShapeString(kernel), ShapeString(x_shape));
  auto ints = [&](const char* name, std::size_t n, int64_t dflt) {
    std::vector<int64_t> v = node.Ints(name);
    if (v.empty()) v.assign(n, dflt);
    if (v.size() != n) ctx.Fail("attribute {} has {} values, expected {}", name, v.size(), n);
    return v;
  };
  std::vector<int64_t> strides = ints("strides", s, 1), pads = ints("pads", 2 * s, 0),
                       dil = ints("dilations", s, 1);
  if (!allow_dilation)
    for (int64_t d : dil)
      if (d != 1) throw UnsupportedError(node.Where() + ": dilations are not supported here");
  const std::string auto_pad = node.String("auto_pad", "NOTSET");
  const bool ceil_mode = node.Int("ceil_mode", 0) != 0;
  WindowGeometry g;
  const int o = 3 - s;
  for (int d = 0; d < s; ++d) {
    const int64_t in = x_shape[2 + d], k = kernel[d], st = strides[d], dl = dil[d];
    if (k < 1 || st < 1 || dl < 1) ctx.Fail("kernel {}, stride {}, dilation {} must be >= 1", k, st, dl);
    int64_t pb = pads[d], pe = pads[s + d];
    if (pb < 0 || pe < 0) ctx.Fail("negative pads");
    const int64_t ek = dl * (k - 1) + 1;
    int64_t out;
    if (auto_pad == "SAME_UPPER" || auto_pad == "SAME_LOWER") {
      out = (in + st - 1) / st;
      const int64_t total = std::max<int64_t>(0, (out - 1) * st + ek - in);
      pb = auto_pad == "SAME_UPPER" ? total / 2 : (total + 1) / 2;
      pe = total - pb;
    } else if (auto_pad == "VALID") {
      pb = pe = 0;
      if (in < ek) ctx.Fail("window {} larger than input {}", ek, in);
      out = (in - ek) / st + 1;
    } else if (auto_pad == "NOTSET" || auto_pad.empty()) {
      const int64_t num = in + pb + pe - ek;
      if (num < 0) ctx.Fail("window {} larger than padded input {}", ek, in + pb + pe);
      out = (ceil_mode ? (num + st - 1) / st : num / st) + 1;
      if (ceil_mode && (out - 1) * st >= in + pb) --out;
    } else {
      throw UnsupportedError(node.Where() + ": auto_pad '" + auto_pad + "'");
    }
    g.in[o + d] = in;
    g.k[o + d] = k;
    g.out[o + d] = out;
    g.stride[o + d] = st;
    g.pad[o + d] = pb;
    g.pad_end[o + d] = pe;
    g.dil[o + d] = dl;
    g.out_spatial.push_back(out);
  }
  return g;
}

namespace {
// Im2Col for float or int16 values: per kernel tap and output row, the
// output columns whose input column lies inside the row are a copy (stride
// 1: one contiguous run) between zero runs for the padding.
template <class T>
void Im2ColOf(const WindowGeometry& g, const T* x, int64_t channels, int64_t r0, int64_t r1, T* cols) {
  const int64_t osz = (r1 - r0) * g.out[2], ow_n = g.out[2], sw = g.stride[2];
  T* dst = cols;
  for (int64_t c = 0; c < channels; ++c) {
    const T* xc = x + c * g.in_size();
    for (int64_t kd = 0; kd < g.k[0]; ++kd)
      for (int64_t kh = 0; kh < g.k[1]; ++kh)
        for (int64_t kw = 0; kw < g.k[2]; ++kw) {
          // ix = ow·sw + x0 lies in [0, in[2]) for ow in [lo, hi).
          const int64_t x0 = kw * g.dil[2] - g.pad[2];
          const int64_t lo = std::min(ow_n, x0 >= 0 ? 0 : (-x0 + sw - 1) / sw);
          const int64_t hi = std::max(lo, std::min(ow_n, g.in[2] - x0 <= 0 ? 0 : (g.in[2] - x0 + sw - 1) / sw));
          for (int64_t r = r0; r < r1; ++r) {
            const int64_t od = r / g.out[1], oh = r % g.out[1];
            const int64_t iz = od * g.stride[0] - g.pad[0] + kd * g.dil[0];
            const int64_t iy = oh * g.stride[1] - g.pad[1] + kh * g.dil[1];
            T* row = dst + (r - r0) * ow_n;
            if (iz < 0 || iz >= g.in[0] || iy < 0 || iy >= g.in[1]) {
              std::fill_n(row, ow_n, T{0});
              continue;
            }
            const T* src = xc + (iz * g.in[1] + iy) * g.in[2];
            std::fill_n(row, lo, T{0});
            if (sw == 1) {
              std::copy(src + lo + x0, src + hi + x0, row + lo);
            } else {
              for (int64_t ow = lo; ow < hi; ++ow) row[ow] = src[ow * sw + x0];
            }
            std::fill(row + hi, row + ow_n, T{0});
          }
          dst += osz;
        }
  }
}
}  // namespace

void Im2Col(const WindowGeometry& g, const float* x, int64_t channels, float* cols) {
  Im2ColOf(g, x, channels, 0, g.out[0] * g.out[1], cols);
}
void Im2Col(const WindowGeometry& g, const int16_t* x, int64_t channels, int16_t* cols) {
  Im2ColOf(g, x, channels, 0, g.out[0] * g.out[1], cols);
}
void Im2ColRows(const WindowGeometry& g, const float* x, int64_t channels, int64_t r0, int64_t r1, float* cols) {
  Im2ColOf(g, x, channels, r0, r1, cols);
}

void Pool(const WindowGeometry& g, const float* x, int64_t planes, bool max, bool count_include_pad, float* y) {
  const int64_t isz = g.in_size(), osz = g.out_size();
  for (int64_t pl = 0; pl < planes; ++pl) {
    const float* xp = x + pl * isz;
    float* yp = y + pl * osz;
    for (int64_t od = 0; od < g.out[0]; ++od)
      for (int64_t oh = 0; oh < g.out[1]; ++oh)
        for (int64_t ow = 0; ow < g.out[2]; ++ow) {
          const int64_t z0 = od * g.stride[0] - g.pad[0], y0 = oh * g.stride[1] - g.pad[1],
                        x0 = ow * g.stride[2] - g.pad[2];
          float best = -std::numeric_limits<float>::infinity();
          double sum = 0;
          int64_t valid = 0, padded = 0;
          for (int64_t kd = 0; kd < g.k[0]; ++kd) {
            const int64_t iz = z0 + kd * g.dil[0];
            for (int64_t kh = 0; kh < g.k[1]; ++kh) {
              const int64_t iy = y0 + kh * g.dil[1];
              for (int64_t kw = 0; kw < g.k[2]; ++kw) {
                const int64_t ix = x0 + kw * g.dil[2];
                const bool in_pad = iz >= -g.pad[0] && iz < g.in[0] + g.pad_end[0] && iy >= -g.pad[1] &&
                                    iy < g.in[1] + g.pad_end[1] && ix >= -g.pad[2] && ix < g.in[2] + g.pad_end[2];
                if (in_pad) ++padded;
                if (iz < 0 || iz >= g.in[0] || iy < 0 || iy >= g.in[1] || ix < 0 || ix >= g.in[2]) continue;
                const float v = xp[(iz * g.in[1] + iy) * g.in[2] + ix];
                ++valid;
                sum += v;
                if (v > best || std::isnan(v)) best = v;
              }
            }
          }
          const int64_t o = (od * g.out[1] + oh) * g.out[2] + ow;
          if (max) yp[o] = valid ? best : 0.0f;
          else {
            const int64_t div = count_include_pad ? padded : valid;
            yp[o] = div ? static_cast<float>(sum / static_cast<double>(div)) : 0.0f;
          }
        }
  }
}

}  // namespace permdnn::runtime::detail
