// Argument checks shared by the pybind11 modules: every entry point takes raw
// addresses and element counts, and refuses counts that disagree with the
// declared sizes before any pointer is dereferenced.
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>

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
  expect_pointer(name, indices, nnz);
  expect_pointer(name, offsets, num_offsets);
  return IndexLists{reinterpret_cast<const int64_t*>(indices), reinterpret_cast<const int64_t*>(offsets),
                    num_offsets - 1, nnz};
}

inline void check_sizes(int64_t M, int64_t d) {
  expect(M >= 1, "M (number of matrices or vectors) must be >= 1, got " + std::to_string(M));
  expect(d >= 1, "d (width) must be >= 1, got " + std::to_string(d));
}

}  // namespace pyred::bind
