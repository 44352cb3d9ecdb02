// Fuzz driver for the .npy reader of naf-run, meant to be built with AddressSanitizer
// (target naf_npy_fuzz, driven by tests/test_runtimes.py):
//
//   naf_npy_fuzz FILE...                       parse each file, print "ok SHAPE" or "error MESSAGE"
//   naf_npy_fuzz --mutate SEED COUNT FILE      parse COUNT mutations of FILE (truncations, byte
//                                              flips, header edits), print a summary
//
// (fuzz_driver.h: exact-size heap copies, so reads past the end abort under ASan.) Any exception
// other than NpyError is a bug.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "fuzz_driver.h"
#include "npy.h"

namespace {

using naf_fuzz::next;

bool parse(const unsigned char* data, size_t size, std::string* what) {
  try {
    const naf::npy::Array a = naf::npy::parse(data, size, "input");
    size_t count = 1;
    std::string shape = "(";
    for (size_t i = 0; i < a.shape.size(); ++i) {
      shape += (i ? ", " : "") + std::to_string(a.shape[i]);
      count *= static_cast<size_t>(a.shape[i]);
    }
    if (count != a.count() || a.storage.size() * sizeof(float) < a.nbytes) {
      std::fprintf(stderr, "BUG: shape %s) but %zu elements\n", shape.c_str(), a.count());
      std::abort();
    }
    *what = shape + ") " + naf::npy::dtype_name(a.dtype);
    return true;
  } catch (const naf::npy::NpyError& e) {
    *what = e.what();
    return false;
  }
}

void mutate(std::vector<unsigned char>& m, uint64_t* state_ptr) {
  uint64_t& state = *state_ptr;
  const char interesting[] = "{}()[]',:0123456789 \n\\\"TrueFalse<>|f4f2u1L";
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
}

}  // namespace

int main(int argc, char** argv) { return naf_fuzz::run(argc, argv, "naf_npy_fuzz", parse, mutate); }
