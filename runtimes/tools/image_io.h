// Image files for naf-run: PNG (libpng) and JPEG (libjpeg / libjpeg-turbo) from the system when
// the build found them, and binary PNM (P6 colour, P5 grey, maxval 255) always. Decodes to 8-bit
// RGB, HWC, the way the Python tool reads a picture (PIL's convert("RGB")): grey is replicated,
// alpha dropped (not composited), palettes expanded, 16-bit samples cut to their high byte (as PIL
// does for colour; for 16-bit grey PIL clips at 255 instead, the one known difference).
//
// Input is untrusted: every read is bounds-checked, decoder errors become ImageError (never an
// abort or a longjmp out of this file), and a file declaring more than kMaxImagePixels pixels
// (the Python tool's decompression-bomb limit) is refused before its pixels are decoded.
#ifndef NAF_TOOLS_IMAGE_IO_H_
#define NAF_TOOLS_IMAGE_IO_H_

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace naf {
namespace image {

class ImageError : public std::runtime_error {
 public:
  explicit ImageError(const std::string& message) : std::runtime_error(message) {}
};

constexpr int64_t kMaxImagePixels = 89478485;

struct Rgb8 {
  int64_t height = 0, width = 0;
  std::vector<uint8_t> pixels;  // height * width * 3, RGB, rows packed
};

// Whether `bytes` starts like a file this reader handles (PNG, JPEG or binary PNM magic).
bool looks_like_image(const unsigned char* bytes, size_t size);
// Decodes an in-memory file. `name` prefixes error messages (e.g. "image 'a.png'").
Rgb8 decode(const unsigned char* bytes, size_t size, const std::string& name);
// Reads and decodes a file.
Rgb8 read(const std::string& path, const std::string& name);
// Which formats this build decodes, e.g. "PNG, JPEG, PNM".
std::string supported_formats();

}  // namespace image
}  // namespace naf

#endif  // NAF_TOOLS_IMAGE_IO_H_
