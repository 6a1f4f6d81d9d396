// Runtime SIMD dispatch without -march flags: a function marked PYRED_SIMD_CLONES
// is compiled for AVX-512, AVX2 and baseline x86-64, and the loader picks the
// best one for the running CPU (GCC/Clang function multi-versioning). Kernels put
// their loops in PYRED_INLINE templates so that every clone gets its own copy.
#pragma once

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__linux__)
#define PYRED_SIMD_CLONES __attribute__((target_clones("avx512f", "avx2,fma", "default")))
#else
#define PYRED_SIMD_CLONES
#endif

#define PYRED_INLINE inline __attribute__((always_inline))
