// .npy format: https://numpy.org/doc/stable/reference/generated/numpy.lib.format.html
//   "\x93NUMPY" major minor, header length (uint16 LE for 1.0, uint32 LE for 2.0), an ASCII
//   Python dict literal {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), } padded with
//   spaces and a newline, then the raw data.
// Every read below is bounds-checked against `size`: the input is untrusted.
#include "npy.h"

#include <sys/stat.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <limits>
#include <utility>

namespace naf {
namespace npy {
namespace {

constexpr unsigned char kMagic[] = {0x93, 'N', 'U', 'M', 'P', 'Y'};
constexpr size_t kMagicSize = sizeof(kMagic);
// Far above anything numpy writes (a header is a few hundred bytes even for rank 32).
constexpr size_t kMaxHeader = 1 << 20;
constexpr int kMaxRank = 32;  // numpy's own limit (NPY_MAXDIMS) before 2.0

bool little_endian_host() {
  const uint32_t one = 1;
  unsigned char first = 0;
  std::memcpy(&first, &one, 1);
  return first == 1;
}

// A cursor over the header dict text; all accesses go through peek/next, which check the end.
class HeaderParser {
 public:
  HeaderParser(const char* text, size_t size, const std::string& name) : p_(text), end_(text + size), name_(name) {}

  void parse(std::string* descr, bool* fortran, std::vector<int64_t>* shape) {
    bool have_descr = false, have_fortran = false, have_shape = false;
    skip_space();
    expect('{');
    for (;;) {
      skip_space();
      if (peek() == '}') {
        ++p_;
        break;
      }
      const std::string key = string_literal();
      skip_space();
      expect(':');
      skip_space();
      if (key == "descr") {
        if (have_descr) fail("duplicate key 'descr'");
        if (peek() == '[') fail("structured dtypes are not supported (expected '<f4')");
        *descr = string_literal();
        have_descr = true;
      } else if (key == "fortran_order") {
        if (have_fortran) fail("duplicate key 'fortran_order'");
        *fortran = boolean();
        have_fortran = true;
      } else if (key == "shape") {
        if (have_shape) fail("duplicate key 'shape'");
        *shape = tuple();
        have_shape = true;
      } else {
        fail("unexpected key '" + key + "' (expected 'descr', 'fortran_order', 'shape')");
      }
      skip_space();
      if (peek() == ',') {
        ++p_;
      } else if (peek() != '}') {
        fail("expected ',' or '}' in the header dict");
      }
    }
    skip_space();
    if (p_ != end_) fail("unexpected text after the header dict");
    if (!have_descr || !have_fortran || !have_shape) {
      fail("the header dict lacks " + std::string(!have_descr ? "'descr'" : !have_fortran ? "'fortran_order'" : "'shape'"));
    }
  }

 private:
  [[noreturn]] void fail(const std::string& why) const { throw NpyError(name_ + ": corrupt .npy header: " + why); }
  // '\0' at the end: never a valid character of the grammar, so it always ends in fail().
  char peek() const { return p_ < end_ ? *p_ : '\0'; }
  void expect(char c) {
    if (peek() != c) fail(std::string("expected '") + c + "'");
    ++p_;
  }
  void skip_space() {
    while (p_ < end_ && (*p_ == ' ' || *p_ == '\t' || *p_ == '\n' || *p_ == '\r')) ++p_;
  }
  std::string string_literal() {
    const char quote = peek();
    if (quote != '\'' && quote != '"') fail("expected a quoted string");
    ++p_;
    std::string s;
    while (p_ < end_ && *p_ != quote) {
      // Escapes never occur in the keys and dtype strings numpy writes for plain arrays.
      if (*p_ == '\\' || *p_ == '\n' || s.size() > 64) fail("unexpected string contents");
      s += *p_++;
    }
    expect(quote);
    return s;
  }
  bool boolean() {
    const size_t left = static_cast<size_t>(end_ - p_);
    if (left >= 4 && std::memcmp(p_, "True", 4) == 0) {
      p_ += 4;
      return true;
    }
    if (left >= 5 && std::memcmp(p_, "False", 5) == 0) {
      p_ += 5;
      return false;
    }
    fail("'fortran_order' must be True or False");
  }
  int64_t integer() {
    if (peek() < '0' || peek() > '9') fail("expected a non-negative integer in 'shape'");
    int64_t v = 0;
    while (peek() >= '0' && peek() <= '9') {
      const int digit = *p_++ - '0';
      if (v > (std::numeric_limits<int64_t>::max() - digit) / 10) fail("a dimension in 'shape' is too large");
      v = v * 10 + digit;
    }
    if (peek() == 'L') ++p_;  // Python 2 long suffix, written by old numpy
    return v;
  }
  std::vector<int64_t> tuple() {
    expect('(');
    std::vector<int64_t> dims;
    skip_space();
    while (peek() != ')') {
      if (static_cast<int>(dims.size()) >= kMaxRank) fail("'shape' has more than " + std::to_string(kMaxRank) + " dimensions");
      dims.push_back(integer());
      skip_space();
      if (peek() == ',') {
        ++p_;
        skip_space();
      } else if (peek() != ')') {
        fail("expected ',' or ')' in 'shape'");
      }
    }
    ++p_;
    return dims;
  }

  const char* p_;
  const char* end_;
  const std::string& name_;
};

uint32_t read_le(const unsigned char* p, size_t n) {
  uint32_t v = 0;
  for (size_t i = 0; i < n; ++i) v |= static_cast<uint32_t>(p[i]) << (8 * i);
  return v;
}

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string s = "(";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + (shape.size() == 1 ? ",)" : ")");
}

}  // namespace

const char* dtype_name(DType dtype) {
  return dtype == DType::kFloat32 ? "float32" : dtype == DType::kFloat16 ? "float16" : "uint8";
}

size_t Array::count() const {
  const size_t item = dtype == DType::kFloat32 ? 4 : dtype == DType::kFloat16 ? 2 : 1;
  return nbytes / item;
}

Array parse(const unsigned char* bytes, size_t size, const std::string& name) {
  if (size < kMagicSize + 2 || std::memcmp(bytes, kMagic, kMagicSize) != 0) {
    throw NpyError(name + ": not a .npy file (no \\x93NUMPY magic)" + (size < kMagicSize + 2 ? ", file too short" : ""));
  }
  const unsigned major = bytes[6], minor = bytes[7];
  if (major < 1 || major > 3 || minor != 0) {
    throw NpyError(name + ": .npy format version " + std::to_string(major) + "." + std::to_string(minor) +
                   " is not supported (1.0, 2.0 or 3.0)");
  }
  const size_t len_size = major == 1 ? 2 : 4;  // 3.0 differs from 2.0 only by a UTF-8 header
  const size_t prefix = kMagicSize + 2 + len_size;
  if (size < prefix) throw NpyError(name + ": truncated .npy file (header length cut off)");
  const size_t header_len = read_le(bytes + kMagicSize + 2, len_size);
  if (header_len > kMaxHeader) {
    throw NpyError(name + ": corrupt .npy header: length " + std::to_string(header_len) + " is implausible");
  }
  if (header_len > size - prefix) {
    throw NpyError(name + ": truncated .npy file (header of " + std::to_string(header_len) + " bytes, only " +
                   std::to_string(size - prefix) + " present)");
  }
  std::string descr;
  bool fortran = false;
  std::vector<int64_t> shape;
  HeaderParser(reinterpret_cast<const char*>(bytes + prefix), header_len, name).parse(&descr, &fortran, &shape);
  DType dtype;
  if (descr == "<f4") {
    dtype = DType::kFloat32;
  } else if (descr == "<f2") {
    dtype = DType::kFloat16;
  } else if (descr == "|u1" || descr == "<u1" || descr == ">u1") {
    dtype = DType::kUint8;
  } else {
    throw NpyError(name + ": dtype '" + descr + "' is not supported: expected little-endian float32 '<f4', "
                   "float16 '<f2' or uint8 '|u1' (save arr.astype('<f4'))");
  }
  const size_t item = dtype == DType::kFloat32 ? 4 : dtype == DType::kFloat16 ? 2 : 1;
  if (fortran) {
    throw NpyError(name + ": Fortran-ordered arrays are not supported (save np.ascontiguousarray(arr))");
  }
  // Element count with overflow checks; the byte count must also fit in memory.
  uint64_t count = 1;
  const uint64_t max_count = std::numeric_limits<size_t>::max() / item;
  for (int64_t d : shape) {
    if (d != 0 && count > max_count / static_cast<uint64_t>(d)) {
      throw NpyError(name + ": shape " + shape_string(shape) + " is too large");
    }
    count *= static_cast<uint64_t>(d);
  }
  const size_t data_bytes = static_cast<size_t>(count) * item;
  const size_t available = size - prefix - header_len;
  if (available < data_bytes) {
    throw NpyError(name + ": truncated .npy file: shape " + shape_string(shape) + " needs " +
                   std::to_string(data_bytes) + " data bytes, only " + std::to_string(available) + " present");
  }
  if (available > data_bytes) {
    throw NpyError(name + ": corrupt .npy file: " + std::to_string(available - data_bytes) +
                   " bytes after the data of shape " + shape_string(shape));
  }
  Array array;
  array.shape = shape;
  array.dtype = dtype;
  array.nbytes = data_bytes;
  array.storage.resize((data_bytes + sizeof(float) - 1) / sizeof(float));
  unsigned char* raw = reinterpret_cast<unsigned char*>(array.storage.data());
  if (data_bytes > 0) std::memcpy(raw, bytes + prefix + header_len, data_bytes);
  if (!little_endian_host() && item > 1) {
    for (size_t i = 0; i < data_bytes; i += item) std::reverse(raw + i, raw + i + item);
  }
  return array;
}

Array read(const std::string& path, const std::string& name) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) throw NpyError(name + ": no such file " + path);
  if (!S_ISREG(st.st_mode)) throw NpyError(name + ": " + path + " is not a regular file");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw NpyError(name + ": cannot open " + path);
  in.seekg(0, std::ios::end);
  const std::streamoff end = in.tellg();
  if (end < 0 || !in.seekg(0)) throw NpyError(name + ": cannot read " + path + " (not a regular file?)");
  if (static_cast<uint64_t>(end) > std::numeric_limits<size_t>::max() / 2) {
    throw NpyError(name + ": " + path + " is too large");
  }
  std::vector<unsigned char> bytes(static_cast<size_t>(end));
  if (!bytes.empty() && !in.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()))) {
    throw NpyError(name + ": error reading " + path);
  }
  return parse(bytes.data(), bytes.size(), name);
}

void write(const std::string& path, const float* data, const std::vector<int64_t>& shape, const std::string& name) {
  size_t count = 1;
  for (int64_t d : shape) {
    if (d < 0) throw NpyError(name + ": negative dimension in shape " + shape_string(shape));
    count *= static_cast<size_t>(d);
  }
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': " + shape_string(shape) + ", }";
  // Pad with spaces and end with '\n' so the data starts at a multiple of 64 bytes (as numpy does).
  const size_t v1_prefix = kMagicSize + 2 + 2;
  const bool v2 = v1_prefix + header.size() + 1 > 65535;
  const size_t prefix = v2 ? kMagicSize + 2 + 4 : v1_prefix;
  const size_t total = (prefix + header.size() + 1 + 63) / 64 * 64;
  header.append(total - prefix - header.size() - 1, ' ');
  header += '\n';

  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) throw NpyError(name + ": cannot create " + path);
  unsigned char pre[12];
  std::memcpy(pre, kMagic, kMagicSize);
  pre[6] = v2 ? 2 : 1;
  pre[7] = 0;
  const size_t len = header.size();
  for (size_t i = 0; i < (v2 ? 4u : 2u); ++i) pre[8 + i] = static_cast<unsigned char>(len >> (8 * i));
  out.write(reinterpret_cast<const char*>(pre), static_cast<std::streamsize>(prefix));
  out.write(header.data(), static_cast<std::streamsize>(header.size()));
  if (little_endian_host()) {
    out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(count * sizeof(float)));
  } else {
    for (size_t i = 0; i < count && out; ++i) {
      unsigned char b[4];
      std::memcpy(b, data + i, 4);
      const unsigned char le[4] = {b[3], b[2], b[1], b[0]};
      out.write(reinterpret_cast<const char*>(le), 4);
    }
  }
  out.close();
  if (!out) throw NpyError(name + ": error writing " + path + " (disk full or not writable?)");
}

}  // namespace npy
}  // namespace naf
