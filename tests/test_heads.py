import numpy as np
import pytest
import torch

import pyred
from helpers.devices import DEVICES
from pyred import _native
from pyred.ops import gathered_linear, gathered_weight_grad

BACKENDS = ["native", "torch"]


def random_heads(rng, d, K):
    sizes = rng.integers(1, d + 1, size=K)
    sizes[: min(3, K)] = [0, 1, d][: min(3, K)]  # k = 0, 1 and d
    lists = [rng.permutation(d)[:k] for k in sizes]
    return lists + [lists[-1]]  # a repeated subset


def explicit(X, W, lists):
    """Per-head float64 logits and, through autograd, weight gradients for a given G."""
    X = torch.as_tensor(X, dtype=torch.float64)
    W = torch.as_tensor(W, dtype=torch.float64).clone().requires_grad_(True)
    out, start = [], 0
    for s in lists:
        s = torch.as_tensor(s, dtype=torch.int64)
        out.append(X[:, s] @ W[start:start + len(s)])
        start += len(s)
    return torch.stack(out), W


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("B, d, C, K", [(1, 1, 1, 2), (5, 13, 3, 6), (70, 40, 10, 9), (256, 300, 17, 5),
                                        (33, 64, 8, 12)])
def test_forward_and_weight_grad_match_autograd(rng, device, backend, dtype, B, d, C, K):
    lists = random_heads(rng, d, K)
    nnz = sum(len(s) for s in lists)
    X = rng.normal(size=(B, d))
    W = rng.normal(size=(nnz, C))
    G = rng.normal(size=(len(lists), B, C))
    want, Wref = explicit(X, W, lists)
    (want * torch.as_tensor(G)).sum().backward()
    Xt = torch.tensor(X, dtype=dtype, device=device)
    got = gathered_linear(Xt, torch.tensor(W, dtype=dtype, device=device), lists, backend=backend)
    dW = gathered_weight_grad(Xt, torch.tensor(G, dtype=dtype, device=device), lists, backend=backend)
    tol = dict(rtol=1e-10, atol=1e-10) if dtype == torch.float64 else dict(rtol=2e-4, atol=2e-4 * np.sqrt(d))
    assert got.shape == (len(lists), B, C) and got.dtype == dtype and dW.shape == (nnz, C)
    torch.testing.assert_close(got.double().cpu(), want.detach(), **tol)
    torch.testing.assert_close(dW.double().cpu(), Wref.grad, **tol)
    assert torch.all(got[0] == 0)  # the k = 0 head: no weights, zero logits


@pytest.mark.parametrize("device", DEVICES)
def test_autograd_through_the_custom_op(rng, device):
    d, B, C = 20, 9, 4
    lists = random_heads(rng, d, 5)
    S = pyred.Subsets.from_lists(lists, d=d)
    X = torch.tensor(rng.normal(size=(B, d)), device=device, requires_grad=True)
    W = torch.tensor(rng.normal(size=(S.nnz, C)), device=device, requires_grad=True)
    torch.autograd.gradcheck(lambda x, w: gathered_linear(x, w, S), (X, W))


@pytest.mark.parametrize("device", DEVICES)
def test_head_ops_pass_opcheck(rng, device):
    S = pyred.Subsets.from_lists([[0, 2], [], [5, 1, 3]], d=6).to(device)
    X = torch.randn(4, 6, dtype=torch.float64, device=device)
    W = torch.randn(S.nnz, 3, dtype=torch.float64, device=device, requires_grad=True)
    torch.library.opcheck(torch.ops.pyred.gathered_forward.default, (X, S.indices, S.offsets, W))
    G = torch.randn(3, 4, 3, dtype=torch.float64, device=device)
    torch.library.opcheck(torch.ops.pyred.gathered_weight_grad.default, (X, S.indices, S.offsets, G))


def test_numpy_in_numpy_out(rng):
    X = rng.normal(size=(7, 5))
    W = rng.normal(size=(3, 2))
    out = gathered_linear(X, W, [[0, 4], [2]])
    assert isinstance(out, np.ndarray)
    np.testing.assert_allclose(out[0], X[:, [0, 4]] @ W[:2], rtol=1e-12)
    np.testing.assert_allclose(out[1], X[:, [2]] @ W[2:], rtol=1e-12)


def test_bad_input():
    X = torch.randn(4, 6)
    with pytest.raises(ValueError, match=r"W: expected shape \(3, C\)"):
        gathered_linear(X, torch.randn(4, 2), [[0, 1], [2]])
    with pytest.raises(ValueError, match=r"G: expected shape \(2, 4, C\)"):
        gathered_weight_grad(X, torch.randn(2, 5, 3), [[0, 1], [2]])
    with pytest.raises(IndexError, match="index 6 is out of range"):
        gathered_linear(X, torch.randn(1, 2), [[6]])
    with pytest.raises(ValueError, match="X: expected a 2-D"):
        gathered_linear(torch.randn(4), torch.randn(1, 2), [[0]])
    with pytest.raises(TypeError, match="W: expected a floating-point"):
        gathered_linear(X, torch.ones(1, 2, dtype=torch.int32), [[0]])


@pytest.mark.skipif(_native.cpu_module() is None, reason="CPU module not built")
def test_native_head_entry_points_refuse_inconsistent_sizes():
    C_ = _native.cpu_module()
    XT = torch.randn(6, 4)
    idx = torch.tensor([0, 5], dtype=torch.int64)
    off = torch.tensor([0, 2], dtype=torch.int64)
    W = torch.randn(2, 3)
    out = torch.empty(1, 4, 3)
    good = [XT.data_ptr(), 24, 0, 4, 4, 6, idx.data_ptr(), 2, off.data_ptr(), 2, W.data_ptr(), 6, 3, out.data_ptr(), 12,
            0]
    C_.gathered_forward(*good)
    torch.testing.assert_close(out[0], XT.T[:, [0, 5]] @ W)
    for pos, value, match in [(1, 23, "XT: expected 24"), (4, 3, "ldx"), (11, 5, "W: expected 6"),
                              (10, 0, "W: null pointer"), (14, 11, "out: expected 12"), (12, 0, "C "),
                              (2, 7, "dtype code")]:
        args = list(good)
        args[pos] = value
        with pytest.raises(ValueError, match=match):
            C_.gathered_forward(*args)
    bad = torch.tensor([0, 6], dtype=torch.int64)
    args = list(good)
    args[6] = bad.data_ptr()
    with pytest.raises(IndexError, match="index 6 at position 1"):
        C_.gathered_forward(*args)
    G = torch.randn(1, 4, 3)
    dW = torch.empty(2, 3)
    with pytest.raises(ValueError, match="dW: expected 6"):
        C_.gathered_weight_grad(XT.data_ptr(), 24, 0, 4, 4, 6, idx.data_ptr(), 2, off.data_ptr(), 2,
                                G.data_ptr(), 12, 3, dW.data_ptr(), 5, 0)
    with pytest.raises(ValueError, match="subsets: 2 indices but no list"):  # K = 0 heads holding indices
        C_.gathered_weight_grad(XT.data_ptr(), 24, 0, 4, 4, 6, idx.data_ptr(), 2, off.data_ptr(), 1,
                                G.data_ptr(), 0, 3, dW.data_ptr(), 6, 0)


def test_features_major_entry_points_copy_transposed_operands(rng):
    """A transposed (non-contiguous) W or G used to be read as if it were row-major: wrong logits."""
    from pyred.ops.heads import features_major, forward_xt, weight_grad_xt

    X = torch.tensor(rng.normal(size=(7, 9)))
    S = pyred.Subsets.from_lists([[0, 4, 8], [2, 3]], d=9)
    W = torch.tensor(rng.normal(size=(4, S.nnz))).T  # (nnz, C) view of a (C, nnz) buffer
    assert not W.is_contiguous()
    want = torch.stack([X[:, S[k]] @ W[int(S.offsets[k]):int(S.offsets[k + 1])] for k in range(len(S))])
    XT = features_major(X)
    torch.testing.assert_close(forward_xt(XT, S.indices, S.offsets, W), want)
    G = torch.tensor(rng.normal(size=(4, 7, 2))).permute(2, 1, 0)  # (K, B, C), not contiguous
    want_dw = torch.cat([X[:, S[k]].T @ G[k] for k in range(len(S))])
    torch.testing.assert_close(weight_grad_xt(XT, S.indices, S.offsets, G), want_dw)
    with pytest.raises(TypeError, match="W: expected torch.float64"):
        forward_xt(XT, S.indices, S.offsets, W.float())


def test_input_gradient_memory_is_per_head(rng):
    """dX of gathered_linear is built head by head: it matches autograd through plain indexing
    and never materialises an (nnz, B, C) tensor."""
    X = torch.tensor(rng.normal(size=(5, 12)), requires_grad=True)
    S = pyred.Subsets.from_lists([[0, 3, 7], [], [3, 11, 2, 5]], d=12)
    W = torch.tensor(rng.normal(size=(S.nnz, 3)), requires_grad=True)
    out = pyred.ops.gathered_linear(X, W, S)
    g = torch.tensor(rng.normal(size=out.shape))
    dX, dW = torch.autograd.grad(out, (X, W), g)
    X2, W2 = X.detach().clone().requires_grad_(), W.detach().clone().requires_grad_()
    ref = torch.stack([X2[:, S[k]] @ W2[int(S.offsets[k]):int(S.offsets[k + 1])] for k in range(len(S))])
    rX, rW = torch.autograd.grad(ref, (X2, W2), g)
    torch.testing.assert_close(dX, rX)
    torch.testing.assert_close(dW, rW)


DX_MEMORY = r"""
import resource, torch, pyred
d, K, B, C = 20000, 15, 256, 10  # nnz = 300k: an (nnz, B, C) float32 tensor would be 3.1 GB
S = pyred.Subsets.from_lists([torch.randperm(d)[: d] for _ in range(K)], d=d)
X = torch.randn(B, d, requires_grad=True)
W = torch.randn(S.nnz, C) * 0.01
out = pyred.ops.gathered_linear(X, W, S)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out.sum().backward()
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print((after - before) / 1024)
"""


@pytest.mark.slow
def test_input_gradient_of_wide_heads_fits_in_memory():
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-c", DX_MEMORY], capture_output=True, text=True, check=True)
    grew_mb = float(res.stdout.strip().splitlines()[-1])
    assert grew_mb < 600, f"backward grew the peak memory by {grew_mb:.0f} MB"


@pytest.mark.parametrize("max_gather", [1 << 24, 64, 7])
def test_grouped_layout_with_split_k_matches_the_reference(rng, max_gather):
    """The grouped (batched-GEMM) layout, also when a gather budget forces wide heads to be split
    along their features, gives the per-head products of the torch reference."""
    from pyred.probes.layouts import GroupedHeads

    B, d, C = 6, 30, 4
    X = torch.tensor(rng.normal(size=(B, d)))
    S = pyred.Subsets.from_lists([rng.permutation(d)[:m] for m in (5, 5, 0, 12, 30, 5)], d=d)
    W = torch.tensor(rng.normal(size=(S.nnz, C)))
    G = torch.tensor(rng.normal(size=(len(S), B, C)))
    heads = GroupedHeads(S, d, max_gather=max_gather)
    if max_gather == 7:
        assert any(len(heads._slices(len(h), p.shape[1], B)) > 1 for h, p, _ in heads.groups)  # split-k in use
    torch.testing.assert_close(heads.logits(heads.batch(X), W), gathered_linear(X, W, S, backend="torch"))
    torch.testing.assert_close(heads.weight_grad(heads.batch(X), G), gathered_weight_grad(X, G, S, backend="torch"))


@pytest.mark.skipif(_native.cpu_simd() not in ("avx2", "avx512f"), reason="needs an AVX2 + FMA or AVX-512 CPU")
def test_simd_clones_fuse_multiply_adds():
    """On an AVX2 + FMA (or AVX-512) CPU the heads kernels run a clone with fused multiply-adds:
    x1 * w1 = 1 + 2^-11 + 2^-24 is exact inside an FMA and rounds to 1 + 2^-11 alone, so a head
    summing -(1 + 2^-11) * 1 and x1 * w1 gives 2^-24 with FMA and 0 without. (GCC read
    target_clones("avx2,fma") as two clones, and AVX2 machines ran the one without FMA.)"""
    a, e = 1 + 2.0 ** -11, 1 + 2.0 ** -12
    X = torch.tensor([[-a, e]] * 16, dtype=torch.float32)
    W = torch.tensor([[1.0] * 4, [e] * 4], dtype=torch.float32)
    out = gathered_linear(X, W, [[0, 1]], backend="native")
    assert out.shape == (1, 16, 4) and torch.all(out == 2.0 ** -24), out[0, 0]
    # the weight gradient: dW[1, c] = sum_b X[b, 1] G[b, c] over b = (x = -(1 + 2^-11), g = 1), (x = e, g = e)
    Xg = torch.tensor([[0.0, -a], [0.0, e]], dtype=torch.float32)
    G = torch.tensor([[[1.0] * 4, [e] * 4]], dtype=torch.float32)
    dW = gathered_weight_grad(Xg, G, [[1]], backend="native")
    assert torch.all(dW == 2.0 ** -24), dW


LEVELS = ("avx512f", "avx2", "baseline")


@pytest.mark.skipif(not hasattr(_native.cpu_module(), "heads_tiles"), reason="needs the CPU module")
def test_register_tiles_fit_each_levels_registers():
    """The accumulators of a task's tile (and its operands, where several accumulators reuse them) must
    fit the level's vector registers -- 32 zmm, 16 ymm or xmm -- with one left for a broadcast. The
    AVX-512 tile (4 x 4 vectors of 16 floats) run as the AVX2 version took 40 ymm and was moved through
    the stack on every update (~5 GFLOP/s; 6-9x faster once it fit, at d = 2,048 and 100,000)."""
    C_mod = _native.cpu_module()
    for level in LEVELS:
        regs = 32 if level == "avx512f" else 16
        for dtype, itemsize in ((0, 4), (1, 8)):
            for C in range(1, 40):
                t = C_mod.heads_tiles(level, dtype, C)
                if t["vector_bytes"] == 0:
                    continue  # no such kernels in this build (not x86-64 GCC)
                S = 16 * itemsize // t["vector_bytes"]  # vectors per 16-lane tile
                nc, tt, q = t["forward_classes"], t["forward_tiles"], t["grad_rows"]
                forward = nc * tt * S + (tt * S if nc > 1 else 1) + 1
                grad = q * S + (S if q > 1 else 1) + 1
                assert forward <= regs and grad <= regs, (level, dtype, C, t)
                assert 1 <= q <= 8 and nc * tt * S >= S
    with pytest.raises(ValueError, match="level: expected"):
        C_mod.heads_tiles("sse9", 0, 10)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("B, d, C", [(40, 5000, 10), (7, 3000, 21), (256, 9000, 3), (17, 2500, 1), (1000, 3000, 3)])
def test_ascending_lists_take_the_feature_blocked_roads(rng, dtype, B, d, C):
    """Lists whose indices ascend (as GatheredHeads keeps them) are walked block of features by block
    (several blocks here, some heads absent from some blocks, heads cut into chunks): the same logits
    and weight gradients as the float64 reference, and as the same heads in shuffled order."""
    sizes = [0, 1, 5, d // 50, d // 3, d, d - 1, 300]
    lists = [np.sort(rng.choice(d, size=m, replace=False)) for m in sizes]
    lists.append(np.arange(d - 400, d))  # a run of the last features
    nnz = sum(len(s) for s in lists)
    X, W, G = rng.normal(size=(B, d)), rng.normal(size=(nnz, C)), rng.normal(size=(len(lists), B, C))
    want, Wref = explicit(X, W, lists)
    (want * torch.as_tensor(G)).sum().backward()
    Xt = torch.tensor(X, dtype=dtype)
    got = gathered_linear(Xt, torch.tensor(W, dtype=dtype), lists, backend="native")
    dW = gathered_weight_grad(Xt, torch.tensor(G, dtype=dtype), lists, backend="native")
    tol = dict(rtol=1e-10, atol=1e-10) if dtype == torch.float64 else dict(rtol=2e-4, atol=2e-4 * np.sqrt(d))
    torch.testing.assert_close(got.double(), want.detach(), **tol)
    torch.testing.assert_close(dW.double(), Wref.grad, **tol)
    # the unsorted road on the same heads, rows shuffled within each head
    perms = [rng.permutation(len(s)) for s in lists]
    off = np.concatenate([[0], np.cumsum([len(s) for s in lists])])
    rows = np.concatenate([off[k] + p for k, p in enumerate(perms)]).astype(np.int64)
    shuffled = [s[p] for s, p in zip(lists, perms)]
    got2 = gathered_linear(Xt, torch.tensor(W[rows], dtype=dtype), shuffled, backend="native")
    dW2 = gathered_weight_grad(Xt, torch.tensor(G, dtype=dtype), shuffled, backend="native")
    torch.testing.assert_close(got2, got, **tol)
    assert torch.equal(dW2, dW[rows])  # a row's gradient is one sum over the batch, in the same order


NARROW_LEVELS = """
import numpy as np, torch, pyred
from pyred import _native
from pyred.ops import gathered_linear, gathered_weight_grad
print(_native.cpu_simd())
rng = np.random.default_rng(5)
worst = 0.0
for dtype in (torch.float32, torch.float64):
    for ascending in (True, False):
        B, d, C = 37, 4100, 11
        lists = [rng.choice(d, size=m, replace=False) for m in (0, 3, 700, d)]
        lists = [np.sort(s) if ascending else s for s in lists]
        X, G = rng.normal(size=(B, d)), rng.normal(size=(len(lists), B, C))
        W = rng.normal(size=(sum(map(len, lists)), C))
        got = gathered_linear(torch.tensor(X, dtype=dtype), torch.tensor(W, dtype=dtype), lists, backend="native")
        dW = gathered_weight_grad(torch.tensor(X, dtype=dtype), torch.tensor(G, dtype=dtype), lists, backend="native")
        off = np.concatenate([[0], np.cumsum([len(s) for s in lists])])
        for k, s in enumerate(lists):
            ref = X[:, s] @ W[off[k]:off[k + 1]]
            gref = X[:, s].T @ G[k]
            scale = 1e-4 if dtype == torch.float32 else 1e-11
            err = lambda a, b: np.abs(a - b).max(initial=0) / (scale * (1 + np.abs(b).max(initial=0)))
            worst = max(worst, err(got[k].double().numpy(), ref), err(dW[off[k]:off[k + 1]].double().numpy(), gref))
print(worst)
"""


@pytest.mark.parametrize("level", ["avx2", "baseline"])
def test_narrower_simd_levels_compute_the_same_heads(level, tmp_path):
    """PYRED_SIMD caps the level, so this CPU also runs (and checks) the kernels of narrower CPUs.
    (The child starts outside the checkout, whose source folder holds no compiled modules.)"""
    import subprocess
    import sys

    if _native.cpu_simd() is None or LEVELS.index(level) < LEVELS.index(_native.cpu_simd()):
        pytest.skip(f"the CPU cannot run the {level} kernels")
    env = dict(__import__("os").environ, PYRED_SIMD=level)
    out = subprocess.run([sys.executable, "-c", NARROW_LEVELS], capture_output=True, text=True, env=env,
                         cwd=str(tmp_path))
    assert out.returncode == 0, out.stderr[-2000:]
    got_level, worst = out.stdout.split()
    assert got_level == level
    assert float(worst) <= 1.0, worst  # within 1e-4 (float32) / 1e-11 (float64) of the reference, relative


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_row_padding_is_read_but_never_leaks(rng, dtype):
    """A batch of B rows (not a multiple of 16) in a buffer with padded rows: the kernels read whole tiles
    from the caller's padding instead of copying XT per call; NaN there must not reach the logits."""
    from pyred.ops.heads import features_major, forward_xt, weight_grad_xt

    B, d, C = 37, 3000, 5
    X = torch.tensor(rng.normal(size=(B, d)), dtype=dtype)
    XT = features_major(X)
    assert XT.stride(0) == B + 16 and torch.all(XT.as_strided((d, 16), (B + 16, 1), B) == 0)  # zero padding
    XT.as_strided((d, 16), (B + 16, 1), B).fill_(float("nan"))
    for ascending in (True, False):
        lists = [rng.choice(d, size=m, replace=False) for m in (1, 40, 900, d)]
        lists = [np.sort(s) if ascending else s for s in lists]
        S = pyred.Subsets.from_lists(lists, d=d)
        W = torch.tensor(rng.normal(size=(S.nnz, C)), dtype=dtype)
        G = torch.tensor(rng.normal(size=(len(S), B, C)), dtype=dtype)
        got, dW = forward_xt(XT, S.indices, S.offsets, W), weight_grad_xt(XT, S.indices, S.offsets, G)
        tol = dict(rtol=1e-10, atol=1e-10) if dtype == torch.float64 else dict(rtol=2e-4, atol=2e-2)
        torch.testing.assert_close(got, gathered_linear(X, W, S, backend="torch"), **tol)
        torch.testing.assert_close(dW, gathered_weight_grad(X, G, S, backend="torch"), **tol)


def test_a_view_cut_from_a_wider_buffer_is_copied_before_the_kernels_read_its_padding(rng):
    """XT = big[:, 3:3 + B] has rows 40 apart, but its storage ends 37 elements after its last row's start:
    the kernels may read all d * ldx elements, so the view goes to them as a copy."""
    from pyred.ops.heads import _xt_args, forward_xt

    B, d = 21, 500
    big = torch.tensor(rng.normal(size=(d, 40)), dtype=torch.float32)
    XT = big[:, 3:3 + B]
    XT2, _, _, ldx = _xt_args(XT)
    assert XT2.is_contiguous() and ldx == B
    wide = big[:, :B]  # offset 0: the storage holds all d * 40 elements, nothing to copy
    assert _xt_args(wide)[0].data_ptr() == wide.data_ptr() and _xt_args(wide)[3] == 40
    S = pyred.Subsets.from_lists([np.sort(rng.choice(d, 50, replace=False)), np.arange(d)], d=d)
    W = torch.tensor(rng.normal(size=(S.nnz, 3)), dtype=torch.float32)
    torch.testing.assert_close(forward_xt(XT, S.indices, S.offsets, W),
                               gathered_linear(XT.T.contiguous(), W, S, backend="torch"), rtol=2e-4, atol=2e-3)
