"""Device lists shared by the tests: every numeric test runs on each device."""

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


def to_device(a, device, dtype=torch.float64):
    return torch.as_tensor(np.asarray(a), dtype=dtype, device=device)
