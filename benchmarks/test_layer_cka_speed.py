"""Layer x layer CKA: pyred's layer_cka (one forward pass per batch for every layer) against computing
one pair of layers at a time, as per-pair CKA code does (a pass over the data per pair, the 45 pairs
i <= j of 9 layers). resnet18 random-init, 64 px, 512 digits images, the stem and the 8 residual blocks."""

import pytest
import torch

import pyred

LAYERS = ["act1"] + [f"layer{s}.{b}" for s in (1, 2, 3, 4) for b in (0, 1)]
N_IMAGES = 512


@pytest.fixture(scope="module")
def setup(device):
    from torchvision import transforms

    torch.manual_seed(0)
    bb = pyred.Backbone("resnet18", pretrained=False).to(device)
    data = pyred.datasets.load("digits", "trainval")
    tf = transforms.Compose([transforms.Resize(64), transforms.ToTensor()])
    return bb, data, tf


def pair_at_a_time(bb, data, tf, device):
    out = torch.eye(len(LAYERS), dtype=torch.float64)
    for i in range(len(LAYERS)):
        for j in range(i + 1, len(LAYERS)):
            M, _, _ = pyred.layer_cka(bb, data, [LAYERS[i]], bb, [LAYERS[j]], samples=N_IMAGES, transform=tf,
                                      batch_size=128, device=device, progress=False)
            out[i, j] = out[j, i] = M[0, 0]
    return out


@pytest.mark.parametrize("impl", ["pyred", "one pair at a time"])
def test_layer_cka(timed, setup, device, impl):
    from conftest import OUTPUTS

    bb, data, tf = setup
    group = f"layer_cka, resnet18 random-init, {len(LAYERS)} layers, {N_IMAGES} images at 64 px"
    if impl == "pyred":
        fn = lambda: pyred.layer_cka(bb, data, LAYERS, samples=N_IMAGES, transform=tf, batch_size=128,  # noqa: E731
                                     device=device, progress=False)[0]
    else:
        fn = lambda: pair_at_a_time(bb, data, tf, device)  # noqa: E731
    got = timed(group, impl, fn, rounds=1)
    OUTPUTS[(group, impl)] = got
    if impl != "pyred" and (group, "pyred") in OUTPUTS:
        torch.testing.assert_close(got, OUTPUTS[(group, "pyred")], rtol=1e-9, atol=1e-9)
