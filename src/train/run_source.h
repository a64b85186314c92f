// What `permdnn train --from RUN_DIR` reads of a trained run directory
// (docs/run-format.md): model.json's layers by name and their float tensors,
// each checked against the shape the model being trained expects. LibTorch-
// free, so that the fuzz target train_from (fuzz/train_from_target.cc)
// fuzzes exactly the code that parses the files; NetImpl::LoadFromRun then
// only copies or projects tensors that passed here. Every error names
// model.json or the .npy file, the layer and what was expected.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace permdnn::train {

class RunSource {
 public:
  // Reads run_dir/model.json: format permdnn-run/1, written for `model`,
  // a "layers" array of objects with unique names.
  static RunSource Open(const std::string& run_dir, const std::string& model);

  const std::string& path() const { return path_; }  // run_dir/model.json
  bool Has(const std::string& layer) const { return layers_.count(layer) != 0; }
  // The layer's compress.kind ("dense", "permdiag", ...; "" when absent).
  std::string Kind(const std::string& layer) const;
  // Tensor `key` of the layer (its "tensors" entry, a path relative to the
  // run directory) as floats; its shape must be `shape`.
  std::vector<float> Tensor(const std::string& layer, const std::string& key,
                            const std::vector<int64_t>& shape) const;

 private:
  const nlohmann::json& Layer(const std::string& layer) const;
  std::string dir_, path_;
  std::map<std::string, nlohmann::json> layers_;
};

}  // namespace permdnn::train
