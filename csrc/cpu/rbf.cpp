// C++17 (+ OpenMP) RBF kernel statistics. See include/pyred/rbf.h.
#include "pyred/rbf.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "simd.h"

namespace pyred {

namespace {

// D_ab from K_aa, K_bb and K_ab, clamped at 0 (rounding can take it below); NaN stays NaN (std::max(v, 0.0)
// is v < 0 ? 0 : v). Branch-free, so the row loops that use it vectorise.
PYRED_INLINE double distance(double kaa, double kbb, double kab) { return std::max(kaa + kbb - 2.0 * kab, 0.0); }

// Row ranges [bounds[c], bounds[c+1]) of about equal upper-triangle work (row a holds n - 1 - a
// pairs); a fixed split, so the partial sums are added in the same order on every run.
std::vector<int64_t> row_chunks(int64_t n, int64_t chunks) {
  std::vector<int64_t> bounds{0};
  const double total = 0.5 * static_cast<double>(n) * static_cast<double>(n - 1);
  double acc = 0.0;
  int64_t c = 1;
  for (int64_t a = 0; a < n; ++a) {
    acc += static_cast<double>(n - 1 - a);
    if (c < chunks && acc >= total * static_cast<double>(c) / static_cast<double>(chunks)) {
      bounds.push_back(a + 1);
      ++c;
    }
  }
  if (bounds.back() != n) bounds.push_back(n);
  return bounds;
}

// Every upper distance (the fallback, and the road for small n).
std::vector<double> all_distances(const double* K, const double* diag, int64_t n) {
  std::vector<double> v;
  v.reserve(static_cast<size_t>(n * (n - 1) / 2));
  for (int64_t a = 0; a < n; ++a)
    for (int64_t b = a + 1; b < n; ++b) v.push_back(distance(diag[a], diag[b], K[a * n + b]));
  return v;
}

// The ranks-th smallest values (ranks 1-based, within v's size, ascending after offset), selecting in
// v in place: each rank from the part right of the previous one (the next rank up: its minimum).
void select_ranks(std::vector<double>& v, const int64_t* ranks, int64_t num_ranks, int64_t offset, double* out) {
  std::vector<int64_t> order(static_cast<size_t>(num_ranks));
  for (int64_t i = 0; i < num_ranks; ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return ranks[a] < ranks[b]; });
  int64_t done = -1;  // v[0 .. done] hold the smallest done + 1 values, in order at done
  for (int64_t i : order) {
    const int64_t p = ranks[i] - offset - 1;
    if (p == done) {
    } else if (p == done + 1 && done >= 0) {
      auto it = std::min_element(v.begin() + p, v.end());
      std::iter_swap(v.begin() + p, it);
    } else {
      std::nth_element(v.begin() + (done + 1), v.begin() + p, v.end());
    }
    out[i] = v[p];
    done = p;
  }
}

// exp(x) for x <= 0 in plain arithmetic that vectorises: x = k ln2 + r with |r| <= ln2 / 2, a
// degree-13 Taylor polynomial for exp(r) (truncation below 1e-17), 2^k from the exponent bits.
// Within 2 ulp of std::exp (tested); 0 below -708 (where exp(x) < 3.3e-308).
PYRED_INLINE double exp_nonpositive(double x) {
  const double xc = std::max(x, -708.0);  // (x < -708 ? -708 : x): NaN stays NaN
  const double magic = 6755399441055744.0;  // 1.5 * 2^52: adding it rounds to an integer
  const double t = xc * 1.4426950408889634 + magic;
  const double k = t - magic;
  double r = xc - k * 6.93147180369123816490e-01;  // ln2, high part (exact products for |k| < 2^11)
  r = r - k * 1.90821492927058770002e-10;          // ln2, low part
  double p = 1.0 / 6227020800.0;                   // 1/13!
  p = p * r + 1.0 / 479001600.0;
  p = p * r + 1.0 / 39916800.0;
  p = p * r + 1.0 / 3628800.0;
  p = p * r + 1.0 / 362880.0;
  p = p * r + 1.0 / 40320.0;
  p = p * r + 1.0 / 5040.0;
  p = p * r + 1.0 / 720.0;
  p = p * r + 1.0 / 120.0;
  p = p * r + 1.0 / 24.0;
  p = p * r + 1.0 / 6.0;
  p = p * r + 0.5;
  p = p * r + 1.0;
  p = p * r + 1.0;
  int64_t tb, mb;
  std::memcpy(&tb, &t, sizeof tb);
  std::memcpy(&mb, &magic, sizeof mb);
  const int64_t bits = (tb - mb + 1023) << 52;
  double scale;
  std::memcpy(&scale, &bits, sizeof scale);
  const double e = p * scale;
  return e * static_cast<double>(x >= -708.0);  // branch-free, so the loops vectorise; NaN stays NaN
}

// One row's part of the sums: g_ab for b in (a, n); with kWithM also sum g M_ab.
template <bool kWithM>
PYRED_INLINE void row_sums_body(const double* K, const double* diag, int64_t n, int64_t a, double scale,
                                const double* M, double* rows, double* s) {
  const double* Ka = K + a * n;
  const double* Ma = kWithM ? M + a * n : nullptr;
  const double kaa = diag[a];
  double sm = 0.0, sg = 0.0, sgg = 0.0;
#pragma omp simd reduction(+ : sm, sg, sgg)
  for (int64_t b = a + 1; b < n; ++b) {
    const double g = exp_nonpositive(-scale * distance(kaa, diag[b], Ka[b]));
    if constexpr (kWithM) sm += g * Ma[b];
    sg += g;
    sgg += g * g;
    rows[b] += g;
  }
  s[0] += sm;
  s[1] += sg;
  s[2] += sgg;
  rows[a] += sg;
}

PYRED_SIMD_CLONES void row_sums(const double* K, const double* diag, int64_t n, int64_t a, double scale,
                                const double* M, double* rows, double* s) {
  if (M != nullptr)
    row_sums_body<true>(K, diag, n, a, scale, M, rows, s);
  else
    row_sums_body<false>(K, diag, n, a, scale, M, rows, s);
}

// Over rows [a0, a1): counts the distances below lo and the NaNs, and appends those in [lo, hi] to
// keep. Branch-free: about half the values fall below lo at a median, so a branch on it would
// mispredict half the time (a vectorised counting loop followed by a branchy keeping loop is slower
// too: it reads every value twice).
PYRED_SIMD_CLONES void count_row_ranges(const double* K, const double* diag, int64_t n, int64_t a0, int64_t a1,
                                        double lo, double hi, std::vector<double>& keep, int64_t& below,
                                        int64_t& nans) {
  std::vector<double> row(static_cast<size_t>(n));
  int64_t under = 0, bad = 0;
  for (int64_t a = a0; a < a1; ++a) {
    const double* Ka = K + a * n;
    const double daa = diag[a];
    int64_t kept = 0;
    for (int64_t b = a + 1; b < n; ++b) {
      const double v = distance(daa, diag[b], Ka[b]);
      under += v < lo;
      bad += v != v;
      row[kept] = v;
      kept += (v >= lo) & (v <= hi);
    }
    keep.insert(keep.end(), row.begin(), row.begin() + kept);
  }
  below = under;
  nans = bad;
}

}  // namespace

Status upper_distance_ranks_cpu(const double* K, int64_t n, const int64_t* ranks, int64_t num_ranks, double* out,
                                int64_t samples, double margin_sd) {
  const int64_t m = n * (n - 1) / 2;
  for (int64_t i = 0; i < num_ranks; ++i)
    if (ranks[i] < 1 || ranks[i] > m)
      return Status::Error("ranks: " + std::to_string(ranks[i]) + " is outside [1, " + std::to_string(m) + "]");
  if (num_ranks == 0) return Status::Ok();
  const double nan = std::numeric_limits<double>::quiet_NaN();
  std::vector<double> diag(static_cast<size_t>(n));
  for (int64_t a = 0; a < n; ++a) diag[a] = K[a * n + a];
  for (int64_t a = 0; a < n; ++a)
    if (!std::isfinite(diag[a])) {
      std::fill(out, out + num_ranks, nan);
      return Status::Ok();
    }
  const int64_t lo_rank = *std::min_element(ranks, ranks + num_ranks);
  const int64_t hi_rank = *std::max_element(ranks, ranks + num_ranks);
  if (samples < 1 || m <= 4 * samples) {
    std::vector<double> v = all_distances(K, diag.data(), n);
    if (std::any_of(v.begin(), v.end(), [](double x) { return x != x; })) {
      std::fill(out, out + num_ranks, nan);
      return Status::Ok();
    }
    select_ranks(v, ranks, num_ranks, 0, out);
    return Status::Ok();
  }
  // A systematic sample of the pairs -- runs of 16 neighbours (one cache line miss per run, where
  // scattered pairs cost one each), the runs evenly spaced in row order --
  // brackets the wanted ranks: the sample rank of a value of rank r has standard deviation about
  // sqrt(samples) / 2, and the bracket reaches margin_sd of those beyond each wanted rank. A miss
  // costs time, not exactness: the ranks are then selected from every value.
  const int64_t run = 16;
  const int64_t runs = std::max<int64_t>(1, samples / run);
  std::vector<double> sample;
  sample.reserve(static_cast<size_t>(runs * run));
  {
    const double step = static_cast<double>(m - run) / static_cast<double>(runs);
    int64_t a = 0, row_start = 0;  // row_start: flat index of pair (a, a + 1)
    for (int64_t i = 0; i < runs; ++i) {
      int64_t p = static_cast<int64_t>((static_cast<double>(i) + 0.5) * step);
      for (int64_t j = 0; j < run; ++j, ++p) {
        while (p >= row_start + (n - 1 - a)) row_start += n - 1 - a++;
        const int64_t b = a + 1 + (p - row_start);
        sample.push_back(distance(diag[a], diag[b], K[a * n + b]));
      }
    }
  }
  samples = static_cast<int64_t>(sample.size());
  if (std::any_of(sample.begin(), sample.end(), [](double x) { return x != x; })) {  // (no selection over NaN)
    std::fill(out, out + num_ranks, nan);
    return Status::Ok();
  }
  const double margin = margin_sd * 0.5 * std::sqrt(static_cast<double>(samples));
  const double inf = std::numeric_limits<double>::infinity();
  const double frac = static_cast<double>(samples) / static_cast<double>(m);
  const double lo_pos = std::floor(static_cast<double>(lo_rank - 1) * frac - margin);
  const double hi_pos = std::ceil(static_cast<double>(hi_rank) * frac + margin);
  double lo = -inf, hi = inf;
  if (lo_pos >= 0.0 || hi_pos < static_cast<double>(samples)) {
    int64_t pos[2] = {static_cast<int64_t>(std::max(lo_pos, 0.0)) + 1,
                      static_cast<int64_t>(std::min(hi_pos, static_cast<double>(samples - 1))) + 1};
    double val[2];
    select_ranks(sample, pos, 2, 0, val);
    if (lo_pos >= 0.0) lo = val[0];
    if (hi_pos < static_cast<double>(samples)) hi = val[1];
  }

  const std::vector<int64_t> bounds = row_chunks(n, 64);
  const int64_t chunks = static_cast<int64_t>(bounds.size()) - 1;
  std::vector<std::vector<double>> kept(chunks);
  std::vector<int64_t> below(chunks, 0), nans(chunks, 0);
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t c = 0; c < chunks; ++c) {
    count_row_ranges(K, diag.data(), n, bounds[c], bounds[c + 1], lo, hi, kept[c], below[c], nans[c]);
  }
  int64_t under = 0, bad = 0;
  size_t total = 0;
  for (int64_t c = 0; c < chunks; ++c) {
    under += below[c];
    bad += nans[c];
    total += kept[c].size();
  }
  if (bad > 0) {
    std::fill(out, out + num_ranks, nan);
    return Status::Ok();
  }
  if (lo_rank <= under || hi_rank > under + static_cast<int64_t>(total)) {  // the bracket missed: select from all
    std::vector<double> v = all_distances(K, diag.data(), n);
    select_ranks(v, ranks, num_ranks, 0, out);
    return Status::Ok();
  }
  std::vector<double> v;
  v.reserve(total);
  for (auto& keep : kept) v.insert(v.end(), keep.begin(), keep.end());
  select_ranks(v, ranks, num_ranks, under, out);
  return Status::Ok();
}

Status rbf_median_sums_cpu(const double* K, int64_t n, double sigma, const double* M, double* median, double* sums,
                           double* rows) {
  if (!(sigma > 0.0) || !std::isfinite(sigma))
    return Status::Error("sigma: expected a finite value > 0, got " + std::to_string(sigma));
  // Sorted, the n^2 entries are the n zeros of the diagonal, then every upper value twice: rank
  // r > n of the whole is the ceil((r - n) / 2)-th upper value (NumPy's median: the mean of the two
  // middle entries for an even count).
  const int64_t m = n * n;
  const int64_t whole[2] = {m % 2 ? m / 2 + 1 : m / 2, m / 2 + 1};
  const int64_t count = m % 2 ? 1 : 2;
  int64_t at[2], wanted[2];
  int64_t num = 0;
  for (int64_t i = 0; i < count; ++i) {
    at[i] = (whole[i] - n + 1) / 2;  // <= 0: a diagonal zero
    if (at[i] > 0 && (num == 0 || wanted[num - 1] != at[i])) wanted[num++] = at[i];
  }
  double got[2] = {0.0, 0.0};
  if (num > 0) {
    const Status st = upper_distance_ranks_cpu(K, n, wanted, num, got);
    if (!st.ok) return st;
  }
  double total = 0.0;
  for (int64_t i = 0; i < count; ++i) {
    double v = 0.0;
    for (int64_t j = 0; j < num; ++j)
      if (at[i] == wanted[j]) v = got[j];
    total += v;
  }
  *median = total / static_cast<double>(count);
  if (!(*median > 0.0)) {  // no variance (or NaN): no kernel to sum
    sums[0] = sums[1] = sums[2] = 0.0;
    std::fill(rows, rows + n, 0.0);
    return Status::Ok();
  }
  return rbf_upper_sums_cpu(K, n, 1.0 / (2.0 * sigma * sigma * *median), M, sums, rows);
}

Status rbf_upper_sums_cpu(const double* K, int64_t n, double scale, const double* M, double* sums, double* rows) {
  if (!(scale >= 0.0) || !std::isfinite(scale))
    return Status::Error("scale: expected a finite value >= 0, got " + std::to_string(scale));
  const std::vector<int64_t> bounds = row_chunks(n, 64);
  const int64_t chunks = static_cast<int64_t>(bounds.size()) - 1;
  std::vector<double> partial(static_cast<size_t>(chunks) * 3, 0.0);
  std::vector<double> part_rows(static_cast<size_t>(chunks) * static_cast<size_t>(n), 0.0);
  std::vector<double> diag(static_cast<size_t>(n));
  for (int64_t a = 0; a < n; ++a) diag[a] = K[a * n + a];  // contiguous, so the row loops vectorise
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t c = 0; c < chunks; ++c) {
    double* s = partial.data() + 3 * c;
    double* r = part_rows.data() + c * n;
    for (int64_t a = bounds[c]; a < bounds[c + 1]; ++a) row_sums(K, diag.data(), n, a, scale, M, r, s);
  }
  sums[0] = sums[1] = sums[2] = 0.0;
  std::fill(rows, rows + n, 0.0);
  for (int64_t c = 0; c < chunks; ++c) {
    for (int j = 0; j < 3; ++j) sums[j] += partial[3 * c + j];
    const double* r = part_rows.data() + c * n;
    for (int64_t a = 0; a < n; ++a) rows[a] += r[a];
  }
  return Status::Ok();
}

}  // namespace pyred
