// Gathered reductions over ragged index lists (CSR: indices + offsets).
//
// Plain C++ declarations: raw pointers, sizes and (for CUDA) a stream. Nothing
// here knows about Python or libtorch, so one build serves numpy, torch and
// cupy callers alike. Layouts are C-contiguous; every sum is accumulated in
// float64 whatever the input type.
#pragma once

#include <cstdint>
#include <string>

namespace pyred {

enum class DType : int { Float32 = 0, Float64 = 1 };

// A CSR list of K index lists: list k is indices[offsets[k] .. offsets[k+1]).
struct IndexLists {
  const int64_t* indices;  // nnz entries
  const int64_t* offsets;  // K + 1 entries, offsets[0] == 0, offsets[K] == nnz
  int64_t num_lists;       // K
  int64_t nnz;
};

// Result of every entry point, CPU and CUDA: ok, or a message saying what was wrong.
struct Status {
  bool ok = true;
  bool index_error = false;  // true: an index or offset out of range
  std::string message;
  static Status Ok() { return {}; }
  static Status Error(std::string msg, bool index = false) { return {false, index, std::move(msg)}; }
};

// Sizes and index lists are validated once, by the caller (the pybind11
// layer, with check_index_lists below for host memory); the kernels trust them.

// out[k, m] = sum_{i in lists[k]} values[m, i]
//   values: (M, d) of dtype; out: (K, M) float64.
Status segment_sums_cpu(const void* values, DType dtype, int64_t M, int64_t d,
                        const IndexLists& lists, double* out);

// out[k, m] = sum_{i in rows[k], j in cols[k]} mats[m, i, j]
//   mats: (M, d, d) of dtype; rows and cols hold the same number K of lists;
//   out: (K, M) float64.
Status block_sums_cpu(const void* mats, DType dtype, int64_t M, int64_t d,
                      const IndexLists& rows, const IndexLists& cols, double* out);

// CUDA versions, same arguments plus a stream: all pointers are device
// pointers, work is queued on `stream` (a cudaStream_t) and nothing
// synchronises. The index lists live on the device, so the host cannot check
// them cheaply: the Python layer validates them when they are built, and the
// kernels guard every offset and index -- a list with an out-of-range entry
// yields NaN instead of reading out of bounds. max_rows is an upper bound on
// the longest row list (sets the grid size).
Status segment_sums_cuda(const void* values, DType dtype, int64_t M, int64_t d,
                         const IndexLists& lists, double* out, void* stream);
Status block_sums_cuda(const void* mats, DType dtype, int64_t M, int64_t d,
                       const IndexLists& rows, const IndexLists& cols,
                       int64_t max_rows, double* out, void* stream);

// Validates a CSR list against a width d (host memory only).
Status check_index_lists(const IndexLists& lists, int64_t d, const char* name);

}  // namespace pyred
