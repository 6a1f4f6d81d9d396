// C++17 (+ OpenMP) gathered linear heads. See include/pyred/heads.h.
//
// The batch is features-major, so feature i of a tile of kRows batch rows is one
// contiguous vector. A forward task owns (head k, a group of TT tiles, a block
// of NC classes) and keeps its TT x NC accumulator vectors in registers while it
// walks the head's rows; a gradient task owns two packed rows of one head and a
// class block, and walks the batch. (NC, TT) is (4, 4) or (8, 2), whichever
// pads the class count less.
#include <algorithm>
#include <cstring>
#include <vector>

#include "pyred/heads.h"
#include "simd.h"

namespace pyred {
namespace {

constexpr int64_t kRows = 16;  // batch rows per tile: one AVX-512 vector of floats

inline int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

// kRows lanes of T as one GCC vector: each SIMD clone lowers it to its own
// registers (one zmm of floats for AVX-512, two ymm for AVX2, ...).
template <typename T>
struct Lanes {
  typedef T type __attribute__((vector_size(kRows * sizeof(T))));
};

template <typename T>
PYRED_INLINE typename Lanes<T>::type load_lanes(const T* p) {
  typename Lanes<T>::type v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

// acc_out[(c * TT + u) * kRows + r] = sum_{p in [pb, pe)} XT[idx[p], (tile0 + u) * kRows + r] * Wp[p, c0 + c]
template <typename T, int NC, int TT>
PYRED_INLINE void forward_task(const T* XT, int64_t ldx, const int64_t* idx, int64_t pb, int64_t pe, const T* Wp,
                               int64_t Cp, int64_t row0, int64_t c0, T* acc_out) {
  using V = typename Lanes<T>::type;
  V acc[NC][TT] = {};
  // The head's rows of XT come in subset order, scattered over XT: ask for row p + kAhead while row p
  // is used (on CPU B at d = 200,000, the 71 paper heads' forward: 6.4 s -> 4.1 s a batch of 256;
  // no change at d = 2,048, where XT stays in cache).
  constexpr int64_t kAhead = 16;
  for (int64_t p = pb; p < pe; ++p) {
    if (p + kAhead < pe) {
      const T* next = XT + idx[p + kAhead] * ldx + row0;
      for (int u = 0; u < TT; ++u) __builtin_prefetch(next + u * kRows, 0, 0);
    }
    const T* x = XT + idx[p] * ldx + row0;
    V xv[TT];
    for (int u = 0; u < TT; ++u) xv[u] = load_lanes(x + u * kRows);
    const T* w = Wp + p * Cp + c0;
    for (int c = 0; c < NC; ++c)
      for (int u = 0; u < TT; ++u) acc[c][u] += xv[u] * w[c];
  }
  std::memcpy(acc_out, acc, sizeof(acc));
}

// acc_out[q * kRows + c] = sum_{b < B} x_q[b] * g[b * kRows + c] for kGradRows feature rows x_q of
// one head: a small GEMM vectorised over the (padded) classes of the head's
// gradient g (B, kRows), with x broadcast -- no horizontal reductions.
constexpr int kGradRows = 8;
template <typename T>
PYRED_INLINE void grad_task(const T* const* x, const T* g, int64_t B, T* acc_out) {
  using V = typename Lanes<T>::type;
  V acc[kGradRows] = {};
  for (int64_t b = 0; b < B; ++b) {
    const V gv = load_lanes(g + b * kRows);
    for (int q = 0; q < kGradRows; ++q) acc[q] += x[q][b] * gv;
  }
  std::memcpy(acc_out, acc, sizeof(acc));
}

// The vectorised bodies are plain functions, not OpenMP regions (GCC outlines
// those without the clone's target attribute): one SIMD clone set per variant.
#define PYRED_FORWARD_VARIANT(NAME, T, NC, TT)                                                            \
  PYRED_SIMD_CLONES void NAME(const T* XT, int64_t ldx, const int64_t* idx, int64_t pb, int64_t pe,        \
                              const T* Wp, int64_t Cp, int64_t row0, int64_t c0, T* acc) {                 \
    forward_task<T, NC, TT>(XT, ldx, idx, pb, pe, Wp, Cp, row0, c0, acc);                                  \
  }
#define PYRED_GRAD_VARIANT(NAME, T)                                                                         \
  PYRED_SIMD_CLONES void NAME(const T* const* x, const T* g, int64_t B, T* acc) { grad_task<T>(x, g, B, acc); }
PYRED_FORWARD_VARIANT(forward_f32_4x4, float, 4, 4)
PYRED_FORWARD_VARIANT(forward_f32_8x2, float, 8, 2)
PYRED_FORWARD_VARIANT(forward_f64_4x4, double, 4, 4)
PYRED_FORWARD_VARIANT(forward_f64_8x2, double, 8, 2)
PYRED_GRAD_VARIANT(grad_f32, float)
PYRED_GRAD_VARIANT(grad_f64, double)

template <typename T>
struct Variants;
template <>
struct Variants<float> {
  static constexpr auto fwd4 = forward_f32_4x4, fwd8 = forward_f32_8x2, grad = grad_f32;
};
template <>
struct Variants<double> {
  static constexpr auto fwd4 = forward_f64_4x4, fwd8 = forward_f64_8x2, grad = grad_f64;
};

// Classes per block: 4 or 8, whichever pads C less (ties go to 8).
inline int class_block(int64_t C) { return round_up(C, 4) < round_up(C, 8) ? 4 : 8; }

// The batch as a features-major buffer whose row length is a whole number of
// `rows` lanes: the caller's own memory when it already is, else a zero-padded copy.
template <typename T>
const T* padded_batch(const T* XT, int64_t B, int64_t ldx, int64_t d, int64_t rows, int64_t* Bp,
                      std::vector<T>* copy) {
  *Bp = round_up(B, rows);
  if (*Bp <= ldx && B % rows == 0) {
    *Bp = B;
    return XT;  // rows [B, ldx) are never read
  }
  copy->assign(static_cast<size_t>(d * *Bp), T(0));
  for (int64_t i = 0; i < d; ++i) std::copy(XT + i * ldx, XT + i * ldx + B, copy->data() + i * *Bp);
  return copy->data();
}

template <typename T>
void forward_impl(const T* XT_in, int64_t B, int64_t ldx, int64_t d, const IndexLists& H, const T* W, int64_t C,
                  T* out) {
  const int NC = class_block(C), TT = NC == 4 ? 4 : 2;
  const int64_t group = TT * kRows, K = H.num_lists, Cp = round_up(C, NC), nnz = H.nnz;
  std::vector<T> copy, Wp(static_cast<size_t>(nnz * Cp), T(0));
  int64_t Bp;
  const T* XT = padded_batch(XT_in, B, ldx, d, group, &Bp, &copy);
  const int64_t stride = XT == XT_in ? ldx : Bp;
  for (int64_t p = 0; p < nnz; ++p) std::copy(W + p * C, W + (p + 1) * C, Wp.data() + p * Cp);
  const int64_t groups = Bp / group, cblocks = Cp / NC;
  // Batch-group-major: all heads run over one group's slice of XT (d x 64
  // rows, 512 KB of floats) while it sits in cache.
#pragma omp parallel for schedule(dynamic, 1) collapse(3)
  for (int64_t g = 0; g < groups; ++g)
    for (int64_t k = 0; k < K; ++k)
      for (int64_t cb = 0; cb < cblocks; ++cb) {
        T acc[8 * 4 * kRows];  // NC * TT * kRows <= 8 * 4 * 16
        const auto fn = NC == 4 ? Variants<T>::fwd4 : Variants<T>::fwd8;
        fn(XT, stride, H.indices, H.offsets[k], H.offsets[k + 1], Wp.data(), Cp, g * group, cb * NC, acc);
        const int64_t c0 = cb * NC, nc = std::min<int64_t>(NC, C - c0);
        for (int u = 0; u < TT; ++u) {
          const int64_t b0 = g * group + u * kRows, nb = std::min(kRows, B - b0);
          for (int64_t r = 0; r < nb; ++r)
            for (int64_t c = 0; c < nc; ++c) out[(k * B + b0 + r) * C + c0 + c] = acc[(c * TT + u) * kRows + r];
        }
      }
}

template <typename T>
void weight_grad_impl(const T* XT, int64_t B, int64_t ldx, int64_t d, const IndexLists& H, const T* G, int64_t C,
                      T* dW) {
  const int64_t K = H.num_lists, cblocks = (C + kRows - 1) / kRows;
  // GP[((cb * K + k) * B + b) * kRows + c] = G[(k * B + b) * C + cb * kRows + c], zero-padded classes.
  std::vector<T> GP(static_cast<size_t>(cblocks * K * B * kRows), T(0));
#pragma omp parallel for schedule(static) collapse(2)
  for (int64_t cb = 0; cb < cblocks; ++cb)
    for (int64_t k = 0; k < K; ++k)
      for (int64_t b = 0; b < B; ++b) {
        const int64_t c0 = cb * kRows, nc = std::min(kRows, C - c0);
        std::copy(G + (k * B + b) * C + c0, G + (k * B + b) * C + c0 + nc, GP.data() + ((cb * K + k) * B + b) * kRows);
      }
  // A task: up to kGradRows packed rows of one head, which share its gradient.
  struct Task {
    int64_t k, p0, nq;
  };
  std::vector<Task> tasks;
  for (int64_t k = 0; k < K; ++k)
    for (int64_t p = H.offsets[k]; p < H.offsets[k + 1]; p += kGradRows)
      tasks.push_back({k, p, std::min<int64_t>(kGradRows, H.offsets[k + 1] - p)});
  const int64_t n_tasks = static_cast<int64_t>(tasks.size());
#pragma omp parallel for schedule(static) collapse(2)
  for (int64_t t = 0; t < n_tasks; ++t)
    for (int64_t cb = 0; cb < cblocks; ++cb) {
      const Task task = tasks[t];
      const T* x[kGradRows];
      for (int q = 0; q < kGradRows; ++q)  // a short tail repeats its last row; the copy is not written
        x[q] = XT + H.indices[task.p0 + std::min<int64_t>(q, task.nq - 1)] * ldx;
      T acc[kGradRows * kRows];
      Variants<T>::grad(x, GP.data() + (cb * K + task.k) * B * kRows, B, acc);
      const int64_t c0 = cb * kRows, nc = std::min(kRows, C - c0);
      for (int64_t q = 0; q < task.nq; ++q)
        std::copy(acc + q * kRows, acc + q * kRows + nc, dW + (task.p0 + q) * C + c0);
    }
}

}  // namespace

Status gathered_forward_cpu(const void* XT, DType dtype, int64_t B, int64_t ldx, int64_t d,
                            const IndexLists& heads, const void* W, int64_t C, void* logits) {
  if (B == 0) return Status::Ok();
  if (dtype == DType::Float32)
    forward_impl(static_cast<const float*>(XT), B, ldx, d, heads, static_cast<const float*>(W), C,
                 static_cast<float*>(logits));
  else
    forward_impl(static_cast<const double*>(XT), B, ldx, d, heads, static_cast<const double*>(W), C,
                 static_cast<double*>(logits));
  return Status::Ok();
}

Status gathered_weight_grad_cpu(const void* XT, DType dtype, int64_t B, int64_t ldx, int64_t d,
                                const IndexLists& heads, const void* G, int64_t C, void* dW) {
  if (B == 0) {
    std::memset(dW, 0, static_cast<size_t>(heads.nnz * C) * (dtype == DType::Float32 ? 4 : 8));
    return Status::Ok();
  }
  if (dtype == DType::Float32)
    weight_grad_impl(static_cast<const float*>(XT), B, ldx, d, heads, static_cast<const float*>(G), C,
                     static_cast<float*>(dW));
  else
    weight_grad_impl(static_cast<const double*>(XT), B, ldx, d, heads, static_cast<const double*>(G), C,
                     static_cast<double*>(dW));
  return Status::Ok();
}

}  // namespace pyred
