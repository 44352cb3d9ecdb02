#include "artifact.h"

#include <dlfcn.h>
#include <sys/stat.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <fstream>
#include <sstream>

namespace naf {
namespace detail {

std::string in_quotes(const std::string& s) { return "'" + s + "'"; }

std::string shape_string(const Shape& shape) {
  std::string s = "(";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + (shape.size() == 1 ? ",)" : ")");
}

bool is_regular_file(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

std::string file_extension(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  const size_t dot = path.find_last_of('.');
  if (dot == std::string::npos || (slash != std::string::npos && dot < slash)) return "";
  std::string ext = path.substr(dot);
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  return ext;
}

std::string directory_of(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

std::string describe_non_model(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  char head[8] = {};
  if (!in.read(head, sizeof head) && in.gcount() < 4) return "";
  const auto starts = [&](const char* magic, size_t n) { return std::memcmp(head, magic, n) == 0; };
  if (starts("\x89PNG", 4)) return "a PNG image";
  if (starts("\xff\xd8\xff", 3)) return "a JPEG image";
  if (starts("\x93NUMPY", 6)) return "a NumPy .npy file";
  if (starts("\x7f" "ELF", 4)) return "a shared library or executable";
  if (starts("PK\x03\x04", 4)) return "a zip archive";
  return "";
}

void check_artifact_kind(const std::string& path, Backend backend) {
  const std::string what = describe_non_model(path);
  if (!what.empty()) {
    throw RuntimeError("model: " + in_quotes(path) + " is " + what + ", not an exported NAF model (" +
                       (backend == Backend::kTensorRt ? "a TensorRT .engine" : backend == Backend::kOpenVino
                                                                                ? "an OpenVINO IR .xml or an .onnx file"
                                                                                : "an .onnx file") +
                       ")");
  }
  const std::string ext = file_extension(path);
  bool ok = false;
  switch (backend) {
    case Backend::kOnnxRuntime: ok = ext == ".onnx"; break;
    case Backend::kOpenVino: ok = ext == ".xml" || ext == ".onnx"; break;
    case Backend::kTensorRt: ok = ext == ".engine" || ext == ".plan" || ext == ".trt"; break;
  }
  if (ok) return;
  std::string hint;
  if (ext == ".onnx") {
    hint = backend == Backend::kTensorRt
               ? "an ONNX model: build a TensorRT engine from it first (naf-export --target tensorrt, or trtexec "
                 "--onnx=... --dynamicPlugins=libnaf_tensorrt.so --saveEngine=naf.engine)"
               : "an ONNX model, run by the onnxruntime or openvino backend";
  } else if (ext == ".xml") {
    hint = "an OpenVINO IR, run by the openvino backend";
  } else if (ext == ".bin") {
    hint = "the weights of an OpenVINO IR: pass the .xml next to it";
  } else if (ext == ".engine" || ext == ".plan" || ext == ".trt") {
    hint = "a TensorRT engine, run by the tensorrt backend";
  } else {
    hint = "not a file kind any naf runtime reads (.onnx, .xml, .engine)";
  }
  throw RuntimeError(std::string("model: ") + in_quotes(path) + " is " + hint + "; the " + backend_name(backend) +
                     " backend runs " +
                     (backend == Backend::kOnnxRuntime ? ".onnx files"
                      : backend == Backend::kOpenVino ? ".xml (IR) and .onnx files"
                                                      : ".engine / .plan files"));
}

// --- ONNX: which operator-set domains does the model import? ---------------------------------
namespace {

class ProtoReader {
 public:
  ProtoReader(std::istream& in, uint64_t size) : in_(in), size_(size) {}
  bool done() const { return pos_ >= size_; }
  bool varint(uint64_t* value) {
    *value = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      unsigned char byte = 0;
      if (!bytes(&byte, 1)) return false;
      *value |= static_cast<uint64_t>(byte & 0x7f) << shift;
      if ((byte & 0x80) == 0) return true;
    }
    return false;  // more than 10 bytes: corrupt
  }
  bool bytes(void* dst, uint64_t n) {
    if (n > size_ - pos_) return false;
    if (!in_.read(static_cast<char*>(dst), static_cast<std::streamsize>(n))) return false;
    pos_ += n;
    return true;
  }
  bool skip(uint64_t n) {
    if (n > size_ - pos_) return false;
    pos_ += n;
    return static_cast<bool>(in_.seekg(static_cast<std::streamoff>(pos_)));
  }
  bool skip_field(uint64_t wire) {
    uint64_t n = 0;
    switch (wire) {
      case 0: return varint(&n);
      case 1: return skip(8);
      case 2: return varint(&n) && skip(n);
      case 5: return skip(4);
      default: return false;  // groups (3, 4) do not occur in ONNX files
    }
  }

 private:
  std::istream& in_;
  uint64_t size_;
  uint64_t pos_ = 0;
};

// Domain of one serialized OperatorSetIdProto (field 1, string; absent means "").
bool opset_domain(const std::string& msg, std::string* domain) {
  domain->clear();
  size_t pos = 0;
  auto varint = [&](uint64_t* v) {
    *v = 0;
    for (int shift = 0; shift < 64 && pos < msg.size(); shift += 7) {
      const auto byte = static_cast<unsigned char>(msg[pos++]);
      *v |= static_cast<uint64_t>(byte & 0x7f) << shift;
      if ((byte & 0x80) == 0) return true;
    }
    return false;
  };
  while (pos < msg.size()) {
    uint64_t tag = 0, n = 0;
    if (!varint(&tag)) return false;
    const uint64_t wire = tag & 7;
    if (wire == 0) {
      if (!varint(&n)) return false;
    } else if (wire == 2) {
      if (!varint(&n) || n > msg.size() - pos) return false;
      if ((tag >> 3) == 1) domain->assign(msg, pos, n);
      pos += n;
    } else if (wire == 1 || wire == 5) {
      n = wire == 1 ? 8 : 4;
      if (n > msg.size() - pos) return false;
      pos += n;
    } else {
      return false;
    }
  }
  return true;
}

}  // namespace

bool onnx_domains(const std::string& path, std::vector<std::string>* domains) {
  std::ifstream in(path, std::ios::binary);
  if (!in || !in.seekg(0, std::ios::end)) return false;
  const std::streamoff size = in.tellg();
  if (size <= 0 || !in.seekg(0)) return false;
  ProtoReader reader(in, static_cast<uint64_t>(size));
  constexpr uint64_t kOpsetImportField = 8;
  constexpr uint64_t kMaxOpsetEntry = 4096;  // a domain name and a version: tiny
  while (!reader.done()) {
    uint64_t tag = 0;
    if (!reader.varint(&tag)) return false;
    const uint64_t field = tag >> 3, wire = tag & 7;
    if (field == kOpsetImportField && wire == 2) {
      uint64_t n = 0;
      if (!reader.varint(&n) || n > kMaxOpsetEntry) return false;
      std::string msg(static_cast<size_t>(n), '\0');
      std::string domain;
      if (!reader.bytes(&msg[0], n) || !opset_domain(msg, &domain)) return false;
      domains->push_back(domain);
    } else if (field == 0 || !reader.skip_field(wire)) {
      return false;
    }
  }
  return true;
}

bool file_contains(const std::string& path, const std::string& needle) {
  std::ifstream in(path, std::ios::binary);
  if (!in || needle.empty()) return false;
  // Chunks overlapping by needle.size() - 1 bytes, so no match is split.
  std::string window;
  std::vector<char> chunk(1 << 16);
  while (in) {
    in.read(chunk.data(), static_cast<std::streamsize>(chunk.size()));
    const std::streamsize got = in.gcount();
    if (got <= 0) break;
    window.append(chunk.data(), static_cast<size_t>(got));
    if (window.find(needle) != std::string::npos) return true;
    if (window.size() >= needle.size()) window.erase(0, window.size() - (needle.size() - 1));
  }
  return false;
}

bool ir_uses_naf_ops(const std::string& path) { return file_contains(path, "version=\"naf_opset1\""); }

std::string library_dir_of(const void* address) {
  Dl_info info;
  if (dladdr(address, &info) == 0 || info.dli_fname == nullptr) return "";
  char resolved[4096];
  if (::realpath(info.dli_fname, resolved) == nullptr) return directory_of(info.dli_fname);
  return directory_of(resolved);
}

std::string resolve_plugin_path(const std::string& given, const void* self, const std::string& file_name) {
  if (!given.empty()) {
    return given.find('/') == std::string::npos && is_regular_file(given) ? "./" + given : given;
  }
  const std::string dir = library_dir_of(self);
  if (!dir.empty() && is_regular_file(dir + "/" + file_name)) return dir + "/" + file_name;
  return "";
}

void check_plugin_file(const std::string& path, const std::string& entry_point, const std::string& expected_name,
                       const std::string& label) {
  if (!is_regular_file(path)) {
    throw RuntimeError("plugin: no such file " + in_quotes(path) + " (expected the " + label + " " + expected_name + ")");
  }
  // The exported entry point's name is in the library's dynamic string table; a library without
  // it (another plugin, a random file) is refused before any runtime dlopens it.
  if (file_contains(path, std::string(1, '\0') + entry_point + std::string(1, '\0'))) return;
  static const struct {
    const char* symbol;
    const char* name;
  } kKnown[] = {{"RegisterCustomOps", "the ONNX Runtime custom-op library libnaf_onnxruntime.so"},
                {"create_extensions", "the OpenVINO extension library libnaf_openvino.so"},
                {"getCreators", "the TensorRT plugin library libnaf_tensorrt.so"}};
  std::string what = describe_non_model(path).empty() ? "not a naf plugin library" : describe_non_model(path);
  for (const auto& known : kKnown) {
    if (known.symbol != entry_point && file_contains(path, std::string(1, '\0') + known.symbol + std::string(1, '\0'))) {
      what = known.name;
      break;
    }
  }
  throw RuntimeError("plugin: " + in_quotes(path) + " is " + what + " (it does not define " + entry_point +
                     "); this backend needs the " + label + " " + expected_name);
}

// --- JSON ------------------------------------------------------------------------------------
const JsonValue* JsonValue::find(const std::string& key) const {
  if (type != Type::kObject) return nullptr;
  const auto it = object.find(key);
  return it == object.end() ? nullptr : &it->second;
}

namespace {

class JsonParser {
 public:
  explicit JsonParser(const std::string& text) : s_(text) {}
  bool parse(JsonValue* out, std::string* error) {
    if (!value(out, 0)) {
      *error = error_ + " at byte " + std::to_string(pos_);
      return false;
    }
    space();
    if (pos_ != s_.size()) {
      *error = "unexpected text after the value at byte " + std::to_string(pos_);
      return false;
    }
    return true;
  }

 private:
  bool fail(const char* why) {
    error_ = why;
    return false;
  }
  void space() {
    while (pos_ < s_.size() && (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n' || s_[pos_] == '\r')) ++pos_;
  }
  bool literal(const char* word) {
    const size_t n = std::strlen(word);
    if (s_.compare(pos_, n, word) != 0) return fail("invalid literal");
    pos_ += n;
    return true;
  }
  bool value(JsonValue* v, int depth) {
    if (depth > 64) return fail("nesting deeper than 64 levels");
    space();
    if (pos_ >= s_.size()) return fail("unexpected end");
    const char c = s_[pos_];
    if (c == '{') return object(v, depth);
    if (c == '[') return array(v, depth);
    if (c == '"') {
      v->type = JsonValue::Type::kString;
      return string(&v->string);
    }
    if (c == 't') {
      v->type = JsonValue::Type::kBool;
      v->boolean = true;
      return literal("true");
    }
    if (c == 'f') {
      v->type = JsonValue::Type::kBool;
      return literal("false");
    }
    if (c == 'n') {
      v->type = JsonValue::Type::kNull;
      return literal("null");
    }
    return number(v);
  }
  bool number(JsonValue* v) {
    const size_t start = pos_;
    if (pos_ < s_.size() && s_[pos_] == '-') ++pos_;
    bool digits = false;
    while (pos_ < s_.size() && (std::isdigit(static_cast<unsigned char>(s_[pos_])) || s_[pos_] == '.' ||
                                s_[pos_] == 'e' || s_[pos_] == 'E' || s_[pos_] == '+' || s_[pos_] == '-')) {
      digits = digits || std::isdigit(static_cast<unsigned char>(s_[pos_]));
      ++pos_;
    }
    if (!digits) return fail("invalid value");
    std::istringstream in(s_.substr(start, pos_ - start));
    in.imbue(std::locale::classic());
    if (!(in >> v->number)) return fail("invalid number");
    v->type = JsonValue::Type::kNumber;
    return true;
  }
  bool string(std::string* out) {
    ++pos_;  // opening quote
    out->clear();
    while (pos_ < s_.size()) {
      const char c = s_[pos_++];
      if (c == '"') return true;
      if (static_cast<unsigned char>(c) < 0x20) return fail("control character in a string");
      if (c != '\\') {
        *out += c;
        continue;
      }
      if (pos_ >= s_.size()) break;
      const char e = s_[pos_++];
      switch (e) {
        case '"': case '\\': case '/': *out += e; break;
        case 'b': *out += '\b'; break;
        case 'f': *out += '\f'; break;
        case 'n': *out += '\n'; break;
        case 'r': *out += '\r'; break;
        case 't': *out += '\t'; break;
        case 'u': {
          if (s_.size() - pos_ < 4) return fail("short \\u escape");
          unsigned code = 0;
          for (int i = 0; i < 4; ++i) {
            const char h = s_[pos_++];
            code <<= 4;
            if (h >= '0' && h <= '9') code |= static_cast<unsigned>(h - '0');
            else if (h >= 'a' && h <= 'f') code |= static_cast<unsigned>(h - 'a' + 10);
            else if (h >= 'A' && h <= 'F') code |= static_cast<unsigned>(h - 'A' + 10);
            else return fail("bad \\u escape");
          }
          // UTF-8 of the code unit (surrogate pairs are kept as two units: paths here are ASCII).
          if (code < 0x80) {
            *out += static_cast<char>(code);
          } else if (code < 0x800) {
            *out += static_cast<char>(0xc0 | (code >> 6));
            *out += static_cast<char>(0x80 | (code & 0x3f));
          } else {
            *out += static_cast<char>(0xe0 | (code >> 12));
            *out += static_cast<char>(0x80 | ((code >> 6) & 0x3f));
            *out += static_cast<char>(0x80 | (code & 0x3f));
          }
          break;
        }
        default: return fail("bad escape");
      }
    }
    return fail("unterminated string");
  }
  bool array(JsonValue* v, int depth) {
    ++pos_;
    v->type = JsonValue::Type::kArray;
    space();
    if (pos_ < s_.size() && s_[pos_] == ']') {
      ++pos_;
      return true;
    }
    for (;;) {
      v->array.emplace_back();
      if (!value(&v->array.back(), depth + 1)) return false;
      space();
      if (pos_ >= s_.size()) return fail("unterminated array");
      if (s_[pos_] == ',') {
        ++pos_;
      } else if (s_[pos_] == ']') {
        ++pos_;
        return true;
      } else {
        return fail("expected ',' or ']'");
      }
    }
  }
  bool object(JsonValue* v, int depth) {
    ++pos_;
    v->type = JsonValue::Type::kObject;
    space();
    if (pos_ < s_.size() && s_[pos_] == '}') {
      ++pos_;
      return true;
    }
    for (;;) {
      space();
      if (pos_ >= s_.size() || s_[pos_] != '"') return fail("expected a key");
      std::string key;
      if (!string(&key)) return false;
      space();
      if (pos_ >= s_.size() || s_[pos_] != ':') return fail("expected ':'");
      ++pos_;
      JsonValue member;
      if (!value(&member, depth + 1)) return false;
      v->object[key] = std::move(member);
      space();
      if (pos_ >= s_.size()) return fail("unterminated object");
      if (s_[pos_] == ',') {
        ++pos_;
      } else if (s_[pos_] == '}') {
        ++pos_;
        return true;
      } else {
        return fail("expected ',' or '}'");
      }
    }
  }

  const std::string& s_;
  size_t pos_ = 0;
  std::string error_;
};

}  // namespace

bool parse_json(const std::string& text, JsonValue* value, std::string* error) {
  if (text.size() > (1u << 20)) {
    *error = "larger than 1 MiB";
    return false;
  }
  *value = JsonValue();
  return JsonParser(text).parse(value, error);
}

bool read_json_file(const std::string& path, JsonValue* value, std::string* error) {
  if (!is_regular_file(path)) {
    *error = "no such file";
    return false;
  }
  std::ifstream in(path, std::ios::binary);
  std::string text;
  char buffer[4096];
  while (in.read(buffer, sizeof buffer) || in.gcount() > 0) {
    text.append(buffer, static_cast<size_t>(in.gcount()));
    if (text.size() > (1u << 20)) break;
  }
  return parse_json(text, value, error);
}

std::string release_of(const std::string& version) {
  std::string out;
  int parts = 0;
  size_t i = 0;
  while (i < version.size() && parts < 3) {
    size_t j = i;
    while (j < version.size() && std::isdigit(static_cast<unsigned char>(version[j]))) ++j;
    if (j == i) break;
    out += (parts ? "." : "") + version.substr(i, j - i);
    ++parts;
    if (j >= version.size() || version[j] != '.') break;
    i = j + 1;
  }
  return out;
}

}  // namespace detail
}  // namespace naf
