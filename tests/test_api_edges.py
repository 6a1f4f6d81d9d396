"""Input that used to crash, hang or give a silently wrong number, each with a test that failed before its fix."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import pyred
from helpers import references as R


def features(rng, n, d, mean=2.0):
    mix = rng.normal(size=(d, d)) / np.sqrt(d)
    return rng.normal(size=(n, d)) @ (np.eye(d) + mix) + mean * rng.random(d)


# -- CKA is scale invariant: finite input of any magnitude gives the right number, never 0 or NaN ---------
@pytest.mark.parametrize("scale", [1e20, 1e-30, 1e9, 1e30, 1e-38])
@pytest.mark.parametrize("debiased", [False, True])
def test_cka_at_finite_extremes_of_float32(rng, scale, debiased):
    X = features(rng, 300, 24).astype(np.float32)
    S = pyred.draw_subsets(24, [0.1, 0.3, 0.5, 0.9, 1.0], [1, 2])
    lists = [s.numpy() for s in S]
    want = R.subset_cka(X.astype(np.float64), lists, debiased=debiased)
    big = (X.astype(np.float64) * scale).astype(np.float32)
    assert np.all(np.isfinite(big)) and np.any(big != 0)
    got = pyred.subset_cka(big, S, debiased=debiased)
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-6)
    Y = (X[:, :5].astype(np.float64) / scale ** 0.5).astype(np.float32)
    assert pyred.linear_cka(big, Y, debiased=debiased) == pytest.approx(R.cka(X, X[:, :5], debiased), rel=2e-5,
                                                                        abs=1e-6)


def test_cka_near_the_float32_limit_and_streamed_chunks_of_different_scales(rng):
    X = features(rng, 200, 10)
    top = (X / np.abs(X).max() * 3.3e38).astype(np.float32)
    # the float64 reference itself would overflow at this scale: it gets the same data divided by 2**128
    np.testing.assert_allclose(pyred.subset_cka(top, [[0, 1], [2, 3, 4]]),
                               R.subset_cka(top.astype(np.float64) / 2.0**128, [[0, 1], [2, 3, 4]]), rtol=2e-5)
    # chunks whose magnitudes differ by 1e30: streaming equals the one-shot float64 reference
    Z = X.copy()
    Z[100:] *= 1e30
    gs = pyred.GramStats(10, debiased=True)
    for s in range(0, 200, 50):
        gs.update(Z[s:s + 50])
    np.testing.assert_allclose(gs.subset_cka([[0, 1], list(range(10))]),
                               R.subset_cka(Z, [[0, 1], list(range(10))], debiased=True), rtol=1e-6)
    m = gs.moments()  # moments stay in the features' own units
    Zc = Z - Z.mean(0)
    np.testing.assert_allclose(m.C.numpy(), Zc.T @ Zc, rtol=1e-9)
    np.testing.assert_allclose(m.mean.numpy(), Z.mean(0), rtol=1e-12)


# Exponents across each dtype's whole range, subnormal input at the low end: X = B 2^e with max |B| < 1.
EXPONENTS = {np.float32: [-140, -126, -100, -60, -21, 0, 21, 60, 100, 127],
             np.float64: [-1060, -1022, -900, -500, -200, -65, 0, 65, 200, 500, 900, 1023]}
CASES = [(dt, e) for dt, es in EXPONENTS.items() for e in es]


def scaled(rng, dtype, e, n=40, d=12):
    """(X of dtype at 2^e, the same values times 2^-e in float64 -- exact, so the reference sees X's
    own rounding, subnormals included)."""
    B = features(rng, n, d, mean=1.0)
    B = B / (1.01 * np.abs(B).max())
    X = np.ldexp(B, e).astype(dtype)
    assert np.all(np.isfinite(X)) and np.any(X != 0)
    return X, np.ldexp(X.astype(np.float64), -e)


@pytest.mark.parametrize("dtype, e", CASES)
def test_every_cka_road_at_every_magnitude(rng, dtype, e):
    """CKA is scale invariant: every road and kernel gives the float64 reference's number for finite
    input of any magnitude (before: 0 on the feature road past 1e45 and below 1e-60 in float64, 0 or
    FloatingPointError on the sample road outside about [1e-40, 1e35], 0 at 5e37 in float32)."""
    X, ref = scaled(rng, dtype, e)
    S = pyred.draw_subsets(12, [0.25, 0.5, 0.9, 1.0], [1, 2])
    lists = [s.numpy() for s in S]
    rtol = 2e-5 if dtype == np.float32 else 1e-9
    for debiased in (False, True):
        want = R.subset_cka(ref, lists, debiased=debiased)
        for route in ("features", "samples"):
            np.testing.assert_allclose(pyred.subset_cka(X, S, debiased=debiased, route=route), want, rtol=rtol,
                                       atol=rtol, err_msg=f"route {route}, debiased {debiased}")
            assert pyred.linear_cka(X, X[:, :5], debiased=debiased, route=route) == pytest.approx(
                R.cka(ref, ref[:, :5], debiased), rel=rtol, abs=rtol)
        np.testing.assert_allclose(pyred.subset_cka(X, S, target=X[:, 7:], debiased=debiased),
                                   R.subset_cka(ref, lists, ref[:, 7:], debiased), rtol=rtol, atol=rtol)
        streamed = pyred.GramStats(12, debiased=debiased)
        for a in range(0, 40, 15):
            streamed.update(X[a:a + 15])
        np.testing.assert_allclose(streamed.subset_cka(S), want, rtol=rtol, atol=rtol)
        pairs = pyred.subset_pair_cka(X, S[:4], S[4:], debiased=debiased)
        np.testing.assert_allclose(pairs, R.pair_cka(ref, lists[:4], lists[4:], debiased), rtol=rtol, atol=rtol)
        rbf = [R.cka_from_grams(R.gram_rbf(ref[:, s]), R.gram_rbf(ref), debiased) for s in lists]
        np.testing.assert_allclose(pyred.subset_cka(X, S, debiased=debiased, kernel="rbf", sigma=1.0), rbf,
                                   rtol=10 * rtol, atol=10 * rtol)
    mb = pyred.MinibatchCKA(S, batch_size=20).update(X)
    from test_minibatch import reference as minibatch_reference

    np.testing.assert_allclose(mb.cka(), minibatch_reference([ref[:20], ref[20:]], lists), rtol=rtol, atol=rtol)


def test_minibatches_of_very_different_magnitudes_share_one_scale(rng):
    """Each minibatch's HSIC terms are summed: they must be in one scale however far apart the
    minibatches' magnitudes are (here 2^900 apart, and past float64's range on each side)."""
    X = features(rng, 60, 10)
    S = pyred.draw_subsets(10, [0.3, 0.6], [1, 2])
    from test_minibatch import reference as minibatch_reference

    for first, second in ((-1000, -100), (800, -100), (-50, 900)):
        mb = pyred.MinibatchCKA(S)
        mb.update(np.ldexp(X[:20], first)).update(np.ldexp(X[20:40], second)).update(np.ldexp(X[40:], first))
        got = np.asarray(mb.cka())
        big = minibatch_reference([np.ldexp(X[:20], first - max(first, second)),
                                   np.ldexp(X[20:40], second - max(first, second)),
                                   np.ldexp(X[40:], first - max(first, second))], [s.numpy() for s in S])
        np.testing.assert_allclose(got, big, rtol=1e-9, atol=1e-12)


def test_ratio_never_hides_a_nan_and_never_forms_the_degree_8_product():
    from pyred.numerics import ratio

    nan = float("nan")
    out = ratio(torch.tensor([1.0, nan, 0.5, 0.3]), torch.tensor([1.0, 1.0, 0.0, nan]), torch.tensor([1.0] * 4))
    assert out[0] == 1.0 and torch.isnan(out[1]) and out[2] == 0.0 and torch.isnan(out[3])
    big = torch.tensor([1e200, 1e-200], dtype=torch.float64)  # den_a den_b = 1e400 / 1e-400: out of range
    assert torch.equal(ratio(big, big, big), torch.ones(2, dtype=torch.float64))


# -- arrays, lists and scalars ---------------------------------------------------------------------
def test_negative_stride_numpy_input(rng):
    X = features(rng, 60, 12)
    flipped = X[::-1, ::-1]
    assert any(s < 0 for s in flipped.strides)
    lists = [[0, 3], [1, 2, 5, 7]]
    np.testing.assert_allclose(pyred.subset_cka(flipped, lists), R.subset_cka(flipped.copy(), lists), rtol=1e-9)
    np.testing.assert_allclose(pyred.ops.segment_sums(flipped[0], lists), R.segment_sums(flipped[0], lists)[:, 0])
    y = (np.arange(60) % 3)[::-1]
    res = pyred.train_probes(flipped, y, lists, epochs=1, progress=False)
    assert len(res) == 2


def test_lists_are_accepted_wherever_linear_cka_accepts_them(rng):
    X = features(rng, 30, 6)
    lists = [[0, 1], [2, 4, 5]]
    want = R.subset_cka(X, lists)
    np.testing.assert_allclose(pyred.subset_cka(X.tolist(), lists), want, rtol=1e-9)
    np.testing.assert_allclose(pyred.subset_pair_cka(X.tolist(), lists, lists[::-1]),
                               R.pair_cka(X, lists, lists[::-1]), rtol=1e-9)
    gs = pyred.GramStats(6).update(X.tolist())
    np.testing.assert_allclose(gs.subset_cka(lists), want, rtol=1e-9)
    assert pyred.linear_cka(X.tolist(), X[:, :2].tolist()) == pytest.approx(R.cka(X, X[:, :2]), rel=1e-9)


def test_numpy_integer_scalars_are_accepted(rng):
    d = np.int64(20)
    S = pyred.draw_subsets(d, [0.5], seeds=[np.int32(1), np.uint8(2)], sizes=None)
    assert S.d == 20 and S.seeds.tolist() == [1, 2]
    assert pyred.draw_subsets(20, sizes=[np.int64(3)], seeds=[1]).sizes.tolist() == [3]
    X = features(rng, 40, 20)
    pyred.subset_cka(X, S, chunk_size=np.int64(7))
    gs = pyred.GramStats(np.int64(20), np.int16(3))
    gs.update(X, X[:, :3])
    y = np.arange(40) % 3
    res = pyred.train_probes(X, y, S, seed=np.int64(4), num_classes=np.int64(3), epochs=np.int64(2),
                             batch_size=np.int32(16), progress=False)
    assert res.num_classes == 3 and res.options.epochs == 2


def test_huge_seeds_and_bad_labels_are_named(rng):
    with pytest.raises(ValueError, match=r"seeds: expected an integer <= 2\*\*63 - 1, got 9223372036854775808"):
        pyred.draw_subsets(10, [0.5], seeds=[2**63])
    X = features(rng, 30, 5)
    y = np.arange(30) % 2
    with pytest.raises(ValueError, match="seed: expected an integer <= 2"):
        pyred.train_probes(X, y, [[0]], seed=2**63, progress=False)
    with pytest.raises(ValueError, match="seed: head k is initialised under seed \\+ k"):
        pyred.train_probes(X, y, [[0], [1]], seed=2**63 - 1, progress=False)
    with pytest.raises(TypeError, match="y_train: expected a numeric array, got dtype <U1"):
        pyred.train_probes(X, np.array(list("ab" * 15)), [[0]], progress=False)
    with pytest.raises(TypeError, match="y_train: labels must be integers .* got dtype torch.uint64"):
        pyred.train_probes(X, y.astype(np.uint64), [[0]], progress=False)
    with pytest.raises(TypeError, match="y_test: expected a numeric array"):
        pyred.train_probes(X, y, [[0]], epochs=1, progress=False).evaluate(X, np.array(["x"] * 30))
    with pytest.raises(ValueError, match="subsets: expected at least one subset"):
        pyred.train_probes(X, y, [], progress=False)
    with pytest.raises(ValueError, match="subsets: expected at least one subset"):
        pyred.train_probes(X, y, pyred.Subsets.from_lists([], d=5), progress=False)


def test_subsets_metadata_is_not_assignable():
    S = pyred.draw_subsets(10, [0.5], [1])
    with pytest.raises(AttributeError):
        S.fractions = torch.zeros(1)
    T = S.with_metadata(seeds=[7])
    assert T.seeds.tolist() == [7] and S.seeds.tolist() == [1] and T[0].tolist() == S[0].tolist()
    with pytest.raises(ValueError, match="seeds: expected 1 values"):
        S.with_metadata(seeds=[1, 2])
    with pytest.raises(TypeError):
        pyred.Subsets(torch.tensor([0]), torch.tensor([0, 1]), _validated=True)


# -- import pyred stays light --------------------------------------------------------------------------
LIGHT = r"""
import json, sys
import numpy, torch  # what pyred's core needs anyway (torch itself imports tqdm)
heavy = ["timm", "torchvision", "PIL", "matplotlib", "tqdm", "sklearn", "pyred.study", "pyred.backbones",
         "pyred.datasets", "pyred.features", "torch._dynamo"]  # the last: eager kernel calls skip the custom ops
heavy = [m for m in heavy if m not in sys.modules]
import pyred
before = [m for m in heavy if m in sys.modules]
import numpy as np
X = np.random.default_rng(0).normal(size=(50, 8))
S = pyred.draw_subsets(8, [0.5], [1])
pyred.subset_cka(X, S)
W = torch.zeros(S.nnz, 2, dtype=torch.float64, requires_grad=True)
pyred.ops.gathered_linear(torch.tensor(X), W, S).sum().backward()
pyred.subset_cka(torch.tensor(X, requires_grad=True), S).sum().backward()
# lbfgs: torch.optim's optimizers import torch._dynamo when built (1.5-2 s of a small solve)
pyred.train_probes(X, (X[:, 0] > 0).astype(int), S, recipe="lbfgs", progress=False)
after = [m for m in heavy if m in sys.modules]
print(json.dumps({"before": before, "after": after, "backbone": pyred.Backbone.__name__,
                  "load": pyred.datasets.load.__name__}))
"""


@pytest.mark.slow
def test_import_pyred_and_first_kernel_calls_stay_light():
    out = subprocess.run([sys.executable, "-c", LIGHT], capture_output=True, text=True, check=True)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["before"] == [] and res["after"] == []
    assert res["backbone"] == "Backbone" and res["load"] == "load"  # still public, loaded on first use
