// Fuzz driver for the .npy reader of naf-ort-run, meant to be built with AddressSanitizer
// (target naf_npy_fuzz, driven by tests/test_ort_runtime.py):
//
//   naf_npy_fuzz FILE...                       parse each file, print "ok SHAPE" or "error MESSAGE"
//   naf_npy_fuzz --mutate SEED COUNT FILE      parse COUNT mutations of FILE (truncations, byte
//                                              flips, header edits), print a summary
//
// Every input is copied into a heap buffer of exactly its size, so a read past the end lands in
// ASan's redzone and aborts the run.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "npy.h"

namespace {

std::vector<unsigned char> load(const char* path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<unsigned char>(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// Returns true when parsing succeeded; any exception other than NpyError is a bug.
bool parse_exact(const std::vector<unsigned char>& input, std::string* what) {
  std::unique_ptr<unsigned char[]> exact(new unsigned char[input.size() + (input.empty() ? 1 : 0)]);
  if (!input.empty()) std::memcpy(exact.get(), input.data(), input.size());
  try {
    const naf::npy::Array a = naf::npy::parse(exact.get(), input.size(), "input");
    size_t count = 1;
    std::string shape = "(";
    for (size_t i = 0; i < a.shape.size(); ++i) {
      shape += (i ? ", " : "") + std::to_string(a.shape[i]);
      count *= static_cast<size_t>(a.shape[i]);
    }
    if (count != a.data.size()) {
      std::fprintf(stderr, "BUG: shape %s) but %zu elements\n", shape.c_str(), a.data.size());
      std::abort();
    }
    *what = shape + ")";
    return true;
  } catch (const naf::npy::NpyError& e) {
    *what = e.what();
    return false;
  }
}

uint64_t next(uint64_t* state) {  // xorshift64*: deterministic, no <random> distribution quirks
  *state ^= *state >> 12;
  *state ^= *state << 25;
  *state ^= *state >> 27;
  return *state * 2685821657736338717ull;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 2 && std::strcmp(argv[1], "--mutate") == 0) {
    if (argc != 5) {
      std::fprintf(stderr, "usage: naf_npy_fuzz --mutate SEED COUNT FILE\n");
      return 2;
    }
    uint64_t state = std::strtoull(argv[2], nullptr, 10) | 1;
    const long count = std::strtol(argv[3], nullptr, 10);
    const std::vector<unsigned char> base = load(argv[4]);
    if (base.empty()) {
      std::fprintf(stderr, "cannot read %s\n", argv[4]);
      return 2;
    }
    const char interesting[] = "{}()[]',:0123456789 \n\\\"TrueFalse<>f4L";
    long ok = 0, rejected = 0;
    for (long i = 0; i < count; ++i) {
      std::vector<unsigned char> m = base;
      const int edits = 1 + static_cast<int>(next(&state) % 4);
      for (int e = 0; e < edits && !m.empty(); ++e) {
        const size_t head = m.size() < 160 ? m.size() : 160;  // most edits hit the header
        switch (next(&state) % 6) {
          case 0: m.resize(next(&state) % (m.size() + 1)); break;
          case 1: m[next(&state) % head] ^= static_cast<unsigned char>(1u << (next(&state) % 8)); break;
          case 2: m[next(&state) % head] = static_cast<unsigned char>(interesting[next(&state) % (sizeof(interesting) - 1)]); break;
          case 3:  // header length field
            if (m.size() > 9) m[8 + next(&state) % 2] = static_cast<unsigned char>(next(&state));
            break;
          case 4: m.erase(m.begin() + static_cast<std::ptrdiff_t>(next(&state) % head)); break;
          default:
            m.insert(m.begin() + static_cast<std::ptrdiff_t>(next(&state) % head),
                     static_cast<unsigned char>(interesting[next(&state) % (sizeof(interesting) - 1)]));
        }
      }
      std::string what;
      (parse_exact(m, &what) ? ok : rejected) += 1;
    }
    std::printf("mutations: %ld parsed, %ld rejected\n", ok, rejected);
    return 0;
  }
  for (int i = 1; i < argc; ++i) {
    std::string what;
    const bool ok = parse_exact(load(argv[i]), &what);
    std::printf("%s %s\n", ok ? "ok" : "error", what.c_str());
  }
  return 0;
}
