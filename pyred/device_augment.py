"""The paper's augmentation on the device: a whole batch at once, so the CPU does not throttle a GPU.

The CPU only decodes each image to a uint8 tensor and draws its augmentation's
parameters -- with torchvision's own ``get_params`` calls, in the order the PIL
pipeline (:func:`pyred.transforms.train_transform`) makes them, under the same
per-image seed -- so both roads draw the *same* crop, flip, jitter factors and
angle for an image; they differ only in resampling arithmetic (PIL's uint8
bilinear against ``grid_sample`` in float). The device then applies, batched:
crop + resize + flip (one ``grid_sample`` with a per-image affine grid), the
colour jitter in each image's own order (brightness, contrast against the mean
grey of the crop, saturation against its per-pixel grey; clamped to [0, 1] after
each, as torchvision does), rotation about the centre with black corners
(a second ``grid_sample``), and the normalisation.
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
    Returns (B, 3, size, size) float32, augmented and normalised."""
    x = images.float() / 255.0 if not images.is_floating_point() else images.float()
    p = params.to(x.device, torch.float32)
    B = x.shape[0]
    y0, x0, h, w, flip = p[:, 0], p[:, 1], p[:, 2], p[:, 3], p[:, 4]
    # crop + resize + flip: output pixel centres (align_corners=False) map into the crop box
    sx = torch.where(flip > 0.5, -w, w)
    theta = torch.zeros(B, 2, 3, device=x.device)
    theta[:, 0, 0] = sx
    theta[:, 0, 2] = 2 * x0 + w - 1
    theta[:, 1, 1] = h
    theta[:, 1, 2] = 2 * y0 + h - 1
    # torch's stub asks for list[int]; any sequence of ints works
    grid = torch.nn.functional.affine_grid(theta, (B, 3, size, size), align_corners=False)  # type: ignore[arg-type]
    # sample within the crop: clamp to its edge pixels' centres, as resizing the cropped image does
    H, W = x.shape[-2:]
    for axis, start, length, n in ((0, x0, w, W), (1, y0, h, H)):
        lo = (2 * start - 1 + 1 / n)[:, None, None]
        hi = (2 * (start + length) - 1 - 1 / n)[:, None, None]
        grid[..., axis] = torch.maximum(torch.minimum(grid[..., axis], hi), lo)
    x = torch.nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    # colour jitter, each image in its own order of (brightness, contrast, saturation)
    order, factors = p[:, 5:8].long(), p[:, 8:11]
    weights = torch.tensor([0.2989, 0.587, 0.114], device=x.device)[None, :, None, None]
    for step in range(3):
        for op in range(3):
            rows = torch.nonzero(order[:, step] == op).flatten()
            if rows.numel() == 0:
                continue
            f = factors[rows, op][:, None, None, None]
            xi = x[rows]
            if op == 0:
                other = torch.zeros_like(xi)
            else:
                grey = (xi * weights).sum(1, keepdim=True)
                other = grey.mean(dim=(1, 2, 3), keepdim=True) if op == 1 else grey
            x[rows] = (f * xi + (1 - f) * other).clamp_(0, 1)
    # rotation by the angle (counter-clockwise, as torchvision), black corners
    a = p[:, 11] * (math.pi / 180)
    rot = torch.zeros(B, 2, 3, device=x.device)
    rot[:, 0, 0], rot[:, 0, 1] = torch.cos(a), -torch.sin(a)
    rot[:, 1, 0], rot[:, 1, 1] = torch.sin(a), torch.cos(a)
    grid = torch.nn.functional.affine_grid(rot, (B, 3, size, size), align_corners=False)  # type: ignore[arg-type]
    x = torch.nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    m = torch.tensor(mean, device=x.device, dtype=x.dtype)[None, :, None, None]
    s = torch.tensor(std, device=x.device, dtype=x.dtype)[None, :, None, None]
    return (x - m) / s


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
