// The zip container check of a checkpoint (see checkpoint_file.h).
#include "src/train/checkpoint_file.h"

#include <zlib.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "permdnn/core/error.h"

namespace permdnn::train {

namespace {

constexpr uint32_t kLocalSig = 0x04034b50, kCentralSig = 0x02014b50, kEndSig = 0x06054b50;
constexpr uint32_t kEnd64Sig = 0x06064b50, kLocator64Sig = 0x07064b50;
constexpr uint64_t kMaxEntryBytes = uint64_t{1} << 32;

class Reader {
 public:
  Reader(std::string_view bytes, const std::string& path) : b_(bytes), path_(path) {}
  // `n` bytes at `at` must lie in the file.
  void Need(uint64_t at, uint64_t n, const char* what) const {
    PERMDNN_CHECK(at <= b_.size() && n <= b_.size() - at,
                  "checkpoint {} is corrupt or truncated: {} at byte {} (+{}) lies past its end ({} bytes)", path_,
                  what, at, n, b_.size());
  }
  uint64_t U(uint64_t at, int bytes) const {
    uint64_t v = 0;
    for (int k = bytes - 1; k >= 0; --k) v = v << 8 | static_cast<uint8_t>(b_[at + k]);
    return v;
  }
  std::string_view View(uint64_t at, uint64_t n) const { return b_.substr(at, n); }
  uint64_t size() const { return b_.size(); }

 private:
  std::string_view b_;
  const std::string& path_;
};

// CRC-32 of an entry's data: stored as is, or raw deflate inflated to
// exactly `usize` bytes.
uint32_t EntryCrc(std::string_view data, int method, uint64_t usize, const std::string& path,
                  std::string_view name) {
  if (method == 0) {
    PERMDNN_CHECK(data.size() == usize, "checkpoint {} is corrupt: entry '{}' is stored with {} bytes, expected {}",
                  path, name, data.size(), usize);
    uLong crc = crc32(0L, Z_NULL, 0);
    for (std::size_t at = 0; at < data.size(); at += 1u << 30)
      crc = crc32(crc, reinterpret_cast<const Bytef*>(data.data() + at),
                  static_cast<uInt>(std::min<std::size_t>(data.size() - at, 1u << 30)));
    return static_cast<uint32_t>(crc);
  }
  PERMDNN_CHECK(method == 8, "checkpoint {} is corrupt: entry '{}' uses compression method {}", path, name, method);
  z_stream z{};
  PERMDNN_CHECK(inflateInit2(&z, -MAX_WBITS) == Z_OK, "checkpoint {}: cannot start zlib", path);
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  z.avail_in = static_cast<uInt>(data.size());
  std::vector<Bytef> out(1 << 16);
  uLong crc = crc32(0L, Z_NULL, 0);
  uint64_t total = 0;
  int rc = Z_OK;
  while (rc == Z_OK && total <= usize) {
    z.next_out = out.data();
    z.avail_out = static_cast<uInt>(out.size());
    rc = inflate(&z, Z_NO_FLUSH);
    const uInt got = static_cast<uInt>(out.size()) - z.avail_out;
    crc = crc32(crc, out.data(), got);
    total += got;
    if (rc == Z_OK && got == 0 && z.avail_in == 0) rc = Z_DATA_ERROR;  // input ended before the stream
  }
  inflateEnd(&z);
  PERMDNN_CHECK(rc == Z_STREAM_END && total == usize,
                "checkpoint {} is corrupt: entry '{}' does not inflate to its {} bytes", path, name, usize);
  return static_cast<uint32_t>(crc);
}

}  // namespace

void CheckCheckpointArchive(std::string_view bytes, const std::string& path) {
  const Reader r(bytes, path);
  // The end-of-central-directory record: the last one, its comment reaching the end of the file.
  PERMDNN_CHECK(r.size() >= 22, "checkpoint {} is corrupt or truncated: {} bytes is no zip archive", path, r.size());
  uint64_t end = r.size() - 22;
  const uint64_t lowest = r.size() > 22 + 65535 ? r.size() - 22 - 65535 : 0;
  while (!(r.U(end, 4) == kEndSig && end + 22 + r.U(end + 20, 2) == r.size())) {
    PERMDNN_CHECK(end > lowest, "checkpoint {} is corrupt or truncated: no zip end record", path);
    --end;
  }
  const uint64_t entries = r.U(end + 10, 2), cd_size = r.U(end + 12, 4), cd_offset = r.U(end + 16, 4);
  PERMDNN_CHECK(r.U(end + 4, 2) == 0 && r.U(end + 6, 2) == 0 && r.U(end + 8, 2) == entries,
                "checkpoint {} is corrupt: multi-disk zip end record", path);
  PERMDNN_CHECK(entries != 0xffff && cd_size != 0xffffffff && cd_offset != 0xffffffff,
                "checkpoint {}: zip64 archives (over 4 GiB or 65535 entries) are not supported", path);
  PERMDNN_CHECK(cd_offset + cd_size <= end, "checkpoint {} is corrupt: the central directory ({} bytes at {}) "
                "overlaps the end record at {}", path, cd_size, cd_offset, end);
  // LibTorch's reader (miniz) prefers the zip64 end record when its locator is there: it must agree.
  if (end >= 20 && r.U(end - 20, 4) == kLocator64Sig) {
    const uint64_t e64 = r.U(end - 20 + 8, 8);
    r.Need(e64, 56, "the zip64 end record");
    PERMDNN_CHECK(r.U(e64, 4) == kEnd64Sig && r.U(e64 + 24, 8) == entries && r.U(e64 + 32, 8) == entries &&
                      r.U(e64 + 40, 8) == cd_size && r.U(e64 + 48, 8) == cd_offset && e64 + 56 <= end - 20,
                  "checkpoint {} is corrupt: the zip64 end record disagrees with the end record", path);
  }
  uint64_t at = cd_offset;
  for (uint64_t k = 0; k < entries; ++k) {
    r.Need(at, 46, "a central directory entry");
    PERMDNN_CHECK(at + 46 <= cd_offset + cd_size && r.U(at, 4) == kCentralSig,
                  "checkpoint {} is corrupt: central directory entry {} of {} is damaged", path, k, entries);
    const int method = static_cast<int>(r.U(at + 10, 2));
    const uint32_t crc = static_cast<uint32_t>(r.U(at + 16, 4));
    const uint64_t csize = r.U(at + 20, 4), usize = r.U(at + 24, 4);
    const uint64_t name_len = r.U(at + 28, 2), extra_len = r.U(at + 30, 2), comment_len = r.U(at + 32, 2);
    const uint64_t local = r.U(at + 42, 4);
    const uint64_t next = at + 46 + name_len + extra_len + comment_len;
    PERMDNN_CHECK(next <= cd_offset + cd_size, "checkpoint {} is corrupt: central directory entry {} overruns it",
                  path, k);
    const std::string_view name = r.View(at + 46, name_len);
    PERMDNN_CHECK(csize < kMaxEntryBytes && usize < kMaxEntryBytes && local < cd_offset,
                  "checkpoint {} is corrupt: entry '{}' has sizes {} / {} at offset {}", path, name, csize, usize,
                  local);
    r.Need(local, 30, "a local header");
    const uint64_t lname = r.U(local + 26, 2), lextra = r.U(local + 28, 2);
    const uint64_t data = local + 30 + lname + lextra;
    PERMDNN_CHECK(r.U(local, 4) == kLocalSig && lname == name_len && r.View(local + 30, lname) == name &&
                      data + csize <= cd_offset,
                  "checkpoint {} is corrupt: the local header of entry '{}' (at {}) does not match the directory",
                  path, name, local);
    PERMDNN_CHECK(EntryCrc(r.View(data, csize), method, usize, path, name) == crc,
                  "checkpoint {} is corrupt: entry '{}' fails its CRC-32 check", path, name);
    at = next;
  }
  PERMDNN_CHECK(at == cd_offset + cd_size, "checkpoint {} is corrupt: {} directory entries do not fill its {} bytes",
                path, entries, cd_size);
}

}  // namespace permdnn::train
