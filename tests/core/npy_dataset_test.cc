// .npy round trips and bad files; IDX / Fashion-MNIST loading and errors; the
// text corpus reader of the charlm model.
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <zlib.h>

#include "permdnn/core/dataset.h"
#include "permdnn/core/error.h"
#include "permdnn/core/npy.h"
#include "support/installed.h"

namespace permdnn {
namespace {

std::string TempPath(const std::string& name) {
  return (std::filesystem::temp_directory_path() / ("permdnn_test_" + name)).string();
}

TEST(Npy, RoundTripsEveryShapeAndType) {
  const std::string path = TempPath("a.npy");
  std::vector<float> f = {1.5f, -2.0f, 3.25f, 0.0f, 7.0f, 8.0f};
  WriteNpy<float>(path, f, {2, 3});
  NpyArray a = ReadNpy(path);
  EXPECT_EQ(a.descr, "<f4");
  EXPECT_EQ(a.shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(a.as<float>(), f);
  std::vector<uint16_t> u = {1, 2, 65535};
  WriteNpy<uint16_t>(path, u, {3});
  NpyArray b = ReadNpy(path);
  EXPECT_EQ(b.shape, (std::vector<int64_t>{3}));
  EXPECT_EQ(b.as<uint16_t>(), u);
  EXPECT_EQ(b.ToFloat(), (std::vector<float>{1, 2, 65535}));
  EXPECT_THROW(b.as<float>(), Error);
  std::vector<int64_t> scalar = {42};
  WriteNpy<int64_t>(path, scalar, {});
  EXPECT_EQ(ReadNpy(path).as<int64_t>(), scalar);
  // The header is 64-byte aligned as NumPy writes it.
  std::string bytes = SerializeNpy("<f4", std::vector<int64_t>{2, 3}, f.data(), 24);
  EXPECT_EQ((bytes.size() - 24) % 64, 0u);
  std::filesystem::remove(path);
}

TEST(Npy, RejectsBadFilesClearly) {
  auto expect_error = [](const std::string& data, const std::string& fragment) {
    try {
      ParseNpy(data, "x.npy");
      ADD_FAILURE() << "accepted: " << fragment;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
    }
  };
  expect_error("hello world, not numpy", "bad magic");
  std::vector<float> f(4, 1.0f);
  std::string good = SerializeNpy("<f4", std::vector<int64_t>{4}, f.data(), 16);
  expect_error(good.substr(0, good.size() - 3), "truncated data");
  expect_error(good.substr(0, 20), "truncated .npy header");
  std::string big_endian = SerializeNpy(">f4", std::vector<int64_t>{4}, f.data(), 16);
  expect_error(big_endian, "unsupported dtype");
  EXPECT_THROW(ReadNpy("/nonexistent/x.npy"), Error);
}

TEST(Idx, ReadsGzippedAndPlainAndRejectsGarbage) {
  const std::string plain = TempPath("t.idx"), gz = TempPath("t.idx.gz");
  std::string bytes = {0, 0, 8, 2, 0, 0, 0, 2, 0, 0, 0, 3, 1, 2, 3, 4, 5, 6};
  std::ofstream(plain, std::ios::binary).write(bytes.data(), bytes.size());
  gzFile f = gzopen(gz.c_str(), "wb");
  gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size()));
  gzclose(f);
  for (const auto& p : {plain, gz}) {
    IdxArray a = ReadIdx(p);
    EXPECT_EQ(a.dims, (std::vector<int64_t>{2, 3}));
    EXPECT_EQ(a.data, (std::vector<uint8_t>{1, 2, 3, 4, 5, 6}));
  }
  std::ofstream(plain, std::ios::binary).write(bytes.data(), bytes.size() - 2);
  EXPECT_THROW(ReadIdx(plain), Error);  // truncated
  std::ofstream(plain, std::ios::binary) << "garbage!";
  EXPECT_THROW(ReadIdx(plain), Error);
  std::filesystem::remove(plain);
  std::filesystem::remove(gz);
}

TEST(FashionMnist, MissingDirectoryNamesThePackage) {
  try {
    LoadFashionMnist("/nonexistent/dir", "test");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("dataset-fashion-mnist"), std::string::npos) << e.what();
  }
  EXPECT_THROW(LoadFashionMnist(kDefaultFashionMnistDir, "validation"), Error);
}

TEST(FashionMnist, LoadsTheDebianPackage) {
  ASSERT_TRUE(permdnn::testing::Installed(std::filesystem::path(kDefaultFashionMnistDir) / "t10k-images-idx3-ubyte.gz",
                                          permdnn::testing::kFashionMnistPackage));
  ImageDataset test = LoadFashionMnist(kDefaultFashionMnistDir, "test");
  EXPECT_EQ(test.count, 10000);
  EXPECT_EQ(test.rows, 28);
  EXPECT_EQ(test.cols, 28);
  std::vector<int> per_class(10);
  for (uint8_t l : test.labels) per_class[l]++;
  for (int c : per_class) EXPECT_EQ(c, 1000);  // Fashion-MNIST's test split is balanced
  std::vector<float> batch(2 * 784);
  test.Batch(0, 2, Preprocess{}, batch);
  double mean = 0;
  for (float v : batch) mean += v;
  EXPECT_LT(std::abs(mean / batch.size()), 1.5);
}

TEST(SyntheticDataset, IsSeededAndLabelled) {
  ImageDataset a = SyntheticDataset(100, 8, 8, 4, 1), b = SyntheticDataset(100, 8, 8, 4, 1);
  EXPECT_EQ(a.pixels, b.pixels);
  EXPECT_EQ(a.labels, b.labels);
  for (uint8_t l : a.labels) EXPECT_LT(l, 4);
}

// ---- Text corpus (charlm) ----------------------------------------------------

void WriteText(const std::filesystem::path& p, const std::string& bytes) {
  std::ofstream(p, std::ios::binary) << bytes;
}

std::string CorpusError(const std::string& path, double held_out = 0.1) {
  try {
    LoadTextCorpus(path, held_out);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(TextCorpus, SplitsEveryFileAndMapsBytesToIds) {
  namespace fs = std::filesystem;
  const fs::path dir = TempPath("corpus_dir");
  fs::remove_all(dir);
  fs::create_directories(dir);
  WriteText(dir / "b.txt", "abcdefghij");  // 10 bytes: last 1 held out
  WriteText(dir / "a.txt", "aaaaaaaaaaaaaaaaaaaz");  // 20 bytes: last 2 held out; read first (name order)
  WriteText(dir / "a.txt.dat", std::string("\0\0\1", 3));  // strfile index: skipped
  fs::create_symlink(dir / "a.txt", dir / "a.u8");               // link: skipped
  const TextCorpus c = LoadTextCorpus(dir.string(), 0.1);
  ASSERT_EQ(c.files.size(), 2u);
  EXPECT_EQ(fs::path(c.files[0]).filename(), "a.txt");
  EXPECT_EQ(c.alphabet, (std::vector<uint8_t>{'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j', 'z'}));
  EXPECT_EQ(c.train_ids.size(), 18u + 9u);
  EXPECT_EQ(c.test_ids, (std::vector<int64_t>{0, 10, 9}));  // "az" then "j"
  EXPECT_EQ(TextCorpus::WindowCount(27, 4), 6);  // windows of T + 1 ids need 6·4 + 1 <= 27
  EXPECT_EQ(TextCorpus::WindowCount(1, 4), 0);
  EXPECT_THROW(TextCorpus::WindowCount(27, 0), Error);
  // The trainer's and eval's --limit windows: spread evenly, ⌊i·6/4⌋.
  EXPECT_EQ(TextCorpus::WindowStarts(27, 4, 0), (std::vector<int64_t>{0, 1, 2, 3, 4, 5}));
  EXPECT_EQ(TextCorpus::WindowStarts(27, 4, 4), (std::vector<int64_t>{0, 1, 3, 4}));
  EXPECT_EQ(TextCorpus::WindowStarts(27, 4, 9).size(), 6u);
  EXPECT_TRUE(TextCorpus::WindowStarts(1, 4, 0).empty());
  fs::remove_all(dir);
}

TEST(TextCorpus, BadCorporaNameTheFileAndTheProblem) {
  namespace fs = std::filesystem;
  const fs::path dir = TempPath("corpus_bad");
  fs::remove_all(dir);
  fs::create_directories(dir / "only_dat");
  WriteText(dir / "only_dat" / "x.dat", "index");
  WriteText(dir / "empty.txt", "");
  WriteText(dir / "binary.txt", std::string("text\0more", 9));
  WriteText(dir / "ok.txt", "hello");
  EXPECT_NE(CorpusError((dir / "missing").string()).find("does not exist"), std::string::npos);
  EXPECT_NE(CorpusError(kDefaultTextCorpusDir + std::string("-not-there")).find("does not exist"), std::string::npos);
  EXPECT_NE(CorpusError((dir / "only_dat").string()).find("holds no text files"), std::string::npos);
  const std::string empty = CorpusError((dir / "empty.txt").string());
  EXPECT_NE(empty.find("empty.txt"), std::string::npos) << empty;
  EXPECT_NE(empty.find("is empty"), std::string::npos) << empty;
  const std::string binary = CorpusError((dir / "binary.txt").string());
  EXPECT_NE(binary.find("binary.txt"), std::string::npos) << binary;
  EXPECT_NE(binary.find("NUL byte at offset 4"), std::string::npos) << binary;
  for (double h : {0.0, 0.75, -1.0}) EXPECT_NE(CorpusError((dir / "ok.txt").string(), h).find("(0, 0.5]"), std::string::npos);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace permdnn
