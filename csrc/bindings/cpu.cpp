// pyred._C: the CPU kernels behind the shared entry points (entries.h). Host
// memory, so every index list is checked here, once, before a kernel runs.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cmath>
#include <string>
#include <vector>

#include "entries.h"
#include "pyred/rbf.h"
#include "../cpu/simd.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace py = pybind11;
using namespace pyred;

namespace {

struct Cpu {
  static void memory(const char*, std::uintptr_t, int64_t) {}  // host memory: the counts were checked
  static void lists(const char* name, const IndexLists& L, int64_t d) { bind::raise_status(check_index_lists(L, d, name)); }
  static Status segment_sums(const void* v, DType t, int64_t M, int64_t d, const IndexLists& L, double* out, void*) {
    return segment_sums_cpu(v, t, M, d, L, out);
  }
  static Status block_sums(const void* m, DType t, int64_t M, int64_t d, const IndexLists& R, const IndexLists& C,
                           int64_t, double* out, void*) {
    return block_sums_cpu(m, t, M, d, R, C, out);
  }
  static Status forward(const void* XT, DType t, int64_t B, int64_t ldx, int64_t d, const IndexLists& L, const void* W,
                        int64_t C, void* out, void*) {
    return gathered_forward_cpu(XT, t, B, ldx, d, L, W, C, out);
  }
  static Status weight_grad(const void* XT, DType t, int64_t B, int64_t ldx, int64_t d, const IndexLists& L,
                            const void* G, int64_t C, void* dW, void*) {
    return gathered_weight_grad_cpu(XT, t, B, ldx, d, L, G, C, dW);
  }
};

// The SIMD level the heads kernels run at on this CPU (see cpu/simd.h).
std::string simd_level() {
  switch (detect_simd()) {
    case SimdLevel::Avx512:
      return "avx512f";
    case SimdLevel::Avx2:
      return "avx2";
    default:
      return "baseline";
  }
}

int num_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

// An n x n float64 matrix given as (address, element count).
const double* square(const char* name, std::uintptr_t addr, int64_t count, int64_t n) {
  bind::expect_count(name, count, n * n);
  bind::expect_pointer(name, addr, count);
  return reinterpret_cast<const double*>(addr);
}

py::list upper_distance_ranks(std::uintptr_t K, int64_t K_count, int64_t n, const std::vector<int64_t>& ranks,
                              int64_t samples, double margin_sd) {
  bind::expect(n >= 2, "n: expected at least 2 samples, got " + std::to_string(n));
  const double* k = square("K", K, K_count, n);
  std::vector<double> out(ranks.size());
  Status st;
  {
    py::gil_scoped_release release;
    st = upper_distance_ranks_cpu(k, n, ranks.data(), static_cast<int64_t>(ranks.size()), out.data(), samples,
                                  margin_sd);
  }
  bind::raise_status(st);
  py::list values;
  for (double v : out) values.append(v);
  return values;
}

// The operands of the RBF sums entries: K and M (optional: address 0 and count 0) n x n, rows (n).
struct SumsOperands {
  const double* K;
  const double* M;
  double* rows;
};

SumsOperands sums_operands(std::uintptr_t K, int64_t K_count, int64_t n, std::uintptr_t M, int64_t M_count,
                           std::uintptr_t rows, int64_t rows_count) {
  bind::expect(n >= 1, "n: expected at least 1 sample, got " + std::to_string(n));
  const double* k = square("K", K, K_count, n);
  const double* m = M == 0 && M_count == 0 ? nullptr : square("M", M, M_count, n);
  bind::expect_count("rows", rows_count, n);
  bind::expect_pointer("rows", rows, rows_count);
  return {k, m, reinterpret_cast<double*>(rows)};
}

py::tuple rbf_upper_sums(std::uintptr_t K, int64_t K_count, int64_t n, double scale, std::uintptr_t M,
                         int64_t M_count, std::uintptr_t rows, int64_t rows_count) {
  bind::expect(scale >= 0.0 && std::isfinite(scale), "scale: expected a finite value >= 0, got " + std::to_string(scale));
  const SumsOperands op = sums_operands(K, K_count, n, M, M_count, rows, rows_count);
  double sums[3];
  Status st;
  {
    py::gil_scoped_release release;
    st = rbf_upper_sums_cpu(op.K, n, scale, op.M, sums, op.rows);
  }
  bind::raise_status(st);
  return py::make_tuple(sums[0], sums[1], sums[2]);
}

py::tuple rbf_median_sums(std::uintptr_t K, int64_t K_count, int64_t n, double sigma, std::uintptr_t M,
                          int64_t M_count, std::uintptr_t rows, int64_t rows_count) {
  bind::expect(sigma > 0.0 && std::isfinite(sigma), "sigma: expected a finite value > 0, got " + std::to_string(sigma));
  const SumsOperands op = sums_operands(K, K_count, n, M, M_count, rows, rows_count);
  double median = 0.0, sums[3];
  Status st;
  {
    py::gil_scoped_release release;
    st = rbf_median_sums_cpu(op.K, n, sigma, op.M, &median, sums, op.rows);
  }
  bind::raise_status(st);
  return py::make_tuple(median, sums[0], sums[1], sums[2]);
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "pyred CPU kernels: gathered reductions and heads over CSR index lists (raw addresses + counts).";
  bind::define_entries<Cpu>(m);
  m.attr("openmp") = py::bool_(
#ifdef _OPENMP
      true
#else
      false
#endif
  );
  m.def("upper_distance_ranks", &upper_distance_ranks, py::arg("K"), py::arg("K_count"), py::arg("n"),
        py::arg("ranks"), py::arg("samples") = 8192, py::arg("margin_sd") = 6.0,
        "Order statistics (1-based ranks) of the squared distances above the diagonal of an n x n float64 Gram.");
  m.def("rbf_upper_sums", &rbf_upper_sums, py::arg("K"), py::arg("K_count"), py::arg("n"), py::arg("scale"),
        py::arg("M"), py::arg("M_count"), py::arg("rows"), py::arg("rows_count"),
        "(sum g M, sum g, sum g^2) over a < b with g = exp(-scale D); writes rows[a] = sum_{b != a} g_ab.");
  m.def("rbf_median_sums", &rbf_median_sums, py::arg("K"), py::arg("K_count"), py::arg("n"), py::arg("sigma"),
        py::arg("M"), py::arg("M_count"), py::arg("rows"), py::arg("rows_count"),
        "(median, sum g M, sum g, sum g^2) with the median bandwidth: g = exp(-D / (2 sigma^2 median)); writes rows.");
  m.def("num_threads", &num_threads, "OpenMP threads the kernels use (1 without OpenMP).");
  m.def(
      "heads_tiles",
      [](const std::string& level, int dtype, int64_t C) {
        const int lv = level == "avx512f" ? 2 : level == "avx2" ? 1 : level == "baseline" ? 0 : -1;
        if (lv < 0) throw py::value_error("level: expected 'avx512f', 'avx2' or 'baseline', got '" + level + "'");
        const DType dt = bind::dtype_from_code(dtype);
        if (C < 1) throw py::value_error("C: expected at least 1 class");
        const HeadsTile t = heads_tile_cpu(lv, dt, C);
        py::dict out;
        out["forward_classes"] = t.forward_classes;
        out["forward_tiles"] = t.forward_tiles;
        out["grad_rows"] = t.grad_rows;
        out["vector_bytes"] = t.vector_bytes;
        return out;
      },
      "The register tiles of the heads kernels at a SIMD level for dtype (0 float32, 1 float64) and C classes.");
  m.def("simd_level", &simd_level, "The SIMD level the heads kernels run at here: avx512f, avx2 (with FMA) or baseline.");
}
