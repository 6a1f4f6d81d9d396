// Runtime SIMD dispatch without -march flags, two ways:
//  * a function marked PYRED_SIMD_CLONES is compiled for AVX-512, AVX2 + FMA and
//    baseline x86-64, and the loader picks the best one for the running CPU (GCC
//    function multi-versioning) -- one source for every level;
//  * where the source itself must differ by level (vector width, register tile),
//    functions marked PYRED_TARGET_AVX512 / PYRED_TARGET_AVX2 (x86-64 GCC on Linux:
//    PYRED_X86_TARGETS) are chosen by the caller from detect_simd().
// Kernels put their loops in PYRED_INLINE templates so that every version gets its own copy.
//
// Each string of target_clones is one clone: "avx2,fma" would make two (an AVX2
// clone without FMA, picked on AVX2 machines, and an AVX + FMA one), so the AVX2
// clone is spelled as the x86-64-v3 level (AVX2, FMA, BMI1/2, F16C...; GCC >= 12
// dispatches it on the CPU's features, not its model).
#pragma once

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__linux__)
#if __GNUC__ >= 12
#define PYRED_SIMD_CLONES __attribute__((target_clones("avx512f", "arch=x86-64-v3", "default")))
#else
#define PYRED_SIMD_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#endif
#else
#define PYRED_SIMD_CLONES
#endif

#define PYRED_INLINE inline __attribute__((always_inline))

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__linux__)
#define PYRED_X86_TARGETS 1
#define PYRED_TARGET_AVX512 __attribute__((target("avx512f")))
#define PYRED_TARGET_AVX2 __attribute__((target("avx2,fma")))  // (in target(), a comma joins features)
#endif

#include <cstdlib>
#include <cstring>

namespace pyred {

enum class SimdLevel { Baseline, Avx2, Avx512 };

// The widest level the running CPU supports (AVX2 counts only with FMA; the same test the loader
// applies to PYRED_SIMD_CLONES functions), capped by the environment variable PYRED_SIMD
// ("avx2" or "baseline": run and test the narrower kernels on a wider CPU). Read once.
inline SimdLevel detect_simd() {
#ifdef PYRED_X86_TARGETS
  static const SimdLevel level = [] {
    __builtin_cpu_init();
    SimdLevel found = SimdLevel::Baseline;
    if (__builtin_cpu_supports("avx512f"))
      found = SimdLevel::Avx512;
    else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
      found = SimdLevel::Avx2;
    const char* cap = std::getenv("PYRED_SIMD");
    if (cap != nullptr && std::strcmp(cap, "baseline") == 0) return SimdLevel::Baseline;
    if (cap != nullptr && std::strcmp(cap, "avx2") == 0 && found == SimdLevel::Avx512) return SimdLevel::Avx2;
    return found;
  }();
  return level;
#else
  return SimdLevel::Baseline;
#endif
}

}  // namespace pyred
