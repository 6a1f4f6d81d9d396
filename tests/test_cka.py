import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import pyred
from helpers import references as R
from helpers.devices import DEVICES


def features(rng, n, d, mean=2.0):
    """Correlated, non-centred features (like post-ReLU activations)."""
    mix = rng.normal(size=(d, d)) / np.sqrt(d)
    return rng.normal(size=(n, d)) @ (np.eye(d) + mix) + mean * rng.random(d)


def random_lists(rng, d, K):
    sizes = rng.integers(1, d + 1, size=K)
    sizes[:3] = [0, 1, d][: min(3, K)]
    lists = [rng.permutation(d)[:k] for k in sizes]
    return lists + [lists[-1]]  # a duplicate subset


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("debiased", [False, True])
@pytest.mark.parametrize("n, d, K", [(6, 3, 4), (40, 15, 8), (200, 64, 12)])
def test_subset_cka_matches_gram_reference(rng, device, debiased, n, d, K):
    X = features(rng, n, d)
    lists = random_lists(rng, d, K)
    got = pyred.subset_cka(torch.tensor(X, device=device), lists, debiased=debiased)
    assert got.dtype == torch.float64 and got.device.type == device and got.shape == (len(lists),)
    np.testing.assert_allclose(got.cpu().numpy(), R.subset_cka(X, lists, debiased=debiased), rtol=1e-9, atol=1e-11)
    assert got[0] == 0.0  # the empty subset
    if not debiased:
        assert abs(float(got[2]) - 1.0) < 1e-12  # the full layer


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("debiased", [False, True])
def test_subset_cka_against_another_layer(rng, device, debiased):
    n, d, e = 80, 20, 11
    X = features(rng, n, d)
    Y = np.tanh(X[:, :e] @ rng.normal(size=(e, e))) + 0.3 * rng.normal(size=(n, e)) + 5
    lists = random_lists(rng, d, 9)
    tx, ty = torch.tensor(X, device=device), torch.tensor(Y, device=device)
    got = pyred.subset_cka(tx, lists, target=ty, debiased=debiased)
    np.testing.assert_allclose(got.cpu().numpy(), R.subset_cka(X, lists, Y, debiased), rtol=1e-9, atol=1e-11)
    assert pyred.linear_cka(tx, ty, debiased=debiased) == pytest.approx(R.cka(X, Y, debiased), rel=1e-9)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("debiased", [False, True])
def test_subset_pair_cka(rng, device, debiased):
    n, d = 60, 30
    X = features(rng, n, d)
    S = pyred.draw_subsets(d, [0.1, 0.3, 0.5, 0.9], [1, 2, 3])
    T = pyred.draw_subsets(d, [0.1, 0.3, 0.5, 0.9], [4, 5, 6])
    got = pyred.subset_pair_cka(torch.tensor(X, device=device), S, T, debiased=debiased)
    want = R.pair_cka(X, [s.numpy() for s in S], [t.numpy() for t in T], debiased)
    np.testing.assert_allclose(got.cpu().numpy(), want, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("device", DEVICES)
def test_float32_input_meets_the_1e5_rule(rng, device):
    # float32 products inside chunks, float64 accumulation across them: float64-reference accuracy to 1e-5.
    n, d = 3000, 256
    X = features(rng, n, d, mean=5.0)  # large means: centring must happen before the products
    S = pyred.draw_subsets(d, [0.01, 0.05, 0.1, 0.3, 0.9, 1.0], [1, 2])
    got = pyred.subset_cka(torch.tensor(X, dtype=torch.float32, device=device), S, chunk_size=700)
    X32 = X.astype(np.float32).astype(np.float64)
    lists = [s.numpy() for s in S]
    Xc = X32 - X32.mean(0)
    want = np.array([np.linalg.norm(Xc[:, s].T @ Xc) ** 2 /
                     (np.linalg.norm(Xc[:, s].T @ Xc[:, s]) * np.linalg.norm(Xc.T @ Xc)) for s in lists])
    np.testing.assert_allclose(got.cpu().numpy(), want, rtol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("debiased", [False, True])
def test_streaming_equals_in_memory_for_any_chunking(rng, device, debiased):
    n, d, e = 97, 13, 6
    X, Y = features(rng, n, d), features(rng, n, e, mean=-3)
    lists = random_lists(rng, d, 7)
    full = pyred.subset_cka(torch.tensor(X, device=device), lists, target=torch.tensor(Y, device=device),
                            debiased=debiased).cpu().numpy()
    for cuts in ([n], [1, 5, 91], [50, 47], [3] * 32 + [1]):
        gs = pyred.GramStats(d, e, debiased=debiased)
        start = 0
        for c in cuts:
            gs.update(torch.tensor(X[start:start + c], device=device), torch.tensor(Y[start:start + c], device=device))
            start += c
        assert gs.n == n
        np.testing.assert_allclose(gs.subset_cka(lists).cpu().numpy(), full, rtol=1e-10, atol=1e-12)
    self_stats = pyred.GramStats(d, debiased=debiased, shift=np.zeros(d))
    for s in range(0, n, 10):
        self_stats.update(X[s:s + 10])
    np.testing.assert_allclose(self_stats.subset_cka(lists), R.subset_cka(X, lists, debiased=debiased),
                               rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(self_stats.subset_pair_cka(lists, lists[::-1]),
                               R.pair_cka(X, lists, lists[::-1], debiased), rtol=1e-8, atol=1e-10)


def test_in_memory_chunk_size_does_not_change_results(rng):
    X = features(rng, 500, 40)
    S = pyred.draw_subsets(40, [0.1, 0.5, 0.9], [1, 2])
    ref = pyred.subset_cka(X, S, debiased=True)
    for cs in (1, 7, 128, 10_000):
        np.testing.assert_allclose(pyred.subset_cka(X, S, debiased=True, chunk_size=cs), ref, rtol=1e-10)


def test_degenerate_inputs_get_defined_answers(rng):
    n, d = 30, 8
    X = features(rng, n, d)
    X[:, 3] = 7.0  # a constant feature
    X[:, 5] = 0.0
    lists = [[3], [3, 5], [], [0, 3]]
    for deb in (False, True):
        got = pyred.subset_cka(X, lists, debiased=deb)
        assert np.all(np.isfinite(got))
        assert got[0] == 0.0 and got[1] == 0.0 and got[2] == 0.0
        np.testing.assert_allclose(got[3], R.cka(X[:, [0]], X, deb), rtol=1e-9)  # constant columns add nothing
    const = np.ones((10, 4))
    assert pyred.linear_cka(const, rng.normal(size=(10, 3))) == 0.0
    assert pyred.subset_pair_cka(const, [[0]], [[1]]).tolist() == [0.0]


@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_result_kind_follows_input(rng, kind):
    X = features(rng, 20, 5)
    Xin = X if kind == "numpy" else torch.tensor(X)
    out = pyred.subset_cka(Xin, [[0, 1]])
    assert isinstance(out, np.ndarray if kind == "numpy" else torch.Tensor)
    assert isinstance(pyred.linear_cka(Xin, Xin), float)


def test_float16_and_noncontiguous_inputs(rng):
    X = features(rng, 64, 24)
    half = torch.tensor(X, dtype=torch.float16)
    got = pyred.subset_cka(half, [[0, 1, 2], list(range(24))])
    np.testing.assert_allclose(got.numpy(), R.subset_cka(half.double().numpy(), [[0, 1, 2], list(range(24))]),
                               rtol=1e-5)
    wide = torch.tensor(np.concatenate([X, X], axis=1))[:, ::2]
    assert not wide.is_contiguous()
    np.testing.assert_allclose(pyred.subset_cka(wide, [[1, 4]]).numpy(), R.subset_cka(wide.numpy(), [[1, 4]]),
                               rtol=1e-9)


def test_bad_input_errors(rng):
    X = features(rng, 10, 4)
    bad = X.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match=r"X: contains a non-finite value \(nan\) at \(row, column\) = \(3, 2\)"):
        pyred.subset_cka(bad, [[0]])
    bad[3, 2] = np.inf
    with pytest.raises(ValueError, match=r"target: contains a non-finite value \(inf\)"):
        pyred.subset_cka(X, [[0]], target=bad)
    with pytest.raises(ValueError, match="target: expected 10 samples"):
        pyred.subset_cka(X, [[0]], target=X[:5])
    with pytest.raises(ValueError, match="Y: expected 10 samples"):
        pyred.linear_cka(X, X[:9])
    with pytest.raises(ValueError, match=r"X: expected a 2-D \(samples, features\) array, got shape \(10,\)"):
        pyred.subset_cka(X[:, 0], [[0]])
    with pytest.raises(ValueError, match="X: expected a 2-D"):
        pyred.linear_cka(X[None], X)
    with pytest.raises(TypeError, match="X: expected a floating-point array"):
        pyred.subset_cka(np.arange(40).reshape(10, 4), [[0]])
    with pytest.raises(IndexError, match="index 4 is out of range"):
        pyred.subset_cka(X, [[0, 4]])
    with pytest.raises(ValueError, match="debiased CKA needs at least 4 samples, got n=3"):
        pyred.subset_cka(X[:3], [[0]], debiased=True)
    with pytest.raises(ValueError, match="at least 2 samples"):
        pyred.linear_cka(X[:1], X[:1])
    with pytest.raises(ValueError, match="subsets_b: expected 1 subsets"):
        pyred.subset_pair_cka(X, [[0]], [[1], [2]])
    with pytest.raises(ValueError, match="chunk_size"):
        pyred.subset_cka(X, [[0]], chunk_size=0)
    gs = pyred.GramStats(4)
    with pytest.raises(ValueError, match="no samples yet"):
        gs.subset_cka([[0]])
    with pytest.raises(ValueError, match="x: expected 4 features per sample, got 3"):
        gs.update(X[:, :3])
    with pytest.raises(ValueError, match="y: this GramStats has no target"):
        gs.update(X, X)
    with pytest.raises(ValueError, match="y: expected shape"):
        pyred.GramStats(4, 2).update(X, X)
    gs3 = pyred.GramStats(4, debiased=True).update(X[:3])
    with pytest.raises(ValueError, match="at least 4 samples"):
        gs3.subset_cka([[0]])
    with pytest.raises(ValueError, match="dim: expected an integer"):
        pyred.GramStats(0)


# -- properties (hypothesis) ---------------------------------------------------------------
shapes = st.tuples(st.integers(5, 40), st.integers(1, 12))


@settings(max_examples=40, deadline=None)
@given(shape=shapes, seed=st.integers(0, 2**31 - 1), debiased=st.booleans())
def test_properties(shape, seed, debiased):
    n, d = shape
    rng = np.random.default_rng(seed)
    X = features(rng, n, d)
    full = np.arange(d)
    # CKA(X, X) = 1 (the debiased estimate of a self-HSIC may come out <= 0 for tiny n: then 0 by definition)
    self_cka = pyred.linear_cka(X, X, debiased=debiased)
    assert self_cka == pytest.approx(1.0, abs=1e-9) or (debiased and self_cka == 0.0)
    # symmetry
    Y = features(rng, n, 3)
    assert pyred.linear_cka(X, Y, debiased=debiased) == pytest.approx(pyred.linear_cka(Y, X, debiased=debiased),
                                                                      rel=1e-9, abs=1e-12)
    # invariance of the target to an orthogonal transform and isotropic scaling
    Q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    S = [rng.permutation(d)[: rng.integers(1, d + 1)] for _ in range(4)]
    base = pyred.subset_cka(X, S, target=X, debiased=debiased)
    moved = pyred.subset_cka(X, S, target=3.7 * X @ Q + 1.5, debiased=debiased)
    np.testing.assert_allclose(moved, base, rtol=1e-7, atol=1e-9)
    # invariance to the order of indices inside a subset
    shuffled = [rng.permutation(s) for s in S]
    np.testing.assert_allclose(pyred.subset_cka(X, shuffled, debiased=debiased), base, rtol=1e-12, atol=1e-14)
    # the full subset against the full layer is 1 (biased: always; debiased: when the layer has signal)
    one = pyred.subset_cka(X, [full], debiased=debiased)[0]
    assert one == pytest.approx(1.0, abs=1e-9) or (debiased and one == 0.0)


# -- the sample road: n x n Grams along chains of nested subsets ------------------------------------------
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("debiased", [False, True])
@pytest.mark.parametrize("n, d", [(60, 12), (40, 40), (25, 300), (300, 50)])  # n = 300: two Gram tiles on the CPU
def test_both_roads_match_the_gram_reference(rng, device, debiased, n, d):
    X = features(rng, n, d)
    nested = pyred.draw_subsets(d, [0.04, 0.1, 0.5, 0.9, 1.0], [1, 2])
    loose = pyred.Subsets.from_lists([[1], [], [0], rng.permutation(d)[:d // 2], rng.permutation(d)[:3]], d=d)
    S = pyred.Subsets.concat([nested, loose])
    lists = [s.numpy() for s in S]
    Y = np.tanh(X[:, :5]) + rng.normal(size=(n, 5))
    tx, ty = torch.tensor(X, device=device), torch.tensor(Y, device=device)
    for target, want in ((None, R.subset_cka(X, lists, debiased=debiased)),
                         (ty, R.subset_cka(X, lists, Y, debiased=debiased))):
        for route in ("samples", "features", "auto"):
            got = pyred.subset_cka(tx, S, target=target, debiased=debiased, route=route)
            np.testing.assert_allclose(got.cpu().numpy(), want, rtol=1e-9, atol=1e-11, err_msg=route)
    assert pyred.subset_cka(tx, S, route="samples")[len(nested) + 1] == 0.0  # k = 0
    # a constant column adds nothing (the float64 reference itself is unstable there, so compare subsets)
    Xc = X.copy()
    Xc[:, 1] = 3.0
    for deb in (False, True):
        got = pyred.subset_cka(torch.tensor(Xc, device=device), [[1], [0, 1], [0]], debiased=deb, route="samples")
        assert got[0] == 0.0 and got[1] == pytest.approx(float(got[2]), rel=1e-12)


@pytest.mark.parametrize("fractions", [[0.001, 0.01, 0.1, 0.5, 1.0],
                                       [0.001, 0.01, 0.1, 0.5, 0.8, 0.9]])  # 0.8, 0.9: L minus a complement
def test_sample_road_float32_meets_the_1e6_rule_and_chains_follow_nesting(rng, fractions):
    from pyred.sample_gram import nested_chains

    n, d = 200, 3000
    X = features(rng, n, d, mean=5.0).astype(np.float32)
    S = pyred.draw_subsets(d, fractions, [1, 2, 3])
    chains = nested_chains(S)
    m = len(fractions)
    assert len(chains) == 3 and all(len(c) == m for c in chains)  # one chain per seed
    assert [int(S.seeds[k]) for k in chains[0]] == [int(S.seeds[chains[0][0]])] * m
    X64 = X.astype(np.float64)
    Xc = X64 - X64.mean(0)
    L = Xc @ Xc.T
    want = []
    for s in S:
        K = Xc[:, s.numpy()] @ Xc[:, s.numpy()].T
        want.append(np.sum(K * L) / np.sqrt(np.sum(K * K) * np.sum(L * L)))
    np.testing.assert_allclose(pyred.subset_cka(X, S, route="samples"), want, rtol=1e-6)


@pytest.mark.parametrize("held", [True, False])
def test_full_gram_completed_from_the_longest_chain(rng, monkeypatch, held):
    """Against the full layer, the sample road completes the full Gram from its longest chain's last
    Gram plus the columns that chain lacks (or, past HELD_GRAMS_BYTES, computes it on its own)."""
    import pyred.sample_gram as sg

    if not held:
        monkeypatch.setattr(sg, "HELD_GRAMS_BYTES", 0)
    n, d = 270, 400
    X = features(rng, n, d)
    S = pyred.Subsets.concat([pyred.draw_subsets(d, [0.01, 0.3, 0.9], [1, 2]),  # no chain covers all columns
                              pyred.Subsets.from_lists([rng.permutation(d)[:50]], d=d)])
    lists = [s.numpy() for s in S]
    for debiased in (False, True):
        want = R.subset_cka(X, lists, debiased=debiased)
        got = pyred.subset_cka(torch.tensor(X), S, debiased=debiased, route="samples")
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-9, atol=1e-11)


def test_split_chain_takes_the_complement_only_where_cheaper_and_safe():
    from pyred.sample_gram import sample_road_cost, split_chain

    d = 10_000
    paper = [round(f * d) for f in (0.0005, 0.001, 0.002, 0.003, 0.004, 0.005, 0.01, 0.05, 0.1, 0.2, 0.3, 0.5,
                                    0.8, 0.9)]
    assert split_chain(paper, d) == (12, 7000)  # 0.5 d forward, then 0.2 d of complements: 0.7 d, not 0.9 d
    assert split_chain([10, 20], d) == (2, 20)  # small subsets: forward only
    assert split_chain([5000, 10_000], d) == (1, 5000)  # the full layer is L itself: no columns read for it
    assert split_chain([], d) == (0, 0)
    # evenly spaced members: the cheapest split is never below d/2 (K = L - K_C would lose precision)
    even = list(range(200, 10_001, 200))
    f, cost = split_chain(even, d)
    assert 2 * even[f] >= d and cost == even[f - 1] + d - even[f]
    S = pyred.draw_subsets(d, [0.1, 0.5, 0.8, 0.9], [1, 2])
    assert sample_road_cost(100, d, S) == 100 * 100 * (d + 2 * 6000)  # 0.1 d forward, 0.5 d of complements


@pytest.mark.parametrize("n", [3, 4, 5, 8, 51, 200])
def test_median_of_distances_is_the_median_of_all_entries(rng, n):
    from pyred.sample_gram import median_of_distances

    for ties in (False, True):
        A = rng.random((n, n))
        if ties:
            A = np.round(A * 3) / 3  # many equal distances, some zero off the diagonal
        D = A + A.T
        np.fill_diagonal(D, 0.0)
        assert float(median_of_distances(torch.tensor(D))) == np.median(D)


@pytest.mark.parametrize("n", [129, 256, 1030])  # 1, 2 and 4 tiles
@pytest.mark.parametrize("small_block", [0, 8])  # blocks of <= small_block columns: float64 products
def test_tiled_symmetric_grams_are_whole(rng, monkeypatch, n, small_block):
    """The sample road accumulates only the Gram tiles on and above the diagonal (t tiles: (t+1)/(2t)
    of the work); every Gram it hands out must be whole and symmetric."""
    import pyred.sample_gram as sg
    from pyred.sample_gram import _Columns, chain_grams

    monkeypatch.setattr(sg, "SMALL_BLOCK", small_block)

    X = rng.normal(size=(n, 90)) + 2.0
    Xc = X - X.mean(0)
    cols = _Columns(torch.tensor(X), block=32)
    assert len(cols.bounds) - 1 == {129: 1, 256: 2, 1030: 4}[n]
    np.testing.assert_allclose(cols.full_gram().numpy(), Xc @ Xc.T, rtol=1e-12, atol=1e-9)
    S = pyred.draw_subsets(90, [0.1, 0.5, 1.0], [1, 2])
    for k, K in chain_grams(torch.tensor(X), S, cols):
        idx = S[k].numpy()
        np.testing.assert_allclose(K.numpy(), Xc[:, idx] @ Xc[:, idx].T, rtol=1e-12, atol=1e-9)


def test_sample_road_streams_wide_layers(rng):
    n, d = 40, 120_000  # a d x d Gram would be 115 GB
    X = (rng.normal(size=(n, 64)) @ rng.normal(size=(64, d)) / 8).astype(np.float32)
    S = pyred.draw_subsets(d, [0.0001, 0.01, 0.3], [1, 2])
    got = pyred.subset_cka(X, S)  # auto: the only road that fits
    from pyred.sample_gram import sample_road_cka

    small = sample_road_cka(torch.from_numpy(X), S, None, False, block=997)  # many small blocks, same numbers
    np.testing.assert_allclose(got, small.numpy(), rtol=1e-6)
    lists = [s.numpy() for s in S]
    np.testing.assert_allclose(got, R.subset_cka(X.astype(np.float64), lists), rtol=1e-5)
    with pytest.raises(ValueError, match="dim: a layer of width 120000 needs .* route='samples'"):
        pyred.subset_cka(X, S, route="features")
    with pytest.raises(ValueError, match="route: expected one of"):
        pyred.subset_cka(X, S, route="sample")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("debiased", [False, True])
@pytest.mark.parametrize("sigma", [0.8, 2.0])
def test_rbf_cka_matches_kornbliths_formula(rng, device, debiased, sigma):
    n, d = 45, 16
    X = features(rng, n, d)
    Y = np.sin(X[:, :4]) + 0.3 * rng.normal(size=(n, 4))
    S = pyred.Subsets.concat([pyred.draw_subsets(d, [0.1, 0.5, 1.0], [1, 2]),
                              pyred.Subsets.from_lists([[], [2], rng.permutation(d)[:5]], d=d)])
    lists = [s.numpy() for s in S]
    tx, ty = torch.tensor(X, device=device), torch.tensor(Y, device=device)
    L_self, L_y = R.gram_rbf(X, sigma), R.gram_rbf(Y, sigma)
    want_self = [R.cka_from_grams(R.gram_rbf(X[:, s], sigma), L_self, debiased) if len(s) else 0.0 for s in lists]
    want_y = [R.cka_from_grams(R.gram_rbf(X[:, s], sigma), L_y, debiased) if len(s) else 0.0 for s in lists]
    got = pyred.subset_cka(tx, S, kernel="rbf", sigma=sigma, debiased=debiased)
    np.testing.assert_allclose(got.cpu().numpy(), want_self, rtol=1e-9, atol=1e-12)
    got_y = pyred.subset_cka(tx, S, target=ty, kernel="rbf", sigma=sigma, debiased=debiased)
    np.testing.assert_allclose(got_y.cpu().numpy(), want_y, rtol=1e-9, atol=1e-12)
    # another kernel's Gram as the target: a linear one
    Lin = torch.tensor(Y @ Y.T, device=device)
    want_lin = [R.cka_from_grams(R.gram_rbf(X[:, s], sigma), Y @ Y.T, debiased) if len(s) else 0.0 for s in lists]
    got_lin = pyred.subset_cka(tx, S, kernel="rbf", sigma=sigma, debiased=debiased, target_gram=Lin)
    np.testing.assert_allclose(got_lin.cpu().numpy(), want_lin, rtol=1e-9, atol=1e-12)


def test_rbf_and_route_bad_input(rng):
    X = features(rng, 20, 5)
    with pytest.raises(ValueError, match="sigma: expected a number > 0"):
        pyred.subset_cka(X, [[0]], kernel="rbf", sigma=0.0)
    with pytest.raises(ValueError, match="sigma: expected a number > 0"):
        pyred.subset_cka(X, [[0]], kernel="rbf", sigma=-1.0)
    with pytest.raises(ValueError, match="kernel: expected one of"):
        pyred.subset_cka(X, [[0]], kernel="poly")
    with pytest.raises(ValueError, match="sigma: the bandwidth of the RBF kernel; kernel is 'linear'"):
        pyred.subset_cka(X, [[0]], sigma=0.5)  # was silently ignored
    with pytest.raises(ValueError, match="route: the RBF kernel has no feature-space form"):
        pyred.subset_cka(X, [[0]], kernel="rbf", route="features")
    with pytest.raises(ValueError, match="target_gram: expected an \\(20, 20\\) Gram"):
        pyred.subset_cka(X, [[0]], kernel="rbf", target_gram=np.eye(19))
    with pytest.raises(ValueError, match="target_gram: only with kernel='rbf'"):
        pyred.subset_cka(X, [[0]], target_gram=np.eye(20))
    const = np.ones((10, 3))
    assert pyred.subset_cka(const, [[0, 1]], kernel="rbf").tolist() == [0.0]  # no variance: 0, not NaN


@pytest.mark.parametrize("debiased", [False, True])
def test_linear_cka_roads_agree(rng, debiased):
    X, Y = features(rng, 30, 50), features(rng, 30, 7, mean=-1.0)
    want = R.cka(X, Y, debiased)
    for route in ("features", "samples", "auto"):
        assert pyred.linear_cka(X, Y, debiased=debiased, route=route) == pytest.approx(want, rel=1e-9, abs=1e-12), route
