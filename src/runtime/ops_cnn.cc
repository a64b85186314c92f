// The dense CNN operators: Conv (with the post-ops the fusion pass folded
// into it), MaxPool / AveragePool / GlobalAveragePool / GlobalMaxPool and
// BatchNormalization.
//
// Two paths per node, chosen once per plan in Finalize:
//  * fast: oneDNN primitives (dnnl_util.h) in the plan's activation layout
//    (channels-last or channel-blocked). Conv + BatchNormalization is folded
//    into the weights and bias once, Add becomes oneDNN's sum post-op (the
//    other operand is copied into the output first) and Relu / Clip an
//    eltwise post-op, so a fused chain is one primitive. Inputs or outputs
//    in another layout (graph inputs and outputs, ops that only read plain
//    tensors) are reordered through scratch, inside the node.
//  * reference (Options::reference, PERMDNN_KERNELS=reference, a plain
//    plan, or a shape oneDNN only has a reference implementation for):
//    im2col + OpenBLAS sgemm and plain loops, every post-op applied in the
//    order of the original nodes. Tests compare the fast path against it.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <optional>

#include <cblas.h>

#include "permdnn/core/thread_pool.h"
#include "runtime/conv_util.h"
#include "runtime/dnnl_util.h"
#include "runtime/graph.h"

namespace permdnn::runtime::detail {

namespace {

// The spatial part of a normalized (3-D) window geometry for oneDNN.
dnnl::memory::dims Tail(const std::array<int64_t, 3>& v, std::size_t s) {
  return dnnl::memory::dims(v.end() - static_cast<std::ptrdiff_t>(s), v.end());
}

int64_t Align64(int64_t b) { return (b + 63) / 64 * 64; }

// A pooling window visit (a load and a max or add on data read once) costs
// about as much as 4 multiply-adds of a convolution (fmnist-cnn pool1:
// 0.4 M visits in 31 µs; its convolutions run near 50-100 GMAC/s).
constexpr double kPoolVisitWork = 16;

// Shape with the batch replaced.
std::vector<int64_t> WithBatch(std::vector<int64_t> shape, int64_t batch) {
  shape[0] = batch;
  return shape;
}

// PERMDNN_CONV=direct disables Winograd convolutions (read once).
bool WinogradAllowed() {
  static const bool allowed = [] {
    const char* env = std::getenv("PERMDNN_CONV");
    if (!env || !*env || !std::strcmp(env, "auto")) return true;
    if (!std::strcmp(env, "direct")) return false;
    Fail("PERMDNN_CONV={} is not a convolution algorithm choice; use auto or direct", env);
  }();
  return allowed;
}

// ---- Conv -------------------------------------------------------------------------

class ConvOp : public OpKernel {
 public:
  explicit ConvOp(const NodeDef& n) : n_(n) {
    for (const PostOp& p : n.post_ops)
      if (p.op_type == "BatchNormalization") has_bn_ = true;
  }

  void Prepare(OpContext& ctx) override {
    const Value& x = Req(ctx, 0, "X");
    const Value& w = Req(ctx, 1, "W");
    RequireFloat(ctx, &x, "X");
    RequireFloat(ctx, &w, "W");
    if (x.shape.size() < 3 || x.shape.size() > 5) Unsupported(ctx, fmt::format("Conv on rank {} input", x.shape.size()));
    if (w.shape.size() != x.shape.size())
      ctx.Fail("W {} and X {} ranks differ", ShapeString(w.shape), ShapeString(x.shape));
    group_ = n_.Int("group", 1);
    const int64_t c = x.shape[1], m = w.shape[0];
    if (group_ < 1 || c % group_ != 0 || m % group_ != 0 || w.shape[1] * group_ != c)
      ctx.Fail("channels: X has {}, W {} with group {} (expected W[1]·group = C)", c, ShapeString(w.shape), group_);
    std::vector<int64_t> kshape(w.shape.begin() + 2, w.shape.end());
    if (n_.Has("kernel_shape") && n_.Ints("kernel_shape") != kshape)
      ctx.Fail("kernel_shape {} differs from W {}", ShapeString(n_.Ints("kernel_shape")), ShapeString(w.shape));
    g_ = MakeWindowGeometry(ctx, x.shape, kshape, n_, true);
    if (const Value* b = ctx.In(2); b && (b->shape.size() != 1 || b->shape[0] != m))
      ctx.Fail("bias {} should be [{}]", ShapeString(b->shape), m);
    std::vector<int64_t> out = {x.shape[0], m};
    out.insert(out.end(), g_.out_spatial.begin(), g_.out_spatial.end());
    add_same_shape_ = ValidatePostOps(ctx, out);
    ctx.SetOut(0, DType::kFloat32, out);
    // Reference path (the largest need; Finalize may lower it).
    ctx.scratch_bytes = static_cast<int64_t>(sizeof(float)) * (c / group_) * g_.kernel_size() * g_.out_size();
    src_ok_.reset();
  }

  bool WritesLayout(const OpContext& ctx, std::size_t k, const Layout& layout) const override {
    return k == 0 && SrcLayout(ctx, layout).has_value();
  }
  bool ReadsLayout(const OpContext& ctx, std::size_t k, const Layout& layout) const override {
    if (k == 1 || k == 2) return false;
    auto src = SrcLayout(ctx, layout);
    return src && (k != 0 || *src == layout);  // X only when oneDNN reads it in that layout; the Add operand always
  }

  void Finalize(OpContext& ctx, const RunState& rs) override {
    const std::optional<Layout> src_layout =
        rs.reference || rs.act_layout.plain() ? std::nullopt : SrcLayout(ctx, rs.act_layout);
    fast_ = src_layout.has_value();
    parts_.clear();
    if (!fast_) return;  // reference scratch from Prepare; layouts are plain
    SetDnnlThreads(1);
    const Layout L = rs.act_layout;
    const Value& x = *ctx.in[0];
    Value& y = *ctx.out[0];
    const int64_t n = x.shape[0];
    split_ = SplitBatch(n,
                        static_cast<double>(y.size()) * static_cast<double>(x.shape[1] / group_) *
                            static_cast<double>(g_.kernel_size()),
                        rs.threads);
    FoldBias(ctx);
    add_input_ = -1;
    for (const PostOp& p : n_.post_ops)
      if (p.op_type == "Add") add_input_ = p.inputs[0];
    // One primitive per chunk size, for exactly these shapes in layout L.
    execs_.clear();
    int64_t scratch = 0;
    for (int64_t nb : {split_.per, split_.last}) {
      if (!execs_.empty() && execs_[0].batch == nb) break;
      Exec e;
      e.batch = nb;
      const std::vector<int64_t> xs = WithBatch(x.shape, nb), ys = WithBatch(y.shape, nb);
      auto pd = MakePd(ctx, *src_layout, L, nb);
      e.prim = dnnl::convolution_forward(*pd);
      e.src_md = pd->src_desc();
      e.dst_md = pd->dst_desc();
      if (!w_mem_ || w_mem_->get_desc() != pd->weights_desc()) {  // the first plan, or a layout that changed
        const dnnl::memory::desc md = pd->weights_desc();
        const auto make = [&] {
          const std::vector<float> folded = FoldedWeights(ctx);
          dnnl::memory plain(WeightsPlainDesc(ctx), DnnlEngine(), const_cast<float*>(folded.data()));
          auto packed = std::make_shared<dnnl::memory>(md, DnnlEngine());
          dnnl::reorder(plain, *packed).execute(DnnlStream(), plain, *packed);
          DnnlStream().wait();
          return std::shared_ptr<const dnnl::memory>(std::move(packed));
        };
        w_mem_ = nullptr;  // before making the new one: one layout's copy at a time
        w_mem_ = rs.packs ? rs.packs->Get<dnnl::memory>(n_.position, md, make) : make();
      }
      e.w_mem = *w_mem_;
      e.in.Init(xs, x.layout, *src_layout);
      e.out.Init(ys, L, y.layout);
      if (add_input_ >= 0) e.add.Init(ys, ctx.in[add_input_]->layout, L);
      int64_t need = 0;
      if (!e.in.identity()) need += Align64(static_cast<int64_t>(src_layout->StoredElements(xs) * sizeof(float)));
      e.out_offset = need;
      if (!e.out.identity()) need += Align64(static_cast<int64_t>(L.StoredElements(ys) * sizeof(float)));
      e.pad_md = pd->scratchpad_desc();
      e.pad_offset = need;
      need += Align64(std::max({static_cast<int64_t>(e.pad_md.get_size()), e.in.scratchpad_bytes(),
                                e.out.scratchpad_bytes(), e.add.scratchpad_bytes()}));
      scratch = std::max(scratch, need);
      execs_.push_back(std::move(e));
    }
    chunk_scratch_ = scratch;
    ctx.scratch_bytes = scratch * split_.count;
    // A part that oneDNN cannot make as planned keeps the whole-layer
    // primitive (nothing here is the file's fault).
    try {
      PlanChannelParts(ctx, rs, *src_layout);
    } catch (const dnnl::error&) {
      parts_.clear();
    } catch (const Error&) {
      parts_.clear();
    }
    if (!parts_.empty()) {
      // The parts hold their own rows of the weights; the whole layer's copy
      // is made again if a later plan needs it.
      for (Exec& ex : execs_) ex.w_mem = dnnl::memory();
      w_mem_ = nullptr;
    }
  }

  void Run(OpContext& ctx, RunState& rs) override {
    if (fast_) RunDnnl(ctx, rs);
    else RunReference(ctx, rs);
  }
  std::string KernelName() const override {
    if (!fast_) return "dense-blas";
    return parts_.empty() ? "dense-onednn" : fmt::format("dense-onednn/oc{}", parts_.size());
  }

 private:
  // The layout oneDNN reads X in when it writes the output in `layout` with an
  // optimized implementation: `layout` itself, else plain (first layers with
  // few channels, e.g. 3 -> 32, have jit kernels for a plain input only);
  // nullopt when neither has one (then the reference path runs, plain).
  std::optional<Layout> SrcLayout(const OpContext& ctx, const Layout& layout) const {
    // (an empty batch runs the reference loops: nothing to split over threads)
    if (layout.plain() || !add_same_shape_ || ctx.in[0]->shape[0] < 1) return std::nullopt;
    // Weights are folded and reordered once: they must be load-time constants.
    if (!ctx.in[1]->constant || (ctx.In(2) && !ctx.In(2)->constant)) return std::nullopt;
    if (src_ok_ && src_ok_->first == layout) return src_ok_->second;
    std::optional<Layout> found;
    // Fewer input channels than a block (a first layer on RGB or gray
    // images): the plain input, read directly, ran 6x faster than a padded
    // block (Fashion-MNIST cnn's conv1 at batch 16: 0.066 vs 0.42 ms).
    const bool few = layout.kind == LayoutKind::kBlocked && ctx.in[0]->shape[1] < layout.block;
    for (const Layout& src : few ? std::array<Layout, 2>{Layout{}, layout} : std::array<Layout, 2>{layout, Layout{}}) {
      try {
        if (!IsReferenceImpl(*MakePd(ctx, src, layout))) {
          found = src;
          break;
        }
      } catch (const dnnl::error&) {
      }
    }
    src_ok_ = std::make_pair(layout, found);
    return found;
  }

  // The plain weights; with oc > 0 the shape of oc output channels' rows (a
  // part of PlanChannelParts: with groups, oc / (W[0] / group) whole groups).
  dnnl::memory::desc WeightsPlainDesc(const OpContext& ctx, int64_t oc = -1) const {
    const Value& w = *ctx.in[1];
    using tag = dnnl::memory::format_tag;
    const std::size_t s = w.shape.size() - 2;
    if (group_ == 1) {
      std::vector<int64_t> shape = w.shape;
      if (oc > 0) shape[0] = oc;
      return dnnl::memory::desc(Dims(shape), dnnl::memory::data_type::f32,
                                s == 1 ? tag::oiw : s == 2 ? tag::oihw : tag::oidhw);
    }
    const int64_t mg = w.shape[0] / group_;
    std::vector<int64_t> gd = {oc > 0 ? oc / mg : group_, mg};
    gd.insert(gd.end(), w.shape.begin() + 1, w.shape.end());
    return dnnl::memory::desc(Dims(gd), dnnl::memory::data_type::f32,
                              s == 1 ? tag::goiw : s == 2 ? tag::goihw : tag::goidhw);
  }

  // oc > 0: a convolution computing only oc output channels, one part of
  // PlanChannelParts (group 1: those rows of the weights and the whole input;
  // with groups: oc / (W[0] / group) whole groups and their input channels).
  std::shared_ptr<dnnl::convolution_forward::primitive_desc> MakePd(const OpContext& ctx, const Layout& src_layout,
                                                                    const Layout& L, int64_t batch = -1,
                                                                    int64_t oc = -1) const {
    const Value& x = *ctx.in[0];
    const Value& w = *ctx.in[1];
    const Value& y = *ctx.out[0];
    const std::size_t s = x.shape.size() - 2;
    const int64_t nb = batch > 0 ? batch : x.shape[0];
    std::vector<int64_t> xs = WithBatch(x.shape, nb), ys = WithBatch(y.shape, nb);
    if (oc > 0) {
      ys[1] = oc;
      if (group_ > 1) xs[1] = oc / (w.shape[0] / group_) * w.shape[1];
    }
    dnnl::memory::desc src = MemDesc(xs, src_layout), dst = MemDesc(ys, L);
    dnnl::memory::desc wd(WeightsPlainDesc(ctx, oc).dims(), dnnl::memory::data_type::f32,
                          dnnl::memory::format_tag::any);
    dnnl::memory::desc bd({oc > 0 ? oc : w.shape[0]}, dnnl::memory::data_type::f32, dnnl::memory::format_tag::a);
    dnnl::memory::dims dil = Tail(g_.dil, s);
    for (auto& d : dil) d -= 1;
    dnnl::post_ops po;
    for (const PostOp& p : n_.post_ops) {
      if (p.op_type == "Add") po.append_sum(1.0f);
      else if (p.op_type == "Relu") po.append_eltwise(1.0f, dnnl::algorithm::eltwise_relu, 0.0f, 0.0f);
      else if (p.op_type == "Clip") po.append_eltwise(1.0f, dnnl::algorithm::eltwise_clip, p.lo, p.hi);
    }
    const dnnl::primitive_attr attr = UserScratchpadAttr(po);
    // Winograd (F(2x2,3x3) / F(4x4,3x3)) where oneDNN has it: 3x3, stride 1,
    // no dilation, not grouped, channel-blocked on AVX-512. It cut resnet18's
    // convolutions from 20.1 to 12.7 ms at batch 1 (bench/dense_probe.cc);
    // PERMDNN_CONV=direct turns it off.
    if (WinogradAllowed() && group_ == 1 && src_layout == L && L.kind == LayoutKind::kBlocked && s == 2 &&
        g_.k[1] == 3 && g_.k[2] == 3 && g_.stride[1] == 1 && g_.stride[2] == 1 && g_.dil[1] == 1 && g_.dil[2] == 1) {
      try {
        dnnl::convolution_forward::desc wd_desc(dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_winograd,
                                                src, wd, bd, dst, Tail(g_.stride, s), dil, Tail(g_.pad, s),
                                                Tail(g_.pad_end, s));
        return std::make_shared<dnnl::convolution_forward::primitive_desc>(wd_desc, attr, DnnlEngine());
      } catch (const dnnl::error&) {
      }
    }
    dnnl::convolution_forward::desc d(dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct, src, wd,
                                      bd, dst, Tail(g_.stride, s), dil, Tail(g_.pad, s), Tail(g_.pad_end, s));
    return std::make_shared<dnnl::convolution_forward::primitive_desc>(d, attr, DnnlEngine());
  }

  // Weights and bias with a fused BatchNormalization folded in:
  // w'[o] = w[o]·a[o], b'[o] = b[o]·a[o] + (beta[o] − mean[o]·a[o]), a = scale / sqrt(var + eps).
  // The folded weights are made only to be reordered (a plan keeps the
  // reordered copy alone, shared through RunState::packs); the bias is kept.
  std::vector<float> FoldedWeights(const OpContext& ctx) const {
    const Value& w = *ctx.in[1];
    const int64_t m = w.shape[0], per = w.size() / std::max<int64_t>(1, m);
    std::vector<float> folded(w.f(), w.f() + w.size());
    std::vector<float> a, shift;
    if (FusedNormFactors(ctx, m, &a, &shift))
      for (int64_t o = 0; o < m; ++o)
        for (int64_t i = 0; i < per; ++i) folded[o * per + i] *= a[o];
    return folded;
  }
  void FoldBias(const OpContext& ctx) {
    if (b_mem_) return;
    const int64_t m = ctx.in[1]->shape[0];
    b_folded_.assign(static_cast<std::size_t>(m), 0.0f);
    if (const Value* b = ctx.In(2)) std::copy(b->f(), b->f() + m, b_folded_.begin());
    std::vector<float> a, shift;
    if (FusedNormFactors(ctx, m, &a, &shift))
      for (int64_t o = 0; o < m; ++o) b_folded_[o] = b_folded_[o] * a[o] + shift[o];
    b_mem_ = dnnl::memory({{m}, dnnl::memory::data_type::f32, dnnl::memory::format_tag::a}, DnnlEngine(),
                          b_folded_.data());
  }

  void RunDnnl(OpContext& ctx, RunState& rs) {
    SetDnnlThreads(1);
    const Value& x = *ctx.in[0];
    Value& y = *ctx.out[0];
    const Value* add = add_input_ >= 0 ? ctx.in[add_input_] : nullptr;
    if (!parts_.empty()) {
      // One sample, one primitive per range of output-channel blocks; each
      // part's output (and the Add operand's) is a contiguous run of y.
      ParallelFor(static_cast<int64_t>(parts_.size()), rs.threads, [&](int64_t c0, int64_t c1, int) {
        SetDnnlThreads(1);
        for (int64_t c = c0; c < c1; ++c) {
          const Part& part = parts_[static_cast<std::size_t>(c)];
          float* dst = y.f() + part.y_offset;
          if (add)
            std::memcpy(dst, add->f() + part.y_offset, static_cast<std::size_t>(part.y_size) * sizeof(float));
          dnnl::memory sm(part.src_md, DnnlEngine(), const_cast<float*>(x.f() + part.x_offset)),
              dm(part.dst_md, DnnlEngine(), dst), pm(part.pad_md, DnnlEngine(), rs.scratch + part.pad_offset);
          part.prim.execute(DnnlStream(), {{DNNL_ARG_SRC, sm},
                                           {DNNL_ARG_WEIGHTS, part.w_mem},
                                           {DNNL_ARG_BIAS, part.b_mem},
                                           {DNNL_ARG_DST, dm},
                                           {DNNL_ARG_SCRATCHPAD, pm}});
          DnnlStream().wait();
        }
      });
      return;
    }
    const int64_t n = x.shape[0];
    const int64_t x_per = static_cast<int64_t>(x.stored_bytes() / sizeof(float)) / n,
                  y_per = static_cast<int64_t>(y.stored_bytes() / sizeof(float)) / n,
                  a_per = add ? static_cast<int64_t>(add->stored_bytes() / sizeof(float)) / n : 0;
    auto chunk = [&](int64_t c) {
      const int64_t n0 = c * split_.per, nc = c + 1 < split_.count ? split_.per : split_.last;
      const Exec& e = nc == execs_[0].batch ? execs_[0] : execs_[1];
      uint8_t* scratch = rs.scratch + c * chunk_scratch_;
      void* pad = scratch + e.pad_offset;
      const float* src = x.f() + n0 * x_per;
      if (!e.in.identity()) {
        float* staged = reinterpret_cast<float*>(scratch);
        e.in.Run(src, staged, pad);
        src = staged;
      }
      float* yc = y.f() + n0 * y_per;
      float* dst = e.out.identity() ? yc : reinterpret_cast<float*>(scratch + e.out_offset);
      if (add) {
        // oneDNN's sum post-op adds to what the output holds. dst is in L, so
        // the operand (also in L) fills L's size, padded channels included:
        // a_per, not y_per (y's own layout may be plain, without padding).
        const float* ac = add->f() + n0 * a_per;
        if (e.add.identity()) std::memcpy(dst, ac, static_cast<std::size_t>(a_per * nc) * sizeof(float));
        else e.add.Run(ac, dst, pad);
      }
      dnnl::memory sm(e.src_md, DnnlEngine(), const_cast<float*>(src)), dm(e.dst_md, DnnlEngine(), dst),
          pm(e.pad_md, DnnlEngine(), pad);
      e.prim.execute(DnnlStream(), {{DNNL_ARG_SRC, sm},
                                    {DNNL_ARG_WEIGHTS, e.w_mem},
                                    {DNNL_ARG_BIAS, b_mem_},
                                    {DNNL_ARG_DST, dm},
                                    {DNNL_ARG_SCRATCHPAD, pm}});
      DnnlStream().wait();
      if (!e.out.identity()) e.out.Run(dst, yc, pad);
    };
    if (split_.count == 1) return chunk(0);
    ParallelFor(split_.count, static_cast<int>(split_.count), [&](int64_t c0, int64_t c1, int) {
      SetDnnlThreads(1);
      for (int64_t c = c0; c < c1; ++c) chunk(c);
    });
  }

  // Batch 1 on several threads: the batch split leaves one chunk, so one
  // thread would run the whole convolution (resnet18 at batch 1 took 14.6 ms
  // on two threads, 14.3 on one). Where the output is in the plan's
  // channel-blocked layout and nothing is reordered inside the node, the
  // output channels are cut into one range per thread instead, each a
  // primitive of its own (its rows of the folded weights and bias, its
  // scratchpad) that writes its own contiguous run of y (batch 1, channel
  // blocks outermost). Group 1: ranges of output-channel blocks, each reading
  // the whole input (blocked, or plain where oneDNN reads a few-channel input
  // such as RGB directly). With groups (depthwise): ranges of whole groups
  // whose first output and input channels both start a block, each reading
  // its own run of the blocked input.
  void PlanChannelParts(OpContext& ctx, const RunState& rs, const Layout& src_layout) {
    parts_.clear();
    const Value& x = *ctx.in[0];
    const Value& y = *ctx.out[0];
    const Layout L = rs.act_layout;
    const Exec& e = execs_[0];
    if (rs.threads < 2 || split_.count != 1 || x.shape[0] != 1 || L.kind != LayoutKind::kBlocked ||
        (group_ > 1 && src_layout != L) || !e.in.identity() || !e.out.identity() ||
        (add_input_ >= 0 && !e.add.identity()))
      return;
    const int64_t m = y.shape[1], c = x.shape[1], block = L.block;
    const int64_t mg = m / group_, cg = c / group_;
    // A unit: one output block (group 1), or `step` groups, the fewest whose
    // output and input channels are whole blocks.
    int64_t step = 1;
    if (group_ > 1)
      while (step < group_ && ((step * mg) % block != 0 || (step * cg) % block != 0)) ++step;
    const int64_t units = group_ == 1 ? (m + block - 1) / block : (group_ + step - 1) / step;
    const double work = static_cast<double>(y.size()) * static_cast<double>(cg) * static_cast<double>(g_.kernel_size());
    const int64_t count = std::min<int64_t>(ThreadsForWork(work, rs.threads), units);
    if (count < 2) return;
    const int64_t out_spatial = y.size() / m, in_spatial = x.size() / c;  // positions per channel (batch 1)
    const int64_t per_w = ctx.in[1]->size() / m;
    std::vector<float> folded;  // made at the first part
    auto round_up = [block](int64_t v) { return (v + block - 1) / block * block; };
    int64_t pad_at = 0;
    std::vector<Part> parts;
    for (int64_t k = 0; k < count; ++k) {
      const int64_t u0 = units * k / count, u1 = units * (k + 1) / count;
      const int64_t o0 = group_ == 1 ? u0 * block : u0 * step * mg;
      const int64_t o1 = group_ == 1 ? std::min(m, u1 * block) : std::min(group_, u1 * step) * mg;
      const int64_t oc = o1 - o0, i0 = group_ == 1 ? 0 : o0 / mg * cg, ic = group_ == 1 ? c : oc / mg * cg;
      auto pd = MakePd(ctx, src_layout, L, 1, oc);
      if (IsReferenceImpl(*pd)) return;  // keep the whole-layer primitive
      Part part;
      part.prim = dnnl::convolution_forward(*pd);
      part.src_md = pd->src_desc();
      part.dst_md = pd->dst_desc();
      part.x_offset = i0 * in_spatial;
      part.y_offset = o0 * out_spatial;
      part.y_size = (round_up(o1) - o0) * out_spatial;
      // What the part reads and writes must be the runs computed here (group
      // 1 reads the whole input, in whatever layout the plan gave it).
      const auto floats = [](const dnnl::memory::desc& d) {
        return static_cast<int64_t>(d.get_size() / sizeof(float));
      };
      const int64_t x_run = group_ == 1 ? floats(part.src_md) : (round_up(i0 + ic) - i0) * in_spatial;
      PERMDNN_CHECK(floats(part.dst_md) == part.y_size && floats(part.src_md) == x_run,
                    "{}: part of {} output channels: oneDNN's tensors are {} / {} floats, expected {} / {}",
                    n_.Where(), oc, floats(part.src_md), floats(part.dst_md), x_run, part.y_size);
      if (folded.empty()) folded = FoldedWeights(ctx);
      dnnl::memory plain(WeightsPlainDesc(ctx, oc), DnnlEngine(), folded.data() + o0 * per_w);
      part.w_mem = dnnl::memory(pd->weights_desc(), DnnlEngine());
      dnnl::reorder(plain, part.w_mem).execute(DnnlStream(), plain, part.w_mem);
      DnnlStream().wait();
      part.b_mem = dnnl::memory({{oc}, dnnl::memory::data_type::f32, dnnl::memory::format_tag::a}, DnnlEngine(),
                                b_folded_.data() + o0);
      part.pad_md = pd->scratchpad_desc();
      part.pad_offset = pad_at;
      pad_at += Align64(static_cast<int64_t>(part.pad_md.get_size()));
      parts.push_back(std::move(part));
    }
    parts_ = std::move(parts);
    ctx.scratch_bytes = std::max(ctx.scratch_bytes, pad_at);
  }

  // im2col + sgemm per sample and group, then the post-ops in node order.
  void RunReference(OpContext& ctx, RunState& rs) {
    const Value& x = *ctx.in[0];
    const Value& w = *ctx.in[1];
    const Value* b = ctx.In(2);
    const int64_t n = x.shape[0], c = x.shape[1], m = w.shape[0];
    const int64_t cg = c / group_, mg = m / group_, ksz = g_.kernel_size(), osz = g_.out_size(), isz = g_.in_size();
    float* cols = reinterpret_cast<float*>(rs.scratch);
    Value& yv = *ctx.out[0];
    float* y = yv.f();
    for (int64_t s = 0; s < n; ++s)
      for (int64_t gi = 0; gi < group_; ++gi) {
        const float* xs = x.f() + (s * c + gi * cg) * isz;
        Im2Col(g_, xs, cg, cols);
        float* ys = y + (s * m + gi * mg) * osz;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, mg, osz, cg * ksz, 1.0f, w.f() + gi * mg * cg * ksz,
                    cg * ksz, cols, osz, 0.0f, ys, osz);
        if (b)
          for (int64_t o = 0; o < mg; ++o) {
            const float bv = b->f()[gi * mg + o];
            for (int64_t t = 0; t < osz; ++t) ys[o * osz + t] += bv;
          }
      }
    ApplyPostOpsPlain(ctx, y, yv.shape);
  }

  const NodeDef& n_;
  int64_t group_ = 1;
  WindowGeometry g_;
  bool has_bn_ = false, add_same_shape_ = true, fast_ = false;
  mutable std::optional<std::pair<Layout, std::optional<Layout>>> src_ok_;
  // Fast path state: one primitive (with its reorders) per chunk size.
  struct Exec {
    int64_t batch = 0, out_offset = 0, pad_offset = 0;
    dnnl::convolution_forward prim;
    dnnl::memory::desc src_md, dst_md, pad_md;
    dnnl::memory w_mem;
    LayoutConverter in, out, add;
  };
  std::vector<float> b_folded_;
  std::shared_ptr<const dnnl::memory> w_mem_;  // the whole layer's reordered weights
  dnnl::memory b_mem_;
  std::vector<Exec> execs_;
  BatchSplit split_;
  int64_t chunk_scratch_ = 0;
  int add_input_ = -1;
  // PlanChannelParts: output-channel ranges at batch 1 (empty: not split).
  struct Part {
    int64_t x_offset = 0, y_offset = 0, y_size = 0, pad_offset = 0;  // floats into x, y / bytes into scratch
    dnnl::convolution_forward prim;
    dnnl::memory::desc src_md, dst_md, pad_md;
    dnnl::memory w_mem, b_mem;
  };
  std::vector<Part> parts_;
};

// ---- Pools ------------------------------------------------------------------------

class PoolOp : public OpKernel {
 public:
  PoolOp(const NodeDef& n, bool max, bool global) : n_(n), max_(max), global_(global) {
    if (n.outputs.size() > 1 && n.outputs[1] >= 0) UnsupportedNode(n, "MaxPool's Indices output is not supported");
    count_pad_ = n.Int("count_include_pad", 0) != 0;
  }
  void Prepare(OpContext& ctx) override {
    const Value& x = Req(ctx, 0, "X");
    RequireFloat(ctx, &x, "X");
    if (x.shape.size() < 3 || x.shape.size() > 5) Unsupported(ctx, fmt::format("pooling on rank {} input", x.shape.size()));
    std::vector<int64_t> k;
    if (global_) {
      k.assign(x.shape.begin() + 2, x.shape.end());
      g_ = MakeWindowGeometry(ctx, x.shape, k, NodeDef{}, false);
    } else {
      k = n_.Ints("kernel_shape");
      if (k.size() + 2 != x.shape.size())
        ctx.Fail("kernel_shape {} does not fit input {}", ShapeString(k), ShapeString(x.shape));
      g_ = MakeWindowGeometry(ctx, x.shape, k, n_, max_);
    }
    std::vector<int64_t> out = {x.shape[0], x.shape[1]};
    out.insert(out.end(), g_.out_spatial.begin(), g_.out_spatial.end());
    // Windows are visited element by element: bound the work a file can ask for.
    const double work = static_cast<double>(NumElements(out)) * static_cast<double>(g_.kernel_size());
    if (work > 1e11) Unsupported(ctx, fmt::format("pooling work of {:.3g} window elements is beyond the limit", work));
    ctx.SetOut(0, DType::kFloat32, out);
    ctx.scratch_bytes = 0;
    dnnl_ok_.reset();
  }
  bool WritesLayout(const OpContext& ctx, std::size_t k, const Layout& layout) const override {
    return DnnlUsable(ctx, layout);
  }
  bool ReadsLayout(const OpContext& ctx, std::size_t k, const Layout& layout) const override {
    return DnnlUsable(ctx, layout);
  }
  void Finalize(OpContext& ctx, const RunState& rs) override {
    fast_ = !rs.reference && DnnlUsable(ctx, rs.act_layout);
    parts_.clear();
    if (!fast_) return;
    SetDnnlThreads(1);
    const Layout L = rs.act_layout;
    const Value& x = *ctx.in[0];
    Value& y = *ctx.out[0];
    const double visits = static_cast<double>(y.size()) * static_cast<double>(g_.kernel_size());
    split_ = SplitBatch(x.shape[0], kPoolVisitWork * visits, rs.threads);
    execs_.clear();
    int64_t scratch = 0;
    for (int64_t nb : {split_.per, split_.last}) {
      if (!execs_.empty() && execs_[0].batch == nb) break;
      Exec e;
      e.batch = nb;
      const std::vector<int64_t> xs = WithBatch(x.shape, nb), ys = WithBatch(y.shape, nb);
      auto pd = MakePd(ctx, L, nb);
      e.prim = dnnl::pooling_v2_forward(*pd);
      e.src_md = pd->src_desc();
      e.dst_md = pd->dst_desc();
      e.in.Init(xs, x.layout, L);
      e.out.Init(ys, L, y.layout);
      int64_t need = 0;
      if (!e.in.identity()) need += Align64(static_cast<int64_t>(L.StoredElements(xs) * sizeof(float)));
      e.out_offset = need;
      if (!e.out.identity()) need += Align64(static_cast<int64_t>(L.StoredElements(ys) * sizeof(float)));
      e.pad_md = pd->scratchpad_desc();
      e.pad_offset = need;
      need += Align64(std::max({static_cast<int64_t>(e.pad_md.get_size()), e.in.scratchpad_bytes(),
                                e.out.scratchpad_bytes()}));
      scratch = std::max(scratch, need);
      execs_.push_back(std::move(e));
    }
    chunk_scratch_ = scratch;
    ctx.scratch_bytes = scratch * split_.count;
    // Batch 1 on several threads (as ConvOp::PlanChannelParts): input and
    // output in the blocked layout are cut into one run of channel blocks
    // per thread, one primitive each.
    const Exec& e = execs_[0];
    const int64_t c = x.shape[1], blocks = L.kind == LayoutKind::kBlocked ? (c + L.block - 1) / L.block : 0;
    const int64_t count = std::min<int64_t>(ThreadsForWork(kPoolVisitWork * visits, rs.threads), blocks);
    if (split_.count == 1 && x.shape[0] == 1 && blocks > 0 && e.in.identity() && e.out.identity() && count >= 2) {
      const int64_t in_spatial = x.size() / c, out_spatial = y.size() / c;
      int64_t pad_at = 0;
      for (int64_t k = 0; k < count; ++k) {
        const int64_t b0 = blocks * k / count, b1 = blocks * (k + 1) / count;
        const int64_t c0 = b0 * L.block, cc = std::min(c, b1 * L.block) - c0;
        std::shared_ptr<dnnl::pooling_v2_forward::primitive_desc> pd;
        try {
          pd = MakePd(ctx, L, 1, cc);
        } catch (const dnnl::error&) {
        }
        if (!pd || IsReferenceImpl(*pd)) {  // keep the whole-layer primitive
          parts_.clear();
          break;
        }
        Part part;
        part.prim = dnnl::pooling_v2_forward(*pd);
        part.src_md = pd->src_desc();
        part.dst_md = pd->dst_desc();
        part.x_offset = c0 * in_spatial;
        part.y_offset = c0 * out_spatial;
        if (static_cast<int64_t>(part.src_md.get_size() / sizeof(float)) != (b1 - b0) * L.block * in_spatial ||
            static_cast<int64_t>(part.dst_md.get_size() / sizeof(float)) != (b1 - b0) * L.block * out_spatial) {
          parts_.clear();  // not the runs planned: keep the whole-layer primitive
          break;
        }
        part.pad_md = pd->scratchpad_desc();
        part.pad_offset = pad_at;
        pad_at += Align64(static_cast<int64_t>(part.pad_md.get_size()));
        parts_.push_back(std::move(part));
      }
      ctx.scratch_bytes = std::max(ctx.scratch_bytes, pad_at);
    }
  }
  void Run(OpContext& ctx, RunState& rs) override {
    const Value& x = *ctx.in[0];
    Value& y = *ctx.out[0];
    if (!fast_) {
      Pool(g_, x.f(), x.shape[0] * x.shape[1], max_, count_pad_, y.f());
      return;
    }
    SetDnnlThreads(1);
    if (!parts_.empty()) {
      ParallelFor(static_cast<int64_t>(parts_.size()), rs.threads, [&](int64_t c0, int64_t c1, int) {
        SetDnnlThreads(1);
        for (int64_t c = c0; c < c1; ++c) {
          const Part& part = parts_[static_cast<std::size_t>(c)];
          dnnl::memory sm(part.src_md, DnnlEngine(), const_cast<float*>(x.f() + part.x_offset)),
              dm(part.dst_md, DnnlEngine(), y.f() + part.y_offset), pm(part.pad_md, DnnlEngine(),
                                                                        rs.scratch + part.pad_offset);
          part.prim.execute(DnnlStream(), {{DNNL_ARG_SRC, sm}, {DNNL_ARG_DST, dm}, {DNNL_ARG_SCRATCHPAD, pm}});
          DnnlStream().wait();
        }
      });
      return;
    }
    const int64_t n = x.shape[0];
    const int64_t x_per = static_cast<int64_t>(x.stored_bytes() / sizeof(float)) / n,
                  y_per = static_cast<int64_t>(y.stored_bytes() / sizeof(float)) / n;
    auto chunk = [&](int64_t c) {
      const int64_t n0 = c * split_.per, nc = c + 1 < split_.count ? split_.per : split_.last;
      const Exec& e = nc == execs_[0].batch ? execs_[0] : execs_[1];
      uint8_t* scratch = rs.scratch + c * chunk_scratch_;
      void* pad = scratch + e.pad_offset;
      const float* src = x.f() + n0 * x_per;
      if (!e.in.identity()) {
        float* staged = reinterpret_cast<float*>(scratch);
        e.in.Run(src, staged, pad);
        src = staged;
      }
      float* yc = y.f() + n0 * y_per;
      float* dst = e.out.identity() ? yc : reinterpret_cast<float*>(scratch + e.out_offset);
      dnnl::memory sm(e.src_md, DnnlEngine(), const_cast<float*>(src)), dm(e.dst_md, DnnlEngine(), dst),
          pm(e.pad_md, DnnlEngine(), pad);
      e.prim.execute(DnnlStream(), {{DNNL_ARG_SRC, sm}, {DNNL_ARG_DST, dm}, {DNNL_ARG_SCRATCHPAD, pm}});
      DnnlStream().wait();
      if (!e.out.identity()) e.out.Run(dst, yc, pad);
    };
    if (split_.count == 1) return chunk(0);
    ParallelFor(split_.count, static_cast<int>(split_.count), [&](int64_t c0, int64_t c1, int) {
      SetDnnlThreads(1);
      for (int64_t c = c0; c < c1; ++c) chunk(c);
    });
  }
  std::string KernelName() const override {
    if (!fast_) return "pool-reference";
    return parts_.empty() ? "pool-onednn" : fmt::format("pool-onednn/c{}", parts_.size());
  }

 private:
  bool DnnlUsable(const OpContext& ctx, const Layout& layout) const {
    if (layout.plain() || ctx.in[0]->shape[0] < 1) return false;  // an empty batch: the reference loops
    if (dnnl_ok_ && dnnl_ok_->first == layout) return dnnl_ok_->second;
    bool ok = false;
    try {
      ok = !IsReferenceImpl(*MakePd(ctx, layout));
    } catch (const dnnl::error&) {
      ok = false;
    } catch (const Error&) {
      ok = false;
    }
    dnnl_ok_ = std::make_pair(layout, ok);
    return ok;
  }
  // channels > 0: only that many channels (one part of the batch-1 split).
  std::shared_ptr<dnnl::pooling_v2_forward::primitive_desc> MakePd(const OpContext& ctx, const Layout& L,
                                                                    int64_t batch = -1, int64_t channels = -1) const {
    const Value& x = *ctx.in[0];
    const Value& y = *ctx.out[0];
    const int64_t nb = batch > 0 ? batch : x.shape[0];
    std::vector<int64_t> xs = WithBatch(x.shape, nb), ys = WithBatch(y.shape, nb);
    if (channels > 0) xs[1] = ys[1] = channels;
    const std::size_t s = x.shape.size() - 2;
    // ceil_mode: the last window may hang past pad_end; oneDNN sees that as
    // extra right padding. Max pooling ignores padding either way; average
    // pooling that counts padding would count the overhang too, so refuse.
    dnnl::memory::dims pad_r = Tail(g_.pad_end, s);
    bool overhang = false;
    for (std::size_t d = 0; d < s; ++d) {
      const int i = 3 - static_cast<int>(s) + static_cast<int>(d);
      const int64_t need = (g_.out[i] - 1) * g_.stride[i] + (g_.k[i] - 1) * g_.dil[i] + 1 - g_.in[i] - g_.pad[i];
      if (need > pad_r[d]) {
        overhang = true;
        pad_r[d] = need;
      }
    }
    if (overhang && !max_ && count_pad_) Fail("average pooling counting padding past the window");
    dnnl::memory::dims dil = Tail(g_.dil, s);
    for (auto& d : dil) d -= 1;
    const dnnl::algorithm alg = max_         ? dnnl::algorithm::pooling_max
                                : count_pad_ ? dnnl::algorithm::pooling_avg_include_padding
                                             : dnnl::algorithm::pooling_avg_exclude_padding;
    dnnl::pooling_v2_forward::desc d(dnnl::prop_kind::forward_inference, alg, MemDesc(xs, L), MemDesc(ys, L),
                                     Tail(g_.stride, s), Tail(g_.k, s), dil, Tail(g_.pad, s), pad_r);
    return std::make_shared<dnnl::pooling_v2_forward::primitive_desc>(d, UserScratchpadAttr(), DnnlEngine());
  }

  const NodeDef& n_;
  bool max_, global_, count_pad_ = false, fast_ = false;
  WindowGeometry g_;
  mutable std::optional<std::pair<Layout, bool>> dnnl_ok_;
  struct Exec {
    int64_t batch = 0, out_offset = 0, pad_offset = 0;
    dnnl::pooling_v2_forward prim;
    dnnl::memory::desc src_md, dst_md, pad_md;
    LayoutConverter in, out;
  };
  std::vector<Exec> execs_;
  BatchSplit split_;
  int64_t chunk_scratch_ = 0;
  // The batch-1 split over channel blocks (empty: not split).
  struct Part {
    int64_t x_offset = 0, y_offset = 0, pad_offset = 0;  // floats into x, y / bytes into scratch
    dnnl::pooling_v2_forward prim;
    dnnl::memory::desc src_md, dst_md, pad_md;
  };
  std::vector<Part> parts_;
};

// ---- BatchNormalization (not fused) -----------------------------------------------

class BatchNormOp : public OpKernel {
 public:
  explicit BatchNormOp(const NodeDef& n) : eps_(n.Float("epsilon", 1e-5f)) {
    for (std::size_t k = 1; k < n.outputs.size(); ++k)
      if (n.outputs[k] >= 0) UnsupportedNode(n, "BatchNormalization in training mode (extra outputs)");
    if (n.Int("training_mode", 0) != 0) UnsupportedNode(n, "BatchNormalization with training_mode=1");
    if (n.opset < 9 && n.Int("spatial", 1) == 0) UnsupportedNode(n, "BatchNormalization with spatial=0");
  }
  void Prepare(OpContext& ctx) override {
    const Value& x = Req(ctx, 0, "X");
    RequireFloat(ctx, &x, "X");
    if (x.shape.size() < 2) ctx.Fail("X must have rank >= 2, got {}", ShapeString(x.shape));
    const int64_t c = x.shape[1];
    for (std::size_t k = 1; k <= 4; ++k) {
      const Value& p = Req(ctx, k, "scale/B/mean/var");
      if (p.size() != c) ctx.Fail("input {} '{}' has {} elements, expected C = {}", k, p.name, p.size(), c);
    }
    ctx.SetOut(0, DType::kFloat32, x.shape);
  }
  void Run(OpContext& ctx, RunState&) override {
    const Value& x = *ctx.in[0];
    BatchNormPlain(x.f(), x.shape, ctx.in[1]->f(), ctx.in[2]->f(), ctx.in[3]->f(), ctx.in[4]->f(), eps_,
                   ctx.out[0]->f());
  }

 private:
  float eps_;
};

}  // namespace

bool ValidatePostOps(const OpContext& ctx, const std::vector<int64_t>& out) {
  bool same = true;
  for (const PostOp& p : ctx.node->post_ops) {
    for (int i : p.inputs) {
      const Value& v = Req(ctx, static_cast<std::size_t>(i), p.op_type.c_str());
      RequireFloat(ctx, &v, p.op_type.c_str());
      if (p.op_type == "BatchNormalization" && v.size() != out[1])
        ctx.Fail("fused {} '{}': input '{}' has {} elements, expected C = {}", p.op_type, p.name, v.name, v.size(),
                 out[1]);
      if (p.op_type == "Add") {
        if (BroadcastShapes(out, v.shape, ctx) != out)
          ctx.Fail("fused Add '{}': operand '{}' {} does not broadcast to the output {}", p.name, v.name,
                   ShapeString(v.shape), ShapeString(out));
        same = v.shape == out;
      }
    }
  }
  return same;
}

const PostOp* FusedNormFactors(const OpContext& ctx, int64_t channels, std::vector<float>* a,
                               std::vector<float>* shift) {
  a->clear();
  shift->clear();
  for (const PostOp& p : ctx.node->post_ops) {
    if (p.op_type != "BatchNormalization") continue;
    const float *g = ctx.in[p.inputs[0]]->f(), *b = ctx.in[p.inputs[1]]->f(), *mu = ctx.in[p.inputs[2]]->f(),
                *var = ctx.in[p.inputs[3]]->f();
    a->resize(static_cast<std::size_t>(channels));
    shift->resize(static_cast<std::size_t>(channels));
    for (int64_t o = 0; o < channels; ++o) {
      (*a)[o] = g[o] / std::sqrt(var[o] + p.epsilon);
      (*shift)[o] = b[o] - mu[o] * (*a)[o];
    }
    return &p;
  }
  return nullptr;
}

void ApplyActivationPlain(const PostOp& p, float* y, int64_t count) {
  if (p.op_type == "Relu") {
    for (int64_t i = 0; i < count; ++i) y[i] = y[i] > 0 ? y[i] : 0.0f;
  } else if (p.op_type == "Clip") {
    const float lo = p.lo, hi = p.hi;  // locals: y may not alias them, so the loop vectorizes
    for (int64_t i = 0; i < count; ++i) y[i] = std::min(std::max(y[i], lo), hi);
  }
}

ProductEpilogue FindProductEpilogue(const NodeDef& n) {
  ProductEpilogue e;
  for (const PostOp& p : n.post_ops) {  // one activation at most (fusion.cc)
    if (p.op_type == "Add") e.add_input = p.inputs[0];
    if (p.op_type == "Relu" || p.op_type == "Clip") e.activation = &p;
  }
  return e;
}

void ProductEpilogue::Apply(float* __restrict y, const float* __restrict r, int64_t count) const {
  if (r)
    for (int64_t i = 0; i < count; ++i) y[i] += r[i];
  if (activation) ApplyActivationPlain(*activation, y, count);
}

void ApplyPostOpsPlain(const OpContext& ctx, float* y, const std::vector<int64_t>& shape) {
  const int64_t size = NumElements(shape);
  for (const PostOp& p : ctx.node->post_ops) {
    if (p.op_type == "BatchNormalization") {
      BatchNormPlain(y, shape, ctx.in[p.inputs[0]]->f(), ctx.in[p.inputs[1]]->f(), ctx.in[p.inputs[2]]->f(),
                     ctx.in[p.inputs[3]]->f(), p.epsilon, y);
    } else if (p.op_type == "Add") {
      const Value& a = *ctx.in[p.inputs[0]];
      AddBroadcastInPlace(y, shape, a.f(), a.shape, ctx);
    } else {
      ApplyActivationPlain(p, y, size);
    }
  }
}

void BatchNormPlain(const float* x, const std::vector<int64_t>& shape, const float* scale, const float* bias,
                    const float* mean, const float* var, float eps, float* y) {
  const int64_t n = shape[0], c = shape[1], inner = NumElements(shape) / std::max<int64_t>(1, n * c);
  for (int64_t ch = 0; ch < c; ++ch) {
    const float a = scale[ch] / std::sqrt(var[ch] + eps);
    const float b = bias[ch] - mean[ch] * a;
    for (int64_t s = 0; s < n; ++s) {
      const float* xs = x + (s * c + ch) * inner;
      float* ys = y + (s * c + ch) * inner;
      for (int64_t t = 0; t < inner; ++t) ys[t] = xs[t] * a + b;
    }
  }
}

// Conv, the pools and BatchNormalization; nullptr for another op type.
std::unique_ptr<OpKernel> CreateCnnKernel(const NodeDef& n) {
  const std::string& op = n.op_type;
  if (op == "Conv") return std::make_unique<ConvOp>(n);
  if (op == "MaxPool") return std::make_unique<PoolOp>(n, true, false);
  if (op == "AveragePool") return std::make_unique<PoolOp>(n, false, false);
  if (op == "GlobalAveragePool") return std::make_unique<PoolOp>(n, false, true);
  if (op == "GlobalMaxPool") return std::make_unique<PoolOp>(n, true, true);
  if (op == "BatchNormalization") return std::make_unique<BatchNormOp>(n);
  return nullptr;
}

}  // namespace permdnn::runtime::detail
