// Image decoding for naf-run (image_io.h). libpng and libjpeg report errors by longjmp; each
// decoder keeps everything a longjmp could leave half-built in a heap-allocated state object
// reached through a pointer set before setjmp, destroys nothing between setjmp and longjmp, and
// turns the jump into an ImageError only after the library's structures are released.
#include "image_io.h"

#include <sys/stat.h>

#include <algorithm>
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>
#include <memory>

#if defined(NAF_WITH_PNG)
#include <png.h>
#endif
#if defined(NAF_WITH_JPEG)
// jpeglib.h needs size_t and FILE declared first.
#include <jpeglib.h>
#endif

namespace naf {
namespace image {
namespace {

bool starts_with(const unsigned char* bytes, size_t size, const char* magic, size_t n) {
  return size >= n && std::memcmp(bytes, magic, n) == 0;
}
bool is_png(const unsigned char* b, size_t n) { return starts_with(b, n, "\x89PNG\r\n\x1a\n", 8); }
bool is_jpeg(const unsigned char* b, size_t n) { return starts_with(b, n, "\xff\xd8\xff", 3); }
bool is_pnm(const unsigned char* b, size_t n) { return n >= 2 && b[0] == 'P' && (b[1] == '5' || b[1] == '6'); }

void check_size(int64_t width, int64_t height, const std::string& name) {
  if (width <= 0 || height <= 0) {
    throw ImageError(name + ": the image declares " + std::to_string(width) + "x" + std::to_string(height) + " pixels");
  }
  if (height > kMaxImagePixels / width) {
    throw ImageError(name + ": the image declares " + std::to_string(width) + "x" + std::to_string(height) +
                     " pixels, more than the " + std::to_string(kMaxImagePixels) + " naf-run decodes; resize it first");
  }
}

// --- PNM (P5 / P6, maxval 255) ----------------------------------------------------------------
Rgb8 decode_pnm(const unsigned char* b, size_t n, const std::string& name) {
  size_t pos = 2;
  const auto fail = [&](const std::string& why) -> Rgb8 { throw ImageError(name + ": corrupt PNM file: " + why); };
  // Whitespace and '#' comments between header fields.
  const auto skip = [&]() {
    for (;;) {
      while (pos < n && (b[pos] == ' ' || b[pos] == '\t' || b[pos] == '\n' || b[pos] == '\r')) ++pos;
      if (pos < n && b[pos] == '#') {
        while (pos < n && b[pos] != '\n') ++pos;
        continue;
      }
      return;
    }
  };
  const auto number = [&](const char* what) -> int64_t {
    skip();
    if (pos >= n || b[pos] < '0' || b[pos] > '9') fail(std::string("expected the ") + what);
    int64_t v = 0;
    while (pos < n && b[pos] >= '0' && b[pos] <= '9') {
      v = v * 10 + (b[pos++] - '0');
      if (v > (int64_t{1} << 31)) fail(std::string("the ") + what + " is too large");
    }
    return v;
  };
  const bool colour = b[1] == '6';
  const int64_t width = number("width"), height = number("height"), maxval = number("maximum value");
  if (maxval != 255) fail("maximum value " + std::to_string(maxval) + " (only 8-bit files, maxval 255, are read)");
  if (pos >= n || !(b[pos] == ' ' || b[pos] == '\t' || b[pos] == '\n' || b[pos] == '\r')) {
    fail("expected one whitespace byte before the pixels");
  }
  ++pos;
  check_size(width, height, name);
  const size_t channels = colour ? 3 : 1;
  const size_t needed = static_cast<size_t>(width) * static_cast<size_t>(height) * channels;
  if (n - pos < needed) {
    fail("truncated: " + std::to_string(needed) + " pixel bytes needed, " + std::to_string(n - pos) + " present");
  }
  Rgb8 image;
  image.width = width;
  image.height = height;
  image.pixels.resize(static_cast<size_t>(width) * static_cast<size_t>(height) * 3);
  if (colour) {
    std::memcpy(image.pixels.data(), b + pos, needed);
  } else {
    for (size_t i = 0; i < needed; ++i) image.pixels[3 * i] = image.pixels[3 * i + 1] = image.pixels[3 * i + 2] = b[pos + i];
  }
  return image;
}

// --- PNG ---------------------------------------------------------------------------------------
#if defined(NAF_WITH_PNG)
struct PngState {
  const unsigned char* data = nullptr;
  size_t size = 0, pos = 0;
  char message[256] = {};
  Rgb8 image;
  std::vector<png_bytep> rows;
  bool too_large = false;
};

void png_read_bytes(png_structp png, png_bytep out, size_t length) {
  auto* state = static_cast<PngState*>(png_get_io_ptr(png));
  if (length > state->size - state->pos) png_error(png, "truncated file");
  std::memcpy(out, state->data + state->pos, length);
  state->pos += length;
}

void png_on_error(png_structp png, png_const_charp message) {
  auto* state = static_cast<PngState*>(png_get_error_ptr(png));
  std::snprintf(state->message, sizeof state->message, "%s", message ? message : "unknown error");
  png_longjmp(png, 1);
}

void png_on_warning(png_structp, png_const_charp) {}

// Returns false with state->message set when libpng failed. Only PODs and pointers live in this
// frame across setjmp; everything that owns memory is in *state.
bool png_decode_into(PngState* state, const std::string& name) {
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, state, png_on_error, png_on_warning);
  if (png == nullptr) {
    std::snprintf(state->message, sizeof state->message, "out of memory");
    return false;
  }
  png_infop info = png_create_info_struct(png);
  if (info == nullptr) {
    png_destroy_read_struct(&png, nullptr, nullptr);
    std::snprintf(state->message, sizeof state->message, "out of memory");
    return false;
  }
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_read_struct(&png, &info, nullptr);
    return false;
  }
  png_set_read_fn(png, state, png_read_bytes);
  // Bounded per-chunk allocations (text, ICC profiles): a hostile file cannot ask for gigabytes.
  png_set_chunk_malloc_max(png, 8u << 20);
  png_set_user_limits(png, 1u << 20, 1u << 20);
  png_read_info(png, info);
  const png_uint_32 width = png_get_image_width(png, info), height = png_get_image_height(png, info);
  if (static_cast<int64_t>(height) > kMaxImagePixels / std::max<int64_t>(width, 1)) {
    state->too_large = true;
    state->image.width = width;
    state->image.height = height;
    png_destroy_read_struct(&png, &info, nullptr);
    return false;
  }
  const int colour = png_get_color_type(png, info);
  const int depth = png_get_bit_depth(png, info);
  if (depth == 16) png_set_strip_16(png);
  if (colour == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
  if ((colour & PNG_COLOR_MASK_COLOR) == 0) {
    if (depth < 8) png_set_expand_gray_1_2_4_to_8(png);
    png_set_gray_to_rgb(png);
  }
  // Alpha is dropped, not composited (PIL's convert("RGB")); expanding a palette with a tRNS
  // chunk makes an alpha channel too.
  if ((colour & PNG_COLOR_MASK_ALPHA) || png_get_valid(png, info, PNG_INFO_tRNS)) png_set_strip_alpha(png);
  png_set_interlace_handling(png);
  png_read_update_info(png, info);
  if (png_get_channels(png, info) != 3 || png_get_bit_depth(png, info) != 8 ||
      png_get_rowbytes(png, info) != static_cast<size_t>(width) * 3) {
    png_error(png, "unexpected pixel layout after conversion to 8-bit RGB");
  }
  state->image.width = width;
  state->image.height = height;
  state->image.pixels.resize(static_cast<size_t>(width) * height * 3);
  state->rows.resize(height);
  for (png_uint_32 y = 0; y < height; ++y) state->rows[y] = state->image.pixels.data() + static_cast<size_t>(y) * width * 3;
  png_read_image(png, state->rows.data());
  png_read_end(png, nullptr);
  png_destroy_read_struct(&png, &info, nullptr);
  (void)name;
  return true;
}

Rgb8 decode_png(const unsigned char* b, size_t n, const std::string& name) {
  std::unique_ptr<PngState> state(new PngState);
  state->data = b;
  state->size = n;
  if (!png_decode_into(state.get(), name)) {
    if (state->too_large) check_size(state->image.width, state->image.height, name);
    throw ImageError(name + ": cannot decode the PNG file: " + state->message);
  }
  return std::move(state->image);
}
#endif

// --- JPEG --------------------------------------------------------------------------------------
#if defined(NAF_WITH_JPEG)
struct JpegError {
  jpeg_error_mgr manager;  // first member: libjpeg hands back a pointer to it
  jmp_buf jump;
  char message[JMSG_LENGTH_MAX] = {};
};

void jpeg_on_error(j_common_ptr cinfo) {
  auto* error = reinterpret_cast<JpegError*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, error->message);
  std::longjmp(error->jump, 1);
}

void jpeg_on_message(j_common_ptr, int) {}  // warnings (corrupt data that libjpeg recovers from): silent

struct JpegState {
  jpeg_decompress_struct cinfo;
  JpegError error;
  Rgb8 image;
  bool too_large = false;
};

bool jpeg_decode_into(JpegState* state, const unsigned char* b, size_t n) {
  jpeg_decompress_struct* cinfo = &state->cinfo;
  cinfo->err = jpeg_std_error(&state->error.manager);
  state->error.manager.error_exit = jpeg_on_error;
  state->error.manager.emit_message = jpeg_on_message;
  if (setjmp(state->error.jump)) {
    jpeg_destroy_decompress(cinfo);
    return false;
  }
  jpeg_create_decompress(cinfo);
  jpeg_mem_src(cinfo, b, static_cast<unsigned long>(n));
  jpeg_read_header(cinfo, TRUE);
  if (static_cast<int64_t>(cinfo->image_height) > kMaxImagePixels / std::max<int64_t>(cinfo->image_width, 1)) {
    state->too_large = true;
    state->image.width = cinfo->image_width;
    state->image.height = cinfo->image_height;
    jpeg_destroy_decompress(cinfo);
    return false;
  }
  cinfo->out_color_space = JCS_RGB;  // grey is replicated; CMYK/YCCK are refused by libjpeg
  jpeg_start_decompress(cinfo);
  if (cinfo->output_components != 3) {
    std::snprintf(state->error.message, sizeof state->error.message, "%d output components", cinfo->output_components);
    jpeg_destroy_decompress(cinfo);
    return false;
  }
  const size_t width = cinfo->output_width, height = cinfo->output_height;
  state->image.width = static_cast<int64_t>(width);
  state->image.height = static_cast<int64_t>(height);
  state->image.pixels.resize(width * height * 3);
  while (cinfo->output_scanline < cinfo->output_height) {
    JSAMPROW row = state->image.pixels.data() + static_cast<size_t>(cinfo->output_scanline) * width * 3;
    jpeg_read_scanlines(cinfo, &row, 1);
  }
  jpeg_finish_decompress(cinfo);
  jpeg_destroy_decompress(cinfo);
  return true;
}

Rgb8 decode_jpeg(const unsigned char* b, size_t n, const std::string& name) {
  std::unique_ptr<JpegState> state(new JpegState);
  std::memset(&state->cinfo, 0, sizeof state->cinfo);
  if (!jpeg_decode_into(state.get(), b, n)) {
    if (state->too_large) check_size(state->image.width, state->image.height, name);
    throw ImageError(name + ": cannot decode the JPEG file: " + state->error.message);
  }
  return std::move(state->image);
}
#endif

}  // namespace

bool looks_like_image(const unsigned char* bytes, size_t size) {
  return is_png(bytes, size) || is_jpeg(bytes, size) || is_pnm(bytes, size);
}

std::string supported_formats() {
  std::string s;
#if defined(NAF_WITH_PNG)
  s += "PNG, ";
#endif
#if defined(NAF_WITH_JPEG)
  s += "JPEG, ";
#endif
  return s + "PNM (P5/P6)";
}

Rgb8 decode(const unsigned char* bytes, size_t size, const std::string& name) {
  if (is_pnm(bytes, size)) return decode_pnm(bytes, size, name);
  if (is_png(bytes, size)) {
#if defined(NAF_WITH_PNG)
    return decode_png(bytes, size, name);
#else
    throw ImageError(name + ": PNG support was not built (libpng was not found at build time); this naf-run reads " +
                     supported_formats());
#endif
  }
  if (is_jpeg(bytes, size)) {
#if defined(NAF_WITH_JPEG)
    return decode_jpeg(bytes, size, name);
#else
    throw ImageError(name + ": JPEG support was not built (libjpeg was not found at build time); this naf-run reads " +
                     supported_formats());
#endif
  }
  throw ImageError(name + ": not an image file this naf-run reads (" + supported_formats() + ")");
}

Rgb8 read(const std::string& path, const std::string& name) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) throw ImageError(name + ": no such file " + path);
  if (!S_ISREG(st.st_mode)) throw ImageError(name + ": " + path + " is not a regular file");
  // A compressed image far larger than any sane frame: refuse rather than read it all.
  if (static_cast<uint64_t>(st.st_size) > (uint64_t{1} << 31)) throw ImageError(name + ": " + path + " is too large");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ImageError(name + ": cannot open " + path);
  std::vector<unsigned char> bytes(static_cast<size_t>(st.st_size));
  if (!bytes.empty() && !in.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()))) {
    throw ImageError(name + ": error reading " + path);
  }
  return decode(bytes.data(), bytes.size(), name);
}

}  // namespace image
}  // namespace naf
