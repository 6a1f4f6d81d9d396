// pyred._C_cuda: thin pybind11 layer over the CUDA kernels. Sizes are checked
// here; every pointer must be device (or managed) memory, which
// cudaPointerGetAttributes tells without synchronising. Index contents live on
// the device and are guarded inside the kernels.
#include <cuda_runtime.h>
#include <pybind11/pybind11.h>

#include "checks.h"
#include "pyred/heads.h"
#include "pyred/reductions.h"

namespace py = pybind11;
using namespace pyred;
using namespace pyred::bind;

namespace {

void expect_device(const char* name, std::uintptr_t ptr, int64_t count) {
  if (count == 0) return;
  cudaPointerAttributes attr{};
  const cudaError_t err = cudaPointerGetAttributes(&attr, reinterpret_cast<const void*>(ptr));
  if (err != cudaSuccess) {
    cudaGetLastError();  // clear the non-sticky error
    throw py::value_error(std::string(name) + ": cannot query the pointer (" + cudaGetErrorString(err) + ")");
  }
  expect(attr.type == cudaMemoryTypeDevice || attr.type == cudaMemoryTypeManaged,
         std::string(name) + ": expected CUDA device memory");
}

void raise_launch(const std::string& err) {
  if (!err.empty()) throw std::runtime_error("pyred CUDA kernel launch failed: " + err);
}

void segment_sums(std::uintptr_t values, int64_t values_count, int dtype, int64_t M, int64_t d,
                  std::uintptr_t indices, int64_t nnz, std::uintptr_t offsets, int64_t num_offsets,
                  std::uintptr_t out, int64_t out_count, std::uintptr_t stream) {
  const DType dt = dtype_from_code(dtype);
  const IndexLists L = segment_args(values, values_count, M, d, indices, nnz, offsets, num_offsets, out, out_count);
  expect_device("values", values, values_count);
  expect_device("indices", indices, nnz);
  expect_device("offsets", offsets, num_offsets);
  expect_device("out", out, out_count);
  raise_launch(segment_sums_cuda(reinterpret_cast<const void*>(values), dt, M, d, L,
                                 reinterpret_cast<double*>(out), reinterpret_cast<void*>(stream)));
}

void block_sums(std::uintptr_t mats, int64_t mats_count, int dtype, int64_t M, int64_t d,
                std::uintptr_t row_indices, int64_t row_nnz, std::uintptr_t row_offsets, int64_t row_num_offsets,
                std::uintptr_t col_indices, int64_t col_nnz, std::uintptr_t col_offsets, int64_t col_num_offsets,
                int64_t max_rows, std::uintptr_t out, int64_t out_count, std::uintptr_t stream) {
  const DType dt = dtype_from_code(dtype);
  const auto [R, C] = block_args(mats, mats_count, M, d, row_indices, row_nnz, row_offsets, row_num_offsets,
                                 col_indices, col_nnz, col_offsets, col_num_offsets, out, out_count);
  expect(max_rows >= 0, "max_rows must be >= 0");
  expect_device("mats", mats, mats_count);
  expect_device("row_indices", row_indices, row_nnz);
  expect_device("row_offsets", row_offsets, row_num_offsets);
  expect_device("col_indices", col_indices, col_nnz);
  expect_device("col_offsets", col_offsets, col_num_offsets);
  expect_device("out", out, out_count);
  raise_launch(block_sums_cuda(reinterpret_cast<const void*>(mats), dt, M, d, R, C, max_rows,
                               reinterpret_cast<double*>(out), reinterpret_cast<void*>(stream)));
}

IndexLists head_lists(int64_t XT_count, int64_t B, int64_t ldx, int64_t d, std::uintptr_t XT, std::uintptr_t indices,
                      int64_t nnz, std::uintptr_t offsets, int64_t num_offsets, int64_t C) {
  const IndexLists L = head_args(XT, XT_count, B, ldx, d, indices, nnz, offsets, num_offsets, C);
  expect_device("XT", XT, XT_count);
  expect_device("indices", indices, nnz);
  expect_device("offsets", offsets, num_offsets);
  return L;
}

void gathered_forward(std::uintptr_t XT, int64_t XT_count, int dtype, int64_t B, int64_t ldx, int64_t d, std::uintptr_t indices,
                      int64_t nnz, std::uintptr_t offsets, int64_t num_offsets, std::uintptr_t W, int64_t W_count,
                      int64_t C, std::uintptr_t out, int64_t out_count, std::uintptr_t stream) {
  const DType dt = dtype_from_code(dtype);
  const IndexLists L = head_lists(XT_count, B, ldx, d, XT, indices, nnz, offsets, num_offsets, C);
  expect_count("W", W_count, nnz * C);
  expect_pointer("W", W, W_count);
  expect_device("W", W, W_count);
  expect_count("out", out_count, L.num_lists * B * C);
  expect_pointer("out", out, out_count);
  expect_device("out", out, out_count);
  raise_launch(gathered_forward_cuda(reinterpret_cast<const void*>(XT), dt, B, ldx, d, L, reinterpret_cast<const void*>(W),
                                     C, reinterpret_cast<void*>(out), reinterpret_cast<void*>(stream)));
}

void gathered_weight_grad(std::uintptr_t XT, int64_t XT_count, int dtype, int64_t B, int64_t ldx, int64_t d,
                          std::uintptr_t indices, int64_t nnz, std::uintptr_t offsets, int64_t num_offsets,
                          std::uintptr_t G, int64_t G_count, int64_t C, std::uintptr_t dW, int64_t dW_count,
                          std::uintptr_t stream) {
  const DType dt = dtype_from_code(dtype);
  const IndexLists L = head_lists(XT_count, B, ldx, d, XT, indices, nnz, offsets, num_offsets, C);
  expect_count("G", G_count, L.num_lists * B * C);
  expect_pointer("G", G, G_count);
  expect_device("G", G, G_count);
  expect_count("dW", dW_count, nnz * C);
  expect_pointer("dW", dW, dW_count);
  expect_device("dW", dW, dW_count);
  raise_launch(gathered_weight_grad_cuda(reinterpret_cast<const void*>(XT), dt, B, ldx, d, L,
                                         reinterpret_cast<const void*>(G), C, reinterpret_cast<void*>(dW),
                                         reinterpret_cast<void*>(stream)));
}

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return n;
}

}  // namespace

PYBIND11_MODULE(_C_cuda, m) {
  m.doc() = "pyred CUDA kernels: gathered reductions over CSR index lists (device addresses + counts).";
  m.def("segment_sums", &segment_sums, py::arg("values"), py::arg("values_count"), py::arg("dtype"),
        py::arg("M"), py::arg("d"), py::arg("indices"), py::arg("nnz"), py::arg("offsets"),
        py::arg("num_offsets"), py::arg("out"), py::arg("out_count"), py::arg("stream"));
  m.def("block_sums", &block_sums, py::arg("mats"), py::arg("mats_count"), py::arg("dtype"), py::arg("M"),
        py::arg("d"), py::arg("row_indices"), py::arg("row_nnz"), py::arg("row_offsets"),
        py::arg("row_num_offsets"), py::arg("col_indices"), py::arg("col_nnz"), py::arg("col_offsets"),
        py::arg("col_num_offsets"), py::arg("max_rows"), py::arg("out"), py::arg("out_count"),
        py::arg("stream"));
  m.def("gathered_forward", &gathered_forward, py::arg("XT"), py::arg("XT_count"), py::arg("dtype"), py::arg("B"),
        py::arg("ldx"), py::arg("d"), py::arg("indices"), py::arg("nnz"), py::arg("offsets"), py::arg("num_offsets"), py::arg("W"),
        py::arg("W_count"), py::arg("C"), py::arg("out"), py::arg("out_count"), py::arg("stream"));
  m.def("gathered_weight_grad", &gathered_weight_grad, py::arg("XT"), py::arg("XT_count"), py::arg("dtype"),
        py::arg("B"), py::arg("ldx"), py::arg("d"), py::arg("indices"), py::arg("nnz"), py::arg("offsets"), py::arg("num_offsets"),
        py::arg("G"), py::arg("G_count"), py::arg("C"), py::arg("dW"), py::arg("dW_count"), py::arg("stream"));
  m.def("device_count", &device_count, "CUDA devices visible to this module's runtime (0 when none).");
  int version = 0;
  cudaRuntimeGetVersion(&version);
  m.attr("runtime_version") = version;
}
