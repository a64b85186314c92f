// Fuzz target "idx": the Fashion-MNIST reader. The input is two IDX files
// as they lie on disk (gzip or plain): a 4-byte little-endian length, the
// images file of that length, then the labels file. Both go through
// ParseIdx, the pair through DatasetFromIdx (what LoadFashionMnist checks),
// then every image through ImageDataset::Batch as eval and train read them.
#include <algorithm>
#include <string_view>
#include <vector>

#include "fuzz/targets.h"
#include "permdnn/core/dataset.h"
#include "permdnn/core/error.h"

namespace permdnn::fuzz {

int FuzzIdx(const uint8_t* data, std::size_t size) {
  try {
    const auto [images_file, labels_file] = SplitIdxInput(data, size);
    IdxArray images = ParseIdx(images_file, "fuzz-images");
    IdxArray labels = ParseIdx(labels_file, "fuzz-labels");
    ImageDataset ds = DatasetFromIdx(std::move(images), std::move(labels), "fuzz-images and fuzz-labels");
    const int64_t chunk = 16;
    std::vector<float> batch(static_cast<std::size_t>(chunk * ds.image_size()));
    for (int64_t b = 0; b < ds.count; b += chunk) ds.Batch(b, std::min(chunk, ds.count - b), Preprocess{}, batch);
    // The bounds check of Batch itself.
    try {
      ds.Batch(ds.count, 1, Preprocess{}, batch);
      __builtin_trap();  // a batch past the end must be an error
    } catch (const Error&) {
    }
  } catch (const Error&) {
  }
  return 0;
}

}  // namespace permdnn::fuzz
