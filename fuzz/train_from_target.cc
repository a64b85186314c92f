// Fuzz target "train_from": what `permdnn train --from RUN_DIR` parses, the
// LibTorch-free train::RunSource (model.json and the .npy tensors it names),
// on a run directory packed as for "run_dir" (run_dir_target.cc). The reads
// are those NetImpl::LoadFromRun makes for the "tiny" model at input 1×4×4
// with 4 classes (fc1 16→64, fc2 64→32, fc3 32→4; 784 inputs would not fit
// a fuzz input). LoadFromRun's own remaining work, copying or projecting
// tensors that passed these checks into LibTorch modules, is not fuzzed
// (LibTorch's headers do not build with clang 14 in C++20); the LibTorch
// checkpoints of --resume are torch's own format. docs/reliability.md.
#include <filesystem>
#include <string>

#include "fuzz/targets.h"
#include "permdnn/core/error.h"
#include "src/train/run_source.h"

namespace permdnn::fuzz {

int FuzzTrainFrom(const uint8_t* data, std::size_t size) {
  namespace fs = std::filesystem;
  const fs::path work = fs::path(ScratchDir()) / "train_from";
  std::error_code ec;
  fs::remove_all(work, ec);
  fs::create_directories(work);
  const std::string dir = WriteInputFiles("train_from", data, size, work.string());
  struct Fc {
    const char* name;
    int64_t in, out;
  };
  try {
    const train::RunSource src = train::RunSource::Open(dir, "tiny");
    for (const Fc& fc : {Fc{"fc1", 16, 64}, Fc{"fc2", 64, 32}, Fc{"fc3", 32, 4}}) {
      if (!src.Has(fc.name)) continue;
      if (src.Kind(fc.name) != "dense") continue;
      (void)src.Tensor(fc.name, "weight", {fc.out, fc.in});
      (void)src.Tensor(fc.name, "bias", {fc.out});
    }
    // A batchnorm layer's four vectors, when the file has one named bn1.
    if (src.Has("bn1"))
      for (const char* key : {"weight", "bias", "running_mean", "running_var"}) (void)src.Tensor("bn1", key, {4});
  } catch (const Error&) {
  }
  return 0;
}

}  // namespace permdnn::fuzz
