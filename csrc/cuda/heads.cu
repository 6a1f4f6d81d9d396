// CUDA gathered linear heads. See include/pyred/heads.h.
//
// Forward: one thread per (head, class, batch row), batch rows fastest, so a
// warp reads consecutive entries of a feature's row of XT (coalesced) and the
// weight is a broadcast. Weight gradient: one block per packed row p; threads
// stride over the batch with 8 class accumulators each, then reduce per class.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>

#include "common.cuh"
#include "pyred/heads.h"

namespace pyred {
namespace {

constexpr int kThreads = 256;
constexpr int kGradThreads = 128;
constexpr int kClsChunk = 8;

// grid = (K, up to 65535): block (k, y) strides over the B * C outputs of head k.
template <typename T>
__global__ void forward_kernel(const T* __restrict__ XT, int64_t B, int64_t ldx, int64_t d, IndexLists H,
                               const T* __restrict__ W, int64_t C, T* __restrict__ out) {
  const int64_t k = blockIdx.x;
  const int64_t pb = H.offsets[k], pe = H.offsets[k + 1];
  const bool bounds_bad = pb < 0 || pe < pb || pe > H.nnz;
  for (int64_t e = static_cast<int64_t>(blockIdx.y) * blockDim.x + threadIdx.x; e < B * C;
       e += static_cast<int64_t>(gridDim.y) * blockDim.x) {
    const int64_t c = e / B, b = e % B;
    T s = 0;
    bool bad = bounds_bad;
    if (!bad) {
      for (int64_t p = pb; p < pe; ++p) {
        const int64_t i = H.indices[p];
        if (i < 0 || i >= d) {
          bad = true;
          break;
        }
        s += XT[i * ldx + b] * W[p * C + c];
      }
    }
    out[(k * B + b) * C + c] = bad ? T(NAN) : s;
  }
}

__device__ inline int64_t head_of(const IndexLists& H, int64_t p) {
  int64_t lo = 0, hi = H.num_lists;  // offsets[lo] <= p < offsets[hi]
  while (hi - lo > 1) {
    const int64_t mid = (lo + hi) / 2;
    if (H.offsets[mid] <= p)
      lo = mid;
    else
      hi = mid;
  }
  return lo;
}

using cuda::block_sum;

template <typename T>
__global__ void weight_grad_kernel(const T* __restrict__ XT, int64_t B, int64_t ldx, int64_t d, IndexLists H,
                                   const T* __restrict__ G, int64_t C, T* __restrict__ dW) {
  __shared__ T shared[kGradThreads / 32];
  for (int64_t p = blockIdx.x; p < H.nnz; p += gridDim.x) {
    const int64_t i = H.indices[p];
    const bool bad = i < 0 || i >= d;
    const int64_t k = head_of(H, p);
    const T* x = XT + (bad ? 0 : i) * ldx;
    const T* g = G + k * B * C;
    for (int64_t c0 = 0; c0 < C; c0 += kClsChunk) {
      T acc[kClsChunk] = {};
      for (int64_t b = threadIdx.x; b < B; b += blockDim.x) {
        const T xv = x[b];
#pragma unroll
        for (int c = 0; c < kClsChunk; ++c)
          if (c0 + c < C) acc[c] += xv * g[b * C + c0 + c];
      }
#pragma unroll
      for (int c = 0; c < kClsChunk; ++c) {
        const T s = block_sum(acc[c], shared);
        if (threadIdx.x == 0 && c0 + c < C) dW[p * C + c0 + c] = bad ? T(NAN) : s;
      }
    }
  }
}

}  // namespace

Status gathered_forward_cuda(const void* XT, DType dtype, int64_t B, int64_t ldx, int64_t d,
                             const IndexLists& heads, const void* W, int64_t C, void* logits, void* stream) {
  if (heads.num_lists == 0 || B == 0) return Status::Ok();
  // Beyond 65535 blocks per head the blocks stride over the outputs (any B * C).
  const int64_t blocks_y = std::min<int64_t>((B * C + kThreads - 1) / kThreads, 65535);
  if (heads.num_lists > 2147483647) return Status::Error("too many heads for one launch (at most 2**31 - 1)");
  const dim3 grid(static_cast<unsigned>(heads.num_lists), static_cast<unsigned>(blocks_y));
  auto s = static_cast<cudaStream_t>(stream);
  if (dtype == DType::Float32)
    forward_kernel<<<grid, kThreads, 0, s>>>(static_cast<const float*>(XT), B, ldx, d, heads,
                                             static_cast<const float*>(W), C, static_cast<float*>(logits));
  else
    forward_kernel<<<grid, kThreads, 0, s>>>(static_cast<const double*>(XT), B, ldx, d, heads,
                                             static_cast<const double*>(W), C, static_cast<double*>(logits));
  return cuda::launch_status();
}

Status gathered_weight_grad_cuda(const void* XT, DType dtype, int64_t B, int64_t ldx, int64_t d,
                                 const IndexLists& heads, const void* G, int64_t C, void* dW, void* stream) {
  if (heads.nnz == 0) return Status::Ok();
  auto s = static_cast<cudaStream_t>(stream);
  if (B == 0)
    return cuda::cuda_status(
        cudaMemsetAsync(dW, 0, static_cast<size_t>(heads.nnz * C) * (dtype == DType::Float32 ? 4 : 8), s));
  const unsigned blocks = static_cast<unsigned>(heads.nnz < 65535 * 8 ? heads.nnz : 65535 * 8);
  if (dtype == DType::Float32)
    weight_grad_kernel<<<blocks, kGradThreads, 0, s>>>(static_cast<const float*>(XT), B, ldx, d, heads,
                                                       static_cast<const float*>(G), C, static_cast<float*>(dW));
  else
    weight_grad_kernel<<<blocks, kGradThreads, 0, s>>>(static_cast<const double*>(XT), B, ldx, d, heads,
                                                       static_cast<const double*>(G), C, static_cast<double*>(dW));
  return cuda::launch_status();
}

}  // namespace pyred
