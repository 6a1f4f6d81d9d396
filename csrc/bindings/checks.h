// Argument checks shared by the pybind11 modules: every entry point takes raw
// addresses and element counts, and refuses counts that disagree with the
// declared sizes before any pointer is dereferenced.
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>
#include <utility>

#include "pyred/reductions.h"

namespace pyred::bind {

namespace py = pybind11;

inline void expect(bool cond, const std::string& msg) {
  if (!cond) throw py::value_error(msg);
}

inline DType dtype_from_code(int code) {
  expect(code == 0 || code == 1, "dtype code must be 0 (float32) or 1 (float64), got " + std::to_string(code));
  return static_cast<DType>(code);
}

inline void expect_count(const char* name, int64_t got, int64_t want) {
  expect(got == want, std::string(name) + ": expected " + std::to_string(want) + " elements, got " +
                          std::to_string(got));
}

inline void expect_pointer(const char* name, std::uintptr_t ptr, int64_t count) {
  expect(count == 0 || ptr != 0, std::string(name) + ": null pointer for " + std::to_string(count) + " elements");
}

// A CSR list given as (indices address, nnz, offsets address, number of offsets).
inline IndexLists make_lists(const char* name, std::uintptr_t indices, int64_t nnz, std::uintptr_t offsets,
                             int64_t num_offsets) {
  expect(nnz >= 0, std::string(name) + ": negative number of indices");
  expect(num_offsets >= 1, std::string(name) + ": offsets must hold K + 1 >= 1 entries, got " +
                               std::to_string(num_offsets));
  expect(num_offsets > 1 || nnz == 0, std::string(name) + ": " + std::to_string(nnz) +
                                          " indices but no list (K = 0) to hold them");
  expect_pointer(name, indices, nnz);
  expect_pointer(name, offsets, num_offsets);
  return IndexLists{reinterpret_cast<const int64_t*>(indices), reinterpret_cast<const int64_t*>(offsets),
                    num_offsets - 1, nnz};
}

inline void check_sizes(int64_t M, int64_t d) {
  expect(M >= 1, "M (number of matrices or vectors) must be >= 1, got " + std::to_string(M));
  expect(d >= 1, "d (width) must be >= 1, got " + std::to_string(d));
}

// The size checks each backend's segment_sums entry makes before anything else.
inline IndexLists segment_args(std::uintptr_t values, int64_t values_count, int64_t M, int64_t d,
                               std::uintptr_t indices, int64_t nnz, std::uintptr_t offsets, int64_t num_offsets,
                               std::uintptr_t out, int64_t out_count) {
  check_sizes(M, d);
  expect_count("values", values_count, M * d);
  expect_pointer("values", values, values_count);
  const IndexLists L = make_lists("subsets", indices, nnz, offsets, num_offsets);
  expect_count("out", out_count, L.num_lists * M);
  expect_pointer("out", out, out_count);
  return L;
}

// The same for block_sums: (rows, cols).
inline std::pair<IndexLists, IndexLists> block_args(std::uintptr_t mats, int64_t mats_count, int64_t M, int64_t d,
                                                    std::uintptr_t row_indices, int64_t row_nnz,
                                                    std::uintptr_t row_offsets, int64_t row_num_offsets,
                                                    std::uintptr_t col_indices, int64_t col_nnz,
                                                    std::uintptr_t col_offsets, int64_t col_num_offsets,
                                                    std::uintptr_t out, int64_t out_count) {
  check_sizes(M, d);
  expect_count("mats", mats_count, M * d * d);
  expect_pointer("mats", mats, mats_count);
  const IndexLists R = make_lists("rows", row_indices, row_nnz, row_offsets, row_num_offsets);
  const IndexLists C = make_lists("cols", col_indices, col_nnz, col_offsets, col_num_offsets);
  expect(R.num_lists == C.num_lists, "rows and cols must hold the same number of lists, got " +
                                         std::to_string(R.num_lists) + " and " + std::to_string(C.num_lists));
  expect_count("out", out_count, R.num_lists * M);
  expect_pointer("out", out, out_count);
  return {R, C};
}

// The same for the gathered heads: a features-major batch XT (d, ldx) of B rows and C classes.
inline IndexLists head_args(std::uintptr_t XT, int64_t XT_count, int64_t B, int64_t ldx, int64_t d,
                            std::uintptr_t indices, int64_t nnz, std::uintptr_t offsets, int64_t num_offsets,
                            int64_t C) {
  expect(B >= 0, "B (batch rows) must be >= 0, got " + std::to_string(B));
  expect(ldx >= B, "ldx (row length of XT) must be >= B, got " + std::to_string(ldx));
  expect(d >= 1, "d (width) must be >= 1, got " + std::to_string(d));
  expect(C >= 1, "C (classes) must be >= 1, got " + std::to_string(C));
  expect_count("XT", XT_count, d * ldx);
  expect_pointer("XT", XT, XT_count);
  return make_lists("subsets", indices, nnz, offsets, num_offsets);
}

}  // namespace pyred::bind
