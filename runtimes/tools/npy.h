// Minimal reader/writer for NumPy .npy files (format versions 1.0, 2.0 and 3.0), for naf-run:
// C-order arrays of little-endian float32 ('<f4'), little-endian float16 ('<f2') or uint8 ('|u1').
// Anything else (other dtypes, Fortran order, pickled objects, truncated or corrupt files) is
// rejected with a NpyError that says why. The writer writes float32.
#ifndef NAF_TOOLS_NPY_H_
#define NAF_TOOLS_NPY_H_

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace naf {
namespace npy {

class NpyError : public std::runtime_error {
 public:
  explicit NpyError(const std::string& message) : std::runtime_error(message) {}
};

enum class DType { kFloat32, kFloat16, kUint8 };

struct Array {
  std::vector<int64_t> shape;
  DType dtype = DType::kFloat32;
  size_t nbytes = 0;           // size of the data
  std::vector<float> storage;  // the data, C order, host byte order (float16: 16-bit patterns);
                               // float storage keeps it aligned for every dtype
  size_t count() const;        // number of elements
  const void* data() const { return storage.data(); }
  const unsigned char* bytes() const { return reinterpret_cast<const unsigned char*>(storage.data()); }
};
const char* dtype_name(DType dtype);  // "float32", "float16", "uint8"

// Parses an in-memory .npy file. `name` prefixes error messages (e.g. "image 'a.npy'").
Array parse(const unsigned char* bytes, size_t size, const std::string& name);
// Reads and parses a file.
Array read(const std::string& path, const std::string& name);
// Writes `data` (C order, prod(shape) floats) as a version 1.0 file (2.0 when the header needs it).
void write(const std::string& path, const float* data, const std::vector<int64_t>& shape, const std::string& name);

}  // namespace npy
}  // namespace naf

#endif  // NAF_TOOLS_NPY_H_
