// pyred._C: the CPU kernels behind the shared entry points (entries.h). Host
// memory, so every index list is checked here, once, before a kernel runs.
#include <pybind11/pybind11.h>

#include <string>

#include "entries.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace py = pybind11;
using namespace pyred;

namespace {

struct Cpu {
  static void memory(const char*, std::uintptr_t, int64_t) {}  // host memory: the counts were checked
  static void lists(const char* name, const IndexLists& L, int64_t d) { bind::raise_status(check_index_lists(L, d, name)); }
  static Status segment_sums(const void* v, DType t, int64_t M, int64_t d, const IndexLists& L, double* out, void*) {
    return segment_sums_cpu(v, t, M, d, L, out);
  }
  static Status block_sums(const void* m, DType t, int64_t M, int64_t d, const IndexLists& R, const IndexLists& C,
                           int64_t, double* out, void*) {
    return block_sums_cpu(m, t, M, d, R, C, out);
  }
  static Status forward(const void* XT, DType t, int64_t B, int64_t ldx, int64_t d, const IndexLists& L, const void* W,
                        int64_t C, void* out, void*) {
    return gathered_forward_cpu(XT, t, B, ldx, d, L, W, C, out);
  }
  static Status weight_grad(const void* XT, DType t, int64_t B, int64_t ldx, int64_t d, const IndexLists& L,
                            const void* G, int64_t C, void* dW, void*) {
    return gathered_weight_grad_cpu(XT, t, B, ldx, d, L, G, C, dW);
  }
};

// The widest SIMD level the heads kernels' clones use on this CPU (see cpu/simd.h).
std::string simd_level() {
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__linux__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return "avx512f";
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "avx2";
#endif
  return "baseline";
}

int num_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "pyred CPU kernels: gathered reductions and heads over CSR index lists (raw addresses + counts).";
  bind::define_entries<Cpu>(m);
  m.attr("openmp") = py::bool_(
#ifdef _OPENMP
      true
#else
      false
#endif
  );
  m.def("num_threads", &num_threads, "OpenMP threads the kernels use (1 without OpenMP).");
  m.def("simd_level", &simd_level, "The SIMD clone of the heads kernels that runs here: avx512f, avx2 or baseline.");
}
