// Gathered linear heads: K linear probes, head k reading only the features in
// its index list. Weights are packed: the rows of head k are W[offsets[k] ..
// offsets[k+1]), row p belonging to feature indices[p]. Nothing here ever forms
// X[:, S_k] per head or a masked full-width weight.
//
// The batch comes features-major, XT (d, ldx): XT[i * ldx + b] is feature i of
// batch row b, for b < B <= ldx. Reading feature i for a run of batch rows is
// then one contiguous load, whatever the subset (callers transpose a batch once
// and use it for the forward and the gradient). All d * ldx elements of XT may
// be read: the CPU forward reads whole tiles of 16 rows from the row padding
// [B, ldx) when it is wide enough (those lanes are never stored).
#pragma once

#include <cstdint>

#include "pyred/reductions.h"

namespace pyred {

// logits[k, b, c] = sum_{p in list k} XT[indices[p], b] * W[p, c]
//   W: (nnz, C), logits: (K, B, C); all of dtype.
Status gathered_forward_cpu(const void* XT, DType dtype, int64_t B, int64_t ldx, int64_t d,
                            const IndexLists& heads, const void* W, int64_t C, void* logits);

// dW[p, c] = sum_b XT[indices[p], b] * G[k(p), b, c]   (k(p): the list holding position p)
//   G: (K, B, C), dW: (nnz, C); all of dtype.
Status gathered_weight_grad_cpu(const void* XT, DType dtype, int64_t B, int64_t ldx, int64_t d,
                                const IndexLists& heads, const void* G, int64_t C, void* dW);

// The register tiles the CPU kernels use at a SIMD level (0 baseline, 1 AVX2 + FMA, 2 AVX-512) for
// dtype and C classes: forward classes x batch tiles per task, gradient rows per task, vector bytes
// (all 0 for a level this build has no kernels for).
struct HeadsTile {
  int forward_classes, forward_tiles, grad_rows, vector_bytes;
};
HeadsTile heads_tile_cpu(int level, DType dtype, int64_t C);

// CUDA versions, same arguments plus a stream (device pointers, no
// synchronisation; a list with an out-of-range index yields NaN).
Status gathered_forward_cuda(const void* XT, DType dtype, int64_t B, int64_t ldx, int64_t d,
                             const IndexLists& heads, const void* W, int64_t C, void* logits, void* stream);
Status gathered_weight_grad_cuda(const void* XT, DType dtype, int64_t B, int64_t ldx, int64_t d,
                                 const IndexLists& heads, const void* G, int64_t C, void* dW, void* stream);

}  // namespace pyred
