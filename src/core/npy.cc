// .npy reading and writing (see npy.h).
#include "permdnn/core/npy.h"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "permdnn/core/atomic_file.h"

namespace permdnn {

namespace {

int ElementSize(const std::string& descr) {
  if (descr.size() != 3) return 0;
  return descr[2] - '0';
}

bool KnownDescr(const std::string& d) {
  for (const char* k : {"<f4", "<f8", "|i1", "|u1", "<i2", "<u2", "<i4", "<i8"})
    if (d == k) return true;
  return false;
}

// Finds the value text after 'key': in the header dict.
std::string DictValue(const std::string& header, const std::string& key, const std::string& name) {
  auto pos = header.find("'" + key + "'");
  PERMDNN_CHECK(pos != std::string::npos, "{}: .npy header has no '{}' entry", name, key);
  pos = header.find(':', pos);
  PERMDNN_CHECK(pos != std::string::npos, "{}: malformed .npy header", name);
  ++pos;
  while (pos < header.size() && std::isspace(static_cast<unsigned char>(header[pos]))) ++pos;
  if (pos < header.size() && header[pos] == '(') {
    auto end = header.find(')', pos);
    PERMDNN_CHECK(end != std::string::npos, "{}: malformed shape in .npy header", name);
    return header.substr(pos, end - pos + 1);
  }
  if (pos < header.size() && header[pos] == '\'') {
    auto end = header.find('\'', pos + 1);
    PERMDNN_CHECK(end != std::string::npos, "{}: malformed string in .npy header", name);
    return header.substr(pos + 1, end - pos - 1);
  }
  auto end = header.find_first_of(",}", pos);
  return header.substr(pos, end - pos);
}

}  // namespace

std::vector<float> NpyArray::ToFloat(const std::string& what) const {
  const int64_t n = size();
  std::vector<float> out(static_cast<std::size_t>(n));
  auto convert = [&](auto tag) {
    using T = decltype(tag);
    for (int64_t i = 0; i < n; ++i) {
      T v;
      std::memcpy(&v, bytes.data() + i * sizeof(T), sizeof(T));
      out[i] = static_cast<float>(v);
    }
  };
  if (descr == "<f4") convert(float{});
  else if (descr == "<f8") convert(double{});
  else if (descr == "|i1") convert(int8_t{});
  else if (descr == "|u1") convert(uint8_t{});
  else if (descr == "<i2") convert(int16_t{});
  else if (descr == "<u2") convert(uint16_t{});
  else if (descr == "<i4") convert(int32_t{});
  else if (descr == "<i8") convert(int64_t{});
  else Fail("{}: cannot convert dtype {} to float", what, descr);
  return out;
}

NpyArray ParseNpy(std::string_view data, const std::string& name) {
  static const char kMagic[] = "\x93NUMPY";
  PERMDNN_CHECK(data.size() >= 10 && data.substr(0, 6) == std::string_view(kMagic, 6),
                "{}: not a .npy file (bad magic)", name);
  const int major = static_cast<unsigned char>(data[6]);
  std::size_t header_len, offset;
  if (major == 1) {
    header_len = static_cast<unsigned char>(data[8]) | (static_cast<unsigned char>(data[9]) << 8);
    offset = 10;
  } else if (major == 2 || major == 3) {
    PERMDNN_CHECK(data.size() >= 12, "{}: truncated .npy header", name);
    header_len = 0;
    for (int i = 0; i < 4; ++i) header_len |= static_cast<std::size_t>(static_cast<unsigned char>(data[8 + i])) << (8 * i);
    offset = 12;
  } else {
    Fail("{}: unsupported .npy version {}", name, major);
  }
  PERMDNN_CHECK(offset + header_len <= data.size(), "{}: truncated .npy header ({} bytes declared, {} present)",
                name, header_len, data.size() - offset);
  const std::string header(data.substr(offset, header_len));
  NpyArray a;
  a.descr = DictValue(header, "descr", name);
  if (a.descr == "<u1" || a.descr == "<i1") a.descr = std::string("|") + a.descr.substr(1);
  PERMDNN_CHECK(KnownDescr(a.descr), "{}: unsupported dtype '{}' (supported: f4 f8 i1 u1 i2 u2 i4 i8, little-endian)",
                name, a.descr);
  std::string fortran = DictValue(header, "fortran_order", name);
  PERMDNN_CHECK(fortran.find("False") != std::string::npos, "{}: Fortran-order arrays are not supported", name);
  std::string shape = DictValue(header, "shape", name);
  PERMDNN_CHECK(shape.size() >= 2 && shape.front() == '(' && shape.back() == ')',
                "{}: malformed shape '{}' in .npy header (expected a tuple such as (3, 4))", name, shape);
  std::string digits;
  for (char c : shape.substr(1)) {
    if (std::isdigit(static_cast<unsigned char>(c))) {
      digits += c;
    } else if (c == ',' || c == ')') {
      if (!digits.empty()) {
        PERMDNN_CHECK(digits.size() <= 12, "{}: absurd dimension in shape {}", name, shape);
        a.shape.push_back(std::stoll(digits));
      }
      digits.clear();
    } else if (!std::isspace(static_cast<unsigned char>(c)) && c != 'L') {
      Fail("{}: malformed shape {} in .npy header", name, shape);
    }
  }
  // Overflow-free: the byte count stays below what the file holds or we stop.
  const std::size_t have = data.size() - offset - header_len;
  int64_t product = 1;  // of the nonzero dims: NpyArray::size() must stay defined
  for (int64_t d : a.shape) {
    if (d != 0 && product > (int64_t{1} << 62) / d) Fail("{}: shape {} has too many elements", name, shape);
    product *= d != 0 ? d : 1;
  }
  std::size_t need = 0;
  if (std::find(a.shape.begin(), a.shape.end(), 0) == a.shape.end()) {
    need = static_cast<std::size_t>(ElementSize(a.descr));
    for (int64_t d : a.shape) {
      if (need > have / static_cast<std::size_t>(d))
        Fail("{}: truncated data: shape {} needs more than the {} bytes the file has", name, shape, have);
      need *= static_cast<std::size_t>(d);
    }
  }
  PERMDNN_CHECK(have >= need, "{}: truncated data: shape needs {} bytes, file has {}", name, need, have);
  a.bytes.assign(data.begin() + offset + header_len, data.begin() + offset + header_len + need);
  return a;
}

NpyArray ReadNpy(const std::string& path) {
  // A device or a pipe (a run directory naming /dev/zero) would be read forever.
  PERMDNN_CHECK(std::filesystem::exists(path), "cannot open '{}': no such file", path);
  PERMDNN_CHECK(std::filesystem::is_regular_file(path), "'{}' is not a regular file (a .npy file was expected)",
                path);
  std::ifstream in(path, std::ios::binary);
  PERMDNN_CHECK(in.good(), "cannot open '{}'", path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ParseNpy(ss.str(), path);
}

std::string SerializeNpy(const std::string& descr, std::span<const int64_t> shape, const void* data,
                         std::size_t bytes) {
  std::string dict = "{'descr': '" + descr + "', 'fortran_order': False, 'shape': (";
  for (std::size_t i = 0; i < shape.size(); ++i) dict += (i ? ", " : "") + std::to_string(shape[i]);
  if (shape.size() == 1) dict += ",";  // Python's one-tuple
  dict += "), }";
  // Pad so that magic + version + length + header is a multiple of 64.
  std::size_t total = 10 + dict.size() + 1;
  dict += std::string((64 - total % 64) % 64, ' ') + "\n";
  std::string out("\x93NUMPY\x01\x00", 8);
  out += static_cast<char>(dict.size() & 0xff);
  out += static_cast<char>((dict.size() >> 8) & 0xff);
  out += dict;
  out.append(static_cast<const char*>(data), bytes);
  return out;
}

template <typename T>
void WriteNpy(const std::string& path, std::span<const T> data, std::vector<int64_t> shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  PERMDNN_CHECK(n == static_cast<int64_t>(data.size()), "WriteNpy '{}': shape holds {} elements, data has {}", path,
                n, data.size());
  WriteFileAtomic(path, SerializeNpy(NpyDescr<T>(), shape, data.data(), data.size() * sizeof(T)));
}

template void WriteNpy<float>(const std::string&, std::span<const float>, std::vector<int64_t>);
template void WriteNpy<double>(const std::string&, std::span<const double>, std::vector<int64_t>);
template void WriteNpy<int8_t>(const std::string&, std::span<const int8_t>, std::vector<int64_t>);
template void WriteNpy<uint8_t>(const std::string&, std::span<const uint8_t>, std::vector<int64_t>);
template void WriteNpy<int16_t>(const std::string&, std::span<const int16_t>, std::vector<int64_t>);
template void WriteNpy<uint16_t>(const std::string&, std::span<const uint16_t>, std::vector<int64_t>);
template void WriteNpy<int32_t>(const std::string&, std::span<const int32_t>, std::vector<int64_t>);
template void WriteNpy<int64_t>(const std::string&, std::span<const int64_t>, std::vector<int64_t>);

}  // namespace permdnn
