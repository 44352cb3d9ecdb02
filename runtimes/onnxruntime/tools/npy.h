// Minimal reader/writer for NumPy .npy files holding little-endian float32 C-order arrays
// (format versions 1.0, 2.0 and 3.0), for naf-ort-run. Anything else (other dtypes, Fortran order,
// pickled objects, truncated or corrupt files) is rejected with a NpyError that says why.
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

struct Array {
  std::vector<int64_t> shape;
  std::vector<float> data;  // C order, host byte order
};

// Parses an in-memory .npy file. `name` prefixes error messages (e.g. "image 'a.npy'").
Array parse(const unsigned char* bytes, size_t size, const std::string& name);
// Reads and parses a file.
Array read(const std::string& path, const std::string& name);
// Writes `data` (C order, prod(shape) floats) as a version 1.0 file (2.0 when the header needs it).
void write(const std::string& path, const float* data, const std::vector<int64_t>& shape, const std::string& name);

}  // namespace npy
}  // namespace naf

#endif  // NAF_TOOLS_NPY_H_
