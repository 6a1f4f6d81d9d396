"""Device and dtype lists shared by the tests: every numeric test runs on each device."""

import numpy as np
import pytest
import torch

import pyred

CUDA_OK = pyred.native_info()["cuda_device_usable"]

DEVICES = [
    "cpu",
    pytest.param("cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(
        not CUDA_OK, reason="needs a CUDA device and the pyred._C_cuda module")]),
]


@pytest.fixture
def rng():
    # Fresh random data each run; the seed is printed on failure by the assertion context.
    seed = int(np.random.SeedSequence().entropy % (2**32))
    print(f"rng seed {seed}")
    return np.random.default_rng(seed)


def to_device(a, device, dtype=torch.float64):
    return torch.as_tensor(np.asarray(a), dtype=dtype, device=device)
