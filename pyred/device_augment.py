"""The paper's augmentation on the device: a whole batch at once, so the CPU does not throttle a GPU.

The CPU only decodes each image to a uint8 tensor and draws its augmentation's
parameters -- with torchvision's own ``get_params`` calls, in the order the PIL
pipeline (:func:`pyred.transforms.train_transform`) makes them, under the same
per-image seed -- so both roads draw the *same* crop, flip, jitter factors and
angle for an image. The device then makes the image as PIL does, in grey levels
(0-255) with PIL's rounding: the crop resized with PIL's antialiased bilinear
filter (torch's ``antialias=True``, one resize per image) and rounded, the flip,
the colour jitter in each image's own order as ImageEnhance blends (towards
black, the rounded mean of the grey image, each pixel's grey; truncated and
clamped after each), the rotation about the centre with nearest-neighbour
sampling and black corners (torchvision's default for PIL images), then /255 and
the normalisation. The roads agree within one grey level almost everywhere
(tests/test_device_augment.py measures it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

SCALE, RATIO, JITTER, DEGREES = (0.08, 1.0), (3 / 4, 4 / 3), 0.25, 2.0
N_PARAMS = 12  # y0, x0, h, w (fractions of the image), flip, order (3), factors (3), angle


def draw_params(height: int, width: int) -> torch.Tensor:
    """(N_PARAMS,) float64 parameters of the paper's augmentation for an image of that size, drawn from
    torch's global CPU generator exactly as ``train_transform``'s steps draw them."""
    from torchvision import transforms as T

    dummy = torch.zeros(1).expand(3, height, width)  # get_params reads only the size
    i, j, h, w = T.RandomResizedCrop.get_params(dummy, list(SCALE), list(RATIO))
    flip = float(torch.rand(1) < 0.5)
    lo, hi = 1 - JITTER, 1 + JITTER
    order, b, c, s, _ = T.ColorJitter.get_params([lo, hi], [lo, hi], [lo, hi], None)
    order = [int(k) for k in order.tolist() if int(k) < 3]  # hue (3) is off
    angle = T.RandomRotation.get_params([-DEGREES, DEGREES])
    return torch.tensor([i / height, j / width, h / height, w / width, flip, *order, b, c, s, angle],
                        dtype=torch.float64)


def apply(images: torch.Tensor, params: torch.Tensor, size: int, mean: Sequence[float],
          std: Sequence[float]) -> torch.Tensor:
    """images: (B, 3, H, W) uint8 (or float in [0, 1]) on the device; params: (B, N_PARAMS).
    Returns (B, 3, size, size) float32, augmented and normalised as the PIL road makes them (see the module
    docstring): within one grey level of it but where nearest-neighbour rotation meets a tie."""
    x = images.float() if not images.is_floating_point() else images.float() * 255.0
    p = params.to(x.device, torch.float64)
    x = _crop_resize_flip(x, p, size)
    x = _jitter(x, p[:, 5:8].long(), p[:, 8:11])
    x = _rotate(x, p[:, 11])
    m = torch.tensor(mean, device=x.device, dtype=x.dtype)[None, :, None, None]
    s = torch.tensor(std, device=x.device, dtype=x.dtype)[None, :, None, None]
    return (x / 255.0 - m) / s


def _crop_resize_flip(x: torch.Tensor, p: torch.Tensor, size: int) -> torch.Tensor:
    """Each image's crop box resized to size x size with PIL's antialiased bilinear filter (torch's
    ``antialias=True`` is its port), rounded to grey levels as PIL's uint8 output; then the flip."""
    B, _, H, W = x.shape
    boxes = (p[:, :4] * torch.tensor([H, W, H, W], dtype=torch.float64, device=p.device)).round().long().tolist()
    out = torch.empty(B, 3, size, size, device=x.device, dtype=x.dtype)
    for b, (i, j, h, w) in enumerate(boxes):  # boxes differ in size: one resize per image
        crop = x[b:b + 1, :, i:i + max(h, 1), j:j + max(w, 1)]
        out[b] = torch.nn.functional.interpolate(crop, size=(size, size), mode="bilinear", antialias=True,
                                                 align_corners=False)[0]
    out = out.round_().clamp_(0, 255)
    flip = p[:, 4] > 0.5
    out[flip] = out[flip].flip(-1)
    return out


def _luma(x: torch.Tensor) -> torch.Tensor:
    """PIL's convert("L") of (B, 3, H, W) grey levels: (R 19595 + G 38470 + B 7471 + 2^15) >> 16."""
    w = torch.tensor([19595.0, 38470.0, 7471.0], device=x.device, dtype=torch.float64)[None, :, None, None]
    return torch.floor(((x.double() * w).sum(1, keepdim=True) + 32768.0) / 65536.0)


def _jitter(x: torch.Tensor, order: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """Brightness, contrast and saturation in each image's own order, as PIL's ImageEnhance blends them:
    towards black, the grey image's rounded mean, or each pixel's grey, truncated to grey levels in [0, 255]."""
    for step in range(3):
        for op in range(3):
            rows = torch.nonzero(order[:, step] == op).flatten()
            if rows.numel() == 0:
                continue
            f = factors[rows, op][:, None, None, None].float()  # PIL blends in single precision
            xi = x[rows].float()
            if op == 0:
                other = torch.zeros_like(xi)
            elif op == 1:
                other = torch.floor(_luma(xi).mean(dim=(1, 2, 3), keepdim=True) + 0.5).float()
            else:
                other = _luma(xi).float()
            x[rows] = torch.trunc(other + f * (xi - other)).clamp_(0, 255).to(x.dtype)
    return x


def _rotate(x: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    """Rotation about the centre, counter-clockwise, nearest neighbour with black corners (torchvision's
    RandomRotation default on PIL images)."""
    B, _, H, W = x.shape
    a = degrees.to(torch.float64) * (math.pi / 180)
    rot = torch.zeros(B, 2, 3, device=x.device, dtype=torch.float64)
    # grid coordinates are normalised per axis: the rotation of pixel positions, rescaled by the aspect ratio
    rot[:, 0, 0], rot[:, 0, 1] = torch.cos(a), -torch.sin(a) * H / W
    rot[:, 1, 0], rot[:, 1, 1] = torch.sin(a) * W / H, torch.cos(a)
    grid = torch.nn.functional.affine_grid(rot, (B, 3, H, W), align_corners=False)  # type: ignore[arg-type]
    return torch.nn.functional.grid_sample(x, grid.to(x.dtype), mode="nearest", padding_mode="zeros",
                                           align_corners=False)


class RawImage:
    """The per-image CPU work of the device road: the image as a (3, H, W) uint8 tensor (resized to
    ``load_size`` x ``load_size`` when given, so images of mixed sizes batch), and its parameters
    drawn at the image's original size."""

    def __init__(self, load_size: int | None = None) -> None:
        self.load_size = load_size

    def __call__(self, image: Any) -> tuple[torch.Tensor, torch.Tensor]:
        params = draw_params(image.height, image.width)
        if self.load_size is not None:
            image = image.resize((self.load_size, self.load_size), resample=2)  # PIL bilinear
        arr = np.asarray(image.convert("RGB"), dtype=np.uint8)
        return torch.from_numpy(arr.copy()).permute(2, 0, 1), params
