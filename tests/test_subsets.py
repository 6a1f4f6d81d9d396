import numpy as np
import pytest
import torch

import pyred
from helpers.devices import DEVICES

PAPER_R50 = [0.0005, 0.001, 0.002, 0.003, 0.004, 0.005, 0.01, 0.05, 0.1, 0.2, 0.3, 0.5, 0.8, 0.9]


def reference_subset(d, f, s):
    """The reference code's rule, literally: global seed, CPU randperm, int() truncation."""
    state = torch.get_rng_state()
    try:
        torch.manual_seed(s)
        perm = torch.randperm(d)
    finally:
        torch.set_rng_state(state)
    return perm[: int(f * d)]


@pytest.mark.parametrize("d", [384, 512, 2048, 7])
def test_random_subsets_reproduce_the_reference_code(d):
    seeds = [1, 2, 3, 4, 5]
    S = pyred.draw_subsets(d, PAPER_R50 + [1.0], seeds)
    assert len(S) == (len(PAPER_R50) + 1) * len(seeds)
    k = 0
    for f in PAPER_R50 + [1.0]:
        for s in seeds:
            assert torch.equal(S[k], reference_subset(d, f, s)), (f, s)
            assert S.fractions[k] == f and S.seeds[k] == s and S.sizes[k] == int(f * d)
            k += 1


def test_paper_sizes_and_nesting():
    S = pyred.draw_subsets(2048, PAPER_R50, [3])
    assert S.sizes.tolist() == [1, 2, 4, 6, 8, 10, 20, 102, 204, 409, 614, 1024, 1638, 1843]
    for a, b in zip(S, list(S)[1:]):
        assert torch.equal(b[: len(a)], a)  # nested prefixes of one permutation
    vit = pyred.draw_subsets(384, [0.0005, 0.001, 0.005, 0.05, 0.1, 0.2, 0.5, 0.9], [1])
    assert vit.sizes.tolist() == [0, 0, 1, 19, 38, 76, 192, 345]


def test_global_rng_untouched():
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    pyred.draw_subsets(100, [0.5], [7])
    assert torch.equal(torch.rand(3), before)


def test_first_mode_and_full_layer():
    S = pyred.draw_subsets(10, [0.0, 0.3, 1.0], [1, 2], mode="first")
    assert len(S) == 3
    assert [s.tolist() for s in S] == [[], [0, 1, 2], list(range(10))]
    assert S.seeds.tolist() == [-1, -1, -1]
    full = pyred.draw_subsets(10, [1.0], [2])
    assert sorted(full[0].tolist()) == list(range(10))


def test_sizes_argument():
    S = pyred.draw_subsets(2048, sizes=[8, 16, 1024], seeds=[1])
    assert S.sizes.tolist() == [8, 16, 1024]
    assert S.fractions.tolist() == [8 / 2048, 16 / 2048, 0.5]


def test_from_lists_and_access():
    S = pyred.Subsets.from_lists([[3, 1], [], [0, 2, 4]], d=5)
    assert len(S) == 3 and S.nnz == 5 and S.max_size == 3 and S.max_index == 4
    assert S[0].tolist() == [3, 1] and S[-1].tolist() == [0, 2, 4]
    part = S[1:]
    assert len(part) == 2 and part[1].tolist() == [0, 2, 4]
    assert [s.tolist() for s in S[::2]] == [[3, 1], [0, 2, 4]]
    assert "K=3" in repr(S)
    both = pyred.Subsets.concat([S, part])
    assert [s.tolist() for s in both] == [[3, 1], [], [0, 2, 4], [], [0, 2, 4]]
    from_np = pyred.Subsets.from_lists([np.array([1, 2]), torch.tensor([0])])
    assert from_np.d is None and from_np.max_index == 2


@pytest.mark.parametrize("device", DEVICES)
def test_to_device_keeps_metadata(device):
    S = pyred.draw_subsets(50, [0.1, 0.5], [1, 2]).to(device)
    assert S.indices.device.type == device and S.offsets.device.type == device
    assert S.sizes.device.type == "cpu" and S.sizes.tolist() == [5, 5, 25, 25]
    assert S.to("cpu")[2].tolist() == S[2].cpu().tolist()


@pytest.mark.parametrize("bad, match", [
    (dict(d=0, fractions=[0.1]), r"d \(the layer width\): expected an integer"),
    (dict(d=2.5, fractions=[0.1]), r"d \(the layer width\): expected an integer"),
    (dict(d=10, fractions=[1.5]), "fractions: expected a number <= 1, got 1.5"),
    (dict(d=10, fractions=[-0.1]), "fractions: expected a number >= 0, got -0.1"),
    (dict(d=10, fractions=[float("nan")]), "fractions: expected a finite number, got nan"),
    (dict(d=10, fractions=[]), "empty grid"),
    (dict(d=10, fractions=[0.1], seeds=[]), "seeds: expected at least one"),
    (dict(d=10, fractions=[0.1], seeds=[-1]), "seeds: expected an integer >= 0"),
    (dict(d=10, fractions=[0.1], mode="pca"), "mode: expected one of"),
    (dict(d=10, sizes=[11]), "sizes: expected an integer <= 10"),
    (dict(d=10), "exactly one of"),
])
def test_draw_subsets_bad_input(bad, match):
    with pytest.raises((ValueError, TypeError), match=match):
        pyred.draw_subsets(**bad)


def test_from_lists_bad_input():
    with pytest.raises(IndexError, match="out of range for width d=4"):
        pyred.Subsets.from_lists([[0, 4]], d=4)
    with pytest.raises(IndexError, match="negative"):
        pyred.Subsets.from_lists([[0, -1]])
    with pytest.raises(ValueError, match="list 1 contains index 2 more than once"):
        pyred.Subsets.from_lists([[0, 1], [2, 3, 2]])
    with pytest.raises(TypeError, match="integers"):
        pyred.Subsets.from_lists([[0.5, 1]])
    with pytest.raises(ValueError, match="1-D"):
        pyred.Subsets.from_lists([[[0, 1]]])
    with pytest.raises(ValueError, match="offsets must start at 0"):
        pyred.Subsets(torch.tensor([0, 1]), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="non-decreasing"):
        pyred.Subsets(torch.tensor([0, 1]), torch.tensor([0, 2, 1, 2]))
    with pytest.raises(ValueError, match="drawn for a layer of width 10"):
        pyred.draw_subsets(10, [0.5], [1]).check_width(12)
