// CUDA gathered reductions. See include/pyred/reductions.h.
//
// One block per list for segment sums; a (list, row-slab) grid for block sums,
// whose per-block float64 partials are then added in slab order by a second
// kernel -- no atomics, so results are the same bits on every run (as on the
// CPU). Kernels run on the caller's stream and never synchronise.
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
// and all of its columns; threads stride over the columns. Block (k, y) writes
// its sums to partial[(k * slabs + y) * M + m] (0 when list k has no row y).
template <typename T>
__global__ void block_sums_kernel(const T* __restrict__ mats, int64_t M, int64_t d, IndexLists R, IndexLists C,
                                  double* __restrict__ partial) {
  __shared__ double shared[kThreads / 32];
  const int64_t k = blockIdx.x;
  double* part = partial + (k * gridDim.y + blockIdx.y) * M;
  int64_t rb, re, cb, ce;
  const bool bounds_ok = list_bounds(R, k, &rb, &re) && list_bounds(C, k, &cb, &ce);
  if (bounds_ok && rb + static_cast<int64_t>(blockIdx.y) >= re) {  // no rows for this slab
    for (int64_t m = threadIdx.x; m < M; m += blockDim.x) part[m] = 0.0;
    return;
  }
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
    if (threadIdx.x == 0) part[m] = bad ? NAN : s;
  }
}

// out[k, m] = sum over y in slab order of partial[(k * slabs + y) * M + m]: one thread per (k, m).
__global__ void add_partials_kernel(const double* __restrict__ partial, int64_t K, int64_t slabs, int64_t M,
                                    double* __restrict__ out) {
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < K * M;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t k = e / M, m = e % M;
    double s = 0.0;
    for (int64_t y = 0; y < slabs; ++y) s += partial[(k * slabs + y) * M + m];
    out[e] = s;
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
  const int64_t K = rows.num_lists;
  if (K == 0) return Status::Ok();
  if (K > 2147483647) return Status::Error("too many lists for one launch (at most 2**31 - 1)");
  auto s = static_cast<cudaStream_t>(stream);
  // About 8 rows per block -- enough blocks to fill the GPU for the largest list -- with
  // the partials workspace kept under 32 MB.
  int64_t slabs = std::min<int64_t>(std::max<int64_t>(1, (max_rows + 7) / 8), 65535);
  slabs = std::max<int64_t>(1, std::min<int64_t>(slabs, (int64_t{1} << 22) / std::max<int64_t>(1, K * M)));
  double* partial = nullptr;
  Status st = cuda::cuda_status(cudaMallocAsync(reinterpret_cast<void**>(&partial), sizeof(double) * K * slabs * M, s));
  if (!st.ok) return st;
  const dim3 grid(static_cast<unsigned>(K), static_cast<unsigned>(slabs));
  if (dtype == DType::Float32)
    block_sums_kernel<<<grid, kThreads, 0, s>>>(static_cast<const float*>(mats), M, d, rows, cols, partial);
  else
    block_sums_kernel<<<grid, kThreads, 0, s>>>(static_cast<const double*>(mats), M, d, rows, cols, partial);
  st = cuda::launch_status();
  if (st.ok) {
    const int64_t blocks = std::min<int64_t>((K * M + kThreads - 1) / kThreads, 65535);
    add_partials_kernel<<<static_cast<unsigned>(blocks), kThreads, 0, s>>>(partial, K, slabs, M, out);
    st = cuda::launch_status();
  }
  const Status freed = cuda::cuda_status(cudaFreeAsync(partial, s));
  return st.ok ? freed : st;
}

}  // namespace pyred
