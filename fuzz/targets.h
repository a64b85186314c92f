// The fuzz targets of permdnn: one function per kind of file permdnn reads.
//
// Each target takes arbitrary bytes, hands them to the same reader the
// command line uses and, when they parse, exercises what comes after (plan
// and run a model, convert an array, simulate a layer). The contract is the
// one the command line promises: a file either works or gives a
// permdnn::Error, caught here. Anything else (a signal, a sanitizer report,
// another exception type, a hang, unbounded memory) escapes and is a bug.
//
// The same functions are built twice: into one libFuzzer binary per target
// (fuzz/libfuzzer_main.cc, `make fuzz`, clang with ASan + UBSan), and into
// permdnn_fuzz_replay, an ordinary program that `make test` runs on every
// committed crash input in fuzz/regressions/<target>/ (docs/reliability.md).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <utility>

namespace permdnn::fuzz {

using TargetFn = int (*)(const uint8_t* data, std::size_t size);

struct Target {
  const char* name;  // fuzz/corpus/<name>, fuzz/regressions/<name>
  TargetFn fn;
  const char* reads;  // which file, through which API
};

// An ONNX model: Model::FromBytes, then a run on small inputs (the float
// span API and int16 calibration when the model has one float input).
int FuzzOnnx(const uint8_t* data, std::size_t size);
// A .npy file: ParseNpy, the conversions, and a run of a small model on it
// as `permdnn run --input` does.
int FuzzNpy(const uint8_t* data, std::size_t size);
// IDX data: two IDX blobs (images, labels; each plain or gzip) through
// ParseIdx and the Fashion-MNIST checks, then every batch.
int FuzzIdx(const uint8_t* data, std::size_t size);
// A training run directory (model.json + tensors/*.npy, packed as in
// run_dir_target.cc) through runtime::ExportRun, then one run of the export.
int FuzzRunDir(const uint8_t* data, std::size_t size);
// A simulator configuration (TOML subset or JSON) through LoadConfigFile,
// the engines' parameter specs and one tiny simulated layer.
int FuzzSimConfig(const uint8_t* data, std::size_t size);
// A simulator technology table (JSON) through TechTable::Load and every
// accessor the engines call.
int FuzzSimTech(const uint8_t* data, std::size_t size);

// A training run directory (packed as for run_dir) through the readers of
// `permdnn train --from` (train::RunSource) and of --resume's metrics.json
// (train::ReadMetrics), both LibTorch-free.
int FuzzTrainFrom(const uint8_t* data, std::size_t size);
// An ONNX model through `permdnn sim --model`
// (InspectCompressedLayers, WithCapturedOutputs) and `permdnn compress`
// (CompressOnnx).
int FuzzOnnxTools(const uint8_t* data, std::size_t size);
// A character-LM text corpus (`train --model charlm --data FILE`) through
// LoadTextCorpus and the invariants the trainer relies on.
int FuzzText(const uint8_t* data, std::size_t size);

// Every target, by name ("onnx_struct" is FuzzOnnx driven by the structure-
// aware mutator of onnx_mutator.cc).
std::span<const Target> Targets();
const Target* FindTarget(const std::string& name);

// The files one input of `target` stands for, written under `dir` (which
// must exist) as the command line reads them; returns the path to give the
// command: onnx/onnx_struct/onnx_tools: model.onnx; npy: input.npy; idx: the directory
// (t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte); run_dir: the directory
// run/ unpacked as run_dir_target.cc describes; sim_config: config.json or
// config.toml (by the input's parity); sim_tech: tech.json; text: corpus.txt.
std::string WriteInputFiles(const std::string& target, const uint8_t* data, std::size_t size,
                            const std::string& dir);
// idx: the images and labels files of one input (a 4-byte little-endian
// length, the images file, the labels file).
std::pair<std::string_view, std::string_view> SplitIdxInput(const uint8_t* data, std::size_t size);

// A scratch directory private to this process (created once, under
// $TMPDIR), for targets whose reader takes a path.
const std::string& ScratchDir();

}  // namespace permdnn::fuzz
