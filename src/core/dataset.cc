// IDX reading and the Fashion-MNIST loader (see dataset.h).
#include "permdnn/core/dataset.h"

#include <zlib.h>

#include <algorithm>
#include <filesystem>
#include <random>

#include "permdnn/core/error.h"

namespace permdnn {

IdxArray ReadIdx(const std::string& path) {
  PERMDNN_CHECK(std::filesystem::exists(path), "IDX file '{}' does not exist", path);
  gzFile f = gzopen(path.c_str(), "rb");
  PERMDNN_CHECK(f != nullptr, "cannot open IDX file '{}'", path);
  std::vector<uint8_t> bytes;
  uint8_t buf[1 << 16];
  for (;;) {
    int n = gzread(f, buf, sizeof(buf));
    if (n < 0) {
      int err;
      std::string msg = gzerror(f, &err);
      gzclose(f);
      Fail("IDX file '{}': read error: {}", path, msg);
    }
    if (n == 0) break;
    bytes.insert(bytes.end(), buf, buf + n);
  }
  gzclose(f);
  PERMDNN_CHECK(bytes.size() >= 4 && bytes[0] == 0 && bytes[1] == 0,
                "IDX file '{}': bad magic (not an IDX file)", path);
  PERMDNN_CHECK(bytes[2] == 0x08, "IDX file '{}': element type 0x{:02x} unsupported (only unsigned byte, 0x08)",
                path, bytes[2]);
  const int ndims = bytes[3];
  PERMDNN_CHECK(ndims >= 1 && ndims <= 4 && bytes.size() >= 4 + 4u * ndims, "IDX file '{}': bad header", path);
  IdxArray a;
  int64_t count = 1;
  for (int i = 0; i < ndims; ++i) {
    const uint8_t* p = bytes.data() + 4 + 4 * i;
    int64_t d = (int64_t{p[0]} << 24) | (p[1] << 16) | (p[2] << 8) | p[3];
    a.dims.push_back(d);
    count *= d;
  }
  const std::size_t offset = 4 + 4 * ndims;
  PERMDNN_CHECK(bytes.size() - offset >= static_cast<std::size_t>(count),
                "IDX file '{}': truncated: header promises {} bytes, {} present", path, count, bytes.size() - offset);
  a.data.assign(bytes.begin() + offset, bytes.begin() + offset + count);
  return a;
}

void ImageDataset::Batch(int64_t begin, int64_t n, const Preprocess& pre, std::span<float> out) const {
  PERMDNN_CHECK(begin >= 0 && n >= 0 && begin + n <= count, "dataset batch [{}, {}) outside [0, {})", begin,
                begin + n, count);
  PERMDNN_CHECK(static_cast<int64_t>(out.size()) >= n * image_size(), "dataset batch: output too small");
  const float inv_std = 1.0f / pre.std;
  const uint8_t* src = pixels.data() + begin * image_size();
  for (int64_t i = 0; i < n * image_size(); ++i) out[i] = (src[i] * pre.scale - pre.mean) * inv_std;
}

ImageDataset LoadFashionMnist(const std::string& dir, const std::string& split) {
  PERMDNN_CHECK(split == "train" || split == "test", "data split must be 'train' or 'test', got '{}'", split);
  PERMDNN_CHECK(std::filesystem::is_directory(dir),
                "data directory '{}' does not exist (Fashion-MNIST comes with the Debian package "
                "dataset-fashion-mnist: apt-get install dataset-fashion-mnist; or pass --data DIR)",
                dir);
  const std::string prefix = split == "train" ? "train" : "t10k";
  auto find = [&](const std::string& stem) {
    for (const std::string& name : {stem + ".gz", stem}) {
      std::string path = dir + "/" + name;
      if (std::filesystem::exists(path)) return path;
    }
    Fail("data directory '{}' lacks {}[.gz] (install the Debian package dataset-fashion-mnist, or pass --data DIR "
         "with the four IDX files)",
         dir, stem);
  };
  IdxArray images = ReadIdx(find(prefix + "-images-idx3-ubyte"));
  IdxArray labels = ReadIdx(find(prefix + "-labels-idx1-ubyte"));
  PERMDNN_CHECK(images.dims.size() == 3, "{}: images must have 3 dimensions", dir);
  PERMDNN_CHECK(labels.dims.size() == 1 && labels.dims[0] == images.dims[0],
                "{}: {} images but {} labels", dir, images.dims[0], labels.dims.empty() ? 0 : labels.dims[0]);
  ImageDataset ds;
  ds.count = images.dims[0];
  ds.rows = static_cast<int>(images.dims[1]);
  ds.cols = static_cast<int>(images.dims[2]);
  ds.pixels = std::move(images.data);
  ds.labels = std::move(labels.data);
  for (uint8_t l : ds.labels) PERMDNN_CHECK(l < 10, "{}: label {} out of range [0, 10)", dir, l);
  return ds;
}

ImageDataset SyntheticDataset(int64_t count, int rows, int cols, int classes, uint64_t seed) {
  PERMDNN_CHECK(count > 0 && rows > 0 && cols > 0 && classes > 1 && classes <= 256, "bad synthetic dataset spec");
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> pix(0, 255);
  std::vector<std::vector<uint8_t>> templates(classes, std::vector<uint8_t>(rows * cols));
  for (auto& t : templates)
    for (auto& v : t) v = static_cast<uint8_t>(pix(rng));
  ImageDataset ds;
  ds.count = count;
  ds.rows = rows;
  ds.cols = cols;
  ds.num_classes = classes;
  ds.pixels.resize(count * rows * cols);
  ds.labels.resize(count);
  std::normal_distribution<double> noise(0.0, 40.0);
  for (int64_t i = 0; i < count; ++i) {
    int label = static_cast<int>(rng() % classes);
    ds.labels[i] = static_cast<uint8_t>(label);
    for (int64_t k = 0; k < int64_t{rows} * cols; ++k) {
      double v = templates[label][k] + noise(rng);
      ds.pixels[i * rows * cols + k] = static_cast<uint8_t>(std::clamp(v, 0.0, 255.0));
    }
  }
  return ds;
}

}  // namespace permdnn
