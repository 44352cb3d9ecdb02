// The part both fuzz drivers (npy_fuzz.cc, image_fuzz.cc) share: reading files, a deterministic
// generator, and the command line
//
//   <tool> FILE...                       read each file, print "ok DESCRIPTION" or "error MESSAGE"
//   <tool> --mutate SEED COUNT FILE      read COUNT mutations of FILE, print a summary
//
// Every input is copied into a heap buffer of exactly its size, so a read past its end lands in
// AddressSanitizer's redzone and aborts the run.
#ifndef NAF_RUNTIMES_FUZZ_DRIVER_H_
#define NAF_RUNTIMES_FUZZ_DRIVER_H_

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

namespace naf_fuzz {

inline std::vector<unsigned char> load(const char* path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<unsigned char>(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

inline uint64_t next(uint64_t* state) {  // xorshift64*: deterministic, no <random> distribution quirks
  *state ^= *state >> 12;
  *state ^= *state << 25;
  *state ^= *state >> 27;
  return *state * 2685821657736338717ull;
}

// Reads one input; true when accepted (`what` describes it), false when refused (`what` is the
// reason). Any other outcome (an exception of another type, a crash) is a bug the run reports.
using Reader = bool (*)(const unsigned char* data, size_t size, std::string* what);
// Applies a few random edits to `input`.
using Mutator = void (*)(std::vector<unsigned char>& input, uint64_t* state);

inline bool read_exact(Reader reader, const std::vector<unsigned char>& input, std::string* what) {
  std::unique_ptr<unsigned char[]> exact(new unsigned char[input.size() + (input.empty() ? 1 : 0)]);
  if (!input.empty()) std::memcpy(exact.get(), input.data(), input.size());
  return reader(exact.get(), input.size(), what);
}

inline int run(int argc, char** argv, const char* tool, Reader reader, Mutator mutate) {
  if (argc >= 2 && std::strcmp(argv[1], "--mutate") == 0) {
    if (argc != 5) {
      std::fprintf(stderr, "usage: %s --mutate SEED COUNT FILE\n", tool);
      return 2;
    }
    uint64_t state = std::strtoull(argv[2], nullptr, 10) | 1;
    const long count = std::strtol(argv[3], nullptr, 10);
    const std::vector<unsigned char> base = load(argv[4]);
    if (base.empty()) {
      std::fprintf(stderr, "cannot read %s\n", argv[4]);
      return 2;
    }
    long accepted = 0, rejected = 0;
    for (long i = 0; i < count; ++i) {
      std::vector<unsigned char> input = base;
      mutate(input, &state);
      std::string what;
      (read_exact(reader, input, &what) ? accepted : rejected) += 1;
    }
    std::printf("mutations: %ld accepted, %ld rejected\n", accepted, rejected);
    return 0;
  }
  for (int i = 1; i < argc; ++i) {
    std::string what;
    const bool ok = read_exact(reader, load(argv[i]), &what);
    std::printf("%s %s\n", ok ? "ok" : "error", what.c_str());
  }
  return 0;
}

}  // namespace naf_fuzz

#endif  // NAF_RUNTIMES_FUZZ_DRIVER_H_
