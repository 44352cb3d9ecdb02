// What every backend needs to know about files before handing them to its runtime: which kind an
// artifact is, whether it uses naf operations (so needs the plugin), which plugin file to load and
// whether it is the right one, and the small JSON files written next to artifacts and plugins.
// Pure C++ with no runtime dependency, so tests run it anywhere. Internal header (not installed).
#ifndef NAF_RUNTIMES_ARTIFACT_H_
#define NAF_RUNTIMES_ARTIFACT_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "naf/upsampler.h"

namespace naf {
namespace detail {

std::string in_quotes(const std::string& s);
std::string shape_string(const Shape& shape);
bool is_regular_file(const std::string& path);
std::string file_extension(const std::string& path);  // lower case, with the dot; "" when none
std::string directory_of(const std::string& path);    // "." for a bare name

// A short description of what a file is when it is evidently not a model ("a PNG image", "a
// NumPy .npy file", ...), from its first bytes; "" otherwise (also when unreadable).
std::string describe_non_model(const std::string& path);

// Raises the RuntimeError for an artifact of the wrong kind for `backend` (naming `model`, what
// the file is, and which backend runs it); returns normally when the extension fits `backend`.
void check_artifact_kind(const std::string& path, Backend backend);

// Operator-set domains an ONNX file imports, read from ModelProto's top-level opset_import fields
// (the graph is skipped by seeking, so this reads a few hundred bytes). false when the file is not
// a well-formed protobuf message.
bool onnx_domains(const std::string& path, std::vector<std::string>* domains);
// Whether an OpenVINO IR (.xml) contains an operation of the naf_opset1 set (the plugin's).
bool ir_uses_naf_ops(const std::string& path);
// Whether `haystack` file contains `needle` bytes (a streaming search, for the quick checks above).
bool file_contains(const std::string& path, const std::string& needle);

// The directory of the shared library (or executable) that contains `address`; "" when unknown.
std::string library_dir_of(const void* address);

// The plugin file to load: `given` when set (a bare name of a file in the working directory
// becomes ./name, since dlopen never searches there), else `file_name` next to the library that
// contains `self`; "" when neither exists.
std::string resolve_plugin_path(const std::string& given, const void* self, const std::string& file_name);

// Checks a plugin library before any runtime loads it: the file exists and defines
// `entry_point` (read from the file's bytes, so a wrong library's constructors never run).
// Raises a RuntimeError naming `plugin`, the expected library and what the file is instead.
void check_plugin_file(const std::string& path, const std::string& entry_point, const std::string& expected_name,
                       const std::string& label);

// A JSON value, enough for the sidecar files (objects, arrays, strings, numbers, literals).
struct JsonValue {
  enum class Type { kNull, kBool, kNumber, kString, kArray, kObject } type = Type::kNull;
  bool boolean = false;
  double number = 0;
  std::string string;
  std::vector<JsonValue> array;
  std::map<std::string, JsonValue> object;
  const JsonValue* find(const std::string& key) const;  // object member or null
};
// Parses `text`; false (with the reason in `error`) when it is not JSON. Nesting is limited to
// 64 levels and the input to 1 MiB, so a hostile file cannot exhaust the stack.
bool parse_json(const std::string& text, JsonValue* value, std::string* error);
// Reads and parses a file; false when it cannot be read or parsed.
bool read_json_file(const std::string& path, JsonValue* value, std::string* error);

// "2026.4.1-22982-..." -> "2026.4.1"; "10.14.1.48" -> "10.14.1"; takes the leading dotted numbers
// up to three components.
std::string release_of(const std::string& version);

}  // namespace detail
}  // namespace naf

#endif  // NAF_RUNTIMES_ARTIFACT_H_
