"""The paper's online protocol: K = 71 probe heads trained from one FeatureStream (one backbone forward
per augmented batch for all heads) against the reference code's way -- 71 separate trainings, each
running the backbone on its own augmented batches -- and against a bare pass of the stream (the
backbone on the same augmented batches, no heads: the floor of any online training).

Offline pretrained EfficientNet-Lite0 at 64 px, one epoch over 320 digits images, batches of 64,
the paper's grid (14 fractions x 5 seeds + the full layer). The separate trainings draw the same
augmented batches (image-seeded augmentation, same order seed), so their heads must equal the
batched ones; the benchmark checks that too.
"""

import numpy as np
import pytest
import torch

import pyred
from pyred.stream import FeatureStream, subset

GRID = (0.0005, 0.001, 0.002, 0.003, 0.004, 0.005, 0.01, 0.05, 0.1, 0.2, 0.3, 0.5, 0.8, 0.9)
N_IMAGES, SIZE, BATCH = 320, 64, 64


@pytest.fixture(scope="module")
def setup(device):
    bb = pyred.Backbone("tf_efficientnet_lite0").to(device)
    train = subset(pyred.datasets.load("digits", "train"), np.arange(N_IMAGES))
    val = subset(pyred.datasets.load("digits", "val"), np.arange(64))

    def stream():
        return FeatureStream(bb, train, batch_size=BATCH, image_size=SIZE, seed=0, device=device)

    s = stream()
    Xv, yv = s.with_dataset(val, augment=None, shuffle=False).collect()
    S = pyred.Subsets.concat([pyred.draw_subsets(s.dim, GRID, [1, 2, 3, 4, 5]),
                              pyred.draw_subsets(s.dim, [1.0], [2])])
    return stream, S, Xv, yv


def batched(stream, S, Xv, yv):
    return pyred.train_probes(stream(), None, S, X_val=Xv, y_val=yv, epochs=1, progress=False)


def one_by_one(stream, S, Xv, yv):
    heads = []
    for k in range(len(S)):
        r = pyred.train_probes(stream(), None, S[k:k + 1], X_val=Xv, y_val=yv, epochs=1, init_seeds=[k],
                               progress=False)
        heads.append(r.weights)
    return torch.cat(heads)


def bare(stream, S, Xv, yv):
    n = 0
    for _X, y in stream():
        n += len(y)
    return n


@pytest.mark.parametrize("impl", ["pyred", "bare stream pass (backbone only, no heads)",
                                  "71 separate trainings, each with its own forwards"])
def test_online_heads(timed, setup, device, impl):
    from conftest import OUTPUTS

    stream, S, Xv, yv = setup
    group = f"online probes: {len(S)} heads, lite0 at {SIZE} px, 1 epoch of {N_IMAGES} augmented images"
    fn = {"pyred": batched, "bare stream pass (backbone only, no heads)": bare}.get(impl, one_by_one)
    got = timed(group, impl, lambda: fn(stream, S, Xv, yv), rounds=1 if fn is one_by_one else 3)
    if fn is one_by_one and (group, "pyred") in OUTPUTS:
        torch.testing.assert_close(got, OUTPUTS[(group, "pyred")].weights, rtol=1e-4, atol=1e-6)
