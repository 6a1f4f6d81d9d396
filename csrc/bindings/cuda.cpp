// pyred._C_cuda: the CUDA kernels behind the shared entry points (entries.h).
// Every pointer must be device (or managed) memory on the current device, which
// cudaPointerGetAttributes tells without synchronising. Index contents live on
// the device: validated by the Python layer when built, guarded inside the kernels.
#include <cuda_runtime.h>
#include <pybind11/pybind11.h>

#include "entries.h"

namespace py = pybind11;
using namespace pyred;

namespace {

struct Cuda {
  static void memory(const char* name, std::uintptr_t ptr, int64_t count) {
    if (count == 0) return;
    cudaPointerAttributes attr{};
    const cudaError_t err = cudaPointerGetAttributes(&attr, reinterpret_cast<const void*>(ptr));
    if (err != cudaSuccess) {
      cudaGetLastError();  // clear the non-sticky error
      throw py::value_error(std::string(name) + ": cannot query the pointer (" + cudaGetErrorString(err) + ")");
    }
    bind::expect(attr.type == cudaMemoryTypeDevice || attr.type == cudaMemoryTypeManaged,
                 std::string(name) + ": expected CUDA device memory");
    int current = -1;
    if (attr.type == cudaMemoryTypeDevice && cudaGetDevice(&current) == cudaSuccess && attr.device != current)
      throw py::value_error(std::string(name) + ": lives on CUDA device " + std::to_string(attr.device) +
                            ", but the current device is " + std::to_string(current));
  }
  static void lists(const char* name, const IndexLists& L, int64_t) {
    memory((std::string(name) + " indices").c_str(), reinterpret_cast<std::uintptr_t>(L.indices), L.nnz);
    memory((std::string(name) + " offsets").c_str(), reinterpret_cast<std::uintptr_t>(L.offsets), L.num_lists + 1);
  }
  static Status segment_sums(const void* v, DType t, int64_t M, int64_t d, const IndexLists& L, double* out,
                             void* s) {
    return segment_sums_cuda(v, t, M, d, L, out, s);
  }
  static Status block_sums(const void* m, DType t, int64_t M, int64_t d, const IndexLists& R, const IndexLists& C,
                           int64_t max_rows, double* out, void* s) {
    return block_sums_cuda(m, t, M, d, R, C, max_rows, out, s);
  }
  static Status forward(const void* XT, DType t, int64_t B, int64_t ldx, int64_t d, const IndexLists& L, const void* W,
                        int64_t C, void* out, void* s) {
    return gathered_forward_cuda(XT, t, B, ldx, d, L, W, C, out, s);
  }
  static Status weight_grad(const void* XT, DType t, int64_t B, int64_t ldx, int64_t d, const IndexLists& L,
                            const void* G, int64_t C, void* dW, void* s) {
    return gathered_weight_grad_cuda(XT, t, B, ldx, d, L, G, C, dW, s);
  }
};

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
  m.doc() = "pyred CUDA kernels: gathered reductions and heads over CSR index lists (device addresses + counts).";
  bind::define_entries<Cuda>(m);
  m.def("device_count", &device_count, "CUDA devices visible to this module's runtime (0 when none).");
  int version = 0;
  cudaRuntimeGetVersion(&version);
  m.attr("runtime_version") = version;
}
