// CUDA gathered reductions. See include/pyred/reductions.h.
//
// One block per list for segment sums; a (list, row-slab) grid for block sums,
// with float64 block reductions and one float64 atomicAdd per block. Kernels
// run on the caller's stream and never synchronise.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>

#include "common.cuh"
#include "pyred/reductions.h"

namespace pyred {
namespace {

using cuda::block_sum;
using cuda::list_bounds;

constexpr int kThreads = 256;

template <typename T>
__global__ void segment_sums_kernel(const T* __restrict__ values, int64_t M, int64_t d, IndexLists L,
                                    double* __restrict__ out) {
  __shared__ double shared[kThreads / 32];
  const int64_t k = blockIdx.x;
  int64_t b, e;
  const bool bounds_ok = list_bounds(L, k, &b, &e);
  for (int64_t m = 0; m < M; ++m) {
    const T* v = values + m * d;
    double s = 0;
    int bad = !bounds_ok;
    if (bounds_ok) {
      for (int64_t p = b + threadIdx.x; p < e; p += blockDim.x) {
        const int64_t i = L.indices[p];
        if (i < 0 || i >= d) {
          bad = 1;
          continue;
        }
        s += static_cast<double>(v[i]);
      }
    }
    bad = __syncthreads_or(bad);
    s = block_sum(s, shared);
    if (threadIdx.x == 0) out[k * M + m] = bad ? NAN : s;
  }
}

// grid = (K, slabs): block (k, y) takes the rows p = y, y + slabs, ... of list k
// and all of its columns; threads stride over the columns.
template <typename T>
__global__ void block_sums_kernel(const T* __restrict__ mats, int64_t M, int64_t d, IndexLists R, IndexLists C,
                                  double* __restrict__ out) {
  __shared__ double shared[kThreads / 32];
  const int64_t k = blockIdx.x;
  int64_t rb, re, cb, ce;
  const bool bounds_ok = list_bounds(R, k, &rb, &re) && list_bounds(C, k, &cb, &ce);
  if (bounds_ok && rb + static_cast<int64_t>(blockIdx.y) >= re) return;  // no rows for this slab
  for (int64_t m = 0; m < M; ++m) {
    const T* A = mats + m * d * d;
    double s = 0;
    int bad = !bounds_ok;
    if (bounds_ok) {
      for (int64_t p = rb + blockIdx.y; p < re; p += gridDim.y) {
        const int64_t i = R.indices[p];
        if (i < 0 || i >= d) {
          bad = 1;
          continue;
        }
        const T* row = A + i * d;
        for (int64_t q = cb + threadIdx.x; q < ce; q += blockDim.x) {
          const int64_t j = C.indices[q];
          if (j < 0 || j >= d) {
            bad = 1;
            continue;
          }
          s += static_cast<double>(__ldg(row + j));
        }
      }
    }
    bad = __syncthreads_or(bad);
    s = block_sum(s, shared);
    if (threadIdx.x == 0) {
      if (bad)
        out[k * M + m] = NAN;  // benign race: every writer of a bad list writes NaN
      else if (s != 0.0)
        atomicAdd(out + k * M + m, s);
    }
  }
}

}  // namespace

Status segment_sums_cuda(const void* values, DType dtype, int64_t M, int64_t d, const IndexLists& lists,
                         double* out, void* stream) {
  if (lists.num_lists == 0) return Status::Ok();
  auto s = static_cast<cudaStream_t>(stream);
  const dim3 grid(static_cast<unsigned>(lists.num_lists));
  if (dtype == DType::Float32)
    segment_sums_kernel<<<grid, kThreads, 0, s>>>(static_cast<const float*>(values), M, d, lists, out);
  else
    segment_sums_kernel<<<grid, kThreads, 0, s>>>(static_cast<const double*>(values), M, d, lists, out);
  return cuda::launch_status();
}

Status block_sums_cuda(const void* mats, DType dtype, int64_t M, int64_t d, const IndexLists& rows,
                       const IndexLists& cols, int64_t max_rows, double* out, void* stream) {
  if (rows.num_lists == 0) return Status::Ok();
  auto s = static_cast<cudaStream_t>(stream);
  const Status cleared = cuda::cuda_status(cudaMemsetAsync(out, 0, sizeof(double) * rows.num_lists * M, s));
  if (!cleared.ok) return cleared;
  // About 8 rows per block: enough blocks to fill the GPU for the largest list.
  const int64_t slabs = std::min<int64_t>(std::max<int64_t>(1, (max_rows + 7) / 8), 65535);
  const dim3 grid(static_cast<unsigned>(rows.num_lists), static_cast<unsigned>(slabs));
  if (dtype == DType::Float32)
    block_sums_kernel<<<grid, kThreads, 0, s>>>(static_cast<const float*>(mats), M, d, rows, cols, out);
  else
    block_sums_kernel<<<grid, kThreads, 0, s>>>(static_cast<const double*>(mats), M, d, rows, cols, out);
  return cuda::launch_status();
}

}  // namespace pyred
