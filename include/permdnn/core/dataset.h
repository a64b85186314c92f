// Image classification data without LibTorch: IDX files (gzipped or not,
// read through zlib) and the Fashion-MNIST set that Debian's
// dataset-fashion-mnist package installs. Both the trainer and the runtime's
// `permdnn eval` read data through here, so they see identical pixels.
//
// Preprocessing (the default of every permdnn command, overridable there):
//   x = (pixel · scale − mean) / std, scale = 1/255,
//   mean = 0.2860, std = 0.3530 (Fashion-MNIST training-set statistics).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace permdnn {

inline constexpr const char* kDefaultFashionMnistDir = "/usr/share/datasets/fashion-mnist";

struct Preprocess {
  float scale = 1.0f / 255.0f;
  float mean = 0.2860f;
  float std = 0.3530f;
};

// One IDX array: unsigned-byte data only (what image sets use).
struct IdxArray {
  std::vector<int64_t> dims;
  std::vector<uint8_t> data;
};

// Reads an IDX file (.gz or plain). Errors name the path and the problem
// (missing, bad magic, unsupported type, truncated).
IdxArray ReadIdx(const std::string& path);
// The same from the file's bytes (gzip-compressed or plain, told apart by
// the gzip magic); `name` names the source in errors.
IdxArray ParseIdx(std::string_view bytes, const std::string& name);

struct ImageDataset {
  int64_t count = 0;
  int rows = 0, cols = 0;
  std::vector<uint8_t> pixels;  // count × rows × cols
  std::vector<uint8_t> labels;  // count
  int num_classes = 10;

  int64_t image_size() const { return int64_t{rows} * cols; }
  // Writes images [begin, begin + n) as floats, preprocessed, to out
  // (n × rows × cols, sample-major).
  void Batch(int64_t begin, int64_t n, const Preprocess& pre, std::span<float> out) const;
};

// Loads "train" or "test" from a directory with the four Fashion-MNIST /
// MNIST files (train-images-idx3-ubyte[.gz], ...). A missing directory or
// file gives an error naming the path and the Debian package to install.
ImageDataset LoadFashionMnist(const std::string& dir, const std::string& split);
// The checks LoadFashionMnist makes on its two arrays: 3-D images (count
// × rows × cols), one label per image, labels below 10. `where` names the
// source in errors.
ImageDataset DatasetFromIdx(IdxArray images, IdxArray labels, const std::string& where);

// A small synthetic data set for fast tests: `count` images rows×cols of
// `classes` classes, each class a fixed random template plus seeded noise,
// learnable to near 100% by a tiny model.
ImageDataset SyntheticDataset(int64_t count, int rows, int cols, int classes, uint64_t seed);

// ---------------------------------------------------------------------------
// Text corpora for character-level language models (`permdnn train --model
// charlm`, docs/run-format.md "Recurrent models"). The corpus is read as
// bytes; the alphabet is the sorted set of bytes that occur in it (both
// splits), and id i stands for byte alphabet[i]. The held-out split is the
// last `held_out` fraction of every file (so every file's style is in both
// splits); train and held-out are each the files' parts concatenated in
// file-name order.

inline constexpr const char* kDefaultTextCorpusDir = "/usr/share/games/fortunes";

struct TextCorpus {
  std::vector<uint8_t> alphabet;   // byte of each id, strictly increasing
  std::vector<int64_t> train_ids;  // ids of the training split
  std::vector<int64_t> test_ids;   // ids of the held-out split
  std::vector<std::string> files;  // the files read, in order
  int64_t vocab() const { return static_cast<int64_t>(alphabet.size()); }
  // Windows of a split for sequence length T: window i is ids [i·T, i·T + T]
  // (T + 1 ids: inputs are the first T, targets the last T). (len − 1) / T.
  static int64_t WindowCount(int64_t length, int64_t seq_len);
  // The windows a split is evaluated (or trained) on: all WindowCount ones,
  // or with 0 < limit < count, `limit` of them spread evenly over the split
  // (window ⌊i·count/limit⌋), so that a short run still sees every file.
  // The trainer and `permdnn eval` pick the same windows this way.
  static std::vector<int64_t> WindowStarts(int64_t length, int64_t seq_len, int64_t limit);
};

// Reads a corpus: `path` is one text file or a directory whose regular files
// are read in name order, skipping strfile indexes (*.dat) and symbolic links
// (the fortunes packages link *.u8 to the text). Errors name the path: missing
// (with the Debian package to install for the default), no text files, an
// empty file, a file with NUL bytes (binary, not text), held_out outside
// (0, 0.5].
TextCorpus LoadTextCorpus(const std::string& path, double held_out = 0.1);
// The same from in-memory files (name, bytes), in the given order.
TextCorpus TextCorpusFromFiles(const std::vector<std::pair<std::string, std::string>>& files, double held_out,
                               const std::string& where);

}  // namespace permdnn
