"""The CUDA path on a GPU: streams, the entry points called directly, the kernels' guards,
grid-stride loops, 64-bit indexing, low densities, determinism, CuPy. Skipped without a device."""

import numpy as np
import pytest
import torch

import pyred
from helpers import references as R
from helpers.devices import CUDA_OK
from pyred import _native

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not CUDA_OK, reason="needs a CUDA device and pyred._C_cuda")]


def p(t):
    return t.data_ptr()


def stream():
    return torch.cuda.current_stream().cuda_stream


def test_results_on_a_non_default_stream(rng):
    X = rng.normal(size=(300, 40)) + 2.0
    S = pyred.draw_subsets(40, [0.1, 0.5, 0.9], [1, 2])
    want = R.subset_cka(X, [s.numpy() for s in S], debiased=True)
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        Xd = torch.tensor(X, device="cuda")
        got = pyred.subset_cka(Xd, S, debiased=True)
        W = torch.tensor(rng.normal(size=(S.nnz, 3)), device="cuda")
        logits = pyred.ops.gathered_linear(Xd, W, S)
    side.synchronize()
    np.testing.assert_allclose(got.cpu().numpy(), want, rtol=1e-9, atol=1e-11)
    for k in range(len(S)):
        b, e = int(S.offsets[k]), int(S.offsets[k + 1])
        torch.testing.assert_close(logits[k].cpu(), torch.tensor(X)[:, S[k]] @ W[b:e].cpu())


def test_head_entry_points_called_directly(rng):
    Cu = _native.cuda_module()
    d, B, C = 9, 5, 3
    X = torch.tensor(rng.normal(size=(B, d)), device="cuda")
    XT = X.T.contiguous()
    S = pyred.Subsets.from_lists([[0, 4, 8], [], [2, 3]], d=d).to("cuda")
    W = torch.tensor(rng.normal(size=(S.nnz, C)), device="cuda")
    out = torch.empty(len(S), B, C, dtype=torch.float64, device="cuda")
    Cu.gathered_forward(p(XT), XT.numel(), 1, B, B, d, p(S.indices), S.nnz, p(S.offsets), len(S) + 1, p(W), W.numel(),
                        C, p(out), out.numel(), stream())
    G = torch.tensor(rng.normal(size=(len(S), B, C)), device="cuda")
    dW = torch.empty(S.nnz, C, dtype=torch.float64, device="cuda")
    Cu.gathered_weight_grad(p(XT), XT.numel(), 1, B, B, d, p(S.indices), S.nnz, p(S.offsets), len(S) + 1, p(G),
                            G.numel(), C, p(dW), dW.numel(), stream())
    torch.cuda.synchronize()
    for k in range(len(S)):
        b, e = int(S.offsets[k]), int(S.offsets[k + 1])
        torch.testing.assert_close(out[k], X[:, S[k]] @ W[b:e])
        torch.testing.assert_close(dW[b:e], X[:, S[k]].T @ G[k])
    host = XT.cpu()
    with pytest.raises(ValueError, match="XT: expected CUDA device memory"):
        Cu.gathered_forward(p(host), XT.numel(), 1, B, B, d, p(S.indices), S.nnz, p(S.offsets), len(S) + 1, p(W),
                            W.numel(), C, p(out), out.numel(), stream())
    with pytest.raises(ValueError, match="W: expected 15 elements"):
        Cu.gathered_forward(p(XT), XT.numel(), 1, B, B, d, p(S.indices), S.nnz, p(S.offsets), len(S) + 1, p(W), 14,
                            C, p(out), out.numel(), stream())


def test_device_side_guards_turn_bad_lists_into_nan():
    """Lists are validated when built; these are forged to reach the kernels, which must not read
    out of bounds: the bad list's results are NaN, the others are right."""
    Cu = _native.cuda_module()
    d = 6
    vals = torch.arange(d, dtype=torch.float64, device="cuda")[None]
    idx = torch.tensor([0, 1, 99, 2], dtype=torch.int64, device="cuda")  # list 1 holds index 99
    off = torch.tensor([0, 2, 4], dtype=torch.int64, device="cuda")
    out = torch.empty(2, 1, dtype=torch.float64, device="cuda")
    Cu.segment_sums(p(vals), d, 1, 1, d, p(idx), 4, p(off), 3, p(out), 2, stream())
    mats = torch.ones(1, d, d, dtype=torch.float64, device="cuda")
    blk = torch.empty(2, 1, dtype=torch.float64, device="cuda")
    Cu.block_sums(p(mats), d * d, 1, 1, d, p(idx), 4, p(off), 3, p(idx), 4, p(off), 3, 2, p(blk), 2, stream())
    XT = torch.ones(d, 4, dtype=torch.float64, device="cuda")
    W = torch.ones(4, 2, dtype=torch.float64, device="cuda")
    logits = torch.empty(2, 4, 2, dtype=torch.float64, device="cuda")
    Cu.gathered_forward(p(XT), XT.numel(), 1, 4, 4, d, p(idx), 4, p(off), 3, p(W), 8, 2, p(logits), 16, stream())
    G = torch.ones(2, 4, 2, dtype=torch.float64, device="cuda")
    dW = torch.empty(4, 2, dtype=torch.float64, device="cuda")
    Cu.gathered_weight_grad(p(XT), XT.numel(), 1, 4, 4, d, p(idx), 4, p(off), 3, p(G), 16, 2, p(dW), 8, stream())
    torch.cuda.synchronize()
    assert out[0, 0] == 1.0 and torch.isnan(out[1, 0])
    assert blk[0, 0] == 4.0 and torch.isnan(blk[1, 0])
    assert torch.all(logits[0] == 2.0) and torch.isnan(logits[1]).all()
    assert torch.all(dW[:2] == 4.0) and torch.isnan(dW[2]).all() and torch.all(dW[3] == 4.0)


def test_forward_grid_stride_beyond_65535_blocks():
    B, C, d = 4096, 4200, 3  # B * C = 17.2M outputs: more than 65535 blocks of 256 threads
    X = torch.randn(B, d, device="cuda")
    S = pyred.Subsets.from_lists([[0, 2]], d=d)
    W = torch.randn(2, C, device="cuda")
    got = pyred.ops.gathered_linear(X, W, S, backend="native")
    torch.testing.assert_close(got[0], X[:, [0, 2]] @ W, rtol=1e-5, atol=1e-4)


def test_weight_grad_grid_stride_and_int64_indices():
    d, B = 600_000, 3  # nnz > 65535 * 8 rows: the blocks stride over the rows
    X = torch.randn(B, d, device="cuda")
    S = pyred.Subsets.from_lists([torch.randperm(d)], d=d)
    G = torch.randn(1, B, 2, device="cuda")
    got = pyred.ops.gathered_weight_grad(X, G, S, backend="native")
    torch.testing.assert_close(got, X[:, S[0].cuda()].T @ G[0], rtol=1e-5, atol=1e-5)


def test_block_sums_past_2_to_the_31_elements():
    d = 46_341  # d * d > 2**31: row offsets need 64 bits
    mats = torch.zeros(1, d, d, dtype=torch.float32, device="cuda")
    mats[0, d - 1, d - 1] = 3.0
    mats[0, d - 2, 5] = 4.0
    rows = pyred.Subsets.from_lists([[d - 1, d - 2], [0]], d=d)
    cols = pyred.Subsets.from_lists([[5, d - 1], [1]], d=d)
    got = pyred.ops.gathered_block_sums(mats, rows, cols, backend="native")
    assert got[:, 0].tolist() == [7.0, 0.0]
    del mats
    torch.cuda.empty_cache()


def test_block_sums_are_deterministic(rng):
    d = 512
    mats = torch.tensor(rng.normal(size=(2, d, d)), device="cuda")
    S = pyred.draw_subsets(d, [0.01, 0.1, 0.5, 0.9, 1.0], [1, 2, 3])
    first = pyred.ops.gathered_block_sums(mats, S, backend="native")
    for _ in range(5):
        assert torch.equal(pyred.ops.gathered_block_sums(mats, S, backend="native"), first)
    torch.testing.assert_close(first.cpu(), pyred.ops.gathered_block_sums(mats.cpu(), S), rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("layout", ["gathered", "grouped", "masked"])
def test_probes_at_density_below_a_tenth(rng, layout):
    d, C = 400, 3
    X = rng.normal(size=(600, d)) + 1.0
    y = np.argmax(X[:, :10] @ rng.normal(size=(10, C)), axis=1)
    S = pyred.draw_subsets(d, [0.01, 0.05], [1, 2])  # density 0.03
    cpu = pyred.train_probes(X, y, S, epochs=3, layout="masked", progress=False)
    gpu = pyred.train_probes(torch.tensor(X, device="cuda"), torch.tensor(y, device="cuda"), S, epochs=3,
                             layout=layout, progress=False)
    torch.testing.assert_close(gpu.weights.cpu(), torch.as_tensor(cpu.weights), rtol=1e-6, atol=1e-8)


def test_cupy_arrays_in_and_out(rng):
    cupy = pytest.importorskip("cupy")
    X = rng.normal(size=(80, 12))
    lists = [[0, 1, 2], [5, 7]]
    got = pyred.subset_cka(cupy.asarray(X), lists)
    assert isinstance(got, cupy.ndarray)
    np.testing.assert_allclose(cupy.asnumpy(got), R.subset_cka(X, lists), rtol=1e-9)
    sums = pyred.ops.segment_sums(cupy.asarray(X[0]), lists)
    assert isinstance(sums, cupy.ndarray)
    np.testing.assert_allclose(cupy.asnumpy(sums), R.segment_sums(X[0], lists)[:, 0], rtol=1e-12)
