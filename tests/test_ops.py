import numpy as np
import pytest
import torch

import pyred
from helpers import references as R
from helpers.devices import CUDA_OK, DEVICES
from pyred import _native
from pyred.ops import gathered_block_sums, segment_sums

BACKENDS = ["native", "torch"]


def random_lists(rng, d, K):
    sizes = rng.integers(0, d + 1, size=K)
    sizes[: min(3, K)] = [0, 1, d][: min(3, K)]  # k = 0, 1 and d always present
    return [rng.permutation(d)[:k] for k in sizes]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("d, K, M", [(1, 3, 1), (17, 9, 1), (64, 20, 3), (300, 7, 2)])
def test_block_sums_match_reference(rng, device, backend, dtype, d, K, M):
    mats = rng.normal(size=(M, d, d))
    rows, cols = random_lists(rng, d, K), random_lists(rng, d, K)
    rows = rows + [rows[-1]]  # a repeated subset
    cols = cols + [cols[-1]]
    t = torch.tensor(mats, dtype=dtype, device=device)
    got = gathered_block_sums(t, rows, cols, backend=backend)
    want = R.block_sums(t.double().cpu().numpy(), rows, cols)
    assert got.dtype == torch.float64 and got.device.type == device and got.shape == (K + 1, M)
    np.testing.assert_allclose(got.cpu().numpy(), want, rtol=1e-12, atol=1e-12 * d * d)
    same = gathered_block_sums(t[0], rows, backend=backend)  # (d, d) input, cols = rows
    np.testing.assert_allclose(same.cpu().numpy(), R.block_sums(t[0].double().cpu().numpy(), rows, rows)[:, 0],
                               rtol=1e-12, atol=1e-12 * d * d)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("d, K, M", [(1, 2, 1), (33, 11, 1), (1000, 25, 4)])
def test_segment_sums_match_reference(rng, device, backend, dtype, d, K, M):
    values = rng.normal(size=(M, d))
    lists = random_lists(rng, d, K)
    t = torch.tensor(values, dtype=dtype, device=device)
    got = segment_sums(t, lists, backend=backend)
    want = R.segment_sums(t.double().cpu().numpy(), lists)
    assert got.shape == (K, M) and got.dtype == torch.float64
    np.testing.assert_allclose(got.cpu().numpy(), want, rtol=1e-12, atol=1e-12 * d)
    one = segment_sums(t[0], lists, backend=backend)
    assert one.shape == (K,)
    np.testing.assert_allclose(one.cpu().numpy(), want[:, 0], rtol=1e-12, atol=1e-12 * d)


@pytest.mark.parametrize("device", DEVICES)
def test_float16_noncontiguous_and_numpy(rng, device):
    d = 40
    base = rng.normal(size=(d, 2 * d))
    lists = random_lists(rng, d, 6)
    t = torch.tensor(base, dtype=torch.float16, device=device)[:, ::2]  # non-contiguous half
    assert not t.is_contiguous()
    want = R.block_sums(t.double().cpu().numpy(), lists, lists)[:, 0]
    np.testing.assert_allclose(gathered_block_sums(t, lists).cpu().numpy(), want, rtol=1e-6, atol=1e-6)
    got_np = gathered_block_sums(base[:, ::2], lists)  # numpy in, numpy out
    assert isinstance(got_np, np.ndarray) and got_np.dtype == np.float64
    np.testing.assert_allclose(got_np, R.block_sums(base[:, ::2], lists, lists)[:, 0], rtol=1e-12, atol=1e-9)
    v = base[0, ::3]
    np.testing.assert_allclose(segment_sums(v, [[0, 5], [13]]), [v[0] + v[5], v[13]], rtol=1e-12)


def test_cupy_roundtrip(rng):
    cupy = pytest.importorskip("cupy")
    if not CUDA_OK:
        pytest.skip("needs a CUDA device")
    mats = cupy.asarray(rng.normal(size=(30, 30)))
    lists = random_lists(rng, 30, 5)
    got = gathered_block_sums(mats, lists)
    assert isinstance(got, cupy.ndarray)
    np.testing.assert_allclose(cupy.asnumpy(got), R.block_sums(cupy.asnumpy(mats), lists, lists)[:, 0], rtol=1e-12)


@pytest.mark.parametrize("device", DEVICES)
def test_empty_list_of_subsets(device):
    out = gathered_block_sums(torch.ones(4, 4, device=device), pyred.Subsets.from_lists([], d=4))
    assert out.shape == (0,)
    assert segment_sums(torch.ones(4, device=device), []).shape == (0,)


def test_bad_input_errors():
    A = torch.ones(5, 5)
    with pytest.raises(IndexError, match="rows: index 5 is out of range for width 5"):
        gathered_block_sums(A, pyred.Subsets.from_lists([[0, 5]]))
    with pytest.raises(IndexError, match="out of range for width d=5"):
        gathered_block_sums(A, [[0, 5]])
    with pytest.raises(IndexError, match="cols: index 7"):
        gathered_block_sums(A, [[0]], pyred.Subsets.from_lists([[7]]))
    with pytest.raises(ValueError, match="cols: expected 1 lists"):
        gathered_block_sums(A, [[0]], [[1], [2]])
    with pytest.raises(ValueError, match=r"mats: expected a \(d, d\) or \(M, d, d\)"):
        gathered_block_sums(torch.ones(3, 4), [[0]])
    with pytest.raises(TypeError, match="mats: expected a floating-point array"):
        gathered_block_sums(torch.ones(3, 3, dtype=torch.int64), [[0]])
    with pytest.raises(ValueError, match=r"values: expected a \(d,\) or \(M, d\)"):
        segment_sums(torch.ones(2, 2, 2), [[0]])
    with pytest.raises(TypeError, match="values: expected a floating-point"):
        segment_sums(np.arange(4), [[0]])
    with pytest.raises(ValueError, match="drawn for a layer of width 8"):
        segment_sums(torch.ones(5), pyred.draw_subsets(8, [0.5], [1]))
    with pytest.raises(ValueError, match="backend: expected one of"):
        segment_sums(torch.ones(5), [[0]], backend="fast")


@pytest.mark.skipif(_native.cpu_module() is None, reason="CPU module not built")
def test_native_cpu_entry_points_refuse_inconsistent_sizes():
    C = _native.cpu_module()
    mats = torch.ones(2, 4, 4, dtype=torch.float64)
    idx = torch.tensor([0, 3], dtype=torch.int64)
    off = torch.tensor([0, 2], dtype=torch.int64)
    out = torch.empty(1, 2, dtype=torch.float64)
    p = lambda t: t.data_ptr()  # noqa: E731
    good = [p(mats), 32, 1, 2, 4, p(idx), 2, p(off), 2, p(idx), 2, p(off), 2, 2, p(out), 2, 0]
    C.block_sums(*good)
    assert out.tolist() == [[4.0, 4.0]]
    cases = {
        1: (31, ValueError, "mats: expected 32 elements"),
        2: (5, ValueError, "dtype code"),
        3: (0, ValueError, "M "),
        4: (-1, ValueError, "d "),
        8: (0, ValueError, "offsets must hold"),
        15: (3, ValueError, "out: expected 2 elements"),
        13: (-1, ValueError, "max_rows must be >= 0"),
        0: (0, ValueError, "null pointer"),
        10: (3, IndexError, "offsets\\[-1\\] must equal"),
    }
    for pos, (value, exc, match) in cases.items():
        args = list(good)
        args[pos] = value
        with pytest.raises(exc, match=match):
            C.block_sums(*args)
    bad_idx = torch.tensor([0, 9], dtype=torch.int64)
    args = list(good)
    args[5] = p(bad_idx)
    with pytest.raises(IndexError, match="index 9 at position 1 is outside"):
        C.block_sums(*args)
    bad_off = torch.tensor([0, 3, 2], dtype=torch.int64)
    with pytest.raises(IndexError, match="non-decreasing"):
        C.segment_sums(p(mats), 8, 1, 2, 4, p(idx), 2, p(bad_off), 3, p(out), 4, 0)
    with pytest.raises(ValueError, match="values: expected 8 elements"):
        C.segment_sums(p(mats), 9, 1, 2, 4, p(idx), 2, p(off), 2, p(out), 2, 0)


@pytest.mark.skipif(_native.cpu_module() is None or _native.cuda_module() is None,
                    reason="needs both native modules (the CUDA one builds wherever nvcc is, no GPU needed)")
def test_cpu_and_cuda_modules_have_identical_entry_points():
    C, Cu = _native.cpu_module(), _native.cuda_module()
    for name in ("segment_sums", "block_sums", "gathered_forward", "gathered_weight_grad"):
        assert getattr(C, name).__doc__.splitlines()[0] == getattr(Cu, name).__doc__.splitlines()[0], name


@pytest.mark.skipif(_native.cuda_module() is None, reason="CUDA module not built")
def test_native_cuda_entry_points_refuse_bad_arguments():
    Cu = _native.cuda_module()
    host = torch.ones(16, dtype=torch.float64)
    idx = torch.zeros(1, dtype=torch.int64)
    off = torch.tensor([0, 1], dtype=torch.int64)
    out = torch.empty(1, dtype=torch.float64)
    with pytest.raises(ValueError, match="values: expected 16 elements"):
        Cu.segment_sums(host.data_ptr(), 15, 1, 1, 16, idx.data_ptr(), 1, off.data_ptr(), 2, out.data_ptr(), 1, 0)
    if Cu.device_count() == 0:
        # No device: the pointer query itself reports the problem instead of crashing.
        with pytest.raises(ValueError):
            Cu.segment_sums(host.data_ptr(), 16, 1, 1, 16, idx.data_ptr(), 1, off.data_ptr(), 2,
                            out.data_ptr(), 1, 0)
    else:
        with pytest.raises(ValueError, match="expected CUDA device memory"):
            Cu.segment_sums(host.data_ptr(), 16, 1, 1, 16, idx.data_ptr(), 1, off.data_ptr(), 2,
                            out.data_ptr(), 1, 0)


@pytest.mark.parametrize("device", DEVICES)
def test_custom_ops_pass_opcheck(device):
    mats = torch.randn(2, 6, 6, dtype=torch.float64, device=device)
    S = pyred.Subsets.from_lists([[0, 2], [], [5, 1, 3]], d=6).to(device)
    torch.library.opcheck(torch.ops.pyred.block_sums.default,
                          (mats, S.indices, S.offsets, S.indices, S.offsets, S.max_size))
    torch.library.opcheck(torch.ops.pyred.segment_sums.default, (mats[0], S.indices, S.offsets))


def test_custom_op_under_torch_compile():
    mats = torch.randn(1, 8, 8, dtype=torch.float64)
    S = pyred.Subsets.from_lists([[0, 1], [7]], d=8)

    def f(m):
        return torch.ops.pyred.block_sums(m * 2, S.indices, S.offsets, S.indices, S.offsets, S.max_size)

    try:
        compiled = torch.compile(f, backend="eager", fullgraph=True)
        got = compiled(mats)
    except Exception as exc:  # a torch build without dynamo support
        pytest.skip(f"torch.compile unavailable: {exc}")
    torch.testing.assert_close(got, f(mats))
