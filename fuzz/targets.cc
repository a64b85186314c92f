// The target table and the scratch directory (see targets.h).
#include "fuzz/targets.h"

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <filesystem>

namespace permdnn::fuzz {

namespace {

constexpr Target kTargets[] = {
    {"onnx", FuzzOnnx, "ONNX model: runtime::Model::FromBytes + plan + run (span API, int16)"},
    {"onnx_struct", FuzzOnnx, "ONNX model, structure-aware mutation of the parsed ModelProto (onnx_mutator.cc)"},
    {"npy", FuzzNpy, ".npy array: ParseNpy, conversions, a run as `permdnn run --input` does"},
    {"idx", FuzzIdx, "IDX images + labels (gzip or plain): ParseIdx, DatasetFromIdx, Batch"},
    {"run_dir", FuzzRunDir, "training run directory (model.json + tensors/*.npy): runtime::ExportRun + run"},
    {"sim_config", FuzzSimConfig, "simulator config (TOML subset / JSON): sim::LoadConfigFile + one simulated layer"},
    {"sim_tech", FuzzSimTech, "simulator technology table (JSON): sim::TechTable::Load + accessors + one layer"},
    {"train_from", FuzzTrainFrom,
     "training run directory through `permdnn train --from` / --resume's readers (train::RunSource, ReadMetrics)"},
    {"onnx_tools", FuzzOnnxTools,
     "ONNX model through sim --model (InspectCompressedLayers, WithCapturedOutputs) and compress"},
    {"text", FuzzText, "character-LM corpus file (`train --model charlm --data`): LoadTextCorpus + its invariants"},
};

bool SafeName(const std::string& name) {
  if (name.empty() || name.size() > 64 || name.front() == '/' || name.find("..") != std::string::npos ||
      name.find("//") != std::string::npos || name.back() == '/')
    return false;
  for (char c : name)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-' || c == '/')) return false;
  return true;
}

void WriteFile(const std::string& path, const void* data, std::size_t size) {
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) std::abort();  // the harness's own failure, not the input's
  if (size) std::fwrite(data, 1, size, f);
  std::fclose(f);
}

// run_dir: [1 byte: name length L][L bytes: path][4 bytes LE: size S][S bytes], repeated.
void UnpackRunDir(const uint8_t* data, std::size_t size, const std::filesystem::path& dir) {
  std::filesystem::create_directories(dir);
  std::size_t at = 0;
  for (int files = 0; at < size && files < 32; ++files) {
    const std::size_t len = data[at++];
    if (at + len + 4 > size) break;
    const std::string name(reinterpret_cast<const char*>(data + at), len);
    at += len;
    std::size_t bytes = data[at] | (data[at + 1] << 8) | (data[at + 2] << 16) | (std::size_t{data[at + 3]} << 24);
    at += 4;
    bytes = std::min(bytes, size - at);
    if (SafeName(name)) {
      const std::filesystem::path p = dir / name;
      std::error_code ec;
      std::filesystem::create_directories(p.parent_path(), ec);
      if (!ec && !std::filesystem::exists(p)) WriteFile(p.string(), data + at, bytes);
    }
    at += bytes;
  }
}

}  // namespace

std::pair<std::string_view, std::string_view> SplitIdxInput(const uint8_t* data, std::size_t size) {
  const std::string_view all(reinterpret_cast<const char*>(data), size);
  if (size < 4) return {all, {}};
  const std::size_t n =
      std::min<std::size_t>(size - 4, data[0] | (data[1] << 8) | (data[2] << 16) | (std::size_t{data[3]} << 24));
  return {all.substr(4, n), all.substr(4 + n)};
}

std::string WriteInputFiles(const std::string& target, const uint8_t* data, std::size_t size,
                            const std::string& dir) {
  const std::filesystem::path d(dir);
  if (target == "onnx" || target == "onnx_struct" || target == "onnx_tools") {
    WriteFile((d / "model.onnx").string(), data, size);
    return (d / "model.onnx").string();
  }
  if (target == "npy") {
    WriteFile((d / "input.npy").string(), data, size);
    return (d / "input.npy").string();
  }
  if (target == "idx") {
    const auto [images, labels] = SplitIdxInput(data, size);
    WriteFile((d / "t10k-images-idx3-ubyte").string(), images.data(), images.size());
    WriteFile((d / "t10k-labels-idx1-ubyte").string(), labels.data(), labels.size());
    return dir;
  }
  if (target == "run_dir" || target == "train_from") {
    UnpackRunDir(data, size, d / "run");
    return (d / "run").string();
  }
  if (target == "sim_config") {
    const std::string p = (d / (size % 2 ? "config.json" : "config.toml")).string();
    WriteFile(p, data, size);
    return p;
  }
  if (target == "sim_tech") {
    WriteFile((d / "tech.json").string(), data, size);
    return (d / "tech.json").string();
  }
  if (target == "text") {
    WriteFile((d / "corpus.txt").string(), data, size);
    return (d / "corpus.txt").string();
  }
  std::abort();
}

std::span<const Target> Targets() { return kTargets; }

const Target* FindTarget(const std::string& name) {
  for (const Target& t : kTargets)
    if (name == t.name) return &t;
  return nullptr;
}

const std::string& ScratchDir() {
  // Never destroyed, so that the exit handler can still read it.
  static const std::string* dir = [] {
    auto* d = new std::string((std::filesystem::temp_directory_path() /
                               ("permdnn-fuzz-" + std::to_string(::getpid()))).string());
    std::filesystem::create_directories(*d);
    std::atexit([] {
      std::error_code ec;
      std::filesystem::remove_all(ScratchDir(), ec);
    });
    return d;
  }();
  return *dir;
}

}  // namespace permdnn::fuzz
