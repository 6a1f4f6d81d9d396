"""Feature extraction against the bare model forward, same batches, device and run.

A random-init resnet18 at 64 x 64 px, 2,048 images already as tensors (so the
comparison measures pyred's pipeline -- DataLoader, inference mode, copies to
NumPy, chunked cache writes with checksums -- not image decoding), batch 64.
Target: extraction at >= 90 % of the bare forward's throughput.
"""

import numpy as np
import pytest
import torch

import pyred
from pyred.datasets import LabeledImages

N, SIZE, BATCH = 2048, 64, 64
GROUP = f"extraction, resnet18 random-init, {N} images {SIZE}px, batch {BATCH}"


@pytest.fixture(scope="module")
def setup(device):
    torch.manual_seed(0)
    bb = pyred.Backbone("resnet18", pretrained=False).to(device)
    images = torch.randn(N, 3, SIZE, SIZE)
    ds = LabeledImages(images, np.arange(N), np.arange(N) % 10, [str(c) for c in range(10)], "random-tensors", "test")
    return bb, images, ds


@pytest.mark.parametrize("impl", ["bare forward", "pyred", "pyred (in memory)"])
def test_extraction_throughput(timed, setup, tmp_path, device, impl):
    bb, images, ds = setup
    if impl == "bare forward":
        def run():
            with torch.inference_mode():
                for s in range(0, N, BATCH):
                    bb(images[s:s + BATCH].to(device))
        timed(GROUP, impl, run, rounds=3)
        return
    counter = iter(range(100))

    def run():  # a fresh cache folder every round: always a full extraction, never a hit
        cache = None if impl == "pyred (in memory)" else tmp_path / f"round{next(counter)}"
        fs = pyred.extract_features(bb, ds, transform=None, batch_size=BATCH, cache_dir=cache, progress=False)
        assert fs.X.shape == (N, 512)
    timed(GROUP, impl, run, rounds=3)
