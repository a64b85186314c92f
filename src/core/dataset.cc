// IDX reading and the Fashion-MNIST loader (see dataset.h).
#include "permdnn/core/dataset.h"

#include <zlib.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <climits>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include <fmt/ranges.h>

#include "permdnn/core/error.h"

namespace permdnn {

namespace {

// Largest IDX payload accepted after decompression (Fashion-MNIST's
// training images are 47 MB): a bound on what a small .gz can make us
// allocate.
constexpr std::size_t kMaxIdxBytes = std::size_t{1} << 31;

bool IsGzip(std::string_view b) {
  return b.size() >= 2 && static_cast<uint8_t>(b[0]) == 0x1f && static_cast<uint8_t>(b[1]) == 0x8b;
}

// Decompresses gzip data (one or more members, as gzip writes them).
std::string Gunzip(std::string_view in, const std::string& name) {
  std::string out;
  z_stream z{};
  PERMDNN_CHECK(inflateInit2(&z, 15 + 16) == Z_OK, "IDX file '{}': cannot start zlib", name);
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  z.avail_in = static_cast<uInt>(std::min<std::size_t>(in.size(), UINT32_MAX));
  std::size_t fed = z.avail_in;
  char buf[1 << 16];
  for (;;) {
    z.next_out = reinterpret_cast<Bytef*>(buf);
    z.avail_out = sizeof(buf);
    const int rc = inflate(&z, Z_NO_FLUSH);
    out.append(buf, sizeof(buf) - z.avail_out);
    if (out.size() > kMaxIdxBytes) {
      inflateEnd(&z);
      Fail("IDX file '{}': decompresses to more than {} bytes", name, kMaxIdxBytes);
    }
    if (z.avail_in == 0 && fed < in.size()) {  // inputs over 4 GiB arrive in pieces
      const std::size_t more = std::min<std::size_t>(in.size() - fed, UINT32_MAX);
      z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data() + fed));
      z.avail_in = static_cast<uInt>(more);
      fed += more;
    }
    if (rc == Z_STREAM_END) {
      if (z.avail_in == 0) break;
      PERMDNN_CHECK(inflateReset(&z) == Z_OK, "IDX file '{}': corrupt gzip data", name);  // next member
      continue;
    }
    if (rc != Z_OK) {
      const std::string msg = z.msg ? z.msg : fmt::format("zlib error {}", rc);
      inflateEnd(&z);
      Fail("IDX file '{}': corrupt gzip data ({})", name, rc == Z_BUF_ERROR ? "truncated" : msg);
    }
  }
  inflateEnd(&z);
  return out;
}

}  // namespace

IdxArray ParseIdx(std::string_view raw, const std::string& name) {
  std::string inflated;
  if (IsGzip(raw)) inflated = Gunzip(raw, name);
  const std::string_view bytes = IsGzip(raw) ? std::string_view(inflated) : raw;
  PERMDNN_CHECK(bytes.size() >= 4 && bytes[0] == 0 && bytes[1] == 0, "IDX file '{}': bad magic (not an IDX file)",
                name);
  const uint8_t type = static_cast<uint8_t>(bytes[2]);
  PERMDNN_CHECK(type == 0x08, "IDX file '{}': element type 0x{:02x} unsupported (only unsigned byte, 0x08)", name,
                type);
  const int ndims = static_cast<uint8_t>(bytes[3]);
  PERMDNN_CHECK(ndims >= 1 && ndims <= 4, "IDX file '{}': {} dimensions (1 to 4 supported)", name, ndims);
  PERMDNN_CHECK(bytes.size() >= 4 + 4u * ndims, "IDX file '{}': truncated header", name);
  const std::size_t offset = 4 + 4 * ndims;
  const std::size_t present = bytes.size() - offset;
  IdxArray a;
  std::size_t count = 1;
  for (int i = 0; i < ndims; ++i) {
    const auto* p = reinterpret_cast<const uint8_t*>(bytes.data()) + 4 + 4 * i;
    const int64_t d = (int64_t{p[0]} << 24) | (int64_t{p[1]} << 16) | (int64_t{p[2]} << 8) | int64_t{p[3]};
    a.dims.push_back(d);
    // Overflow-free: the product stays below `present` or we stop.
    if (count != 0 && static_cast<std::size_t>(d) > present / count)
      Fail("IDX file '{}': truncated: header promises shape [{}...] of more than the {} bytes present", name,
           fmt::join(a.dims, ", "), present);
    count *= static_cast<std::size_t>(d);
  }
  a.data.assign(bytes.begin() + offset, bytes.begin() + offset + count);
  return a;
}

IdxArray ReadIdx(const std::string& path) {
  PERMDNN_CHECK(std::filesystem::exists(path), "IDX file '{}' does not exist", path);
  PERMDNN_CHECK(std::filesystem::is_regular_file(path), "IDX file '{}' is not a regular file", path);
  std::ifstream in(path, std::ios::binary);
  PERMDNN_CHECK(in.good(), "cannot open IDX file '{}'", path);
  std::ostringstream ss;
  ss << in.rdbuf();
  PERMDNN_CHECK(!in.bad(), "IDX file '{}': read error", path);
  return ParseIdx(ss.str(), path);
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
  const std::string images_path = find(prefix + "-images-idx3-ubyte");
  const std::string labels_path = find(prefix + "-labels-idx1-ubyte");
  return DatasetFromIdx(ReadIdx(images_path), ReadIdx(labels_path), images_path + " and " + labels_path);
}

ImageDataset DatasetFromIdx(IdxArray images, IdxArray labels, const std::string& where) {
  PERMDNN_CHECK(images.dims.size() == 3, "{}: images must have 3 dimensions (count, rows, cols), got {}", where,
                images.dims.size());
  PERMDNN_CHECK(images.dims[0] >= 1, "{}: no images", where);
  constexpr int64_t kMaxSide = 1 << 15;
  PERMDNN_CHECK(images.dims[1] >= 1 && images.dims[1] <= kMaxSide && images.dims[2] >= 1 && images.dims[2] <= kMaxSide,
                "{}: images are {}x{}, expected sides in [1, {}]", where, images.dims[1], images.dims[2], kMaxSide);
  PERMDNN_CHECK(labels.dims.size() == 1 && labels.dims[0] == images.dims[0], "{}: {} images but {} labels", where,
                images.dims[0], labels.dims.size() == 1 ? fmt::format("{}", labels.dims[0])
                                                        : fmt::format("a {}-D array of", labels.dims.size()));
  ImageDataset ds;
  ds.count = images.dims[0];
  ds.rows = static_cast<int>(images.dims[1]);
  ds.cols = static_cast<int>(images.dims[2]);
  ds.pixels = std::move(images.data);
  ds.labels = std::move(labels.data);
  for (std::size_t i = 0; i < ds.labels.size(); ++i)
    PERMDNN_CHECK(ds.labels[i] < 10, "{}: label {} of image {} is out of range [0, 10)", where, ds.labels[i], i);
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

namespace permdnn {

int64_t TextCorpus::WindowCount(int64_t length, int64_t seq_len) {
  PERMDNN_CHECK(seq_len >= 1, "sequence length must be >= 1, got {}", seq_len);
  return length > 1 ? (length - 1) / seq_len : 0;
}

std::vector<int64_t> TextCorpus::WindowStarts(int64_t length, int64_t seq_len, int64_t limit) {
  const int64_t n = WindowCount(length, seq_len);
  std::vector<int64_t> first;
  if (limit > 0 && limit < n) {
    first.resize(static_cast<std::size_t>(limit));
    for (int64_t i = 0; i < limit; ++i) first[i] = i * n / limit;
  } else {
    first.resize(static_cast<std::size_t>(n));
    for (int64_t i = 0; i < n; ++i) first[i] = i;
  }
  return first;
}

TextCorpus TextCorpusFromFiles(const std::vector<std::pair<std::string, std::string>>& files, double held_out,
                               const std::string& where) {
  PERMDNN_CHECK(held_out > 0 && held_out <= 0.5, "text corpus {}: held-out fraction must be in (0, 0.5], got {}",
                where, held_out);
  PERMDNN_CHECK(!files.empty(), "text corpus {}: no text files", where);
  TextCorpus c;
  std::array<bool, 256> seen{};
  for (const auto& [name, bytes] : files) {
    PERMDNN_CHECK(!bytes.empty(), "text corpus: file '{}' is empty", name);
    const std::size_t nul = bytes.find('\0');
    PERMDNN_CHECK(nul == std::string::npos, "text corpus: file '{}' has a NUL byte at offset {} (binary, not text)",
                  name, nul);
    for (char ch : bytes) seen[static_cast<uint8_t>(ch)] = true;
    c.files.push_back(name);
  }
  std::array<int64_t, 256> id{};
  for (int b = 0; b < 256; ++b) {
    if (!seen[b]) continue;
    id[b] = static_cast<int64_t>(c.alphabet.size());
    c.alphabet.push_back(static_cast<uint8_t>(b));
  }
  for (const auto& [name, bytes] : files) {
    const std::size_t n = bytes.size();
    const std::size_t test_n = std::min(n, static_cast<std::size_t>(std::ceil(held_out * static_cast<double>(n))));
    for (std::size_t i = 0; i < n; ++i)
      (i < n - test_n ? c.train_ids : c.test_ids).push_back(id[static_cast<uint8_t>(bytes[i])]);
  }
  return c;
}

TextCorpus LoadTextCorpus(const std::string& path, double held_out) {
  namespace fs = std::filesystem;
  const bool is_default = path == kDefaultTextCorpusDir;
  PERMDNN_CHECK(fs::exists(path), "text corpus '{}' does not exist{}", path,
                is_default ? " (it comes with the Debian package fortunes: apt-get install fortunes; or pass --data "
                             "FILE|DIR)"
                           : "");
  std::vector<std::string> paths;
  if (fs::is_directory(path)) {
    for (const auto& e : fs::directory_iterator(path)) {
      if (e.is_symlink() || !e.is_regular_file() || e.path().extension() == ".dat") continue;
      paths.push_back(e.path().string());
    }
    std::sort(paths.begin(), paths.end());
    PERMDNN_CHECK(!paths.empty(), "text corpus '{}': the directory holds no text files (only *.dat, links or "
                  "subdirectories)", path);
  } else {
    PERMDNN_CHECK(fs::is_regular_file(path), "text corpus '{}' is not a regular file or directory", path);
    paths.push_back(path);
  }
  std::vector<std::pair<std::string, std::string>> files;
  for (const std::string& p : paths) {
    std::ifstream in(p, std::ios::binary);
    PERMDNN_CHECK(in.good(), "text corpus: cannot open '{}'", p);
    std::ostringstream ss;
    ss << in.rdbuf();
    PERMDNN_CHECK(!in.bad(), "text corpus: read error in '{}'", p);
    files.emplace_back(p, ss.str());
  }
  return TextCorpusFromFiles(files, held_out, path);
}

}  // namespace permdnn
