// permdnn::runtime — load an ONNX model and run it on the CPU, without
// LibTorch.
//
// Load() parses the ModelProto (protobuf), checks that every node's inputs
// exist (graph inputs, initializers or earlier outputs) and that every
// operator is supported, and builds one kernel object per node; anything
// wrong is an Error naming the node, its op type and its position, and an
// unsupported feature is an UnsupportedError.
//
// Planning: the first Run at a given input shape (a "plan key": the shapes
// of all inputs plus the values of integer inputs, which are shape-like)
// infers every shape, folds every node whose inputs are all known at that
// point (the Shape/Gather/Concat/... arithmetic exporters put around
// Reshape, initializer-only subgraphs), and lays out all remaining
// intermediate tensors in one arena with liveness-based reuse plus one
// scratch area shared by all nodes. Later runs with the same key allocate
// nothing; a new batch size re-plans once (the arena only ever grows).
//
// Compressed layers are the custom-domain nodes `ai.permdnn`
// PermDiagMatMul / PermDiagConv (see docs/runtime.md for their contract);
// they run on the permdnn kernels (SIMD, threads). Dense Conv and pooling
// run on oneDNN (Conv with a following BatchNormalization / Add / Relu /
// Clip folded in at load, activations kept in one layout between them),
// Gemm / MatMul on OpenBLAS; Options::reference keeps every node of the
// file on plain loops and OpenBLAS (the oracle the tests compare with). With Options::int16 the PermDiagMatMul nodes run on
// the fixed-point kernels (kernels::PermDiagMatVecI16) after Calibrate().
//
// A Model is not thread-safe: one Run at a time (it owns its arena).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "permdnn/runtime/tensor.h"

namespace permdnn::runtime {

struct ValueInfo {
  std::string name;
  DType dtype = DType::kFloat32;
  std::vector<int64_t> shape;  // -1 for a dimension the file leaves open
};

// Batch-1 permuted-diagonal products (PermDiagMatMul, both offset
// layouts) on inputs with zeros: kAuto counts the input's nonzeros on every
// call and runs the zero-skipping (column-wise) product when the density is
// below the crossover measured for that layer on this machine when a
// batch-1 run is first planned (kernels::MeasureSkipCrossover, a few ms per
// layer); kNever and kAlways fix the
// path (to measure the gain, or to test the skipping kernels).
enum class ZeroSkip { kAuto, kNever, kAlways };

struct Options {
  int threads = 1;      // kernel and OpenBLAS threads
  ZeroSkip zero_skip = ZeroSkip::kAuto;
  bool int16 = false;   // compressed FC layers in fixed point (needs Calibrate)
  // int16, with the ternary convs on 8-bit inputs (kernels::TernaryMatMulU8)
  // instead of 16-bit ones; implies int16 (needs Calibrate).
  bool int8 = false;
  bool profile = false; // collect per-node time (Profile())
  // Run every node on its reference path: the file's graph node for node
  // (no fusion), dense Conv / Gemm / MatMul on im2col + OpenBLAS, plain
  // layouts, no oneDNN. Also forced by PERMDNN_KERNELS=reference (or the CLI's
  // --reference-kernels), which puts the permdnn kernels on their reference
  // path too. Tests compare the fast path against it.
  bool reference = false;
  // Refuse plans whose arena would exceed this many bytes (a malformed or
  // hostile file cannot make the runtime allocate without bound).
  int64_t max_arena_bytes = int64_t{8} << 30;
  // Micro-batching: a batch run of a graph whose every node treats the
  // samples (dim 0 of its single float input) independently may run as
  // several passes over slices of the batch, so that one slice's
  // activations stay in the last-level cache between operators. -1: the
  // planner chooses (MicroBatchSamples below); 0: never split; N > 0: at
  // most N samples per pass (a divisor of the batch). Not with `reference`,
  // int16 or int8. The outputs are the whole batch's either way.
  int64_t micro_batch = -1;
  // Batch parallelism: on more than one thread, a batch of such a per-sample
  // graph of one float input with an open batch dim runs as one contiguous
  // share of the samples per thread, each thread on its own single-threaded
  // replica of the model, instead of every operator splitting its work over
  // the threads. The replicas are made at the first batch that splits; each
  // has its own plan, arena and kernels, and shares the model's weights
  // (the file's constants, and the packed weights of the dense and
  // permuted-diagonal convolutions while their layout is the same; what the
  // other compressed kernels decode from the file is per replica). Each
  // replica micro-batches its share as above. Only where each share reuses
  // every weight byte at least 4 times (its samples times the weight's
  // output positions: one per sample in a fully connected layer, the
  // spatial size in a convolution; averaged over the weights by bytes):
  // each replica reads all the weights. Not where a graph mixes samples,
  // with profile, reference, int16 or int8, or where the file's weights
  // times the threads exceed 2 GiB; there the threads split each operator.
  // With the split check on, the first run of a shape the rule gives
  // shares is timed; where it took at most 10 ms, the shares are then timed
  // against split operators on copies of its input (blocks and rounds as
  // the split check's), and the shape runs split where the split's best
  // block takes under 90% of the shares' (a share reads all the weights:
  // where they are past the L2, the rule's reuse of 4 may not pay; the
  // Fashion-MNIST mlp at B=16 on an Intel Xeon, family 6 model 167: shares
  // 0.37 ms, split 0.28). That choice holds for 10 s, as the split check's
  // (a narrower margin than its 80%: both paths run on all the threads).
  // A call whose output buffer overlaps its input runs its shares on a
  // copy of the input (they run at once). The
  // outputs equal the split operators' within rounding (kernels may differ
  // with the batch size).
  bool batch_parallel = true;
  // The split check: on more than one thread, a run whose operators would
  // split their work over the threads (batch 1, or a batch that batch
  // parallelism does not divide into shares) is, at the first run of each
  // input shape, timed split against the same run on one thread (a
  // single-threaded replica of the model, as batch parallelism makes),
  // on that first call's input: after the split run that plans the shape,
  // a run of the replica (which plans it) and two more split runs to warm
  // both, then five alternating rounds of one untimed and one timed block
  // of runs of each path (a block: as many runs as take about 1 ms, at
  // most 16); the shape then runs on one thread where its best block
  // takes under 80% of the split's best, else split. Small graphs whose
  // operators split along different axes (mobilenet_v2 at p = 8, batch 1:
  // the convolutions over positions and output vectors, oneDNN's over
  // channel parts) pass their activations between the cores at nearly
  // every node and can run slower on two threads than on one. A first
  // split run longer than 10 ms keeps the split unmeasured (there the work
  // per operator outweighs the traffic). A check costs about 13 split runs
  // and 11 runs on one thread (more for runs under 1 ms: 1-16 per block),
  // on the first call of the shape. A choice holds for 10 s; the first run
  // of its shape after that checks again (another process on the second
  // core slows only the split runs, and the load comes and goes): at the
  // 10 ms limit, with one thread twice as slow, 0.35 s of every 10 s of a
  // shape run without pause. A call whose output buffer overlaps its
  // input runs split and records nothing. Not with profile, reference,
  // int16 or int8, nor where the file's weights exceed 1 GiB (the
  // replica, like batch parallelism's, decodes its own copy of the
  // compressed weights).
  // The outputs equal the split run's within rounding. The environment
  // variable PERMDNN_SPLIT_CHECK=split|one fixes the outcome untimed (and
  // leaves batch parallelism to its reuse rule, untimed too).
  // What the check measured: Model::SplitCheckMs, RunThreads; the shares
  // check (Options::batch_parallel): Model::SharesCheckMs, BatchWorkers.
  bool split_check = true;
};

// The samples per pass the planner chooses for a per-sample graph (Options::
// micro_batch = -1): `batch` samples, `peak_sample_bytes` the largest
// activation footprint of one node (inputs plus outputs) per sample,
// `weight_bytes` the constants the nodes read, `cache_bytes` the
// last-level cache. The batch stays whole when its activations fit beside
// the weights, or when the weights are more than twice one sample's peak or
// half the cache (each pass reads what of them was evicted again: on
// resnet18 at p = 4, 13 MiB of weights against 3.8 MiB per sample, passes
// of one sample were 3-4% slower), and on more than one thread (the
// threads already split the batch; passes of two samples per thread
// measured 0.94-1.20x the time, 1.08-1.20x on three of six models); else
// a pass holds as many samples as fit in a quarter of what the weights
// leave, rounded down to a divisor of the batch.
int64_t MicroBatchSamples(int64_t batch, int64_t peak_sample_bytes, int64_t weight_bytes, int threads,
                          int64_t cache_bytes);

// One line of --profile: accumulated over all runs since the last reset.
struct NodeProfile {
  std::string name, op_type;
  std::string kernel;  // e.g. "permdiag-simd", "permdiag-int16", "dense-blas", "folded"
  bool fast = false;   // ran on a compressed (fast) kernel
  int64_t calls = 0;
  double seconds = 0;
};

// What `permdnn run --profile` / `permdnn compress` print about a model.
struct ModelSummary {
  int64_t nodes = 0, initializers = 0;
  int64_t weight_bytes = 0;  // initializer bytes at their ONNX dtype
  int64_t compressed_nodes = 0;
  int opset = 0;
};

class Model {
 public:
  Model();
  ~Model();
  Model(Model&&) noexcept;
  Model& operator=(Model&&) noexcept;

  // From a file / from bytes (`name` is used in errors).
  static Model Load(const std::string& path, const Options& options = {});
  static Model FromBytes(std::string_view bytes, const std::string& name, const Options& options = {});

  const std::vector<ValueInfo>& inputs() const;
  const std::vector<ValueInfo>& outputs() const;
  ModelSummary Summary() const;
  // Metadata property of the file (empty when absent), e.g. "permdnn.preprocess".
  std::string Metadata(const std::string& key) const;
  // The path (or name given to FromBytes) errors name.
  const std::string& name() const;

  // A new thread count re-plans at the next run (work splits and the arena
  // depend on it).
  void SetThreads(int threads);
  void SetProfiling(bool on);

  // The common case: one float input, one float output, batch-major. `shape`
  // is the full input shape (batch first); returns the output shape. The
  // output span must hold NumElements(OutputShape(shape)).
  std::vector<int64_t> OutputShape(std::span<const int64_t> input_shape);
  std::vector<int64_t> Run(std::span<const float> input, std::span<const int64_t> input_shape,
                           std::span<float> output);
  // General form: inputs in the order of inputs(); returns the outputs.
  std::vector<Tensor> Run(const std::vector<Tensor>& inputs);

  // Fixed point: records max |activation| at the input and output of every
  // PermDiagMatMul on this (float, batch-major) calibration batch, then
  // switches those nodes to int16 (rule in docs/runtime.md). Requires
  // Options::int16 or EnableInt16(true) first.
  void Calibrate(std::span<const float> input, std::span<const int64_t> input_shape);
  // Off also turns int8 off.
  void EnableInt16(bool on);
  // Options::int8 after loading: on turns int16 on too; off leaves int16 as it is.
  void EnableInt8(bool on);
  bool int16_ready() const;

  std::vector<NodeProfile> Profile() const;
  // Bytes of the activation arena (intermediate tensors + scratch) of the
  // current plan; it only grows when a larger shape is planned. With batch
  // parallelism, plus the replicas' arenas (the arena of the whole batch's
  // plan is freed when the batch splits into shares, before the replicas
  // plan theirs; where the shares check keeps the split operators for a
  // shape, both); with the split check, plus its one-thread replica's.
  int64_t ArenaBytes() const;
  // Samples per pass of the last Run (its whole batch unless micro-batching
  // split it; Options::micro_batch; with batch parallelism, the first
  // worker's passes over its share).
  int64_t SamplesPerPass() const;
  // Threads that split the last Run's batch between them (Options::
  // batch_parallel); 1 when the threads split each operator instead.
  int BatchWorkers() const;
  // Threads the last Run's operators split over: Options::threads, or 1
  // where the split check (Options::split_check) found one thread faster
  // for its input shape; 1 when the batch split into shares instead.
  int RunThreads() const;
  // The split check's best blocks for `input_shape`, split and one thread
  // (ms per run; 0 and 0 when the shape was not measured: not run yet,
  // not eligible, forced, or its first run over the limit).
  std::pair<double, double> SplitCheckMs(std::span<const int64_t> input_shape) const;
  // The shares check's best blocks for `input_shape` (Options::
  // batch_parallel), in shares and on split operators (ms per run; 0 and 0
  // when the shape was not timed).
  std::pair<double, double> SharesCheckMs(std::span<const int64_t> input_shape) const;
  void ResetProfile();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// A --profile table: one line per node (time per call, share, kernel, fast
// compressed kernel or dense fallback), slowest first, folded nodes last.
std::string FormatProfile(const std::vector<NodeProfile>& profile);

}  // namespace permdnn::runtime
