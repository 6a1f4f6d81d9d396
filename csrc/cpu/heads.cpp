// C++17 (+ OpenMP) gathered linear heads. See include/pyred/heads.h.
//
// The batch is features-major, so feature i of a tile of kRows batch rows is one
// contiguous run. A forward task owns (head k, a group of TT tiles, a block of NC
// classes) and keeps its NC x TT accumulator tiles in registers while it walks
// the head's rows; a gradient task owns Q packed rows of one head and a class
// block, and walks the batch.
//
// Each kernel is compiled once per instruction set (AVX-512, AVX2 + FMA,
// baseline), with native vectors of that set and a tile that fits its registers,
// and picked at run time: one source lowered by target_clones with 64-byte
// vectors everywhere lets GCC move a narrower clone's accumulators through the
// stack and general registers on every update.
#include <algorithm>
#include <cstring>
#include <utility>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "pyred/heads.h"
#include "simd.h"

namespace pyred {
namespace {

constexpr int64_t kRows = 16;  // batch rows per tile (and padded classes per gradient block)

inline int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

// A tile of kRows lanes of T as S native vectors of VB bytes.
template <typename T, int VB>
struct Lanes {
  typedef T vec __attribute__((vector_size(VB)));
  static constexpr int S = static_cast<int>(kRows * sizeof(T)) / VB;
};

// acc_out[(c * TT + u) * kRows + r] += sum_{p in [pb, pe)} XT[idx[p], row0 + u * kRows + r] * Wp[p, c0 + c]
template <typename T, int NC, int TT, int VB>
PYRED_INLINE void forward_task(const T* XT, int64_t ldx, const int64_t* idx, int64_t pb, int64_t pe, const T* Wp,
                               int64_t Cp, int64_t row0, int64_t c0, T* acc_out) {
  using L = Lanes<T, VB>;
  constexpr int S = L::S, N = VB / static_cast<int>(sizeof(T));
  typename L::vec acc[NC][TT][S];
  std::memcpy(acc, acc_out, sizeof(acc));  // adds to what acc_out holds (same layout)
  // The head's rows of XT come in subset order, scattered over XT: ask for row p + kAhead while row p
  // is used -- it pays when XT does not fit in cache (wide layers), and costs nothing when it does
  // (benchmarks/test_probe_speed.py's wide-layer cases).
  constexpr int64_t kAhead = 16;
  for (int64_t p = pb; p < pe; ++p) {
    if (p + kAhead < pe) {
      const T* next = XT + idx[p + kAhead] * ldx + row0;
      for (int u = 0; u < TT; ++u) __builtin_prefetch(next + u * kRows, 0, 0);
    }
    const T* x = XT + idx[p] * ldx + row0;
    typename L::vec xv[TT][S];
    for (int u = 0; u < TT; ++u)
      for (int v = 0; v < S; ++v) std::memcpy(&xv[u][v], x + u * kRows + v * N, VB);
    const T* w = Wp + p * Cp + c0;
    for (int c = 0; c < NC; ++c) {
      const T wc = w[c];
      for (int u = 0; u < TT; ++u)
        for (int v = 0; v < S; ++v) acc[c][u][v] += xv[u][v] * wc;
    }
  }
  std::memcpy(acc_out, acc, sizeof(acc));
}

// acc_out[q * kRows + c] = sum_{b < B} x_q[b] * g[b * kRows + c] for Q feature rows x_q of
// one head: a small GEMM vectorised over the (padded) classes of the head's
// gradient g (B, kRows), with x broadcast -- no horizontal reductions.
constexpr int kGradRows = 8;  // the most rows a gradient task takes (Q <= kGradRows)
template <typename T, int Q, int VB>
PYRED_INLINE void grad_task(const T* const* x, const T* g, int64_t B, T* acc_out) {
  using L = Lanes<T, VB>;
  constexpr int S = L::S, N = VB / static_cast<int>(sizeof(T));
  typename L::vec acc[Q][S] = {};
  for (int64_t b = 0; b < B; ++b) {
    typename L::vec gv[S];
    for (int v = 0; v < S; ++v) std::memcpy(&gv[v], g + b * kRows + v * N, VB);
    for (int q = 0; q < Q; ++q) {
      const T xq = x[q][b];
      for (int v = 0; v < S; ++v) acc[q][v] += xq * gv[v];
    }
  }
  std::memcpy(acc_out, acc, sizeof(acc));
}

template <typename T>
using ForwardFn = void (*)(const T*, int64_t, const int64_t*, int64_t, int64_t, const T*, int64_t, int64_t, int64_t,
                           T*);
template <typename T>
using GradFn = void (*)(const T* const*, const T*, int64_t, T*);

// The kernels as plain functions, one per (instruction set, dtype, tile), not OpenMP regions
// (GCC outlines those without the function's target attribute).
#define PYRED_FORWARD_VARIANT(TARGET, NAME, T, NC, TT, VB)                                                \
  TARGET void NAME(const T* XT, int64_t ldx, const int64_t* idx, int64_t pb, int64_t pe, const T* Wp,       \
                   int64_t Cp, int64_t row0, int64_t c0, T* acc) {                                          \
    forward_task<T, NC, TT, VB>(XT, ldx, idx, pb, pe, Wp, Cp, row0, c0, acc);                               \
  }
#define PYRED_GRAD_VARIANT(TARGET, NAME, T, Q, VB) \
  TARGET void NAME(const T* const* x, const T* g, int64_t B, T* acc) { grad_task<T, Q, VB>(x, g, B, acc); }

// Registers: 32 zmm (AVX-512) or 16 ymm / xmm. A forward tile takes NC * TT * S accumulators and
// TT * S operands, a gradient tile (Q + 1) * S; each leaves room for a broadcast.
#ifdef PYRED_X86_TARGETS
PYRED_FORWARD_VARIANT(PYRED_TARGET_AVX512, fwd_f32_4x4_avx512, float, 4, 4, 64)
PYRED_FORWARD_VARIANT(PYRED_TARGET_AVX512, fwd_f32_8x2_avx512, float, 8, 2, 64)
PYRED_FORWARD_VARIANT(PYRED_TARGET_AVX512, fwd_f64_4x2_avx512, double, 4, 2, 64)
PYRED_FORWARD_VARIANT(PYRED_TARGET_AVX512, fwd_f64_8x1_avx512, double, 8, 1, 64)
PYRED_GRAD_VARIANT(PYRED_TARGET_AVX512, grad_f32_8_avx512, float, 8, 64)
PYRED_GRAD_VARIANT(PYRED_TARGET_AVX512, grad_f64_8_avx512, double, 8, 64)
PYRED_FORWARD_VARIANT(PYRED_TARGET_AVX2, fwd_f32_4x1_avx2, float, 4, 1, 32)
PYRED_FORWARD_VARIANT(PYRED_TARGET_AVX2, fwd_f32_6x1_avx2, float, 6, 1, 32)
PYRED_FORWARD_VARIANT(PYRED_TARGET_AVX2, fwd_f64_2x1_avx2, double, 2, 1, 32)
PYRED_GRAD_VARIANT(PYRED_TARGET_AVX2, grad_f32_6_avx2, float, 6, 32)
PYRED_GRAD_VARIANT(PYRED_TARGET_AVX2, grad_f64_2_avx2, double, 2, 32)
#endif
PYRED_FORWARD_VARIANT(, fwd_f32_2x1_base, float, 2, 1, 16)
PYRED_FORWARD_VARIANT(, fwd_f64_1x1_base, double, 1, 1, 16)
PYRED_GRAD_VARIANT(, grad_f32_2_base, float, 2, 16)
PYRED_GRAD_VARIANT(, grad_f64_1_base, double, 1, 16)

template <typename T>
struct ForwardTile {
  int NC, TT;
  ForwardFn<T> fn;
};

template <typename T>
struct GradTile {
  int Q;
  GradFn<T> fn;
};

// The forward tiles of the running CPU's instruction set (one or two shapes), and its gradient tile.
template <typename T>
std::pair<ForwardTile<T>, ForwardTile<T>> forward_tiles(SimdLevel level) {
#ifdef PYRED_X86_TARGETS
  if constexpr (sizeof(T) == 4) {
    if (level == SimdLevel::Avx512) return {{4, 4, fwd_f32_4x4_avx512}, {8, 2, fwd_f32_8x2_avx512}};
    if (level == SimdLevel::Avx2) return {{4, 1, fwd_f32_4x1_avx2}, {6, 1, fwd_f32_6x1_avx2}};
  } else {
    if (level == SimdLevel::Avx512) return {{4, 2, fwd_f64_4x2_avx512}, {8, 1, fwd_f64_8x1_avx512}};
    if (level == SimdLevel::Avx2) return {{2, 1, fwd_f64_2x1_avx2}, {2, 1, fwd_f64_2x1_avx2}};
  }
#endif
  (void)level;
  if constexpr (sizeof(T) == 4) return {{2, 1, fwd_f32_2x1_base}, {2, 1, fwd_f32_2x1_base}};
  else return {{1, 1, fwd_f64_1x1_base}, {1, 1, fwd_f64_1x1_base}};
}

// Of the two shapes, the one that pads C less (ties: the one with more classes per block).
template <typename T>
ForwardTile<T> forward_tile(int64_t C, SimdLevel level = detect_simd()) {
  const auto [a, b] = forward_tiles<T>(level);
  return round_up(C, a.NC) < round_up(C, b.NC) ? a : b;
}

template <typename T>
GradTile<T> grad_tile(SimdLevel level = detect_simd()) {
#ifdef PYRED_X86_TARGETS
  if constexpr (sizeof(T) == 4) {
    if (level == SimdLevel::Avx512) return {8, grad_f32_8_avx512};
    if (level == SimdLevel::Avx2) return {6, grad_f32_6_avx2};
  } else {
    if (level == SimdLevel::Avx512) return {8, grad_f64_8_avx512};
    if (level == SimdLevel::Avx2) return {2, grad_f64_2_avx2};
  }
#endif
  (void)level;
  if constexpr (sizeof(T) == 4) return {2, grad_f32_2_base};
  else return {1, grad_f64_1_base};
}

// The batch as a features-major buffer whose rows hold a whole number of tiles,
// Bp = B rounded up to `rows`: the caller's own memory when its row padding
// (ldx >= Bp) holds the extra lanes -- read, never stored, as features_major()
// pads with zeros -- else a zero-padded copy (a whole copy of XT per call).
template <typename T>
const T* padded_batch(const T* XT, int64_t B, int64_t ldx, int64_t d, int64_t rows, int64_t* Bp,
                      std::vector<T>* copy) {
  *Bp = round_up(B, rows);
  if (*Bp <= ldx) return XT;
  copy->assign(static_cast<size_t>(d * *Bp), T(0));
  for (int64_t i = 0; i < d; ++i) std::copy(XT + i * ldx, XT + i * ldx + B, copy->data() + i * *Bp);
  return copy->data();
}

// Lists whose indices ascend (pyred's GatheredHeads sorts each head's rows) take
// feature-blocked roads: the features are walked in blocks whose slab of XT
// (kSlabBytes) stays in cache while every head uses it, so XT comes from memory
// about once per pass -- not once per (head, class block) entry, as when each
// head walks its own scattered rows (wide layers: XT is far larger than the cache).
constexpr int64_t kSlabBytes = 128 << 10;

inline bool lists_ascend(const IndexLists& H) {
  for (int64_t k = 0; k < H.num_lists; ++k)
    for (int64_t p = H.offsets[k] + 1; p < H.offsets[k + 1]; ++p)
      if (H.indices[p] < H.indices[p - 1]) return false;
  return true;
}

// For ascending lists: starts[k * (nb + 1) + j] = the first position p of list k
// with indices[p] >= j * F, for j = 0..nb (nb * F >= d, so starts[.. + nb] = offsets[k + 1]).
inline std::vector<int64_t> block_starts(const IndexLists& H, int64_t F, int64_t nb) {
  std::vector<int64_t> starts(static_cast<size_t>(H.num_lists * (nb + 1)));
  for (int64_t k = 0; k < H.num_lists; ++k) {
    int64_t p = H.offsets[k];
    const int64_t pe = H.offsets[k + 1];
    for (int64_t j = 0; j <= nb; ++j) {
      while (p < pe && H.indices[p] < j * F) ++p;
      starts[k * (nb + 1) + j] = p;
    }
  }
  return starts;
}

inline int64_t max_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

// out[k, b, c0 + c] for the rows of batch group g, from a forward task's accumulator tile.
template <typename T>
void store_tile(const T* acc, int TT, int64_t NC, int64_t k, int64_t g, int64_t cb, int64_t B, int64_t C, T* out) {
  const int64_t c0 = cb * NC, nc = std::min<int64_t>(NC, C - c0);
  for (int u = 0; u < TT; ++u) {
    const int64_t b0 = (g * TT + u) * kRows, nb = std::min(kRows, B - b0);
    for (int64_t r = 0; r < nb; ++r)
      for (int64_t c = 0; c < nc; ++c) out[(k * B + b0 + r) * C + c0 + c] = acc[(c * TT + u) * kRows + r];
  }
}

template <typename T>
void forward_impl(const T* XT_in, int64_t B, int64_t ldx, int64_t d, const IndexLists& H, const T* W, int64_t C,
                  T* out) {
  const ForwardTile<T> shape = forward_tile<T>(C);
  const int NC = shape.NC, TT = shape.TT;
  const auto fn = shape.fn;
  const int64_t group = TT * kRows, K = H.num_lists, Cp = round_up(C, NC), nnz = H.nnz;
  std::vector<T> copy, Wp(static_cast<size_t>(nnz * Cp), T(0));
  int64_t Bp;
  const T* XT = padded_batch(XT_in, B, ldx, d, group, &Bp, &copy);
  const int64_t stride = XT == XT_in ? ldx : Bp;
  for (int64_t p = 0; p < nnz; ++p) std::copy(W + p * C, W + (p + 1) * C, Wp.data() + p * Cp);
  const int64_t groups = Bp / group, cblocks = Cp / NC, tile = NC * TT * kRows;
  const int64_t F = std::max<int64_t>(16, kSlabBytes / (group * static_cast<int64_t>(sizeof(T))));
  const int64_t nb = (d + F - 1) / F;
  if (nb < 2 || !lists_ascend(H)) {
    // Batch-group-major: all heads run over one group's slice of XT (d x TT * 16 rows), which fits the
    // cache when it is one block (nb == 1) and is walked in each head's order otherwise.
#pragma omp parallel for schedule(dynamic, 1) collapse(3)
    for (int64_t g = 0; g < groups; ++g)
      for (int64_t k = 0; k < K; ++k)
        for (int64_t cb = 0; cb < cblocks; ++cb) {
          T acc[16 * kRows] = {};  // NC * TT <= 16
          fn(XT, stride, H.indices, H.offsets[k], H.offsets[k + 1], Wp.data(), Cp, g * group, cb * NC, acc);
          store_tile(acc, TT, NC, k, g, cb, B, C, out);
        }
    return;
  }
  // Feature-blocked: a task owns a batch group and a chunk of heads, keeps their accumulator tiles in
  // memory and walks the features once, block by block, every head of the chunk using each block's slab
  // of XT (F features x group rows) while it is in cache. Heads are cut into chunks only as far as the
  // threads need tasks, since each chunk reads its group's slice of XT from memory once.
  const std::vector<int64_t> starts = block_starts(H, F, nb);
  const int64_t chunks = std::min<int64_t>(K, std::max<int64_t>(1, (2 * max_threads() + groups - 1) / groups));
  const int64_t per = (K + chunks - 1) / chunks;
#pragma omp parallel for schedule(dynamic, 1) collapse(2)
  for (int64_t g = 0; g < groups; ++g)
    for (int64_t ch = 0; ch < chunks; ++ch) {
      const int64_t k0 = ch * per, k1 = std::min(K, k0 + per);
      if (k0 >= k1) continue;
      std::vector<T> acc(static_cast<size_t>((k1 - k0) * cblocks * tile), T(0));
      for (int64_t j = 0; j < nb; ++j)
        for (int64_t k = k0; k < k1; ++k) {
          const int64_t pb = starts[k * (nb + 1) + j], pe = starts[k * (nb + 1) + j + 1];
          for (int64_t cb = 0; pb < pe && cb < cblocks; ++cb)
            fn(XT, stride, H.indices, pb, pe, Wp.data(), Cp, g * group, cb * NC,
               acc.data() + ((k - k0) * cblocks + cb) * tile);
        }
      for (int64_t k = k0; k < k1; ++k)
        for (int64_t cb = 0; cb < cblocks; ++cb)
          store_tile(acc.data() + ((k - k0) * cblocks + cb) * tile, TT, NC, k, g, cb, B, C, out);
    }
}

// dW rows p0 .. p0 + nq (nq <= Q) of head k, class block cb, from its padded gradient gp (B, kRows).
template <typename T>
void grad_rows(GradTile<T> tile, const T* XT, int64_t ldx, const IndexLists& H, const T* gp, int64_t B,
               int64_t p0, int64_t nq, int64_t cb, int64_t C, T* dW) {
  const T* x[kGradRows];
  for (int q = 0; q < tile.Q; ++q)  // a short tail repeats its last row; the copy is not written
    x[q] = XT + H.indices[p0 + std::min<int64_t>(q, nq - 1)] * ldx;
  T acc[kGradRows * kRows];
  tile.fn(x, gp, B, acc);
  const int64_t c0 = cb * kRows, nc = std::min(kRows, C - c0);
  for (int64_t q = 0; q < nq; ++q) std::copy(acc + q * kRows, acc + q * kRows + nc, dW + (p0 + q) * C + c0);
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
  const auto tile = grad_tile<T>();
  const int64_t Q = tile.Q;
  // Feature-blocked: a task owns a block of F features (a slab of F rows of XT that stays in cache)
  // and writes the dW rows of every head that falls in it -- when blocks hold enough of a head's rows
  // to fill its tasks (with a long batch a block holds only a few rows per head, and per-head tasks win).
  const int64_t F = kSlabBytes / (B * static_cast<int64_t>(sizeof(T)));
  if (F >= 8 * Q && lists_ascend(H)) {
    const int64_t nb = (d + F - 1) / F;
    const std::vector<int64_t> starts = block_starts(H, F, nb);
#pragma omp parallel for schedule(dynamic, 1) collapse(2)
    for (int64_t j = 0; j < nb; ++j)
      for (int64_t cb = 0; cb < cblocks; ++cb)
        for (int64_t k = 0; k < K; ++k) {
          const int64_t pe = starts[k * (nb + 1) + j + 1];
          for (int64_t p0 = starts[k * (nb + 1) + j]; p0 < pe; p0 += Q)
            grad_rows(tile, XT, ldx, H, GP.data() + (cb * K + k) * B * kRows, B, p0, std::min(Q, pe - p0), cb, C, dW);
        }
    return;
  }
  // A task: up to Q packed rows of one head, which share its gradient.
  struct Task {
    int64_t k, p0, nq;
  };
  std::vector<Task> tasks;
  for (int64_t k = 0; k < K; ++k)
    for (int64_t p = H.offsets[k]; p < H.offsets[k + 1]; p += Q)
      tasks.push_back({k, p, std::min<int64_t>(Q, H.offsets[k + 1] - p)});
  const int64_t n_tasks = static_cast<int64_t>(tasks.size());
#pragma omp parallel for schedule(static) collapse(2)
  for (int64_t t = 0; t < n_tasks; ++t)
    for (int64_t cb = 0; cb < cblocks; ++cb) {
      const Task task = tasks[t];
      grad_rows(tile, XT, ldx, H, GP.data() + (cb * K + task.k) * B * kRows, B, task.p0, task.nq, cb, C, dW);
    }
}

}  // namespace

HeadsTile heads_tile_cpu(int level, DType dtype, int64_t C) {
  const auto lv = static_cast<SimdLevel>(level);
  const int vb = lv == SimdLevel::Avx512 ? 64 : lv == SimdLevel::Avx2 ? 32 : 16;
#ifndef PYRED_X86_TARGETS
  if (lv != SimdLevel::Baseline) return {0, 0, 0, 0};  // no such kernels in this build
#endif
  if (dtype == DType::Float32) {
    const auto f = forward_tile<float>(C, lv);
    return {f.NC, f.TT, grad_tile<float>(lv).Q, vb};
  }
  const auto f = forward_tile<double>(C, lv);
  return {f.NC, f.TT, grad_tile<double>(lv).Q, vb};
}

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
