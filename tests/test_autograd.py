"""Inputs that require grad: an exact gradient where pyred promises one, no autograd history (and no
crash) everywhere else. Before: the feature road returned a CKA with a wrong gradient (|error| 0.027
against a gradient of 0.019), and the sample road, RBF, linear_cka and MinibatchCKA raised "Can't call
numpy() on Tensor that requires grad"."""

import numpy as np
import pytest
import torch

import pyred
from helpers import references as R


def features(rng, n, d):
    mix = rng.normal(size=(d, d)) / np.sqrt(d)
    return torch.tensor(rng.normal(size=(n, d)) @ (np.eye(d) + mix) + rng.random(d), dtype=torch.float64)


@pytest.mark.parametrize("route", ["features", "samples"])
@pytest.mark.parametrize("debiased", [False, True])
def test_subset_cka_gradient_is_exact(rng, route, debiased):
    X = features(rng, 14, 6).requires_grad_()
    S = pyred.Subsets.from_lists([[0, 1], [2, 3, 4], [], list(range(6))], d=6)
    assert torch.autograd.gradcheck(lambda x: pyred.subset_cka(x, S, debiased=debiased, route=route), (X,))
    Y = features(rng, 14, 3).requires_grad_()
    assert torch.autograd.gradcheck(lambda x, y: pyred.subset_cka(x, S, target=y, debiased=debiased, route=route),
                                    (X, Y))
    # the values are the fast road's, and a gradient of the sum is the float64 finite-difference one
    got = pyred.subset_cka(X, S, debiased=debiased, route=route)
    np.testing.assert_allclose(got.detach().numpy(), R.subset_cka(X.detach().numpy(), [s.numpy() for s in S],
                                                                     debiased=debiased), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(got.detach().numpy(), pyred.subset_cka(X.detach(), S, debiased=debiased,
                                                                       route=route).numpy(), rtol=1e-12)


@pytest.mark.parametrize("route", ["features", "samples"])
@pytest.mark.parametrize("debiased", [False, True])
def test_linear_cka_gradient_is_exact(rng, route, debiased):
    X = features(rng, 12, 5).requires_grad_()
    Y = features(rng, 12, 4).requires_grad_()
    value = pyred.linear_cka(X, Y, debiased=debiased, route=route)
    assert isinstance(value, torch.Tensor) and value.dim() == 0 and value.requires_grad
    assert float(value.detach()) == pytest.approx(R.cka(X.detach().numpy(), Y.detach().numpy(), debiased), rel=1e-10)
    assert torch.autograd.gradcheck(lambda x, y: pyred.linear_cka(x, y, debiased=debiased, route=route), (X, Y))
    # only one side requiring grad
    assert torch.autograd.gradcheck(lambda y: pyred.linear_cka(X.detach(), y, debiased=debiased, route=route), (Y,))


def test_a_float32_gradient_matches_the_float64_one(rng):
    X64 = features(rng, 50, 8)
    S = pyred.draw_subsets(8, [0.25, 0.5], [1, 2])
    grads = []
    for dtype in (torch.float32, torch.float64):
        X = X64.to(dtype).requires_grad_()
        pyred.subset_cka(X, S).sum().backward()
        assert X.grad.dtype == dtype
        grads.append(X.grad.double())
    np.testing.assert_allclose(grads[0].numpy(), grads[1].numpy(), rtol=1e-4, atol=1e-7)


def test_the_gradient_of_a_huge_input_is_the_scaled_gradient(rng):
    """CKA(s X) = CKA(X), so d CKA / d(s X) = (d CKA / dX) / s: the autograd road scales like the others."""
    X = features(rng, 20, 5)
    S = [[0, 2], [1, 3, 4]]
    big = (X * 2.0 ** 600).requires_grad_()
    small = X.clone().requires_grad_()
    pyred.subset_cka(big, S).sum().backward()
    pyred.subset_cka(small, S).sum().backward()
    np.testing.assert_allclose((big.grad * 2.0 ** 600).numpy(), small.grad.numpy(), rtol=1e-9)


def test_every_other_road_returns_a_result_without_history(rng):
    X = features(rng, 30, 6).requires_grad_()
    Y = features(rng, 30, 3).requires_grad_()
    S = pyred.draw_subsets(6, [0.5, 1.0], [1])
    lists = [s.numpy() for s in S]
    x = X.detach().numpy()
    rbf = pyred.subset_cka(X, S, kernel="rbf")
    assert not rbf.requires_grad
    np.testing.assert_allclose(rbf.numpy(), pyred.subset_cka(X.detach(), S, kernel="rbf").numpy(), rtol=1e-12)
    pairs = pyred.subset_pair_cka(X, S, S[::-1])
    assert not pairs.requires_grad
    np.testing.assert_allclose(pairs.numpy(), R.pair_cka(x, lists, lists[::-1]), rtol=1e-10)
    mb = pyred.MinibatchCKA(S, target_dim=3).update(X, Y).cka()
    assert not mb.requires_grad and torch.isfinite(mb).all()
    gs = pyred.GramStats(6).update(X).subset_cka(S)
    assert not gs.requires_grad
    np.testing.assert_allclose(gs.numpy(), R.subset_cka(x, lists), rtol=1e-10)
    assert isinstance(pyred.GramStats.from_features(X, Y).cka(), float)
    res = pyred.train_probes(X, torch.arange(30) % 3, S, recipe="lbfgs", progress=False)
    assert not res.weights.requires_grad
    assert not res.evaluate(X, torch.arange(30) % 3).accuracy.requires_grad
    with torch.no_grad():  # grad mode off: the fast road, a plain float
        assert isinstance(pyred.linear_cka(X, Y), float)


def test_the_reduction_kernels_are_differentiable(rng):
    values = torch.tensor(rng.normal(size=(2, 9)), requires_grad=True)
    S = pyred.Subsets.from_lists([[0, 4, 8], [], [1, 2, 3, 4, 5]], d=9)
    assert torch.autograd.gradcheck(lambda v: pyred.ops.segment_sums(v, S), (values,))
    mats = torch.tensor(rng.normal(size=(2, 9, 9)), requires_grad=True)
    cols = pyred.Subsets.from_lists([[1], [2, 3], [0, 8]], d=9)
    assert torch.autograd.gradcheck(lambda m: pyred.ops.gathered_block_sums(m, S, cols), (mats,))
    assert torch.autograd.gradcheck(lambda m: pyred.ops.gathered_block_sums(m[0], S), (mats,))
