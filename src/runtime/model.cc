// Model: ONNX loading, planning (shape inference, folding, arena layout)
// and execution. See include/permdnn/runtime/model.h for the design.
#include "permdnn/runtime/model.h"

#include <algorithm>
#include <array>
#include <chrono>
#include <climits>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <unordered_map>

#include <cblas.h>

#include "permdnn/core/thread_pool.h"
#include "permdnn/core/timing.h"
#include "permdnn/formats/registry.h"
#include "permdnn/runtime/onnx_io.h"
#include "permdnn/kernels/dispatch.h"
#include "runtime/dnnl_util.h"
#include "runtime/fusion.h"
#include "runtime/graph.h"
#include "runtime/onnx_util.h"

namespace permdnn::runtime {

namespace detail {

std::string NodeDef::Where() const {
  return fmt::format("node '{}' ({}{}, #{})", name, domain.empty() ? "" : domain + ".", op_type, position);
}
int64_t NodeDef::Int(const std::string& a, int64_t dflt) const { return attrs.Int(a, dflt, Where()); }
float NodeDef::Float(const std::string& a, float dflt) const { return attrs.Float(a, dflt, Where()); }
std::string NodeDef::String(const std::string& a, const std::string& dflt) const {
  return attrs.String(a, dflt, Where());
}
std::vector<int64_t> NodeDef::Ints(const std::string& a, std::vector<int64_t> dflt) const {
  return attrs.Ints(a, std::move(dflt), Where());
}
std::vector<float> NodeDef::Floats(const std::string& a) const { return attrs.Floats(a, Where()); }

const Tensor& NodeDef::TensorAttr(const std::string& a) const {
  auto it = tensor_attrs.find(a);
  PERMDNN_CHECK(it != tensor_attrs.end() || attrs.Has(a), "{}: missing attribute {}", Where(), a);
  PERMDNN_CHECK(it != tensor_attrs.end() && it->second, "{}: attribute {} should be a tensor", Where(), a);
  return *it->second;
}

const Value& OpContext::Const(std::size_t k, const char* what) const {
  const Value* v = In(k);
  if (!v) Fail("missing input {} ({})", k, what);
  if (!v->constant)
    throw UnsupportedError(fmt::format("{}: input {} '{}' ({}) must be known at load time (an initializer or "
                                       "computable from shapes)",
                                       node->Where(), k, v->name, what));
  return *v;
}
std::vector<int64_t> OpContext::ConstInts(std::size_t k, const char* what) const {
  const Value& v = Const(k, what);
  if (IsFloat(v.dtype)) Fail("input {} ({}) must be an integer tensor, got {}", k, what, DTypeName(v.dtype));
  return std::vector<int64_t>(v.constant_data->i(), v.constant_data->i() + v.constant_data->size());
}
std::vector<float> OpContext::ConstFloats(std::size_t k, const char* what) const {
  const Value& v = Const(k, what);
  if (!IsFloat(v.dtype)) Fail("input {} ({}) must be a float tensor, got {}", k, what, DTypeName(v.dtype));
  return std::vector<float>(v.constant_data->f(), v.constant_data->f() + v.constant_data->size());
}
void OpContext::SetOut(std::size_t k, DType dtype, std::vector<int64_t> shape) {
  const std::string problem = ShapeProblem(shape);
  if (!problem.empty()) Fail("output shape {}: {}", ShapeString(shape), problem);
  if (k >= out.size()) out.resize(k + 1, nullptr);
  if (!out[k]) {
    unnamed.push_back(std::make_unique<Value>());
    unnamed.back()->name = fmt::format("{} (unnamed output {})", node->name, k);
    out[k] = unnamed.back().get();
  }
  out[k]->dtype = dtype;
  out[k]->shape = std::move(shape);
  out[k]->known = true;
}

std::vector<int64_t> BroadcastShapes(const std::vector<int64_t>& a, const std::vector<int64_t>& b,
                                     const OpContext& ctx) {
  const std::size_t r = std::max(a.size(), b.size());
  std::vector<int64_t> out(r);
  for (std::size_t k = 0; k < r; ++k) {
    const int64_t da = k < r - a.size() ? 1 : a[k - (r - a.size())];
    const int64_t db = k < r - b.size() ? 1 : b[k - (r - b.size())];
    if (da != db && da != 1 && db != 1)
      ctx.Fail("shapes {} and {} do not broadcast", ShapeString(a), ShapeString(b));
    out[k] = da == 1 ? db : da;
  }
  return out;
}

int64_t NormalizeAxis(int64_t axis, int64_t rank, const OpContext& ctx) {
  if (axis < -rank || axis >= rank) ctx.Fail("axis {} out of range for rank {}", axis, rank);
  return axis < 0 ? axis + rank : axis;
}

bool IsPermDnnDomain(const std::string& domain) { return domain == kPermDnnDomain; }

}  // namespace detail

namespace {
// The last-level cache the planner sizes for: one CCD's L3 on AMD Zen 4 /
// Zen 5 (sysconf reports the whole socket's on the VMs this was measured
// on: 512 MiB).
constexpr int64_t kLastLevelCacheBytes = int64_t{32} << 20;
// A batch run on several threads places every tensor in its own arena
// region when all of them together take at most this (Plan): about an L3.
// Larger plans reuse regions, which keeps their footprint down; their
// tensors pass through L3 or DRAM between operators anyway.
constexpr int64_t kThreadAffineArenaBytes = kLastLevelCacheBytes;
// Batch parallelism (Options::batch_parallel): the replicas share the
// file's weights and the packed forms in the PackCache (the compressed
// fully connected, convolution and recurrent ops' among them), but each
// holds what the block-circulant convolution's fallback (p > 64, the
// reference path) decodes for itself, and its own plan and arena: where
// the file's weights times the threads exceed this (a rough bound on those
// copies, set when every compressed op decoded its own), the threads split
// each operator instead.
constexpr int64_t kBatchParallelMaxReplicaBytes = int64_t{2} << 30;
// ... and only where a share reuses each weight it reads at least this many
// times (weighted by the weights' bytes; BatchWorkers): each replica reads
// all of the weights, where threads splitting an operator read a part each.
// The Fashion-MNIST mlp on 2 threads (AMD EPYC Zen 5, 2026-12-06): in
// shares of 1 and 2 samples 2.15-2.26x and 1.85x the time of the split
// operators (dense), 1.24x at p = 8 for shares of 2; level or faster from
// shares of 4.
constexpr double kBatchParallelMinReuse = 4;
// The split check (Options::split_check): a first split run longer than
// this keeps the split without measuring; rounds of the alternating timing;
// the least time a timed block of runs of one path takes (runs of a few
// tens of µs are timed as blocks of up to kSplitCheckMaxBlock runs); and
// how much faster the one thread's best block must be than the split's
// best to be chosen. Each block follows an untimed run of its path: the
// alternation leaves the other path's caches and the pool's sleeping
// worker cold, which a path that runs again and again does not see (the
// Fashion-MNIST mlp, timed single runs: 0.16 ms split against 0.13 on one
// thread, where `permdnn run --bench` gives 0.072 against 0.092). The best
// blocks and the margin, not medians of three: a busy moment on the other
// core slows only the split runs, and a choice holds a while (resnet18
// p = 8 measured 4.9 ms split against 4.3 on one thread in one of 57 checks,
// where it runs 2.7 against 4.3; AMD EPYC Zen 5, 2026-12-07).
constexpr double kSplitCheckMaxMs = 10;
constexpr int kSplitCheckRounds = 5;
constexpr double kSplitCheckBlockMs = 1.0;
constexpr int kSplitCheckMaxBlock = 16;
constexpr double kSplitCheckMargin = 0.8;
// ... and how long a choice holds before the next run of its shape checks
// again: the host's load changes, and a choice made while another process
// ran on the second core (split runs 2.2x the time of one thread's on
// mobilenet_v2 p = 8 with a training on that core, 12:23 UTC, against
// 0.85x with it idle, 13:12) would otherwise stay. A check runs about 13
// split runs and 11 on one thread.
constexpr double kSplitCheckHoldSeconds = 10;
// The shares check (Options::split_check, Options::batch_parallel): where
// the reuse rule gives a batch shares and one run of them takes at most
// kSplitCheckMaxMs, the shares are timed against the threads splitting each
// operator (blocks as the split check's), and the split kept where its best
// block takes under this fraction of the shares' best. Both paths run on
// all the threads, so that a busy moment on another core slows both: a
// narrower margin than the split check's. The Fashion-MNIST mlp at B=16 on
// two threads (Intel Xeon, family 6 model 167, 2026-12-07): shares 0.37 ms,
// split 0.28, one thread 0.50; its 7.4 MB of weights, read whole by each
// share, are past the 2 MiB L2, where the AMD EPYC Zen 5 the rule was set
// on ran shares of 8 level with the split. The dense cnn: shares 0.79 ms,
// split 0.73.
constexpr double kSharesCheckMargin = 0.9;

// An environment variable that fixes a check's outcome without timing
// (tests): nullptr where it is not set, else `a` or `b` (anything else is
// an error naming it).
const char* ForcedOutcome(const char* variable, const char* a, const char* b) {
  const char* force = std::getenv(variable);
  force = force && *force ? force : nullptr;
  PERMDNN_CHECK(!force || !std::strcmp(force, a) || !std::strcmp(force, b), "{}={} is neither {} nor {}", variable,
                force ? force : "", a, b);
  return force;
}
// PERMDNN_SPLIT_CHECK=split|one fixes the split check's outcome, and
// leaves batch parallelism to the reuse rule untimed.
const char* ForcedSplitCheck() { return ForcedOutcome("PERMDNN_SPLIT_CHECK", "split", "one"); }
// PERMDNN_SHARES_CHECK=split|shares fixes the shares check's outcome.
const char* ForcedSharesCheck() { return ForcedOutcome("PERMDNN_SHARES_CHECK", "split", "shares"); }

double TimedMs(const std::function<void()>& run) {
  const auto t0 = std::chrono::steady_clock::now();
  run();
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

// The best of kSplitCheckRounds alternating rounds of `a` and `b`: each an
// untimed run, then the median of a block of runs (as many as take about
// kSplitCheckBlockMs, at most kSplitCheckMaxBlock; `warm_ms` the time of
// one warm run of `a`). Returns {best a, best b}.
std::pair<double, double> AlternatingBestMs(const std::function<void()>& a, const std::function<void()>& b,
                                            double warm_ms) {
  const int block = static_cast<int>(
      std::clamp(std::ceil(kSplitCheckBlockMs / std::max(warm_ms, 1e-3)), 1.0, double{kSplitCheckMaxBlock}));
  auto timed = [&](const std::function<void()>& run) {
    return TimeRuns(run, {.warmup = 1, .min_reps = block, .min_time_s = 0, .max_reps = block}).median_ms;
  };
  double best_a = HUGE_VAL, best_b = HUGE_VAL;
  for (int r = 0; r < kSplitCheckRounds; ++r) {
    best_a = std::min(best_a, timed(a));
    best_b = std::min(best_b, timed(b));
  }
  return {best_a, best_b};
}
}  // namespace

using detail::NodeDef;
using detail::OpContext;
using detail::OpKernel;
using detail::Value;

struct Model::Impl {
  Options opt;
  std::string name;
  std::vector<Value> values;
  std::map<std::string, int> index;
  std::vector<NodeDef> nodes;
  std::vector<std::unique_ptr<OpKernel>> kernels;
  std::vector<int> input_ids, output_ids;
  std::vector<ValueInfo> inputs, outputs;
  std::map<std::string, std::string> metadata;
  ModelSummary summary;

  // Plan.
  bool planned = false;
  std::vector<std::vector<int64_t>> key_shapes;
  std::vector<std::vector<int64_t>> key_ints;
  std::vector<OpContext> ctxs;
  std::vector<int> runtime_nodes;
  std::vector<bool> folded;
  AlignedBuffer<uint8_t> arena;
  int64_t arena_capacity = 0;  // AlignedBuffer keeps its memory when shrunk
  int64_t scratch_offset = 0;
  detail::RunState rs;
  std::vector<NodeProfile> profile;
  bool int16 = false, int8 = false, calibrated = false;

  // Reads the parsed file; frees each initializer's bytes in `m` once it
  // holds them as a tensor, so that a large model is not held twice.
  void LoadProto(onnx::ModelProto& m);
  // Model::Load and FromBytes: the parsed file read into a model, then its
  // first plan where the inputs allow one.
  static Model FromProto(onnx::ModelProto proto, const std::string& name, const Options& options);
  void Init(onnx::ModelProto& proto, const std::string& model_name, const Options& options);
  void PlanAtLoad();
  // The kernels of `nodes` (fused) and their contexts over `values`.
  void MakeKernels();
  struct InMeta {
    DType dtype = DType::kFloat32;
    std::vector<int64_t> shape;
    const int64_t* ints = nullptr;  // integer inputs: their values
  };
  void Plan(const std::vector<InMeta>& in_meta);
  // check_finite: false where the caller checked the inputs already
  // (ExecutePasses checks the whole batch once, not each pass again).
  void Execute(std::span<const void* const> in_data, bool check_finite = true);
  // An Error naming the input and the element when x[0, n) holds a NaN or an infinity.
  void CheckFinite(const Value& v, const float* x, int64_t n) const;
  bool KeyMatches(const std::vector<InMeta>& in) const;

  // Micro-batching (Options::micro_batch). For each whole-batch input shape
  // seen: the samples per pass, and when that splits the batch, the whole
  // batch's output shapes (the plan then holds the one-pass shape).
  std::map<std::vector<int64_t>, int64_t> pass_samples;
  std::map<std::vector<int64_t>, std::vector<std::vector<int64_t>>> whole_out_shapes;
  int64_t last_pass = 0;
  bool MayMicroBatch(const std::vector<int64_t>& shape) const;
  int64_t PassSamples(const std::vector<int64_t>& shape);
  bool PerSamplePlan(int64_t batch) const;
  // Plans `slice`, a part of a batch whose outputs have the shapes `whole`,
  // and says whether that plan runs its samples as the whole batch's plan
  // does: per sample, each output the whole's with the slice's dim 0.
  bool PlanSlice(const std::vector<int64_t>& slice, const std::vector<std::vector<int64_t>>& whole);
  // Bytes of node k's weights not in `seen` yet (then added to it): its
  // float constants, and every constant of an ai.permdnn node (indices,
  // masks, codes); not the integer shapes and axes of the standard ops.
  int64_t NewWeightBytes(int k, std::vector<const Value*>* seen) const;
  void PlanFloatInput(const std::vector<int64_t>& shape);
  // Runs the batch `x` of `shape` in passes of `m` samples; dst[k] (when
  // given) receives graph output k, whole batch (whole_out_shapes).
  void ExecutePasses(const float* x, const std::vector<int64_t>& shape, int64_t m, std::span<void* const> dst,
                     bool check_finite = true);
  // The batch `x` of `shape` through this model (in passes where
  // micro-batching splits it); dst[k] receives graph output k.
  void RunFloat(const float* x, const std::vector<int64_t>& shape, std::span<void* const> dst,
                bool check_finite = true);

  // Batch parallelism (Options::batch_parallel). `replicas`: one model per
  // worker, single-threaded, made at the first batch that splits
  // (MakeReplica); per whole-batch input shape, the workers that split it
  // (1: none; the whole batch's output shapes then go to whole_out_shapes).
  std::vector<std::unique_ptr<Model>> replicas;
  // What kernels pack from the weights, shared with the replicas (PackCache).
  std::shared_ptr<detail::PackCache> packs = std::make_shared<detail::PackCache>();
  // A copy of this model's graph as loaded, with options `ropt`: the same
  // nodes (fused), the initializers' data and `packs` shared, its own
  // kernels, plan and arena. Reads this model only: workers make theirs at
  // once.
  std::unique_ptr<Model> MakeReplica(const Options& ropt) const;
  std::map<std::vector<int64_t>, int> batch_workers;
  int last_workers = 1;
  bool blas_threads_set = false;  // a replica: its parent set OpenBLAS to one thread
  bool MayBatchParallel(const std::vector<int64_t>& shape) const;
  int BatchWorkers(const std::vector<int64_t>& shape);
  // The shares check (kSharesCheckMargin): per shape timed, the best
  // blocks of the shares and of the split operators, whether the split is
  // kept, and when.
  struct SharesTimed {
    double shares_ms = 0, split_ms = 0;
    bool split = false;
    std::chrono::steady_clock::time_point made;
  };
  std::map<std::vector<int64_t>, SharesTimed> shares_check;
  // Runs a batch that BatchWorkers gave `workers` shares: in shares (true),
  // or nothing where the shares check keeps the split operators for its
  // shape (false: the caller runs it split). The first run of a shape (and
  // the first after kSplitCheckHoldSeconds) is the caller's own run in
  // shares, timed; one under kSplitCheckMaxMs is then timed against the
  // split operators on copies of the input.
  bool RunShares(const float* x, const std::vector<int64_t>& shape, int workers, std::span<void* const> dst);
  // Whether an output buffer of a run of `shape` overlaps its input `x`
  // (the outputs at the whole batch's shapes: whole_out_shapes, else the
  // plan's, which must then be the shape's).
  bool OutputsOverlapInput(const float* x, const std::vector<int64_t>& shape, std::span<void* const> dst) const;
  // How often a share of `share` samples uses each weight byte it reads,
  // averaged over the plan's weights by their bytes (HUGE_VAL without any).
  double BatchShareReuse(int64_t share) const;
  // Runs the batch with worker w running replica w on its contiguous share
  // of the samples (ChunkRange), all at once on the thread pool.
  void ExecuteWorkers(const float* x, const std::vector<int64_t>& shape, int workers, std::span<void* const> dst,
                      bool check_finite = true);

  // The split check (Options::split_check). Per input shape, the threads its
  // runs split over (1: `solo`, a single-threaded replica, runs it), the
  // best blocks behind the choice and when they were timed.
  struct SplitChoice {
    int threads = 1;
    double split_ms = 0, solo_ms = 0;
    std::chrono::steady_clock::time_point made;  // when measured
  };
  std::unique_ptr<Model> solo;
  std::map<std::vector<int64_t>, SplitChoice> split_choice;
  int last_threads = 1;
  bool MaySplitCheck(const std::vector<int64_t>& shape) const;
  // Runs the batch through `solo` where the check chose one thread for its
  // shape, measuring first on a new shape (the measured runs then leave the
  // outputs in dst); false where the caller is to run it split.
  bool RunSoloIfFaster(const float* x, const std::vector<int64_t>& shape, std::span<void* const> dst);
};

void Model::Impl::LoadProto(onnx::ModelProto& m) {
  int default_opset = 0, permdnn_opset = 0;
  for (const auto& o : m.opset_import()) {
    if (o.domain().empty() || o.domain() == "ai.onnx") default_opset = static_cast<int>(o.version());
    else if (o.domain() == detail::kPermDnnDomain) permdnn_opset = static_cast<int>(o.version());
  }
  if (default_opset == 0) default_opset = 1;
  summary.opset = default_opset;
  for (const auto& p : m.metadata_props()) metadata[p.key()] = p.value();
  const onnx::GraphProto& g = m.graph();
  if (g.sparse_initializer_size() > 0) throw UnsupportedError(name + ": sparse initializers are not supported");

  auto add_value = [&](const std::string& vname, const std::string& where) -> int {
    PERMDNN_CHECK(!vname.empty(), "{}: {} has an empty name", name, where);
    PERMDNN_CHECK(!index.count(vname), "{}: {}: the name '{}' is defined twice", name, where, vname);
    const int id = static_cast<int>(values.size());
    values.emplace_back();
    values.back().name = vname;
    index[vname] = id;
    return id;
  };
  for (int k = 0; k < g.initializer_size(); ++k) {
    const auto& t = g.initializer(k);
    const int id = add_value(t.name(), fmt::format("initializer #{}", k));
    Value& v = values[id];
    v.constant_data =
        std::make_shared<Tensor>(detail::TensorFromProto(t, fmt::format("{}: initializer '{}'", name, t.name())));
    v.initializer = v.constant = v.known = true;
    v.dtype = v.constant_data->dtype();
    v.shape = v.constant_data->shape();
    v.data = v.constant_data->raw();
    summary.initializers++;
    summary.weight_bytes += v.size() * detail::OnnxElementBytes(t.data_type());
    if (t.has_raw_data()) std::string().swap(*m.mutable_graph()->mutable_initializer(k)->mutable_raw_data());
  }
  for (const auto& in : g.input()) {
    if (index.count(in.name()) && values[index[in.name()]].initializer) continue;  // IR < 4 style
    const std::string where = fmt::format("{}: graph input '{}'", name, in.name());
    if (!in.type().has_tensor_type()) throw UnsupportedError(where + ": only tensor inputs are supported");
    const auto& tt = in.type().tensor_type();
    ValueInfo info;
    info.name = in.name();
    info.dtype = DTypeFromOnnx(tt.elem_type(), where);
    if (tt.has_shape())
      for (const auto& d : tt.shape().dim()) info.shape.push_back(d.has_dim_value() ? d.dim_value() : -1);
    const int id = add_value(in.name(), "graph input");
    values[id].dtype = info.dtype;
    input_ids.push_back(id);
    inputs.push_back(std::move(info));
  }
  nodes.reserve(g.node_size());
  for (int k = 0; k < g.node_size(); ++k) {
    const auto& pn = g.node(k);
    NodeDef n;
    n.name = pn.name().empty() ? fmt::format("#{}", k) : pn.name();
    n.op_type = pn.op_type();
    n.domain = pn.domain() == "ai.onnx" ? "" : pn.domain();
    n.position = k;
    n.opset = detail::IsPermDnnDomain(n.domain) ? permdnn_opset : default_opset;
    for (const auto& iname : pn.input()) {
      if (iname.empty()) {
        n.inputs.push_back(-1);
        continue;
      }
      auto it = index.find(iname);
      if (it == index.end())
        Fail("{}: {}: input '{}' is missing: it is neither a graph input, an initializer nor the output of an "
             "earlier node",
             name, n.Where(), iname);
      n.inputs.push_back(it->second);
    }
    detail::ReadAttributes(pn, name + ": " + n.Where(), &n.attrs, &n.tensor_attrs);
    for (const auto& oname : pn.output()) {
      if (oname.empty()) {
        n.outputs.push_back(-1);
        continue;
      }
      const int id = add_value(oname, n.Where() + " output");
      values[id].producer = k;
      n.outputs.push_back(id);
    }
    if (detail::IsPermDnnDomain(n.domain)) summary.compressed_nodes++;
    nodes.push_back(std::move(n));
  }
  summary.nodes = static_cast<int64_t>(nodes.size());
  PERMDNN_CHECK(g.output_size() > 0, "{}: the graph has no outputs", name);
  for (const auto& o : g.output()) {
    auto it = index.find(o.name());
    PERMDNN_CHECK(it != index.end(), "{}: graph output '{}' is not produced by any node", name, o.name());
    values[it->second].graph_output = true;
    output_ids.push_back(it->second);
    ValueInfo info;
    info.name = o.name();
    if (o.type().has_tensor_type()) {
      const auto& tt = o.type().tensor_type();
      info.dtype = static_cast<DType>(tt.elem_type());
      if (tt.has_shape())
        for (const auto& d : tt.shape().dim()) info.shape.push_back(d.has_dim_value() ? d.dim_value() : -1);
    }
    outputs.push_back(std::move(info));
  }
  if (!opt.reference) detail::FuseForInference(nodes, values);
  MakeKernels();
}

void Model::Impl::MakeKernels() {
  kernels.clear();
  for (const NodeDef& n : nodes) {
    try {
      kernels.push_back(detail::CreateKernel(n));
    } catch (const UnsupportedError& e) {
      throw UnsupportedError(name + ": " + e.what());
    } catch (const Error& e) {
      throw Error(name + ": " + e.what());
    }
  }
  ctxs.clear();
  ctxs.resize(nodes.size());
  for (std::size_t k = 0; k < nodes.size(); ++k) {
    ctxs[k].node = &nodes[k];
    for (int id : nodes[k].inputs) ctxs[k].in.push_back(id >= 0 ? &values[id] : nullptr);
    for (int id : nodes[k].outputs) ctxs[k].out.push_back(id >= 0 ? &values[id] : nullptr);
  }
}

bool Model::Impl::KeyMatches(const std::vector<InMeta>& in) const {
  if (!planned || in.size() != key_shapes.size()) return false;
  for (std::size_t k = 0; k < in.size(); ++k) {
    if (in[k].shape != key_shapes[k]) return false;
    if (!IsFloat(in[k].dtype)) {
      const int64_t n = NumElements(in[k].shape);
      if (!std::equal(in[k].ints, in[k].ints + n, key_ints[k].begin(), key_ints[k].end())) return false;
    }
  }
  return true;
}

void Model::Impl::Plan(const std::vector<InMeta>& in) {
  planned = false;
  PERMDNN_CHECK(in.size() == input_ids.size(), "{}: {} inputs given, the model has {}", name, in.size(),
                input_ids.size());
  for (Value& v : values) {
    if (v.initializer) continue;
    v.known = v.constant = false;
    v.layout = detail::Layout{};
    v.data = nullptr;
    v.arena_offset = -1;
    v.last_use = -1;
    v.constant_data.reset();
  }
  key_shapes.clear();
  key_ints.clear();
  for (std::size_t k = 0; k < in.size(); ++k) {
    Value& v = values[input_ids[k]];
    const ValueInfo& info = inputs[k];
    const InMeta& t = in[k];
    PERMDNN_CHECK(IsFloat(t.dtype) == IsFloat(info.dtype), "{}: input '{}' should be {}, got {}", name, info.name,
                  DTypeName(info.dtype), DTypeName(t.dtype));
    bool ok = info.shape.empty() || info.shape.size() == t.shape.size();
    for (std::size_t d = 0; ok && d < info.shape.size(); ++d)
      ok = info.shape[d] < 0 || info.shape[d] == t.shape[d];
    PERMDNN_CHECK(ok, "{}: input '{}' should have shape {} (-1 = any), got {}", name, info.name,
                  ShapeString(info.shape), ShapeString(t.shape));
    const std::string problem = ShapeProblem(t.shape);
    PERMDNN_CHECK(problem.empty(), "{}: input '{}' of shape {}: {}", name, info.name, ShapeString(t.shape), problem);
    v.dtype = info.dtype;
    v.shape = t.shape;
    v.known = true;
    key_shapes.push_back(t.shape);
    key_ints.emplace_back();
    if (!IsFloat(t.dtype)) {
      const int64_t n = NumElements(t.shape);
      v.constant = true;
      v.constant_data =
          std::make_shared<Tensor>(Tensor::Int64(t.shape, {t.ints, static_cast<std::size_t>(n)}, info.dtype));
      v.data = v.constant_data->raw();
      key_ints.back().assign(t.ints, t.ints + n);
    }
  }
  // Shapes and folding, node by node.
  folded.assign(nodes.size(), false);
  runtime_nodes.clear();
  int64_t scratch = 0;
  AlignedBuffer<uint8_t> fold_scratch;
  for (std::size_t k = 0; k < nodes.size(); ++k) {
    OpContext& ctx = ctxs[k];
    ctx.scratch_bytes = 0;
    ctx.out.clear();
    ctx.unnamed.clear();
    for (int id : nodes[k].outputs) ctx.out.push_back(id >= 0 ? &values[id] : nullptr);
    for (Value* v : ctx.in)
      if (v && !v->known) Fail("{}: {}: input '{}' has no known shape", name, nodes[k].Where(), v->name);
    try {
      kernels[k]->Prepare(ctx);
    } catch (const UnsupportedError& e) {
      throw UnsupportedError(name + ": " + e.what());
    } catch (const Error& e) {
      throw Error(name + ": " + e.what());
    }
    for (Value* v : ctx.out)
      if (v && !v->known) Fail("{}: {}: output '{}' got no shape", name, nodes[k].Where(), v->name);
    bool all_const = kernels[k]->Foldable();
    if (!kernels[k]->ShapeOnly())
      for (Value* v : ctx.in) all_const = all_const && (!v || v->constant);
    if (all_const) {
      for (Value* v : ctx.out) {
        if (!v) continue;
        PERMDNN_CHECK(static_cast<int64_t>(v->bytes()) <= opt.max_arena_bytes,
                      "{}: {}: folded output of {} bytes exceeds the limit", name, nodes[k].Where(), v->bytes());
        v->constant_data = std::make_shared<Tensor>(v->dtype, v->shape);
        v->data = v->constant_data->raw();
        v->constant = true;
      }
      fold_scratch.Resize(static_cast<std::size_t>(ctx.scratch_bytes));
      detail::RunState frs;
      frs.scratch = fold_scratch.data();
      try {
        kernels[k]->Run(ctx, frs);
      } catch (const Error& e) {
        throw Error(name + ": " + e.what());
      }
      folded[k] = true;
    } else {
      runtime_nodes.push_back(static_cast<int>(k));
      scratch = std::max(scratch, ctx.scratch_bytes);
    }
  }
  // Layouts: the plan's activation layout goes to an output when its producer
  // can write it and every runtime consumer can read it (graph outputs stay
  // plain); then each node finalizes for the layouts it got.
  rs.reference = opt.reference;
  rs.threads = std::max(1, opt.threads);
  rs.packs = packs.get();
  {
    const detail::Layout act = opt.reference ? detail::Layout{} : detail::ChooseActivationLayout(nodes);
    rs.act_layout = act;
    // Keyed by pointer: a node's unnamed outputs live outside `values`.
    std::unordered_map<const Value*, std::vector<std::pair<int, std::size_t>>> readers;
    for (int k : runtime_nodes)
      for (std::size_t i = 0; i < ctxs[k].in.size(); ++i)
        if (ctxs[k].in[i]) readers[ctxs[k].in[i]].push_back({k, i});
    for (int k : runtime_nodes) {
      for (std::size_t o = 0; o < ctxs[k].out.size() && !act.plain(); ++o) {
        Value* v = ctxs[k].out[o];
        if (!v || v->graph_output || !IsFloat(v->dtype) || v->shape.size() < 3 || v->shape.size() > 5) continue;
        bool all = kernels[k]->WritesLayout(ctxs[k], o, act);
        for (const auto& [c, i] : readers[v]) all = all && kernels[c]->ReadsLayout(ctxs[c], i, act);
        if (all) v->layout = act;
      }
    }
    for (int k : runtime_nodes) {
      try {
        kernels[k]->Finalize(ctxs[k], rs);
      } catch (const UnsupportedError& e) {
        throw UnsupportedError(name + ": " + e.what());
      } catch (const Error& e) {
        throw Error(name + ": " + e.what());
      }
      scratch = std::max(scratch, ctxs[k].scratch_bytes);
    }
  }
  // Liveness over runtime nodes.
  for (std::size_t t = 0; t < runtime_nodes.size(); ++t)
    for (Value* v : ctxs[runtime_nodes[t]].in)
      if (v && !v->constant) v->last_use = static_cast<int>(t);
  for (int id : output_ids)
    if (!values[id].constant) values[id].last_use = INT_MAX;
  // First-fit arena layout with reuse of dead tensors, except in a batch
  // run on several threads whose tensors fit in kThreadAffineArenaBytes:
  // there the batch-split operators write each thread's samples at offsets
  // that move from tensor to tensor, so a region reused by the next tensor
  // is written by the other core, and every such cache line moves between
  // the cores' caches once per run. Without reuse a line keeps its writer
  // from run to run (Fashion-MNIST cnn, B=16, 2 threads, AMD EPYC Zen 5:
  // 0.49-0.51 against 0.56 ms, its first conv 45-50 against 105-111 µs;
  // docs/runtime.md, "Plan").
  struct Live {
    int64_t offset, size;
    int last_use;
  };
  std::vector<Live> live;
  int64_t arena_size = 0;
  auto align = [](int64_t b) { return (b + 63) / 64 * 64; };
  int64_t all_tensors = 0;
  for (int k : runtime_nodes)
    for (Value* v : ctxs[k].out)
      if (v) all_tensors += align(std::max<int64_t>(1, static_cast<int64_t>(v->stored_bytes())));
  const int64_t batch = in.empty() || in[0].shape.empty() ? 1 : in[0].shape[0];
  const bool reuse = rs.threads <= 1 || batch < rs.threads || all_tensors > kThreadAffineArenaBytes ||
                     all_tensors + align(scratch) > opt.max_arena_bytes;
  for (std::size_t t = 0; t < runtime_nodes.size(); ++t) {
    live.erase(std::remove_if(live.begin(), live.end(), [&](const Live& l) { return l.last_use < static_cast<int>(t); }),
               live.end());
    for (Value* v : ctxs[runtime_nodes[t]].out) {
      if (!v) continue;
      const int64_t size = align(std::max<int64_t>(1, static_cast<int64_t>(v->stored_bytes())));
      if (v->last_use < 0) v->last_use = static_cast<int>(t);  // unused output still needs room
      std::sort(live.begin(), live.end(), [](const Live& a, const Live& b) { return a.offset < b.offset; });
      int64_t at = reuse ? 0 : arena_size;
      for (const Live& l : live) {
        if (at + size <= l.offset) break;
        at = std::max(at, l.offset + l.size);
      }
      v->arena_offset = at;
      live.push_back({at, size, v->last_use});
      arena_size = std::max(arena_size, at + size);
      PERMDNN_CHECK(arena_size <= opt.max_arena_bytes, "{}: the plan needs more than {} bytes of activations", name,
                    opt.max_arena_bytes);
    }
  }
  scratch_offset = arena_size;
  const int64_t total = arena_size + align(scratch);
  PERMDNN_CHECK(total <= opt.max_arena_bytes, "{}: the plan needs {} bytes (limit {})", name, total,
                opt.max_arena_bytes);
  arena.Resize(static_cast<std::size_t>(total));
  arena_capacity = std::max(arena_capacity, total);
  for (Value& v : values)
    if (v.arena_offset >= 0) v.data = arena.data() + v.arena_offset;
  for (int k : runtime_nodes)
    for (Value* v : ctxs[k].out)
      if (v && v->arena_offset >= 0) v->data = arena.data() + v->arena_offset;
  rs.scratch = arena.data() + scratch_offset;
  // Every value a planned node reads or writes has its buffer now (the float
  // graph inputs get theirs in Execute). A hole here would be a null write
  // in Run, so it is an error, not a crash.
  auto run_input = [&](const Value* v) {
    for (int id : input_ids)
      if (v == &values[id]) return IsFloat(v->dtype);
    return false;
  };
  for (int k : runtime_nodes) {
    for (const Value* v : ctxs[k].in)
      PERMDNN_CHECK(!v || v->data || run_input(v), "{}: {}: internal error: input '{}' has no buffer", name,
                    nodes[k].Where(), v->name);
    for (const Value* v : ctxs[k].out)
      PERMDNN_CHECK(!v || v->data, "{}: {}: internal error: output '{}' has no buffer", name, nodes[k].Where(),
                    v->name);
  }
  if (profile.size() != nodes.size()) profile.assign(nodes.size(), NodeProfile{});
  for (std::size_t k = 0; k < nodes.size(); ++k) {
    profile[k].name = nodes[k].name;
    profile[k].op_type = detail::FusedOpType(nodes[k]);
    profile[k].kernel = folded[k] ? "folded" : kernels[k]->KernelName();
    profile[k].fast = !folded[k] && kernels[k]->Fast();
  }
  planned = true;
}

void Model::Impl::CheckFinite(const Value& v, const float* x, int64_t n) const {
  for (int64_t i = 0; i < n; ++i)
    if (!std::isfinite(x[i]))
      Fail("{}: input '{}' holds {} at element {} (inputs must be finite)", name, v.name,
           std::isnan(x[i]) ? "NaN" : "an infinity", i);
}

void Model::Impl::Execute(std::span<const void* const> in_data, bool check_finite) {
  for (std::size_t k = 0; k < input_ids.size(); ++k) {
    Value& v = values[input_ids[k]];
    if (IsFloat(v.dtype)) {
      if (check_finite) CheckFinite(v, static_cast<const float*>(in_data[k]), v.size());
      v.data = const_cast<void*>(in_data[k]);
    }
  }
  rs.threads = std::max(1, opt.threads);
  rs.zero_skip = opt.zero_skip;
  rs.int16 = int16 && calibrated;
  rs.int8 = int8 && rs.int16;
  // OpenBLAS on one thread: nodes that want more split their work over the
  // runtime's pool (GemmOp), whose idle workers sleep. OpenBLAS's idle threads
  // spin, and beside oneDNN or the pool that cost 10-50x on a busy 2-core
  // machine (the Fashion-MNIST mlp at 2 threads: 9 ms instead of 0.12).
  // (A replica running beside others leaves it to its parent: the setting
  // is process-wide.)
  if (!blas_threads_set) openblas_set_num_threads(1);
  for (int k : runtime_nodes) {
    if (opt.profile) {
      const auto t0 = std::chrono::steady_clock::now();
      kernels[k]->Run(ctxs[k], rs);
      profile[k].seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      profile[k].calls++;
      if (dynamic_cast<detail::Int16Op*>(kernels[k].get())) profile[k].kernel = kernels[k]->KernelName();
    } else {
      kernels[k]->Run(ctxs[k], rs);
    }
  }
}

namespace {
// Ops whose output sample b reads only input sample b once their other
// inputs are constant (the weights of Conv / MatMul, Clip's bounds, ...).
constexpr std::array kPerSampleOps = {"Relu",    "Sigmoid",   "Tanh",     "Neg",     "Abs",       "Exp",
                                      "Log",     "Sqrt",      "Reciprocal", "Floor", "Ceil",      "LeakyRelu",
                                      "Elu",     "Clip",      "Identity", "Dropout", "Cast",      "Flatten",
                                      "Reshape", "Squeeze",   "Unsqueeze", "MaxPool", "AveragePool",
                                      "GlobalAveragePool", "GlobalMaxPool", "Conv", "BatchNormalization"};

bool OneOf(const std::string& op, const auto& list) {
  return std::find(list.begin(), list.end(), op) != list.end();
}

// Whether sample b of every output of node n depends only on sample b of
// its non-constant inputs, given that all of those carry the batch in dim 0
// (PerSamplePlan checks that). Out: ops that can mix samples while keeping
// dim 0 (Softmax / Concat / Transpose over axis 0; an elementwise operand
// of lower rank, whose dim 0 lines up with another axis of the output; a
// weight that is an activation or holds a batch of matrices), recurrent
// ops (batch in dim 1) and every op not named here.
bool PerSampleNode(const NodeDef& n, const OpContext& ctx) {
  auto constant = [&](std::size_t i) { return i >= ctx.in.size() || !ctx.in[i] || ctx.in[i]->constant; };
  const std::size_t rank = ctx.out.empty() || !ctx.out[0] ? 0 : ctx.out[0]->shape.size();
  // An elementwise operand: an activation of the output's rank, or a
  // constant that broadcasts over the batch (lower rank or a dim 0 of 1).
  auto elementwise = [&](std::size_t i) {
    const Value* v = i < ctx.in.size() ? ctx.in[i] : nullptr;
    if (!v) return true;
    if (!v->constant) return v->shape.size() == rank;
    return v->shape.size() < rank || v->shape[0] == 1;
  };
  std::vector<bool> operand(ctx.in.size(), false);  // fused Add operands
  for (const detail::PostOp& p : n.post_ops) {
    if (p.op_type != "BatchNormalization" && p.op_type != "Add" && p.op_type != "Relu" && p.op_type != "Clip")
      return false;
    if (p.op_type == "Add")
      for (int i : p.inputs) {
        if (i < 0 || static_cast<std::size_t>(i) >= ctx.in.size() || !elementwise(static_cast<std::size_t>(i)))
          return false;
        operand[static_cast<std::size_t>(i)] = true;
      }
  }
  // Input 0 is the activation, the others constants.
  auto weights_constant = [&] {
    for (std::size_t i = 1; i < ctx.in.size(); ++i)
      if (!operand[i] && !constant(i)) return false;
    return true;
  };
  if (detail::IsPermDnnDomain(n.domain)) {
    formats::RecurrentCell cell{};
    return formats::FindRecurrentFormat(n.domain, n.op_type, &cell) == nullptr && weights_constant();
  }
  if (!n.domain.empty() && n.domain != "ai.onnx") return false;
  const std::string& op = n.op_type;
  if (OneOf(op, kPerSampleOps)) return weights_constant();
  if (op == "MatMul")  // a constant matrix, not a batch of them
    return weights_constant() && ctx.in.size() > 1 && ctx.in[1] && ctx.in[1]->shape.size() <= 2;
  if (op == "Gemm") return n.Int("transA", 0) == 0 && weights_constant() && elementwise(2);
  if (op == "Add" || op == "Sub" || op == "Mul" || op == "Div") {
    for (std::size_t i = 0; i < ctx.in.size(); ++i)
      if (!elementwise(i)) return false;
    return true;
  }
  if (op == "Concat") {
    if (!n.Has("axis")) return false;
    for (std::size_t i = 0; i < ctx.in.size(); ++i)
      if (constant(i)) return false;
    return rank > 0 && detail::NormalizeAxis(n.Int("axis", 0), static_cast<int64_t>(rank), ctx) != 0;
  }
  if (op == "Softmax" || op == "LogSoftmax")
    return rank > 0 &&
           detail::NormalizeAxis(n.Int("axis", n.opset >= 13 ? -1 : 1), static_cast<int64_t>(rank), ctx) != 0;
  if (op == "Transpose") {
    const std::vector<int64_t> perm = n.Ints("perm");
    return !perm.empty() && perm[0] == 0;
  }
  return false;
}
}  // namespace

bool Model::Impl::PerSamplePlan(int64_t batch) const {
  for (int id : output_ids) {
    const Value& v = values[id];
    if (v.constant || v.shape.empty() || v.shape[0] != batch) return false;
  }
  for (int k : runtime_nodes) {
    const OpContext& ctx = ctxs[k];
    for (const auto* list : {&ctx.in, &ctx.out})
      for (const Value* v : *list)
        if (v && !v->constant && (v->shape.empty() || v->shape[0] != batch)) return false;
    if (!PerSampleNode(nodes[k], ctx)) return false;
  }
  return true;
}

bool Model::Impl::MayMicroBatch(const std::vector<int64_t>& shape) const {
  return opt.micro_batch != 0 && !opt.reference && !int16 && !int8 && inputs.size() == 1 &&
         IsFloat(inputs[0].dtype) && (inputs[0].shape.empty() || inputs[0].shape[0] < 0) && shape.size() >= 2 &&
         shape[0] >= 2;
}

void Model::Impl::PlanFloatInput(const std::vector<int64_t>& shape) {
  std::vector<InMeta> meta = {{DType::kFloat32, shape, nullptr}};
  if (!KeyMatches(meta)) Plan(meta);
}

int64_t MicroBatchSamples(int64_t batch, int64_t peak_sample_bytes, int64_t weight_bytes, int threads,
                          int64_t cache_bytes) {
  if (batch < 2 || peak_sample_bytes <= 0 || threads > 1) return batch;
  if (2 * weight_bytes > cache_bytes || weight_bytes > 2 * peak_sample_bytes) return batch;
  if (weight_bytes + batch * peak_sample_bytes <= cache_bytes) return batch;
  int64_t m = std::clamp<int64_t>((cache_bytes - weight_bytes) / 4 / peak_sample_bytes, 1, batch);
  while (batch % m != 0) --m;
  return m;
}

int64_t Model::Impl::PassSamples(const std::vector<int64_t>& shape) {
  if (auto it = pass_samples.find(shape); it != pass_samples.end()) return it->second;
  const int64_t batch = shape[0];
  int64_t m = batch;
  PlanFloatInput(shape);
  if (PerSamplePlan(batch)) {
    int64_t cap = opt.micro_batch;
    if (cap < 0) {
      // The plan's footprint: its weights (NewWeightBytes, each once)
      // and the largest one-node activation footprint per sample.
      std::vector<const Value*> seen;
      int64_t weights = 0, peak = 0;
      for (int k : runtime_nodes) {
        int64_t act = 0;
        for (const auto* list : {&ctxs[k].in, &ctxs[k].out})
          for (const Value* v : *list)
            if (v && !v->constant) act += static_cast<int64_t>(v->stored_bytes());
        peak = std::max(peak, act);
        weights += NewWeightBytes(k, &seen);
      }
      cap = MicroBatchSamples(batch, (peak + batch - 1) / batch, weights, rs.threads, kLastLevelCacheBytes);
    }
    m = std::clamp<int64_t>(cap, 1, batch);
    while (batch % m != 0) --m;
    if (m < batch) {
      std::vector<std::vector<int64_t>> whole;
      for (int id : output_ids) whole.push_back(values[id].shape);
      std::vector<int64_t> one = shape;
      one[0] = m;
      bool ok = false;
      try {
        ok = PlanSlice(one, whole);
      } catch (const Error&) {
        ok = false;  // e.g. a Reshape to a constant shape that holds the batch
      }
      if (ok) {
        whole_out_shapes[shape] = std::move(whole);
      } else {
        m = batch;
        PlanFloatInput(shape);
      }
    }
  }
  pass_samples[shape] = m;
  return m;
}

void Model::Impl::ExecutePasses(const float* x, const std::vector<int64_t>& shape, int64_t m,
                                std::span<void* const> dst, bool check_finite) {
  std::vector<int64_t> one = shape;
  one[0] = m;
  PlanFloatInput(one);
  // The whole batch first, so that an error names its element in the
  // batch and no pass has written the outputs yet.
  if (check_finite) CheckFinite(values[input_ids[0]], x, NumElements(shape));
  const int64_t in_step = NumElements(one);
  for (int64_t b = 0, pass = 0; b < shape[0]; b += m, ++pass) {
    const void* in_ptr[1] = {x + pass * in_step};
    Execute(in_ptr, false);
    for (std::size_t k = 0; k < dst.size() && k < output_ids.size(); ++k) {
      const Value& v = values[output_ids[k]];
      if (dst[k] && v.bytes()) std::memcpy(static_cast<uint8_t*>(dst[k]) + pass * v.bytes(), v.data, v.bytes());
    }
  }
  last_pass = m;
}

void Model::Impl::RunFloat(const float* x, const std::vector<int64_t>& shape, std::span<void* const> dst,
                           bool check_finite) {
  if (MayMicroBatch(shape)) {
    if (const int64_t pass = PassSamples(shape); pass < shape[0]) {
      ExecutePasses(x, shape, pass, dst, check_finite);
      return;
    }
  }
  PlanFloatInput(shape);
  const void* in_ptr[1] = {x};
  Execute(in_ptr, check_finite);
  last_pass = shape.empty() ? 1 : shape[0];
  for (std::size_t k = 0; k < dst.size() && k < output_ids.size(); ++k) {
    const Value& v = values[output_ids[k]];
    if (dst[k] && v.bytes()) std::memcpy(dst[k], v.data, v.bytes());
  }
}

bool Model::Impl::MayBatchParallel(const std::vector<int64_t>& shape) const {
  return opt.batch_parallel && opt.threads > 1 && inputs.size() == 1 && IsFloat(inputs[0].dtype) &&
         (inputs[0].shape.empty() || inputs[0].shape[0] < 0) &&
         summary.weight_bytes * opt.threads <= kBatchParallelMaxReplicaBytes && !opt.profile &&
         !opt.reference && !int16 && !int8 && shape.size() >= 2 && shape[0] >= 2;
}

int Model::Impl::BatchWorkers(const std::vector<int64_t>& shape) {
  if (auto it = batch_workers.find(shape); it != batch_workers.end()) return it->second;
  const int64_t batch = shape[0];
  const int workers = static_cast<int>(std::min<int64_t>(opt.threads, batch));
  int chosen = 1;
  PlanFloatInput(shape);
  if (workers >= 2 && PerSamplePlan(batch) && BatchShareReuse(batch / workers) >= kBatchParallelMinReuse) {
    std::vector<std::vector<int64_t>> whole;
    for (int id : output_ids) whole.push_back(values[id].shape);
    // The whole batch's plan only serves these checks: its arena goes
    // before the replicas allocate theirs, so that both are not held at
    // once (AlignedBuffer keeps memory when shrunk; the shares check, for
    // runs under kSplitCheckMaxMs, plans it again beside them: RunShares).
    // Its kernels keep what they packed for it, which the replicas share. Where the shares do not
    // fit, the arena comes back at its size and the batch is planned again.
    const int64_t held = arena_capacity;
    arena = AlignedBuffer<uint8_t>();
    arena_capacity = 0;
    planned = false;
    bool ok = true;
    try {
      Options ropt = opt;
      ropt.threads = 1;
      ropt.profile = false;
      ropt.batch_parallel = false;
      ropt.int16 = ropt.int8 = false;  // MayBatchParallel: neither is on
      if (replicas.size() < static_cast<std::size_t>(workers)) replicas.resize(static_cast<std::size_t>(workers));
      // Each worker makes (the first time) and plans the replica it will
      // run, all at once: the plans cost T times one model's on one thread,
      // and the replica's arena is first touched by its thread.
      std::vector<char> fits(static_cast<std::size_t>(workers), 0);
      openblas_set_num_threads(1);  // folding at plan time may call it
      ParallelFor(workers, workers, [&](int64_t w0, int64_t w1, int) {
        detail::SetDnnlThreads(1);
        for (int64_t w = w0; w < w1; ++w) {
          std::unique_ptr<Model>& slot = replicas[static_cast<std::size_t>(w)];
          if (!slot) slot = MakeReplica(ropt);
          int64_t b0 = 0, b1 = 0;
          ChunkRange(batch, workers, static_cast<int>(w), &b0, &b1);
          std::vector<int64_t> slice = shape;
          slice[0] = b1 - b0;
          fits[static_cast<std::size_t>(w)] = slot->impl_->PlanSlice(slice, whole);
        }
      });
      ok = std::all_of(fits.begin(), fits.end(), [](char f) { return f != 0; });
    } catch (const Error&) {
      ok = false;  // e.g. a Reshape to a constant shape that holds the batch
    }
    if (ok) {
      chosen = workers;
      whole_out_shapes[shape] = std::move(whole);
    } else {
      if (std::none_of(batch_workers.begin(), batch_workers.end(), [](const auto& e) { return e.second > 1; }))
        replicas.clear();  // none in use
      arena.Resize(static_cast<std::size_t>(held));  // (ArenaBytes only grows)
      arena_capacity = held;
      PlanFloatInput(shape);
    }
  }
  batch_workers[shape] = chosen;
  return chosen;
}

bool Model::Impl::OutputsOverlapInput(const float* x, const std::vector<int64_t>& shape,
                                      std::span<void* const> dst) const {
  const auto in = reinterpret_cast<uintptr_t>(x);
  const uintptr_t in_end = in + static_cast<uintptr_t>(NumElements(shape)) * sizeof(float);
  const auto whole = whole_out_shapes.find(shape);
  for (std::size_t k = 0; k < dst.size() && k < output_ids.size(); ++k) {
    const Value& v = values[output_ids[k]];
    const int64_t bytes = whole != whole_out_shapes.end()
                              ? NumElements(whole->second[k]) * static_cast<int64_t>(StorageBytes(v.dtype))
                              : static_cast<int64_t>(v.bytes());
    const auto d = reinterpret_cast<uintptr_t>(dst[k]);
    if (dst[k] && d < in_end && in < d + static_cast<uintptr_t>(bytes)) return true;
  }
  return false;
}

bool Model::Impl::RunShares(const float* x, const std::vector<int64_t>& shape, int workers,
                            std::span<void* const> dst) {
  const auto now = std::chrono::steady_clock::now();
  // An output over the input: the shares run at once, and one share's
  // outputs would land in another's input while it reads it. They run on a
  // copy of the input.
  const bool overlap = OutputsOverlapInput(x, shape, dst);
  const std::vector<std::vector<int64_t>>& whole = whole_out_shapes.at(shape);
  std::vector<float> x_copy;
  if (overlap) {
    x_copy.assign(x, x + NumElements(shape));
    x = x_copy.data();
  }
  if (auto it = shares_check.find(shape); it != shares_check.end()) {
    if (now - it->second.made < std::chrono::duration<double>(kSplitCheckHoldSeconds)) {
      if (!it->second.split) ExecuteWorkers(x, shape, workers, dst);
      return !it->second.split;
    }
    shares_check.erase(it);  // check again below
  }
  if (const char* force = ForcedSharesCheck(); force && !std::strcmp(force, "split")) {
    shares_check[shape] = SharesTimed{0, 0, true, now};
    return false;
  }
  // The caller's run, timed: it checks the input (an error records
  // nothing), and a run over kSplitCheckMaxMs keeps the shares untimed.
  const double first = TimedMs([&] { ExecuteWorkers(x, shape, workers, dst); });
  if (!opt.split_check || ForcedSplitCheck() || ForcedSharesCheck() || first > kSplitCheckMaxMs) return true;
  // On copies, so that the caller's outputs stay those of its run.
  const std::vector<float> in = overlap ? std::move(x_copy) : std::vector<float>(x, x + NumElements(shape));
  std::vector<AlignedBuffer<uint8_t>> out;
  std::vector<void*> scratch;
  for (std::size_t k = 0; k < whole.size(); ++k) {
    out.emplace_back(static_cast<std::size_t>(NumElements(whole[k]) *
                                              static_cast<int64_t>(StorageBytes(values[output_ids[k]].dtype))));
    scratch.push_back(out.back().data());
  }
  auto shares = [&] { ExecuteWorkers(in.data(), shape, workers, scratch, false); };
  // The whole batch on split operators, planned again: its arena is held
  // beside the replicas' (BatchWorkers had freed it) while the check runs,
  // and after it where the split is kept (a run under kSplitCheckMaxMs).
  auto split = [&] { RunFloat(in.data(), shape, scratch, false); };
  SharesTimed c{0, 0, false, now};
  try {
    split();
    split();
    std::tie(c.shares_ms, c.split_ms) = AlternatingBestMs(shares, split, first);
    c.split = c.split_ms < kSharesCheckMargin * c.shares_ms;
  } catch (const Error&) {
    c = SharesTimed{0, 0, false, now};  // the whole batch failed to plan (e.g. over max_arena_bytes)
  }
  if (!c.split) {  // as BatchWorkers leaves the shares
    arena = AlignedBuffer<uint8_t>();
    arena_capacity = 0;
    planned = false;
  }
  if (c.shares_ms > 0) shares_check[shape] = c;
  last_workers = c.split ? 1 : workers;
  last_pass = c.split ? shape[0] : replicas[0]->impl_->last_pass;
  if (c.split && overlap) {
    // The caller's input is under the outputs its run in shares wrote: the
    // split run goes here, from the copy.
    last_threads = std::max(1, opt.threads);
    RunFloat(in.data(), shape, dst, false);
    return true;
  }
  return !c.split;
}

bool Model::Impl::MaySplitCheck(const std::vector<int64_t>& shape) const {
  // (The one-thread replica holds its own copy of what some compressed
  // kernels decode, as batch parallelism's do: the same bound on its bytes.)
  return opt.split_check && opt.threads > 1 && inputs.size() == 1 && IsFloat(inputs[0].dtype) && !opt.profile &&
         !opt.reference && !int16 && !int8 && !shape.empty() &&
         summary.weight_bytes * 2 <= kBatchParallelMaxReplicaBytes;
}

bool Model::Impl::RunSoloIfFaster(const float* x, const std::vector<int64_t>& shape, std::span<void* const> dst) {
  auto run_solo = [&](bool check_finite) {
    solo->impl_->RunFloat(x, shape, dst, check_finite);
    last_pass = solo->impl_->last_pass;
  };
  const auto now = std::chrono::steady_clock::now();
  if (auto it = split_choice.find(shape); it != split_choice.end()) {
    if (now - it->second.made < std::chrono::duration<double>(kSplitCheckHoldSeconds)) {
      last_threads = it->second.threads;
      if (it->second.threads > 1) return false;
      run_solo(true);
      return true;
    }
    split_choice.erase(it);  // check again below
  }
  const char* force = ForcedSplitCheck();
  const bool force_one = force && !std::strcmp(force, "one");
  auto split = [&] { RunFloat(x, shape, dst, false); };
  // The split run first: it checks the input (an error leaves no choice
  // recorded) and plans the shape.
  SplitChoice c{opt.threads, TimedMs([&] { RunFloat(x, shape, dst); }), 0, now};
  last_threads = c.threads;
  // An output written over the input would change the input of the timed
  // runs: such a call runs split, once, and records nothing.
  if (OutputsOverlapInput(x, shape, dst)) return true;
  if (force || c.split_ms <= kSplitCheckMaxMs) {
    try {
      if (!solo && (!force || force_one)) {
        Options ropt = opt;
        ropt.threads = 1;
        ropt.batch_parallel = false;
        ropt.split_check = false;
        solo = MakeReplica(ropt);
        solo->impl_->blas_threads_set = false;  // it runs alone: its own runs set OpenBLAS to one thread
      }
      if (force) {
        c.split_ms = 0;
        if (force_one) {
          c.threads = 1;
          run_solo(false);
        }
      } else {
        run_solo(false);  // plans and warms the replica
        split();          // warm: the first run paid for the plan
        std::tie(c.split_ms, c.solo_ms) = AlternatingBestMs(split, [&] { run_solo(false); }, TimedMs(split));
        if (c.solo_ms < kSplitCheckMargin * c.split_ms) c.threads = 1;
        else split();  // the outputs from the path kept (equal within rounding)
      }
    } catch (const Error&) {
      // The replica failed where the split run did not (e.g. a plan over
      // max_arena_bytes): keep the split, and its outputs. (The replica
      // stays: other shapes may run on it, and it plans again for them.)
      c = SplitChoice{opt.threads, 0, 0, now};
      split();
    }
  }
  split_choice[shape] = c;
  last_threads = c.threads;
  return true;
}

std::unique_ptr<Model> Model::Impl::MakeReplica(const Options& ropt) const {
  auto replica = std::make_unique<Model>();
  Impl& r = *replica->impl_;
  r.opt = ropt;
  r.name = name;
  r.values = values;  // the initializers' constant_data shared; Plan resets the rest
  r.index = index;
  r.nodes = nodes;
  r.input_ids = input_ids;
  r.output_ids = output_ids;
  r.inputs = inputs;
  r.outputs = outputs;
  r.metadata = metadata;
  r.summary = summary;
  r.MakeKernels();
  r.packs = packs;
  r.blas_threads_set = true;  // by this model, for all its workers
  return replica;
}

bool Model::Impl::PlanSlice(const std::vector<int64_t>& slice, const std::vector<std::vector<int64_t>>& whole) {
  PlanFloatInput(slice);
  if (!PerSamplePlan(slice[0])) return false;
  for (std::size_t k = 0; k < output_ids.size(); ++k) {
    std::vector<int64_t> s = whole[k];
    s[0] = slice[0];
    if (values[output_ids[k]].shape != s) return false;
  }
  return true;
}

int64_t Model::Impl::NewWeightBytes(int k, std::vector<const Value*>* seen) const {
  const bool compressed = detail::IsPermDnnDomain(nodes[k].domain);
  int64_t bytes = 0;
  for (const Value* v : ctxs[k].in)
    if (v && v->constant && (compressed || IsFloat(v->dtype)) &&
        std::find(seen->begin(), seen->end(), v) == seen->end()) {
      seen->push_back(v);
      bytes += static_cast<int64_t>(v->bytes());
    }
  return bytes;
}

double Model::Impl::BatchShareReuse(int64_t share) const {
  std::vector<const Value*> seen;
  double bytes = 0, uses = 0;
  for (int k : runtime_nodes) {
    const OpContext& ctx = ctxs[k];
    const double w = static_cast<double>(NewWeightBytes(k, &seen));
    const Value* y = ctx.out.empty() ? nullptr : ctx.out[0];
    if (w == 0 || !y) continue;
    // Uses of a weight per sample: the output positions (a convolution's
    // spatial dims, the rows between batch and features of a MatMul).
    const bool conv = nodes[k].op_type.find("Conv") != std::string::npos;
    double per_sample = 1;
    for (std::size_t d = conv ? 2 : 1; d + (conv ? 0 : 1) < y->shape.size(); ++d)
      per_sample *= static_cast<double>(y->shape[d]);
    bytes += w;
    uses += w * per_sample;
  }
  return bytes == 0 ? HUGE_VAL : static_cast<double>(share) * uses / bytes;
}

void Model::Impl::ExecuteWorkers(const float* x, const std::vector<int64_t>& shape, int workers,
                                 std::span<void* const> dst, bool check_finite) {
  // The whole batch first, so that an error names its element in the batch
  // and no worker has written the outputs yet.
  if (check_finite) CheckFinite(values[input_ids[0]], x, NumElements(shape));
  openblas_set_num_threads(1);  // once for all workers (Execute)
  const int64_t batch = shape[0], sample = NumElements(shape) / batch;
  const std::vector<std::vector<int64_t>>& whole = whole_out_shapes.at(shape);
  std::vector<int64_t> out_sample_bytes;
  for (std::size_t k = 0; k < whole.size(); ++k)
    out_sample_bytes.push_back(NumElements(whole[k]) / batch *
                               static_cast<int64_t>(StorageBytes(values[output_ids[k]].dtype)));
  ParallelFor(workers, workers, [&](int64_t w0, int64_t w1, int) {
    detail::SetDnnlThreads(1);  // before any reorder a share runs on this thread
    for (int64_t w = w0; w < w1; ++w) {
      int64_t b0 = 0, b1 = 0;
      ChunkRange(batch, workers, static_cast<int>(w), &b0, &b1);
      std::vector<int64_t> slice = shape;
      slice[0] = b1 - b0;
      std::vector<void*> part(dst.size(), nullptr);
      for (std::size_t k = 0; k < dst.size() && k < out_sample_bytes.size(); ++k)
        if (dst[k]) part[k] = static_cast<uint8_t*>(dst[k]) + b0 * out_sample_bytes[k];
      replicas[static_cast<std::size_t>(w)]->impl_->RunFloat(x + b0 * sample, slice, part, false);
    }
  });
  last_pass = replicas[0]->impl_->last_pass;
  last_workers = workers;
}

Model::Model() : impl_(std::make_unique<Impl>()) {}
Model::~Model() = default;
Model::Model(Model&&) noexcept = default;
Model& Model::operator=(Model&&) noexcept = default;

// Peak memory: the file's bytes go once parsed, each initializer's bytes
// once read into its tensor (LoadProto), and the parsed file before the plan
// decodes and packs the weights. (A 78 MB permdiag file, AlexNet's fully
// connected layers at p = 4: the heap peaked at 378 MB with the bytes and
// the parsed file held through the plan, 2026-12-07.)
Model Model::Load(const std::string& path, const Options& options) {
  // (Parsed before the call: the file's bytes, a temporary, would
  // otherwise live until FromProto returns.)
  onnx::ModelProto proto = detail::ParseModelProto(ReadFileBytes(path), path);
  return Impl::FromProto(std::move(proto), path, options);
}

Model Model::FromBytes(std::string_view bytes, const std::string& name, const Options& options) {
  return Impl::FromProto(detail::ParseModelProto(bytes, name), name, options);
}

Model Model::Impl::FromProto(onnx::ModelProto proto, const std::string& name, const Options& options) {
  Model model;
  model.impl_->Init(proto, name, options);
  onnx::ModelProto().Swap(&proto);  // the parsed file goes before the plan decodes and packs the weights
  model.impl_->PlanAtLoad();
  return model;
}

void Model::Impl::Init(onnx::ModelProto& proto, const std::string& model_name, const Options& options) {
  opt = options;
  if (kernels::ActivePath() == kernels::KernelPath::kReference) opt.reference = true;
  name = model_name;
  int16 = options.int16 || options.int8;
  int8 = options.int8;
  LoadProto(proto);
}

void Model::Impl::PlanAtLoad() {
  // Plan once now when every input is float with a known rank, so that shape
  // errors surface at load time (open dims are taken as 1).
  std::vector<InMeta> probe;
  for (const ValueInfo& v : inputs) {
    if (!IsFloat(v.dtype) || v.shape.empty()) return;
    std::vector<int64_t> s = v.shape;
    for (int64_t& d : s) d = d < 0 ? 1 : d;
    int64_t n = 1;
    for (int64_t d : s) n = d > 0 && n > (int64_t{1} << 32) / d ? (int64_t{1} << 33) : n * d;
    if (n > (int64_t{1} << 30)) return;
    probe.push_back({DType::kFloat32, s, nullptr});
  }
  Plan(probe);
}

const std::vector<ValueInfo>& Model::inputs() const { return impl_->inputs; }
const std::vector<ValueInfo>& Model::outputs() const { return impl_->outputs; }
ModelSummary Model::Summary() const { return impl_->summary; }
std::string Model::Metadata(const std::string& key) const {
  auto it = impl_->metadata.find(key);
  return it == impl_->metadata.end() ? std::string() : it->second;
}
const std::string& Model::name() const { return impl_->name; }
void Model::SetThreads(int threads) {
  threads = std::max(1, threads);
  // The plan splits work and places tensors for its thread count: re-plan.
  if (threads != impl_->opt.threads) {
    impl_->planned = false;
    impl_->split_choice.clear();
    impl_->solo.reset();
    impl_->pass_samples.clear();  // the automatic micro-batch depends on it
    impl_->whole_out_shapes.clear();
    impl_->batch_workers.clear();
    impl_->shares_check.clear();
    if (impl_->replicas.size() > static_cast<std::size_t>(threads > 1 ? threads : 0))
      impl_->replicas.resize(static_cast<std::size_t>(threads > 1 ? threads : 0));
  }
  impl_->opt.threads = threads;
}
void Model::SetProfiling(bool on) { impl_->opt.profile = on; }

std::vector<int64_t> Model::OutputShape(std::span<const int64_t> input_shape) {
  Impl& m = *impl_;
  PERMDNN_CHECK(m.inputs.size() == 1 && IsFloat(m.inputs[0].dtype),
                "{}: the span API needs exactly one float input (the model has {})", m.name, m.inputs.size());
  const std::vector<int64_t> shape(input_shape.begin(), input_shape.end());
  if (m.MayMicroBatch(shape) || m.MayBatchParallel(shape))
    if (auto it = m.whole_out_shapes.find(shape); it != m.whole_out_shapes.end()) return it->second[0];
  // Fast path (no allocation): the plan already has this shape.
  if (!(m.planned && m.key_shapes.size() == 1 &&
        std::equal(input_shape.begin(), input_shape.end(), m.key_shapes[0].begin(), m.key_shapes[0].end()))) {
    std::vector<Impl::InMeta> meta = {{DType::kFloat32, {input_shape.begin(), input_shape.end()}, nullptr}};
    m.Plan(meta);
  }
  return m.values[m.output_ids[0]].shape;
}

std::vector<int64_t> Model::Run(std::span<const float> input, std::span<const int64_t> input_shape,
                                std::span<float> output) {
  Impl& m = *impl_;
  std::vector<int64_t> out_shape = OutputShape(input_shape);
  PERMDNN_CHECK(static_cast<int64_t>(input.size()) == NumElements(input_shape),
                "{}: input has {} floats, shape {} needs {}", m.name, input.size(), ShapeString(input_shape),
                NumElements(input_shape));
  const Value& y = m.values[m.output_ids[0]];
  PERMDNN_CHECK(IsFloat(y.dtype), "{}: output '{}' is {}, not float32", m.name, y.name, DTypeName(y.dtype));
  PERMDNN_CHECK(static_cast<int64_t>(output.size()) >= NumElements(out_shape),
                "{}: output span holds {} floats, need {}", m.name, output.size(), NumElements(out_shape));
  const std::vector<int64_t> shape(input_shape.begin(), input_shape.end());
  void* dst[1] = {output.data()};
  m.last_workers = 1;
  m.last_threads = 1;
  if (m.MayBatchParallel(shape))
    if (const int workers = m.BatchWorkers(shape); workers > 1 && m.RunShares(input.data(), shape, workers, dst))
      return out_shape;  // (else the shares check kept the split operators: below)
  if (m.MaySplitCheck(shape) && m.RunSoloIfFaster(input.data(), shape, dst)) return out_shape;
  m.last_threads = std::max(1, m.opt.threads);
  m.RunFloat(input.data(), shape, dst);
  return out_shape;
}

std::vector<Tensor> Model::Run(const std::vector<Tensor>& inputs) {
  Impl& m = *impl_;
  m.last_workers = 1;
  m.last_threads = 1;
  if (inputs.size() == 1 && IsFloat(inputs[0].dtype()) && inputs[0].shape().size() >= 2) {
    const std::vector<int64_t>& shape = inputs[0].shape();
    const int workers = m.MayBatchParallel(shape) ? m.BatchWorkers(shape) : 1;
    const int64_t pass = workers == 1 && m.MayMicroBatch(shape) ? m.PassSamples(shape) : shape[0];
    if (workers == 1) m.last_threads = std::max(1, m.opt.threads);
    if (workers == 1 && m.MaySplitCheck(shape)) {
      // Output shapes from the plan of the shape (or of its passes).
      const std::span<const int64_t> dims(shape);
      OutputShape(dims);
      std::vector<Tensor> out;
      std::vector<void*> dst;
      auto whole = m.whole_out_shapes.find(shape);
      for (std::size_t k = 0; k < m.output_ids.size(); ++k) {
        const Value& v = m.values[m.output_ids[k]];
        out.emplace_back(v.dtype, pass < shape[0] && whole != m.whole_out_shapes.end() ? whole->second[k] : v.shape);
        dst.push_back(out.back().raw());
      }
      if (m.RunSoloIfFaster(inputs[0].f(), shape, dst)) return out;
      m.RunFloat(inputs[0].f(), shape, dst);
      return out;
    }
    if (workers > 1 || pass < shape[0]) {
      std::vector<Tensor> out;
      std::vector<void*> dst;
      for (const std::vector<int64_t>& s : m.whole_out_shapes.at(shape)) {
        out.emplace_back(m.values[m.output_ids[out.size()]].dtype, s);
        dst.push_back(out.back().raw());
      }
      if (workers > 1) {
        if (m.RunShares(inputs[0].f(), shape, workers, dst)) return out;
        // The shares check kept the split operators: the batch runs split,
        // into the same outputs (the whole batch's shapes).
        m.last_threads = std::max(1, m.opt.threads);
        if (m.MaySplitCheck(shape) && m.RunSoloIfFaster(inputs[0].f(), shape, dst)) return out;
        m.RunFloat(inputs[0].f(), shape, dst);
        return out;
      }
      m.ExecutePasses(inputs[0].f(), shape, pass, dst);
      return out;
    }
  }
  std::vector<Impl::InMeta> meta;
  for (const Tensor& t : inputs) meta.push_back({t.dtype(), t.shape(), IsFloat(t.dtype()) ? nullptr : t.i()});
  if (!m.KeyMatches(meta)) m.Plan(meta);
  m.last_pass = meta.empty() || meta[0].shape.empty() ? 1 : meta[0].shape[0];
  m.last_threads = std::max(1, m.opt.threads);
  std::vector<const void*> data;
  for (const Tensor& t : inputs) data.push_back(t.raw());
  m.Execute(data);
  std::vector<Tensor> out;
  for (int id : m.output_ids) {
    const Value& v = m.values[id];
    Tensor t(v.dtype, v.shape);
    if (v.bytes()) std::memcpy(t.raw(), v.data, v.bytes());
    out.push_back(std::move(t));
  }
  return out;
}

void Model::EnableInt16(bool on) {
  impl_->int16 = on;
  if (!on) impl_->int8 = false;
}
void Model::EnableInt8(bool on) {
  impl_->int8 = on;
  if (on) impl_->int16 = true;
}
bool Model::int16_ready() const { return impl_->int16 && impl_->calibrated; }

void Model::Calibrate(std::span<const float> input, std::span<const int64_t> input_shape) {
  Impl& m = *impl_;
  PERMDNN_CHECK(m.int16, "{}: Calibrate needs int16 enabled (Options::int16 or EnableInt16)", m.name);
  std::vector<int64_t> shape(input_shape.begin(), input_shape.end());
  OutputShape(shape);
  PERMDNN_CHECK(static_cast<int64_t>(input.size()) == NumElements(shape), "{}: calibration input size mismatch",
                m.name);
  m.calibrated = false;
  for (auto& k : m.kernels)
    if (auto* q = dynamic_cast<detail::Int16Op*>(k.get())) q->BeginCalibration();
  m.rs.calibrating = true;
  try {
    const void* in_ptr[1] = {input.data()};
    m.Execute(in_ptr);
  } catch (...) {
    m.rs.calibrating = false;
    throw;
  }
  m.rs.calibrating = false;
  for (auto& k : m.kernels)
    if (auto* q = dynamic_cast<detail::Int16Op*>(k.get())) q->EndCalibration();
  m.calibrated = true;
}

std::vector<NodeProfile> Model::Profile() const { return impl_->profile; }
int64_t Model::ArenaBytes() const {
  int64_t bytes = impl_->arena_capacity;
  for (const auto& r : impl_->replicas)
    if (r) bytes += r->impl_->arena_capacity;
  if (impl_->solo) bytes += impl_->solo->impl_->arena_capacity;
  return bytes;
}
int64_t Model::SamplesPerPass() const { return impl_->last_pass; }
int Model::BatchWorkers() const { return impl_->last_workers; }
int Model::RunThreads() const { return impl_->last_threads; }
std::pair<double, double> Model::SplitCheckMs(std::span<const int64_t> input_shape) const {
  auto it = impl_->split_choice.find(std::vector<int64_t>(input_shape.begin(), input_shape.end()));
  if (it == impl_->split_choice.end() || it->second.solo_ms == 0) return {0, 0};
  return {it->second.split_ms, it->second.solo_ms};
}
std::pair<double, double> Model::SharesCheckMs(std::span<const int64_t> input_shape) const {
  auto it = impl_->shares_check.find(std::vector<int64_t>(input_shape.begin(), input_shape.end()));
  if (it == impl_->shares_check.end()) return {0, 0};  // (forced: 0 and 0 too)
  return {it->second.shares_ms, it->second.split_ms};
}
void Model::ResetProfile() {
  for (NodeProfile& p : impl_->profile) {
    p.calls = 0;
    p.seconds = 0;
  }
}

std::string FormatProfile(const std::vector<NodeProfile>& profile) {
  std::vector<NodeProfile> rows = profile;
  double total = 0;
  for (const auto& r : rows) total += r.seconds;
  std::stable_sort(rows.begin(), rows.end(), [](const NodeProfile& a, const NodeProfile& b) {
    if ((a.calls > 0) != (b.calls > 0)) return a.calls > 0;
    return a.seconds > b.seconds;
  });
  std::string out = fmt::format("{:<28} {:<20} {:>10} {:>7}  {:<18} {}\n", "node", "op", "us/call", "share",
                                "kernel", "path");
  int64_t fast = 0, dense = 0;
  for (const auto& r : rows) {
    const double us = r.calls ? r.seconds / static_cast<double>(r.calls) * 1e6 : 0.0;
    const bool weighted = r.kernel == "dense-blas";
    const std::string path = r.kernel == "folded" ? "folded at load"
                             : r.fast             ? "fast compressed"
                             : weighted           ? "dense fallback"
                                                  : "-";
    if (r.fast) ++fast;
    if (weighted) ++dense;
    out += fmt::format("{:<28} {:<20} {:>10.1f} {:>6.1f}%  {:<18} {}\n", r.name.substr(0, 28), r.op_type.substr(0, 20),
                       us, total > 0 ? 100.0 * r.seconds / total : 0.0, r.kernel, path);
  }
  out += fmt::format("{} weight layers on fast compressed kernels, {} on dense fallback (OpenBLAS); {:.3f} ms per run\n", fast, dense,
                     rows.empty() || rows[0].calls == 0 ? 0.0 : total / static_cast<double>(rows[0].calls) * 1e3);
  return out;
}

}  // namespace permdnn::runtime
