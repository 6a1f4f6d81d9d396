// Runtime SIMD dispatch without -march flags: a function marked PYRED_SIMD_CLONES
// is compiled for AVX-512, AVX2 + FMA and baseline x86-64, and the loader picks the
// best one for the running CPU (GCC/Clang function multi-versioning). Kernels put
// their loops in PYRED_INLINE templates so that every clone gets its own copy.
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
