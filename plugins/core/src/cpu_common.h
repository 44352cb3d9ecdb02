// Pieces shared by the CPU kernels of libnaf_core (attention, GroupNorm+SiLU): error reporting,
// portable float16, aligned scratch, and the run-time choice of instruction set. Internal header.
#ifndef NAF_CORE_CPU_COMMON_H_
#define NAF_CORE_CPU_COMMON_H_

#include <algorithm>
#include <atomic>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <new>
#include <thread>

#include "float16.h"
#include "naf/cross_scale_attention.h"  // NafParallelFor

#if defined(__x86_64__) && defined(__GNUC__)
#if !defined(__clang__)
// GCC 12's own AVX-512 intrinsics trip this warning (their `__Y = __Y` undefined-vector idiom).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>
#define NAF_X86_DISPATCH 1
#else
#define NAF_X86_DISPATCH 0
#endif

namespace naf_cpu {
namespace {

using i64 = int64_t;

constexpr i64 round_up(i64 x, i64 m) { return (x + m - 1) / m * m; }

inline int report(char* message, size_t size, int code, const char* format, ...) __attribute__((format(printf, 4, 5)));
inline int report(char* message, size_t size, int code, const char* format, ...) {
  if (message != nullptr && size > 0) {
    va_list args;
    va_start(args, format);
    std::vsnprintf(message, size, format, args);
    va_end(args);
  }
  return code;
}

// IEEE binary16 without hardware support: float16.h (shared with the runtimes and the self-test).
using naf_float16::float_to_half_portable;
using naf_float16::half_to_float_portable;

// ---------------------------------------------------------------------------------------------
// 64-byte aligned float scratch.

struct AlignedFree {
  void operator()(float* p) const { std::free(p); }
};
using AlignedFloats = std::unique_ptr<float[], AlignedFree>;

inline AlignedFloats allocate_floats(i64 count) {
  const size_t bytes = static_cast<size_t>(round_up(std::max<i64>(count, 1) * 4, 64));
  float* p = static_cast<float*>(std::aligned_alloc(64, bytes));
  if (p == nullptr) throw std::bad_alloc();
  return AlignedFloats(p);
}

inline bool ranges_overlap(const void* a, i64 a_bytes, const void* b, i64 b_bytes) {
  const auto a0 = reinterpret_cast<uintptr_t>(a), b0 = reinterpret_cast<uintptr_t>(b);
  return a0 < b0 + static_cast<uintptr_t>(b_bytes) && b0 < a0 + static_cast<uintptr_t>(a_bytes);
}

// A buffer argument of a forward call, for check_buffers.
struct NamedBuffer {
  const void* data;
  i64 bytes;
  const char* name;
};

// The argument checks every forward makes before touching memory: a known dtype, no null
// pointer, an output that overlaps no input. Returns 0, or an error code with the message written.
inline int check_dtype(NafDType dtype, char* message, size_t message_size) {
  if (dtype == NAF_DTYPE_FLOAT32 || dtype == NAF_DTYPE_FLOAT16) return 0;
  return report(message, message_size, NAF_CSNA_ERROR_ARGUMENT,
                "dtype: unsupported value %d (expected NAF_DTYPE_FLOAT32=0 or NAF_DTYPE_FLOAT16=1)",
                static_cast<int>(dtype));
}

// No null pointer, and an output that overlaps no input.
inline int check_pointers(const NamedBuffer& output, std::initializer_list<NamedBuffer> inputs, char* message,
                          size_t message_size) {
  for (const NamedBuffer& b : inputs) {
    if (b.data == nullptr) return report(message, message_size, NAF_CSNA_ERROR_ARGUMENT, "%s: null pointer", b.name);
  }
  if (output.data == nullptr) {
    return report(message, message_size, NAF_CSNA_ERROR_ARGUMENT, "%s: null pointer", output.name);
  }
  for (const NamedBuffer& b : inputs) {
    if (ranges_overlap(output.data, output.bytes, b.data, b.bytes)) {
      return report(message, message_size, NAF_CSNA_ERROR_ARGUMENT,
                    "%s: overlaps input '%s'; the output buffer must not alias an input", output.name, b.name);
    }
  }
  return 0;
}

inline int check_buffers(NafDType dtype, const NamedBuffer& output, std::initializer_list<NamedBuffer> inputs,
                         char* message, size_t message_size) {
  if (int rc = check_dtype(dtype, message, message_size)) return rc;
  return check_pointers(output, inputs, message, message_size);
}

// Runs `body()` (returning 0 or an error code); exceptions become NAF_CSNA_ERROR_RESOURCE, so
// none crosses the C ABI.
template <typename Body>
int guarded(char* message, size_t message_size, Body&& body) {
  try {
    return body();
  } catch (const std::bad_alloc&) {
    return report(message, message_size, NAF_CSNA_ERROR_RESOURCE, "out of memory");
  } catch (...) {
    return report(message, message_size, NAF_CSNA_ERROR_RESOURCE, "internal error in the CPU kernel");
  }
}

// Instruction sets the kernels are compiled for (cpu_isa_variants.inc), best first.
enum class Isa { avx512, avx2, generic };

// The best one this CPU runs; NAF_CSNA_CPU_ISA=avx2|generic forces a lower one (tests use it).
inline Isa select_isa() {
  const char* forced = std::getenv("NAF_CSNA_CPU_ISA");
  const auto allowed = [&](const char* name) { return forced == nullptr || std::strcmp(forced, name) == 0; };
#if NAF_X86_DISPATCH
  __builtin_cpu_init();
  const bool has_avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  // F16C has no __builtin_cpu_supports name in older compilers; every AVX2 CPU has it.
  const bool has_avx512 = has_avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
                          __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq");
  if (has_avx512 && allowed("avx512")) return Isa::avx512;
  if (has_avx2 && (allowed("avx2") || (forced && std::strcmp(forced, "avx512") == 0))) return Isa::avx2;
#else
  (void)allowed;  // one portable copy off x86 (aarch64: the compiler's own NEON code)
#endif
  return Isa::generic;
}

// The copy of kernel function `name` (defined in every NAF_ISA namespace by cpu_isa_variants.inc)
// for the instruction set select_isa() picks.
#if NAF_X86_DISPATCH
#define NAF_ISA_PICK(name)                                     \
  (select_isa() == Isa::avx512 ? avx512::name                  \
   : select_isa() == Isa::avx2 ? avx2::name                    \
                               : generic::name)
#else
#define NAF_ISA_PICK(name) (generic::name)
#endif

// The items of one kernel call, shared by its workers: each takes the next until none is left,
// and all stop once one has failed (it stores an NAF_CSNA_ERROR_* code in `failed`).
struct WorkQueue {
  i64 num_items = 0;
  std::atomic<i64> next_item{0};
  std::atomic<int> failed{0};

  // The next item to do, or -1 when none is left or a worker failed.
  i64 take() {
    const i64 item = next_item.fetch_add(1, std::memory_order_relaxed);
    return item < num_items && failed.load(std::memory_order_relaxed) == 0 ? item : -1;
  }
};

// Runs `worker(pb)` (a loop over pb.take()) as up to `num_tasks` tasks through the host's
// `parallel_for` (num_tasks <= 0: one per hardware thread), or on the calling thread when there is
// none; items a runner left undone (it may skip work only by failing) are finished here. Returns
// 0, or NAF_CSNA_ERROR_RESOURCE with the reason written to `message`.
template <typename Problem>
int run_tasks(Problem& pb, void (*worker)(Problem&), NafParallelFor parallel_for, void* runner_data, int num_tasks,
              char* message, size_t message_size) {
  struct Task {
    Problem* problem;
    void (*worker)(Problem&);
    static void run(void* data, size_t /*index*/) {
      auto* task = static_cast<Task*>(data);
      task->worker(*task->problem);
    }
  };
  if (num_tasks <= 0) num_tasks = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  pb.next_item.store(0);
  if (parallel_for != nullptr && pb.num_items > 0) {
    Task task{&pb, worker};
    const int64_t tasks = std::clamp<int64_t>(num_tasks, 1, pb.num_items);
    if (parallel_for(runner_data, &Task::run, &task, static_cast<size_t>(tasks)) != 0) {
      return report(message, message_size, NAF_CSNA_ERROR_RESOURCE, "the host runtime's parallel_for failed");
    }
  }
  if (pb.failed.load() == 0 && pb.next_item.load() < pb.num_items) worker(pb);
  if (pb.failed.load() != 0) {
    return report(message, message_size, NAF_CSNA_ERROR_RESOURCE, "out of memory allocating kernel scratch");
  }
  return 0;
}

}  // namespace
}  // namespace naf_cpu

#endif  // NAF_CORE_CPU_COMMON_H_
