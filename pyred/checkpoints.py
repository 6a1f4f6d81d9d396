"""Loading a local checkpoint into a timm model, in the formats the paper's backbones come in.

* plain state dicts (``.pth``/``.pt``/``.bin``, loaded with ``weights_only=True``);
* wrapped dicts: the state dict under ``state_dict``, ``model``, ``model_state_dict``
  or ``state_dict_ema`` next to other entries (epoch, optimizer, ...);
* robustness-library checkpoints (Salman et al. 2020): keys under
  ``module.model.``, ``model.`` or ``module.attacker.model.`` (the attacker's
  copy is the same network); their ``normalizer.*`` and ``attacker.normalize.*``
  buffers are dropped, since the transform normalises with the model's own statistics;
* ``module.`` prefixes of DataParallel/DDP checkpoints;
* ``.safetensors``;
* timm / AugReg ``.npz`` (JAX) checkpoints of Vision Transformers, through timm's
  own converter;
* torchvision-layout VGG state dicts (``features.*``, ``classifier.0/3/6``, as the
  robustness library saved its VGG16-bn) into timm's VGG (``pre_logits.fc1/fc2`` as
  7x7 / 1x1 convolutions, ``head.fc``);
* models that declare ``checkpoint_ignore`` prefixes (the paper's MRL / fixed-feature
  ResNets, built without a classifier, see :mod:`pyred.architectures`) skip the
  checkpoint's tensors under them.

Anything that does not fit the model fails with the keys that did not match.
"""

from __future__ import annotations

import os
from typing import Any

import torch

WRAPPERS = ("state_dict", "model", "model_state_dict", "state_dict_ema")
PREFIXES = ("", "module.", "model.", "module.model.", "module.attacker.model.", "attacker.model.")
# The robustness library's AttackerModel holds ``normalizer``, ``model`` and ``attacker``, whose Attacker holds
# its own ``normalize`` and ``model``: the network is kept (under model.), the rest dropped.
DROPPED = ("normalizer.", "module.normalizer.", "attacker.normalize.", "module.attacker.normalize.",
           "attacker.model.", "module.attacker.model.")


def load_checkpoint(model: torch.nn.Module, path: str | os.PathLike[str]) -> str:
    """Loads ``path`` into ``model`` (strictly: every tensor of the model, nothing left over).
    Returns the format's name. Raises FileNotFoundError, or ValueError listing unmatched keys."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weights: no file at {path}")
    if path.endswith(".npz"):
        return _load_npz(model, path)
    state, fmt = read_state_dict(path)
    if any(k.startswith(DROPPED) for k in state):
        fmt = f"robustness {fmt}"
    state, prefix = strip_prefixes(state, set(model.state_dict()))
    if type(model).__name__ == "VGG" and "classifier.0.weight" in state:
        state, fmt = torchvision_vgg_to_timm(state, model), f"torchvision VGG {fmt}"
    ignored = tuple(getattr(model, "checkpoint_ignore", ()))
    if ignored:
        own = model.state_dict()
        state = {k: v for k, v in state.items() if k in own or not k.startswith(ignored)}
    check_fits(model, state, path)
    model.load_state_dict(state, strict=True)
    return fmt if not prefix else f"{fmt} ({prefix}*)"


def read_state_dict(path: str) -> tuple[dict[str, torch.Tensor], str]:
    """(the tensors of the file, its format): unwraps the usual wrapper keys."""
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        try:
            return dict(load_file(path)), "safetensors"
        except Exception as exc:  # noqa: BLE001 -- safetensors raises its own SafetensorError (and OSError)
            raise ValueError(f"weights: {path} is not a readable .safetensors file ({type(exc).__name__}: "
                             f"{_first_line(exc)}); it is damaged, truncated or of another format") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 -- torch raises many kinds for foreign or unsafe files
        raise ValueError(f"weights: {path} is not a checkpoint torch can load safely (weights_only=True): "
                         f"{type(exc).__name__}: {_first_line(exc)}") from None
    fmt = "state dict"
    if isinstance(obj, dict):
        for key in WRAPPERS:
            inner = obj.get(key)
            if isinstance(inner, dict) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                obj, fmt = inner, f"wrapped state dict ['{key}']"
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        what = type(obj).__name__ if not isinstance(obj, dict) else f"a dict with keys {sorted(obj)[:8]}"
        raise ValueError(f"weights: {path} does not hold a state dict of tensors (found {what}); expected a "
                         f"state dict, or one under one of {list(WRAPPERS)}")
    return obj, fmt


def strip_prefixes(state: dict[str, torch.Tensor], model_keys: set[str]) -> tuple[dict[str, torch.Tensor], str]:
    """The state dict under the prefix (of PREFIXES) that matches the most model keys, without the
    keys of known wrappers (a robustness attacker's copy of the network, normalizer buffers)."""
    best = max(PREFIXES, key=lambda p: sum(1 for k in state if k.startswith(p) and k[len(p):] in model_keys))
    out = {}
    for k, v in state.items():
        if k.startswith(best) and not (best == "" and k.startswith(DROPPED)):
            name = k[len(best):]
            if not name.startswith("normalizer."):
                out[name] = v
        elif not k.startswith(DROPPED):
            out[k] = v  # matches nothing: check_fits reports it
    return out, best


def torchvision_vgg_to_timm(state: dict[str, torch.Tensor], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A torchvision VGG state dict in timm's layout: the classifier's first two Linear layers become the
    convolutions of ``pre_logits`` (the first over the 7x7 map, so its weight is reshaped (out, C, 7, 7) --
    torchvision flattens (C, H, W) in that order), the last one ``head.fc``."""
    own = model.state_dict()
    renames = {"classifier.0": "pre_logits.fc1", "classifier.3": "pre_logits.fc2", "classifier.6": "head.fc"}
    out = {}
    for k, v in state.items():
        stem, _, leaf = k.rpartition(".")
        new = f"{renames[stem]}.{leaf}" if stem in renames else k
        if new in own and v.dim() == 2 and own[new].dim() == 4 and v.numel() == own[new].numel():
            v = v.reshape(own[new].shape)
        out[new] = v
    return out


def check_fits(model: torch.nn.Module, state: dict[str, torch.Tensor], path: str, show: int = 8) -> None:
    """Raises ValueError naming the keys that are missing, left over, or of another shape."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
              if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if not (missing or extra or shapes):
        return
    parts = []
    for label, keys in (("missing from the checkpoint", missing), ("not in the model", extra),
                        ("of another shape (checkpoint vs model)", shapes)):
        if keys:
            more = f", ... ({len(keys)} in all)" if len(keys) > show else ""
            parts.append(f"{len(keys)} keys {label}: {', '.join(keys[:show])}{more}")
    raise ValueError(f"weights: {path} does not fit {type(model).__name__}: " + "; ".join(parts))


def _load_npz(model: Any, path: str) -> str:
    if not hasattr(model, "load_pretrained") or not hasattr(model, "patch_embed"):
        raise ValueError(f"weights: {path} is a .npz (JAX/AugReg) checkpoint, which loads into timm Vision "
                         f"Transformers only; {type(model).__name__} is not one")
    import numpy as np

    try:
        with np.load(path) as z:
            names = list(z.files)
    except Exception as exc:  # noqa: BLE001 -- zipfile and numpy raise many kinds for damaged archives
        raise ValueError(f"weights: {path} is not a readable .npz archive ({type(exc).__name__}: "
                         f"{_first_line(exc)})") from None
    if not any(n.endswith("embedding/kernel") for n in names):
        raise ValueError(f"weights: {path} is not a timm/AugReg ViT checkpoint (no embedding/kernel among its "
                         f"arrays: {names[:8]})")
    try:
        model.load_pretrained(path)
    except Exception as exc:  # noqa: BLE001 -- timm's converter meets damaged arrays with many kinds
        raise ValueError(f"weights: {path} does not fit {type(model).__name__} or is damaged: {type(exc).__name__}: "
                         f"{_first_line(exc)}") from None
    return "augreg npz"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""
