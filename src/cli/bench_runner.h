// The measurement engine behind `permdnn bench` and `permdnn demo`.
//
// For every layer, batch, input density and thread count it times, in one
// process: dense OpenBLAS (sgemv at batch 1, sgemm otherwise), CSR with the
// same number of nonzeros through Eigen, and the permuted-diagonal kernels
// (the dense-input product and, at batch 1 with sparse inputs, the
// column-wise zero-skipping product). Each time is the median of repeated
// runs after a warm-up.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "permdnn/core/workloads.h"

namespace permdnn::cli {

struct BenchOptions {
  std::vector<FcLayerSpec> layers;
  std::vector<std::string> formats = {"dense", "csr", "permdiag"};
  std::vector<int> ps = {4, 8, 16};
  std::vector<int64_t> batches = {1, 64};
  std::vector<double> act_densities = {1.0, 0.35};
  std::vector<int> threads = {1, 2};
  double min_time_s = 0.2;  // per measurement, after one warm-up run
  int min_reps = 5;
  // Time one-thread runs by the process's CPU time instead of the wall clock
  // (a shared machine: time slices lost to other processes do not count;
  // cache and memory contention still do). Runs on more threads stay wall
  // clock: their CPU time is not their latency. Each record names its timer.
  bool cpu_time = false;
  // Run the whole grid this many times, each measurement getting
  // min_time_s / rounds per round; a record is the median of its round
  // medians, so a burst of load on a shared machine hits one round of every
  // format rather than all of one format.
  int rounds = 1;
  uint64_t seed = 1;
  // Highway targets to run the whole grid under, one after the other in one
  // process (e.g. {"avx2", "avx3"}: AVX2 code next to AVX-512 code on one
  // machine; names as SimdTargetName, case-insensitive). Empty: the target
  // dispatch picks.
  std::vector<std::string> simd_targets;
  // A row of the kernel table (table.h) to force for its op instead of the
  // one dispatch would pick (e.g. "ternary.matmul_u8.madd": the row a CPU
  // without VNNI runs); other ops dispatch as usual. Under each of
  // simd_targets in turn when given; a problem the row does not admit is an
  // error naming it. Empty: dispatch picks.
  std::string kernel;
  // ternary (issue 18): fraction of PE-wise groups kept (p is the group
  // length: group_ch · taps for a conv's im2col matrix) and the
  // ternarizer's threshold t; seeded random weights projected.
  double ternary_group_density = 0.5;
  double ternary_threshold = 0.05;
};

struct BenchRecord {
  std::string layer;
  int64_t m = 0, n = 0;
  std::string format;  // dense | csr | permdiag | permdiag-skip | ternary | ...
  // The kernel that ran: the kernel table's row for the permdiag, circulant
  // and CSR kernels of permdnn (kernels/table.h), else the library routine.
  std::string kernel;
  int p = 0;           // 0 for dense
  int64_t batch = 1;
  double act_density = 1.0;
  int threads = 1;
  double median_ms = 0, min_ms = 0;
  double wall_median_ms = 0;  // equals median_ms unless timer == "cpu"
  int reps = 0;
  std::string timer = "wall";  // "cpu": process CPU time (--cpu-time, one thread)
  std::string simd_target;     // the Highway target the kernels ran on
  int64_t nnz = 0, weight_bytes = 0;
  double gflops_nnz = 0, gflops_dense_equiv = 0, weight_gbps = 0;
  double speedup_vs_dense = 0;
  // Zero-skipping rows (permdiag-skip, permdiag-column-skip): the input
  // density below which the skipping product beats the dense-input one on
  // this layer, measured as the runtime measures it at load
  // (kernels::MeasureSkipCrossover); -1 elsewhere.
  double skip_crossover = -1;
};

// Seeded N(0, 1) values (the benchmarks' weights and inputs; `permdnn
// break-even` uses the same).
void FillNormal(std::span<float> v, uint64_t seed);

// Fails (naming the target and listing its rows) unless options.kernel is
// empty or a row of the kernel table on every one of options.simd_targets
// (or on the target dispatch picks); RunBench calls it before it times
// anything, and the --blas-per-target parent before it starts its children.
void CheckKernelRow(const BenchOptions& options);

// Validates the options (formats, p >= 1, batch >= 1, 0 <= density <= 1,
// threads >= 1) and runs everything; shows a progress line on a terminal.
std::vector<BenchRecord> RunBench(const BenchOptions& options);

// The environment the numbers were taken in (CPU, SIMD target, kernel path,
// OpenBLAS core and the OPENBLAS_* variables in force).
nlohmann::json BenchEnvironment();
nlohmann::json BenchToJson(const std::vector<BenchRecord>& records);
// The records BenchToJson wrote (a --json file's "records").
std::vector<BenchRecord> BenchRecordsFromJson(const nlohmann::json& records);

// The Highway target named `name` (case-insensitive) among those compiled in
// and supported by this CPU; Error listing them otherwise.
int64_t ResolveSimdTarget(const std::string& name);
// The OPENBLAS_CORETYPE of an x86 CPU whose best Highway target is `target`
// (a SimdTargetName): AVX2 Haswell, SSE4 Nehalem, SSSE3 Core2, the scalar
// targets Prescott; empty for the AVX-512 targets, where OpenBLAS's own
// choice on an AVX-512 CPU is that CPU's kernel (`bench --blas-per-target`).
std::string OpenBlasCoreForTarget(const std::string& target);
// The OpenBLAS kernels in use ("Haswell", "SkylakeX"; "unknown").
std::string OpenBlasCoreName();
// This process's command line, argv[0] first (/proc/self/cmdline), and its
// environment without OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE, plus
// OPENBLAS_CORETYPE=core where `core` is not empty: what a child or a
// restart of this command gets to run on the OpenBLAS kernels of `core`
// (`bench --blas-per-target`, `run --simd-target`).
std::vector<std::string> OwnCommandLine();
std::vector<std::string> EnvironmentForOpenBlasCore(const std::string& core);
// argv / envp for execve and posix_spawn: pointers into `v`, null-terminated.
std::vector<char*> CStrings(std::vector<std::string>& v);

// With several SIMD targets: per kernel row and p (one thread, dense
// inputs), the target that measured fastest and its margin over the others.
std::string BestTargets(const std::vector<BenchRecord>& records, nlohmann::json* json = nullptr);

// Human tables: all records, and the performance targets.
std::string BenchTable(const std::vector<BenchRecord>& records);
std::string BenchTargets(const std::vector<BenchRecord>& records, nlohmann::json* json = nullptr);
// One line per zero-skipping record: its crossover density and how the
// skipping product did at the measured input density.
std::string SkipCrossovers(const std::vector<BenchRecord>& records);
// The same as Markdown (environment, records, targets) for docs/benchmarks.md.
std::string BenchMarkdown(const std::vector<BenchRecord>& records, const nlohmann::json& environment,
                          const std::string& command);

}  // namespace permdnn::cli
