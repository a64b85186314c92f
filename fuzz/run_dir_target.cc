// Fuzz target "run_dir": a training run directory as `permdnn export RUN_DIR`
// reads it (model.json and the .npy tensors it names; docs/run-format.md).
// A directory is packed into one input as a sequence of files:
//   [1 byte: name length L][L bytes: relative path][4 bytes LE: size S][S bytes]
// (the last file may be cut short). Paths are kept inside the directory:
// a name that is absolute, holds "..", or uses other characters than
// [A-Za-z0-9._/-] is skipped. The directory goes through runtime::ExportRun;
// a model it writes is then loaded and run as the "onnx" target does.
//
// LibTorch's own checkpoint format (checkpoint_*.pt, read by --resume) is
// not fuzzed here: see docs/reliability.md for what is and is not covered.
#include <filesystem>
#include <string>

#include "fuzz/targets.h"
#include "permdnn/core/error.h"
#include "permdnn/runtime/export.h"
#include "permdnn/runtime/onnx_io.h"

namespace permdnn::fuzz {

int FuzzRunDir(const uint8_t* data, std::size_t size) {
  namespace fs = std::filesystem;
  const fs::path work = fs::path(ScratchDir()) / "run_dir";
  const fs::path out = fs::path(ScratchDir()) / "export.onnx";
  std::error_code ec;
  fs::remove_all(work, ec);
  fs::remove(out, ec);
  fs::create_directories(work);
  const std::string dir = WriteInputFiles("run_dir", data, size, work.string());
  try {
    runtime::ExportRun(dir, out.string());
  } catch (const Error&) {
    // A failed export must not leave a file behind (core/atomic_file.h).
    if (fs::exists(out)) __builtin_trap();
    return 0;
  }
  const std::string model = runtime::ReadFileBytes(out.string());
  return FuzzOnnx(reinterpret_cast<const uint8_t*>(model.data()), model.size());
}

}  // namespace permdnn::fuzz
