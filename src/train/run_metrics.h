// The training history of a run directory (docs/run-format.md):
// metrics.json (an array of per-epoch objects) and metrics.csv, written
// after every epoch and read back by `permdnn train --resume`. LibTorch-
// free, so that the fuzz target train_from (fuzz/train_from_target.cc)
// fuzzes exactly the reader --resume runs. Every error names metrics.json,
// the entry and the field.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "permdnn/train/trainer.h"

namespace permdnn::train {

// Writes dir/metrics.json and dir/metrics.csv (atomically, each).
void WriteMetrics(const std::string& dir, const std::vector<EpochMetrics>& history);

// The entries of dir/metrics.json for epochs 1..epochs_done, in file order;
// empty when the file does not exist. Each entry must be an object with
// every field of EpochMetrics of the right type, its epoch an integer in
// [1, 1e9] and its numbers finite; anything else is a permdnn::Error
// naming the file, the entry and the field.
std::vector<EpochMetrics> ReadMetrics(const std::string& dir, int64_t epochs_done);

}  // namespace permdnn::train
