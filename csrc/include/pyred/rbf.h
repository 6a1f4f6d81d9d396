// Gaussian (RBF) kernel statistics of one n x n linear Gram, for RBF-kernel CKA
// without forming the kernel matrix. For a < b the squared distance is
//   D_ab = max(0, K_aa + K_bb - 2 K_ab)
// read from the entries of K on and above the diagonal only (K: row-major
// float64, n x n; its lower triangle is never read).
#pragma once

#include <cstdint>

#include "pyred/reductions.h"

namespace pyred {

// out[i] = the ranks[i]-th smallest (1-based) of the n(n-1)/2 values D_ab, a < b.
//   ranks: num_ranks entries in [1, n(n-1)/2]; out: num_ranks float64.
// Exact: a sample of the distances brackets the wanted ranks, one pass keeps the
// values inside the bracket, and a selection among those gives the result (the
// whole set is selected from when the bracket misses). NaN when K holds a NaN.
// samples: pairs drawn for the bracket (8192; the whole set is selected from when
// n(n-1)/2 <= 4 samples); margin_sd: the bracket's reach beyond each rank in standard
// deviations of a sample rank (6: a miss is a 1e-9 event).
Status upper_distance_ranks_cpu(const double* K, int64_t n, const int64_t* ranks, int64_t num_ranks, double* out,
                                int64_t samples = 8192, double margin_sd = 6.0);

// With g_ab = exp(-scale * D_ab) for a < b (scale >= 0):
//   sums[0] = sum_{a<b} g_ab M_ab   (M: n x n float64, upper triangle read; 0 when M is null)
//   sums[1] = sum_{a<b} g_ab
//   sums[2] = sum_{a<b} g_ab^2
//   rows[a] = sum_{b != a} g_ab     (n float64)
// Deterministic: partial sums over fixed row ranges, added in a fixed order.
Status rbf_upper_sums_cpu(const double* K, int64_t n, double scale, const double* M, double* sums, double* rows);

// Both in one: *median = the median of all n^2 entries of the distance matrix (its zero diagonal
// included; the mean of the two middle entries for an even count, as numpy.median), then, when it is
// > 0, rbf_upper_sums_cpu with scale = 1 / (2 sigma^2 median) -- Kornblith et al.'s bandwidth rule.
// Without variance (median 0) or with a NaN, sums and rows are 0.
Status rbf_median_sums_cpu(const double* K, int64_t n, double sigma, const double* M, double* median, double* sums,
                           double* rows);

}  // namespace pyred
