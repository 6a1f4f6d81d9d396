import numpy as np
import pytest
import torch

import pyred
from helpers import references as R
from helpers.devices import DEVICES


def features(rng, n, d, mean=1.0):
    mix = rng.normal(size=(d, d)) / np.sqrt(d)
    return rng.normal(size=(n, d)) @ (np.eye(d) + mix) + mean * rng.random(d)


def reference(batches, lists, target_batches=None):
    """Nguyen et al.'s minibatch CKA from float64 NumPy Grams, batch by batch."""
    kl = np.zeros(len(lists))
    kk = np.zeros(len(lists))
    ll = 0.0
    for i, X in enumerate(batches):
        T = X if target_batches is None else target_batches[i]
        L = T @ T.T
        ll += R.hsic_unbiased(L, L)
        for k, s in enumerate(lists):
            K = X[:, s] @ X[:, s].T
            kl[k] += R.hsic_unbiased(K, L)
            kk[k] += R.hsic_unbiased(K, K)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(kk * ll > 0, kl / np.sqrt(kk * ll), 0.0)


@pytest.mark.parametrize("device", DEVICES)
def test_minibatch_cka_matches_the_batchwise_reference(rng, device):
    n, d, b = 300, 30, 50
    X = features(rng, n, d)
    Y = np.tanh(X[:, :6]) + 0.5 * rng.normal(size=(n, 6))
    S = pyred.Subsets.concat([pyred.draw_subsets(d, [0.1, 0.5, 1.0], [1, 2]),
                              pyred.Subsets.from_lists([[], [3], rng.permutation(d)[:7]], d=d)])
    lists = [s.numpy() for s in S]
    batches = [X[i:i + b] for i in range(0, n, b)]
    mb = pyred.MinibatchCKA(S)
    mby = pyred.MinibatchCKA(S, target_dim=6)
    for i in range(0, n, b):
        mb.update(torch.tensor(X[i:i + b], device=device))
        mby.update(torch.tensor(X[i:i + b], device=device), torch.tensor(Y[i:i + b], device=device))
    got = mb.cka()
    assert got.device.type == device and mb.batches == 6
    np.testing.assert_allclose(got.cpu().numpy(), reference(batches, lists), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(mby.cka().cpu().numpy(), reference(batches, lists, [Y[i:i + b] for i in range(0, n, b)]),
                               rtol=1e-9, atol=1e-12)
    assert got[6] == 0.0  # the empty subset


def test_how_a_stream_is_cut_into_updates_does_not_matter(rng):
    n, d = 333, 20
    X = features(rng, n, d)
    S = pyred.draw_subsets(d, [0.2, 0.6, 1.0], [1, 2, 3])
    one = pyred.MinibatchCKA(S, batch_size=64).update(X).cka()
    cuts = pyred.MinibatchCKA(S, batch_size=64)
    for a, b in [(0, 5), (5, 100), (100, 101), (101, 333)]:
        cuts.update(X[a:b])
    np.testing.assert_allclose(cuts.cka(), one, rtol=1e-12)
    # 333 = 5 x 64 + 13: the last 13 samples are a sixth minibatch
    batches = [X[i:i + 64] for i in range(0, 320, 64)] + [X[320:]]
    np.testing.assert_allclose(one, reference(batches, [s.numpy() for s in S]), rtol=1e-9)
    # without a batch size each update is a minibatch, and their order does not matter
    a, b = pyred.MinibatchCKA(S), pyred.MinibatchCKA(S)
    for i in (0, 100, 200):
        a.update(X[i:i + 100])
    for i in (200, 0, 100):
        b.update(X[i:i + 100])
    np.testing.assert_allclose(a.cka(), b.cka(), rtol=1e-12)


def test_reading_cka_mid_stream_changes_nothing(rng):
    """cka() used to commit the buffered partial minibatch, so monitoring a stream changed the answer."""
    n, d = 300, 16
    X = features(rng, n, d)
    S = pyred.draw_subsets(d, [0.25, 0.5, 1.0], [1, 2])
    stream = pyred.MinibatchCKA(S, batch_size=64).update(X)
    quiet = stream.cka()
    watched = pyred.MinibatchCKA(S, batch_size=64)
    for a in range(0, n, 25):  # 25-sample updates: most reads see a partial minibatch
        watched.update(X[a:a + 25])
        if a + 25 >= 64:
            first = watched.cka()
            np.testing.assert_array_equal(watched.cka(), first)  # reading twice: the same answer
    np.testing.assert_array_equal(watched.cka(), quiet)
    assert watched.batches == stream.batches == 4  # 300 = 4 x 64 + 44: the 44 stay buffered
    # what a read mid-stream answers: the whole minibatches so far and the partial one as the last
    mid = pyred.MinibatchCKA(S, batch_size=64).update(X[:150])
    batches = [X[:64], X[64:128], X[128:150]]
    np.testing.assert_allclose(mid.cka(), reference(batches, [s.numpy() for s in S]), rtol=1e-9)


def test_bias_against_full_batch(rng):
    """The number quoted in pyred.minibatch's docstring."""
    n, d = 2048, 256
    X = features(rng, n, d)
    S = pyred.draw_subsets(d, [0.01, 0.05, 0.1, 0.2, 0.3, 0.5, 0.8, 0.9], [1, 2, 3, 4, 5])
    mb = pyred.MinibatchCKA(S, batch_size=256).update(X).cka()
    full = pyred.subset_cka(X, S, debiased=True)
    gap = float(np.abs(mb - full).max())
    print(f"max |minibatch - full-batch debiased CKA| = {gap:.4f}")
    assert gap < 0.02


def test_bad_input():
    S = [[0, 1]]
    with pytest.raises(ValueError, match="minibatches of at least 4 samples, got 3"):
        pyred.MinibatchCKA(S).update(np.ones((3, 4)))
    with pytest.raises(ValueError, match="kernel: expected one of"):
        pyred.MinibatchCKA(S, kernel="rbf2")
    with pytest.raises(ValueError, match="batch_size: expected an integer >= 4"):
        pyred.MinibatchCKA(S, batch_size=2)
    with pytest.raises(ValueError, match="no minibatch yet"):
        pyred.MinibatchCKA(S).cka()
    with pytest.raises(ValueError, match="y: this MinibatchCKA has a target"):
        pyred.MinibatchCKA(S, target_dim=2).update(np.ones((5, 4)))
    with pytest.raises(IndexError, match="out of range"):
        pyred.MinibatchCKA([[0, 9]]).update(np.random.default_rng(0).normal(size=(5, 4)))
