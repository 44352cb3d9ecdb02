// Fuzz driver for naf-run's image reader (tools/image_io.cc: PNM, and PNG / JPEG through the
// system's libpng / libjpeg), meant to be built with AddressSanitizer (target naf_image_fuzz,
// driven by tests/test_runtimes.py):
//
//   naf_image_fuzz FILE...                      decode each file, print "ok WxH" or "error MESSAGE"
//   naf_image_fuzz --mutate SEED COUNT FILE     decode COUNT mutations of FILE (truncations, bit
//                                               flips, byte edits, header-field overwrites; PNG
//                                               chunk CRCs mostly recomputed, so the mutations
//                                               reach libpng's parsers)
//
// (fuzz_driver.h: exact-size heap copies, so reads past the end abort under ASan.) Any exception
// other than ImageError is a bug.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "fuzz_driver.h"
#include "image_io.h"

namespace {

using naf_fuzz::next;

bool decode(const unsigned char* data, size_t size, std::string* what) {
  try {
    const naf::image::Rgb8 image = naf::image::decode(data, size, "input");
    if (image.pixels.size() != static_cast<size_t>(image.width) * static_cast<size_t>(image.height) * 3) {
      std::fprintf(stderr, "BUG: %lldx%lld but %zu bytes\n", static_cast<long long>(image.width),
                   static_cast<long long>(image.height), image.pixels.size());
      std::abort();
    }
    unsigned sum = 0;  // touch every pixel (uninitialised memory would show under MSan/valgrind)
    for (uint8_t v : image.pixels) sum += v;
    *what = std::to_string(image.width) + "x" + std::to_string(image.height) + " sum " + std::to_string(sum);
    return true;
  } catch (const naf::image::ImageError& e) {
    *what = e.what();
    return false;
  }
}

// PNG chunks carry a CRC that libpng checks before parsing them: recomputing the CRCs of a
// mutated file lets the mutations reach the chunk parsers instead of stopping at the checksum.
uint32_t crc32(const unsigned char* p, size_t n) {
  uint32_t c = 0xffffffffu;
  for (size_t i = 0; i < n; ++i) {
    c ^= p[i];
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1u)));
  }
  return c ^ 0xffffffffu;
}

void fix_png_crcs(std::vector<unsigned char>& m) {
  if (m.size() < 8 || std::memcmp(m.data(), "\x89PNG\r\n\x1a\n", 8) != 0) return;
  size_t pos = 8;
  while (m.size() - pos >= 12) {
    const size_t length = (size_t{m[pos]} << 24) | (size_t{m[pos + 1]} << 16) | (size_t{m[pos + 2]} << 8) | m[pos + 3];
    if (length > m.size() - pos - 12) return;
    const uint32_t crc = crc32(&m[pos + 4], length + 4);
    for (int k = 0; k < 4; ++k) m[pos + 8 + length + k] = static_cast<unsigned char>(crc >> (8 * (3 - k)));
    pos += 12 + length;
  }
}

void mutate(std::vector<unsigned char>& m, uint64_t* state_ptr) {
  uint64_t& state = *state_ptr;
  const int edits = 1 + static_cast<int>(next(&state) % 4);
  for (int e = 0; e < edits && !m.empty(); ++e) {
    // Most edits hit the first bytes: headers, chunk lengths, image dimensions.
    const size_t head = m.size() < 256 ? m.size() : (next(&state) % 4 ? 256 : m.size());
    switch (next(&state) % 6) {
      case 0: m.resize(next(&state) % (m.size() + 1)); break;
      case 1: m[next(&state) % head] ^= static_cast<unsigned char>(1u << (next(&state) % 8)); break;
      case 2: m[next(&state) % head] = static_cast<unsigned char>(next(&state)); break;
      case 3: {  // a 32-bit field set to an extreme value
        const size_t at = next(&state) % head;
        const uint32_t v = (next(&state) % 2) ? 0xffffffffu : static_cast<uint32_t>(next(&state) % 70000);
        for (size_t k = 0; k < 4 && at + k < m.size(); ++k) m[at + k] = static_cast<unsigned char>(v >> (8 * (3 - k)));
        break;
      }
      case 4: m.erase(m.begin() + static_cast<std::ptrdiff_t>(next(&state) % head)); break;
      default: m.insert(m.begin() + static_cast<std::ptrdiff_t>(next(&state) % head), static_cast<unsigned char>(next(&state)));
    }
  }
  if (next(&state) % 8) fix_png_crcs(m);  // mostly valid checksums, sometimes not
}

}  // namespace

int main(int argc, char** argv) { return naf_fuzz::run(argc, argv, "naf_image_fuzz", decode, mutate); }
