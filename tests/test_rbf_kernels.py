"""The native RBF statistics (pyred/ops/rbf.py, csrc/cpu/rbf.cpp) against float64 NumPy."""

import numpy as np
import pytest
import torch

import pyred
from pyred import _native
from pyred.ops import rbf

C = _native.cpu_module()
pytestmark = pytest.mark.skipif(C is None or not hasattr(C, "rbf_upper_sums"), reason="needs pyred._C")


def gram(rng, n, d=16, ties=False):
    X = rng.normal(size=(n, d))
    if ties:
        X = np.round(X)  # many equal distances, and equal samples (zero distances off the diagonal)
    return X @ X.T


def upper_distances(K):
    n = K.shape[0]
    D = np.maximum(np.diag(K)[:, None] + np.diag(K)[None, :] - 2 * K, 0.0)
    return D, D[np.triu_indices(n, 1)]


def kernel_exp(x: float, lane: int, n: int = 16) -> float:
    """exp(x), x <= 0, as the sums kernel computes it: an n x n Gram whose only finite distance above the
    diagonal is D_0,lane = -x (zero diagonal, K_ab = -D_ab / 2; the others so far apart that g = 0), so
    sum g = exp(-D) -- computed in the kernel's vectorised loop, in the lane the pair falls in."""
    K = np.full((n, n), -1e308)
    np.fill_diagonal(K, 0.0)
    K[0, lane] = K[lane, 0] = x / 2
    return rbf.rbf_upper_sums(torch.tensor(K), 1.0)[1]


def test_exp_is_within_two_ulp_of_numpy():
    xs = np.concatenate([-np.logspace(-300, 2.85, 2000), np.linspace(-708.0, 0.0, 2000), [0.0, -0.0]])
    got = np.array([kernel_exp(float(x), 1 + i % 15) for i, x in enumerate(xs)])
    want = np.exp(xs)
    assert np.all(np.abs(got - want) <= 2 * np.spacing(want))
    # below -708 exp is < 3.3e-308: 0; NaN stays NaN
    assert [kernel_exp(x, 3) for x in (-708.5, -745.2, -1e6, -np.inf)] == [0.0] * 4
    assert np.isnan(kernel_exp(np.nan, 5))


@pytest.mark.parametrize("n", [2, 3, 40, 256, 257, 700])  # n(n-1)/2 > 4 x 8192 from n = 257: the bracket road
@pytest.mark.parametrize("ties", [False, True])
def test_upper_distance_ranks_are_exact(rng, n, ties):
    K = gram(rng, n, ties=ties)
    _, U = upper_distances(K)
    srt = np.sort(U)
    m = U.size
    ranks = sorted({1, max(1, m // 3), m // 2 or 1, m // 2 + 1 if m > 1 else 1, m})
    got = rbf.upper_distance_ranks(torch.tensor(K), ranks)
    assert got == [srt[r - 1] for r in ranks]
    # a bracket that misses (tiny sample, no margin) falls back to selecting from every value
    for samples, margin in ((16, 0.0), (64, 0.0), (4096, 0.5)):
        assert C.upper_distance_ranks(K.ctypes.data, K.size, n, ranks, samples, margin) == [srt[r - 1] for r in ranks]


def test_upper_distance_ranks_read_only_the_upper_triangle_and_flag_nan(rng):
    K = gram(rng, 400)
    _, U = upper_distances(K)
    want = np.sort(U)[[0, U.size // 2]].tolist()
    junk = K.copy()
    junk[np.tril_indices(400, -1)] = 1e300
    assert rbf.upper_distance_ranks(torch.tensor(junk), [1, U.size // 2 + 1]) == want
    for where in ((3, 200), (7, 7), (0, 80)):  # off the diagonal, on it, in the first sampled run
        bad = K.copy()
        bad[where] = np.nan
        assert all(np.isnan(rbf.upper_distance_ranks(torch.tensor(bad), [1, U.size // 2])))


@pytest.mark.parametrize("n", [1, 2, 5, 64, 300, 1001])
def test_rbf_upper_sums_match_numpy(rng, n):
    K = gram(rng, n)
    D, _ = upper_distances(K)
    M = rng.normal(size=(n, n))
    scale = 0.37 / max(np.median(D), 1e-12)
    G = np.exp(-scale * D)
    np.fill_diagonal(G, 0.0)
    iu = np.triu_indices(n, 1)
    sm, sg, sgg, rows = rbf.rbf_upper_sums(torch.tensor(K), scale, torch.tensor(M))
    np.testing.assert_allclose([sm, sg, sgg], [(G * M)[iu].sum(), G[iu].sum(), (G * G)[iu].sum()],
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(rows.numpy(), G.sum(1), rtol=1e-12, atol=1e-12)
    again = rbf.rbf_upper_sums(torch.tensor(K), scale, torch.tensor(M))
    assert (again[0], again[1], again[2]) == (sm, sg, sgg) and torch.equal(again[3], rows)  # deterministic
    no_m = rbf.rbf_upper_sums(torch.tensor(K), scale)
    assert no_m[0] == 0.0 and (no_m[1], no_m[2]) == (sg, sgg)


def test_bad_arguments_name_what_was_expected(rng):
    K = torch.tensor(gram(rng, 10))
    with pytest.raises(ValueError, match=r"ranks: expected ranks in \[1, 45\] for n = 10, got 46"):
        rbf.upper_distance_ranks(K, [46])
    with pytest.raises(ValueError, match="K: expected an \\(n, n\\) float64 CPU tensor"):
        rbf.upper_distance_ranks(K.float(), [1])
    with pytest.raises(ValueError, match="M: expected an \\(n, n\\) float64 CPU tensor"):
        rbf.rbf_upper_sums(K, 1.0, K[:5])
    with pytest.raises(ValueError, match="scale: expected a finite value >= 0"):
        rbf.rbf_upper_sums(K, -1.0)
    with pytest.raises(ValueError, match="K: expected 100 elements, got 99"):
        C.rbf_upper_sums(K.data_ptr(), 99, 10, 1.0, 0, 0, K.data_ptr(), 10)


@pytest.mark.parametrize("debiased", [False, True])
def test_native_and_torch_rbf_roads_agree(rng, monkeypatch, debiased):
    """At n = 400 (the bracket road of the median), with chains and loose subsets, against the full
    layer, another layer and another kernel's Gram."""
    n, d = 400, 60
    X = rng.normal(size=(n, 8)) @ rng.normal(size=(8, d)) + rng.normal(size=(n, d)) + 1.0
    S = pyred.Subsets.concat([pyred.draw_subsets(d, [0.02, 0.2, 0.6, 1.0], [1, 2]),
                              pyred.Subsets.from_lists([[], [3], rng.permutation(d)[:7]], d=d)])
    Y = np.tanh(X[:, :5])
    cases = [dict(), dict(target=torch.tensor(Y)), dict(target_gram=torch.tensor(Y @ Y.T))]
    native = [pyred.subset_cka(torch.tensor(X), S, kernel="rbf", debiased=debiased, **c) for c in cases]
    monkeypatch.setattr(rbf, "available", lambda K: False)
    for case, got in zip(cases, native):
        want = pyred.subset_cka(torch.tensor(X), S, kernel="rbf", debiased=debiased, **case)
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 300])
def test_rbf_median_sums_is_numpys_median_then_the_sums(rng, n):
    K = gram(rng, n, ties=n == 300)
    D, _ = upper_distances(K)
    M = rng.normal(size=(n, n))
    med, sm, sg, sgg, rows = rbf.rbf_median_sums(torch.tensor(K), 0.8, torch.tensor(M))
    assert med == np.median(D)
    if med > 0:
        want = rbf.rbf_upper_sums(torch.tensor(K), 1.0 / (2 * 0.8 ** 2 * med), torch.tensor(M))
        assert (sm, sg, sgg) == want[:3] and torch.equal(rows, want[3])
    else:  # no variance: nothing to sum
        assert (sm, sg, sgg) == (0.0, 0.0, 0.0) and not rows.any()
    with pytest.raises(ValueError, match="sigma: expected a finite value > 0"):
        C.rbf_median_sums(K.ctypes.data, K.size, n, 0.0, 0, 0, rows.data_ptr(), n)
