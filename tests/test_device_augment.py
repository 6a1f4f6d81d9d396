"""The paper's augmentation applied on the device (batched): each step against torchvision's tensor
functions, the parameters against the PIL road's draws, and FeatureStream(augment_on="device")."""

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as F
from PIL import Image

import pyred
from pyred.device_augment import N_PARAMS, RawImage, apply
from pyred.stream import FeatureStream, subset
from pyred.transforms import SeededImages, train_transform

IDENTITY = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)


def smooth(rng, B=3, H=48, W=64):
    """Smooth random images (sums of a few low-frequency waves) in [0, 1], so resampling differences stay small."""
    yy, xx = torch.meshgrid(torch.linspace(0, 1, H), torch.linspace(0, 1, W), indexing="ij")
    out = torch.zeros(B, 3, H, W)
    for _ in range(3):
        a, b, c = (torch.tensor(rng.uniform(0.5, 3, size=(B, 3, 1, 1)), dtype=torch.float32) for _ in range(3))
        out += torch.sin(a * xx + b * yy + c)
    return (out - out.amin((2, 3), keepdim=True)) / (out.amax((2, 3), keepdim=True) - out.amin((2, 3), keepdim=True))


def params(y0=0.0, x0=0.0, h=1.0, w=1.0, flip=0, order=(0, 1, 2), factors=(1.0, 1.0, 1.0), angle=0.0):
    return torch.tensor([y0, x0, h, w, flip, *order, *factors, angle], dtype=torch.float64)


def noise(rng, H=157, W=203):
    """uint8 (3, H, W) noise: every resampling difference shows (antialiasing above all)."""
    return rng.integers(0, 256, (3, H, W), dtype=np.uint8)


def pil(x):
    return Image.fromarray(np.ascontiguousarray(x.transpose(1, 2, 0)))


def levels(img):
    return torch.from_numpy(np.array(img)).permute(2, 0, 1).float()


def device(x, p, size):
    """The device road in grey levels (0-255)."""
    return apply(torch.from_numpy(x)[None], p[None], size, *IDENTITY)[0] * 255


def test_each_step_matches_the_pil_road(rng):
    x = noise(rng)
    H, W = x.shape[1:]
    # crop (rows 20..120, cols 30..150) + antialiased downscale + flip: within one grey level of PIL's
    got = device(x, params(20 / H, 30 / W, 100 / H, 120 / W, flip=1), 64)
    ref = levels(F.hflip(F.resized_crop(pil(x), 20, 30, 100, 120, [64, 64])))
    assert (got - ref).abs().max() <= 1 + 1e-4 and (got - ref).abs().mean() < 0.3
    # colour jitter in each image's own order, as ImageEnhance blends (truncated to grey levels)
    sq = x[:, :96, :96]
    ops = [F.adjust_brightness, F.adjust_contrast, F.adjust_saturation]
    for order, facs in (((1, 0, 2), (1.2, 0.8, 1.25)), ((2, 1, 0), (0.76, 1.1, 0.9)), ((0, 2, 1), (1.05, 0.77, 1.2))):
        ref = pil(sq)
        for op in order:
            ref = ops[op](ref, facs[op])
        got = device(sq, params(order=order, factors=facs), 96)
        assert (got - levels(ref)).abs().max() <= 1e-3, order
    # rotation: nearest neighbour, black corners; only ties between two source pixels may differ
    for angle in (1.7, -2.0, 0.3):
        got = device(sq, params(angle=angle), 96)
        ref = levels(F.rotate(pil(sq), angle))
        assert ((got - ref).abs() > 1e-3).float().mean() < 2e-3, angle
    # normalisation, and float input in [0, 1] taken as grey levels / 255
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    u8 = torch.from_numpy(sq)[None]
    torch.testing.assert_close(apply(u8, params()[None], 96, mean, std),
                               F.normalize(u8.float() / 255, mean, std), rtol=0, atol=1e-5)
    torch.testing.assert_close(apply(u8.float() / 255, params()[None], 96, mean, std),
                               apply(u8, params()[None], 96, mean, std), rtol=0, atol=1e-5)


def test_the_device_road_is_the_pil_road_within_a_grey_level(rng):
    """Whole augmentations of noise images, several sizes, strong downscales: the device road against
    train_transform under the same per-image seeds (the same crop, flip, jitter and angle)."""

    class Noise:
        targets, classes = np.zeros(12, dtype=np.int64), ["a"]

        def __init__(self):
            self.images = [pil(noise(rng, *hw)) for hw in [(157, 203), (240, 180), (90, 130)] * 4]

        def __len__(self):
            return 12

        def __getitem__(self, i):
            return self.images[i], 0

    ds = Noise()
    road = SeededImages(ds, train_transform(64, *IDENTITY), seed=3)
    raw = SeededImages(ds, RawImage(), seed=3)
    diffs = []
    for i in range(12):
        (img, p), _ = raw[(0, i)]
        diffs.append((apply(img[None], p[None], 64, *IDENTITY)[0] - road[(0, i)][0]).abs() * 255)
    d = torch.stack(diffs)
    # the resize's one-level differences, amplified by the jitter factors (up to 1.25 each), and the few
    # nearest-neighbour ties of the rotation
    assert d.mean() < 0.4 and (d > 4.5).float().mean() < 0.005, (d.mean(), (d > 4.5).float().mean())


def test_same_draws_as_the_pil_road():
    """Under one image seed both roads draw the same crop, flip, jitter and angle, so their images
    differ only by resampling (PIL's uint8 bilinear against grid_sample)."""
    ds = subset(pyred.datasets.load("digits", "train"), np.arange(24))
    pil = SeededImages(ds, train_transform(64, *IDENTITY), seed=5)
    raw = SeededImages(ds, RawImage(), seed=5)
    a = torch.stack([pil[(1, i)][0] for i in range(24)])
    items = [raw[(1, i)][0] for i in range(24)]
    b = apply(torch.stack([x for x, _ in items]), torch.stack([p for _, p in items]), 64, *IDENTITY)
    assert (a - b).abs().mean() < 0.03
    other = SeededImages(ds, RawImage(), seed=6)
    items = [other[(1, i)][0] for i in range(24)]
    c = apply(torch.stack([x for x, _ in items]), torch.stack([p for _, p in items]), 64, *IDENTITY)
    assert (a - c).abs().mean() > 3 * (a - b).abs().mean()  # another seed: other draws, far apart


def test_stream_on_the_device_road():
    torch.manual_seed(0)
    bb = pyred.Backbone("resnet18", pretrained=False)
    ds = subset(pyred.datasets.load("digits", "train"), np.arange(40))
    kw = dict(batch_size=16, image_size=32, seed=3, shuffle=False)
    dev = FeatureStream(bb, ds, augment_on="device", **kw)
    cpu = FeatureStream(bb, ds, **kw)
    Xd, Xc = torch.cat([x for x, _ in dev]), torch.cat([x for x, _ in cpu])
    assert Xd.shape == Xc.shape == (40, 512)
    assert dev.last_pass["images"] == cpu.last_pass["images"] == 40  # the device road counted a tensor here
    rel = (Xd - Xc).norm() / Xc.norm()
    assert rel < 0.2, rel  # same augmentations, other resampling
    again = torch.cat([x for x, _ in FeatureStream(bb, ds, augment_on="device", **kw)])
    torch.testing.assert_close(again, Xd, rtol=0, atol=0)
    S = pyred.draw_subsets(512, [0.1, 0.5], seeds=[1])
    res = pyred.train_probes(dev, None, S, epochs=1, progress=False)  # its split: a clean validation stream
    assert res.weights.shape == (S.nnz, 10)
    with pytest.raises(ValueError, match="augment_on: expected one of"):
        FeatureStream(bb, ds, augment_on="gpu")
    with pytest.raises(ValueError, match="augment_on: 'device' .* needs augment='paper'"):
        FeatureStream(bb, ds, augment=None, augment_on="device")


class Mixed(torch.utils.data.Dataset):
    """Images of two sizes."""

    targets, classes, name, split = np.array([0, 1, 0, 1]), ["a", "b"], "mixed", "train"

    def __len__(self):
        return 4

    def __getitem__(self, i):
        return Image.new("RGB", (20 + 10 * (i % 2), 24), color=(40 * i, 90, 200)), int(self.targets[i])


def test_mixed_sizes_are_resized_to_the_batchs_largest():
    from pyred.stream import _collate_raw

    raw = SeededImages(Mixed(), RawImage(), seed=0)
    items = [(raw[(0, i)][0], raw[(0, i)][1]) for i in range(4)]
    (images, p), y = _collate_raw(items)
    assert images.shape == (4, 3, 24, 30) and images.dtype == torch.float32 and float(images.max()) <= 1.0
    small = items[0][0][0]  # 24 x 20, stretched to 24 x 30: a uniform colour stays that colour
    torch.testing.assert_close(images[0], small.float().div(255).expand(3, 24, 20)[:, :, :1].expand(3, 24, 30))
    assert y.tolist() == [0, 1, 0, 1] and p.shape == (4, N_PARAMS)
    (same, _), _ = _collate_raw(items[1::2])  # one size: kept as uint8
    assert same.dtype == torch.uint8 and same.shape == (2, 3, 24, 30)
    bb = pyred.Backbone("resnet18", pretrained=False)
    for load_size in (None, 28):
        s = FeatureStream(bb, Mixed(), augment_on="device", batch_size=4, image_size=32, load_size=load_size)
        assert next(iter(s))[0].shape == (4, 512)


def test_auto_augments_on_the_device_only_on_cuda():
    bb = pyred.Backbone("resnet18", pretrained=False)
    assert FeatureStream(bb, Mixed(), image_size=32).augment_on == "cpu"
    if torch.cuda.is_available():
        assert FeatureStream(bb, Mixed(), image_size=32, device="cuda").augment_on == "device"
        assert FeatureStream(bb, Mixed(), augment=None, image_size=32, device="cuda").augment_on == "cpu"
