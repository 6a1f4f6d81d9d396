// Helpers shared by the CUDA kernels: warp/block reductions, the launch check,
// and the guard that turns a malformed CSR list into NaN instead of an
// out-of-bounds read (the Python layer validates lists before they get here).
#pragma once

#include <cuda_runtime.h>

#include <string>

#include "pyred/reductions.h"

namespace pyred::cuda {

template <typename T>
__device__ inline T warp_sum(T v) {
  for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffffu, v, off);
  return v;
}

// Sum over the block; the result is valid in thread 0. ``shared`` holds one T per warp.
template <typename T>
__device__ inline T block_sum(T v, T* shared) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  v = warp_sum(v);
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  v = (threadIdx.x < (blockDim.x >> 5)) ? shared[lane] : T(0);
  if (warp == 0) v = warp_sum(v);
  __syncthreads();  // shared is reused by the next call
  return v;
}

// [*b, *e) of list k; false when the offsets are not a valid range of the index array.
__device__ inline bool list_bounds(const IndexLists& L, int64_t k, int64_t* b, int64_t* e) {
  *b = L.offsets[k];
  *e = L.offsets[k + 1];
  return *b >= 0 && *e >= *b && *e <= L.nnz;
}

// Ok, or the error of the last launch (cudaGetLastError also clears a non-sticky one).
inline Status launch_status() {
  const cudaError_t err = cudaGetLastError();
  return err == cudaSuccess ? Status::Ok() : Status::Error(std::string("CUDA launch failed: ") + cudaGetErrorString(err));
}

inline Status cuda_status(cudaError_t err) {
  return err == cudaSuccess ? Status::Ok() : Status::Error(std::string("CUDA error: ") + cudaGetErrorString(err));
}

}  // namespace pyred::cuda
