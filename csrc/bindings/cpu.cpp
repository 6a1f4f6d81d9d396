// pyred._C: thin pybind11 layer over the CPU kernels (check sizes, call).
#include <pybind11/pybind11.h>

#include "checks.h"
#include "pyred/heads.h"
#include "pyred/reductions.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace py = pybind11;
using namespace pyred;
using namespace pyred::bind;

namespace {

void raise_status(const Status& st) {
  if (st.ok) return;
  if (st.index_error) throw py::index_error(st.message);
  throw py::value_error(st.message);
}

void segment_sums(std::uintptr_t values, int64_t values_count, int dtype, int64_t M, int64_t d,
                  std::uintptr_t indices, int64_t nnz, std::uintptr_t offsets, int64_t num_offsets,
                  std::uintptr_t out, int64_t out_count) {
  const DType dt = dtype_from_code(dtype);
  const IndexLists L = segment_args(values, values_count, M, d, indices, nnz, offsets, num_offsets, out, out_count);
  Status st;
  {
    py::gil_scoped_release release;
    st = segment_sums_cpu(reinterpret_cast<const void*>(values), dt, M, d, L, reinterpret_cast<double*>(out));
  }
  raise_status(st);
}

void block_sums(std::uintptr_t mats, int64_t mats_count, int dtype, int64_t M, int64_t d,
                std::uintptr_t row_indices, int64_t row_nnz, std::uintptr_t row_offsets, int64_t row_num_offsets,
                std::uintptr_t col_indices, int64_t col_nnz, std::uintptr_t col_offsets, int64_t col_num_offsets,
                std::uintptr_t out, int64_t out_count) {
  const DType dt = dtype_from_code(dtype);
  const auto [R, C] = block_args(mats, mats_count, M, d, row_indices, row_nnz, row_offsets, row_num_offsets,
                                 col_indices, col_nnz, col_offsets, col_num_offsets, out, out_count);
  Status st;
  {
    py::gil_scoped_release release;
    st = block_sums_cpu(reinterpret_cast<const void*>(mats), dt, M, d, R, C, reinterpret_cast<double*>(out));
  }
  raise_status(st);
}

void gathered_forward(std::uintptr_t XT, int64_t XT_count, int dtype, int64_t B, int64_t ldx, int64_t d, std::uintptr_t indices,
                      int64_t nnz, std::uintptr_t offsets, int64_t num_offsets, std::uintptr_t W, int64_t W_count,
                      int64_t C, std::uintptr_t out, int64_t out_count) {
  const DType dt = dtype_from_code(dtype);
  const IndexLists L = head_args(XT, XT_count, B, ldx, d, indices, nnz, offsets, num_offsets, C);
  expect_count("W", W_count, nnz * C);
  expect_pointer("W", W, W_count);
  expect_count("out", out_count, L.num_lists * B * C);
  expect_pointer("out", out, out_count);
  Status st;
  {
    py::gil_scoped_release release;
    st = gathered_forward_cpu(reinterpret_cast<const void*>(XT), dt, B, ldx, d, L, reinterpret_cast<const void*>(W), C,
                              reinterpret_cast<void*>(out));
  }
  raise_status(st);
}

void gathered_weight_grad(std::uintptr_t XT, int64_t XT_count, int dtype, int64_t B, int64_t ldx, int64_t d,
                          std::uintptr_t indices, int64_t nnz, std::uintptr_t offsets, int64_t num_offsets,
                          std::uintptr_t G, int64_t G_count, int64_t C, std::uintptr_t dW, int64_t dW_count) {
  const DType dt = dtype_from_code(dtype);
  const IndexLists L = head_args(XT, XT_count, B, ldx, d, indices, nnz, offsets, num_offsets, C);
  expect_count("G", G_count, L.num_lists * B * C);
  expect_pointer("G", G, G_count);
  expect_count("dW", dW_count, nnz * C);
  expect_pointer("dW", dW, dW_count);
  Status st;
  {
    py::gil_scoped_release release;
    st = gathered_weight_grad_cpu(reinterpret_cast<const void*>(XT), dt, B, ldx, d, L, reinterpret_cast<const void*>(G),
                                  C, reinterpret_cast<void*>(dW));
  }
  raise_status(st);
}

int num_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "pyred CPU kernels: gathered reductions over CSR index lists (raw addresses + counts).";
  m.def("segment_sums", &segment_sums, py::arg("values"), py::arg("values_count"), py::arg("dtype"),
        py::arg("M"), py::arg("d"), py::arg("indices"), py::arg("nnz"), py::arg("offsets"),
        py::arg("num_offsets"), py::arg("out"), py::arg("out_count"),
        "out[k, m] = sum_{i in list k} values[m, i]; values (M, d) float32/float64, out (K, M) float64.");
  m.def("block_sums", &block_sums, py::arg("mats"), py::arg("mats_count"), py::arg("dtype"), py::arg("M"),
        py::arg("d"), py::arg("row_indices"), py::arg("row_nnz"), py::arg("row_offsets"),
        py::arg("row_num_offsets"), py::arg("col_indices"), py::arg("col_nnz"), py::arg("col_offsets"),
        py::arg("col_num_offsets"), py::arg("out"), py::arg("out_count"),
        "out[k, m] = sum_{i in rows k, j in cols k} mats[m, i, j]; mats (M, d, d), out (K, M) float64.");
  m.def("gathered_forward", &gathered_forward, py::arg("XT"), py::arg("XT_count"), py::arg("dtype"), py::arg("B"),
        py::arg("ldx"), py::arg("d"), py::arg("indices"), py::arg("nnz"), py::arg("offsets"), py::arg("num_offsets"), py::arg("W"),
        py::arg("W_count"), py::arg("C"), py::arg("out"), py::arg("out_count"),
        "out[k, b, c] = sum_{p in list k} XT[indices[p], b] W[p, c]; XT (d, ldx), W (nnz, C), out (K, B, C).");
  m.def("gathered_weight_grad", &gathered_weight_grad, py::arg("XT"), py::arg("XT_count"), py::arg("dtype"),
        py::arg("B"), py::arg("ldx"), py::arg("d"), py::arg("indices"), py::arg("nnz"), py::arg("offsets"), py::arg("num_offsets"),
        py::arg("G"), py::arg("G_count"), py::arg("C"), py::arg("dW"), py::arg("dW_count"),
        "dW[p, c] = sum_b XT[indices[p], b] G[k(p), b, c]; XT (d, ldx), G (K, B, C), dW (nnz, C).");
  m.attr("openmp") = py::bool_(
#ifdef _OPENMP
      true
#else
      false
#endif
  );
  m.def("num_threads", &num_threads, "OpenMP threads the kernels use (1 without OpenMP).");
}
