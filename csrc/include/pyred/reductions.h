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

// Result of a CPU entry point: ok, or a message saying what was wrong.
struct Status {
  bool ok = true;
  bool index_error = false;  // true: an index or offset out of range
  std::string message;
  static Status Ok() { return {}; }
  static Status Error(std::string msg, bool index = false) { return {false, index, std::move(msg)}; }
};

// out[k, m] = sum_{i in lists[k]} values[m, i]
//   values: (M, d) of dtype; out: (K, M) float64.
Status segment_sums_cpu(const void* values, DType dtype, int64_t M, int64_t d,
                        const IndexLists& lists, double* out);

// out[k, m] = sum_{i in rows[k], j in cols[k]} mats[m, i, j]
//   mats: (M, d, d) of dtype; rows and cols hold the same number K of lists;
//   out: (K, M) float64.
Status block_sums_cpu(const void* mats, DType dtype, int64_t M, int64_t d,
                      const IndexLists& rows, const IndexLists& cols, double* out);

// CUDA versions: all pointers are device pointers, work is queued on `stream`
// (a cudaStream_t) and nothing synchronises. Offsets and indices are guarded in
// the kernel: a list with an out-of-range entry yields NaN instead of reading
// out of bounds (the Python layer validates lists before they get here).
// max_rows is an upper bound on the longest row list (sets the grid size).
// Return an empty string on success, else the CUDA error text of the launch.
std::string segment_sums_cuda(const void* values, DType dtype, int64_t M, int64_t d,
                              const IndexLists& lists, double* out, void* stream);
std::string block_sums_cuda(const void* mats, DType dtype, int64_t M, int64_t d,
                            const IndexLists& rows, const IndexLists& cols,
                            int64_t max_rows, double* out, void* stream);

// Validates a CSR list against a width d (host memory only).
Status check_index_lists(const IndexLists& lists, int64_t d, const char* name);

}  // namespace pyred
