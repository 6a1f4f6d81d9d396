// The four kernel entry points as Python sees them, written once for both
// backends: pyred._C (CPU) and pyred._C_cuda (CUDA) define the same functions
// with the same arguments -- raw addresses, element counts, sizes, and a stream
// (ignored on the CPU) -- so the Python layer calls either the same way.
//
// Each entry checks every count against the declared sizes before a pointer is
// dereferenced, asks the backend to check its memory (host lists: every index
// in range; CUDA: device memory on the current device), releases the GIL, runs
// the kernel and turns its Status into a Python exception.
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>

#include "checks.h"
#include "pyred/heads.h"
#include "pyred/reductions.h"

namespace pyred::bind {

inline void raise_status(const Status& st) {
  if (st.ok) return;
  if (st.index_error) throw py::index_error(st.message);
  throw std::runtime_error(st.message);  // pybind11 maps it to RuntimeError
}

template <class Backend>
void segment_sums(std::uintptr_t values, int64_t values_count, int dtype, int64_t M, int64_t d,
                  std::uintptr_t indices, int64_t nnz, std::uintptr_t offsets, int64_t num_offsets,
                  std::uintptr_t out, int64_t out_count, std::uintptr_t stream) {
  const DType dt = dtype_from_code(dtype);
  const IndexLists L = segment_args(values, values_count, M, d, indices, nnz, offsets, num_offsets, out, out_count);
  Backend::memory("values", values, values_count);
  Backend::memory("out", out, out_count);
  Backend::lists("subsets", L, d);
  Status st;
  {
    py::gil_scoped_release release;
    st = Backend::segment_sums(reinterpret_cast<const void*>(values), dt, M, d, L, reinterpret_cast<double*>(out),
                               reinterpret_cast<void*>(stream));
  }
  raise_status(st);
}

template <class Backend>
void block_sums(std::uintptr_t mats, int64_t mats_count, int dtype, int64_t M, int64_t d,
                std::uintptr_t row_indices, int64_t row_nnz, std::uintptr_t row_offsets, int64_t row_num_offsets,
                std::uintptr_t col_indices, int64_t col_nnz, std::uintptr_t col_offsets, int64_t col_num_offsets,
                int64_t max_rows, std::uintptr_t out, int64_t out_count, std::uintptr_t stream) {
  const DType dt = dtype_from_code(dtype);
  const auto [R, C] = block_args(mats, mats_count, M, d, row_indices, row_nnz, row_offsets, row_num_offsets,
                                 col_indices, col_nnz, col_offsets, col_num_offsets, out, out_count);
  expect(max_rows >= 0, "max_rows must be >= 0, got " + std::to_string(max_rows));
  Backend::memory("mats", mats, mats_count);
  Backend::memory("out", out, out_count);
  Backend::lists("rows", R, d);
  Backend::lists("cols", C, d);
  Status st;
  {
    py::gil_scoped_release release;
    st = Backend::block_sums(reinterpret_cast<const void*>(mats), dt, M, d, R, C, max_rows,
                             reinterpret_cast<double*>(out), reinterpret_cast<void*>(stream));
  }
  raise_status(st);
}

template <class Backend>
void gathered_forward(std::uintptr_t XT, int64_t XT_count, int dtype, int64_t B, int64_t ldx, int64_t d,
                      std::uintptr_t indices, int64_t nnz, std::uintptr_t offsets, int64_t num_offsets,
                      std::uintptr_t W, int64_t W_count, int64_t C, std::uintptr_t out, int64_t out_count,
                      std::uintptr_t stream) {
  const DType dt = dtype_from_code(dtype);
  const IndexLists L = head_args(XT, XT_count, B, ldx, d, indices, nnz, offsets, num_offsets, C);
  expect_count("W", W_count, nnz * C);
  expect_pointer("W", W, W_count);
  expect_count("out", out_count, L.num_lists * B * C);
  expect_pointer("out", out, out_count);
  Backend::memory("XT", XT, XT_count);
  Backend::memory("W", W, W_count);
  Backend::memory("out", out, out_count);
  Backend::lists("subsets", L, d);
  Status st;
  {
    py::gil_scoped_release release;
    st = Backend::forward(reinterpret_cast<const void*>(XT), dt, B, ldx, d, L, reinterpret_cast<const void*>(W), C,
                          reinterpret_cast<void*>(out), reinterpret_cast<void*>(stream));
  }
  raise_status(st);
}

template <class Backend>
void gathered_weight_grad(std::uintptr_t XT, int64_t XT_count, int dtype, int64_t B, int64_t ldx, int64_t d,
                          std::uintptr_t indices, int64_t nnz, std::uintptr_t offsets, int64_t num_offsets,
                          std::uintptr_t G, int64_t G_count, int64_t C, std::uintptr_t dW, int64_t dW_count,
                          std::uintptr_t stream) {
  const DType dt = dtype_from_code(dtype);
  const IndexLists L = head_args(XT, XT_count, B, ldx, d, indices, nnz, offsets, num_offsets, C);
  expect_count("G", G_count, L.num_lists * B * C);
  expect_pointer("G", G, G_count);
  expect_count("dW", dW_count, nnz * C);
  expect_pointer("dW", dW, dW_count);
  Backend::memory("XT", XT, XT_count);
  Backend::memory("G", G, G_count);
  Backend::memory("dW", dW, dW_count);
  Backend::lists("subsets", L, d);
  Status st;
  {
    py::gil_scoped_release release;
    st = Backend::weight_grad(reinterpret_cast<const void*>(XT), dt, B, ldx, d, L, reinterpret_cast<const void*>(G), C,
                              reinterpret_cast<void*>(dW), reinterpret_cast<void*>(stream));
  }
  raise_status(st);
}

// Registers the four entry points of Backend on module m.
template <class Backend>
void define_entries(py::module_& m) {
  m.def("segment_sums", &segment_sums<Backend>, py::arg("values"), py::arg("values_count"), py::arg("dtype"),
        py::arg("M"), py::arg("d"), py::arg("indices"), py::arg("nnz"), py::arg("offsets"), py::arg("num_offsets"),
        py::arg("out"), py::arg("out_count"), py::arg("stream"),
        "out[k, m] = sum_{i in list k} values[m, i]; values (M, d) float32/float64, out (K, M) float64.");
  m.def("block_sums", &block_sums<Backend>, py::arg("mats"), py::arg("mats_count"), py::arg("dtype"), py::arg("M"),
        py::arg("d"), py::arg("row_indices"), py::arg("row_nnz"), py::arg("row_offsets"), py::arg("row_num_offsets"),
        py::arg("col_indices"), py::arg("col_nnz"), py::arg("col_offsets"), py::arg("col_num_offsets"),
        py::arg("max_rows"), py::arg("out"), py::arg("out_count"), py::arg("stream"),
        "out[k, m] = sum_{i in rows k, j in cols k} mats[m, i, j]; mats (M, d, d), out (K, M) float64.");
  m.def("gathered_forward", &gathered_forward<Backend>, py::arg("XT"), py::arg("XT_count"), py::arg("dtype"),
        py::arg("B"), py::arg("ldx"), py::arg("d"), py::arg("indices"), py::arg("nnz"), py::arg("offsets"),
        py::arg("num_offsets"), py::arg("W"), py::arg("W_count"), py::arg("C"), py::arg("out"), py::arg("out_count"),
        py::arg("stream"),
        "out[k, b, c] = sum_{p in list k} XT[indices[p], b] W[p, c]; XT (d, ldx), W (nnz, C), out (K, B, C).");
  m.def("gathered_weight_grad", &gathered_weight_grad<Backend>, py::arg("XT"), py::arg("XT_count"), py::arg("dtype"),
        py::arg("B"), py::arg("ldx"), py::arg("d"), py::arg("indices"), py::arg("nnz"), py::arg("offsets"),
        py::arg("num_offsets"), py::arg("G"), py::arg("G_count"), py::arg("C"), py::arg("dW"), py::arg("dW_count"),
        py::arg("stream"),
        "dW[p, c] = sum_b XT[indices[p], b] G[k(p), b, c]; XT (d, ldx), G (K, B, C), dW (nnz, C).");
}

}  // namespace pyred::bind
