"""Any ``torch.nn.Module`` as a backbone: its named submodules' outputs, read by forward hooks and pooled.

``ModuleBackbone(module, layer=..., pool=..., transform=..., name=...)`` (also
``pyred.Backbone.from_module``) is a frozen wrapper usable wherever a
:class:`pyred.Backbone` is: ``extract_features``, ``FeatureStream``,
``layer_cka``. Inputs are whatever the module takes: an image batch, or a dict of
tensors (a tokenised text batch: ``input_ids``, ``attention_mask``, ...).
Outputs that are tuples, lists or ``ModelOutput``s give their first tensor.

Pools: "avg" (mean over every position: spatial or tokens), "cls" (the first
token), "mean" (mean over the tokens the attention mask keeps; all of them without
a mask), "last" (the last token the mask keeps: a decoder's summary of the text),
"flatten" (everything). ``forward_layers(x, layers)`` gives several layers from
one forward pass.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

MODULE_POOLS = ("avg", "cls", "mean", "last", "flatten")


class _Stop(Exception):
    """Raised by a capture hook once every requested layer is seen: the rest of the network is skipped."""


def to_device(batch: Any, device: torch.device) -> Any:
    """A batch on ``device``: a tensor, or the tensors of a dict (a tokenised batch); anything else as it is."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    return batch


def batch_rows(batch: Any) -> int:
    """The rows of a batch: a tensor's first axis, a dict's first tensor's, a list's length."""
    if isinstance(batch, dict):
        batch = next((v for v in batch.values() if isinstance(v, torch.Tensor)), [])
    return len(batch)


def module_device(module: nn.Module) -> torch.device:
    """Where a module's parameters live (the CPU for a module without any)."""
    p = next(module.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def first_tensor(output: Any) -> torch.Tensor:
    """The tensor a module returned: itself, the first of a tuple / list, or a ModelOutput's first field."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, dict):  # transformers' ModelOutput is an OrderedDict
        output = list(output.values())
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise TypeError(f"layer: the module returned {type(output).__name__}, which holds no tensor to read")


def pool_tokens(out: torch.Tensor, pool: str, mask: torch.Tensor | None = None) -> torch.Tensor:
    """(B, ...) -> (B, features). ``mask`` (B, T): 1 for the tokens to keep, for "mean" and "last" on (B, T, C)."""
    if pool not in MODULE_POOLS:
        raise ValueError(f"pool: expected one of {MODULE_POOLS}, got {pool!r}")
    if out.dim() == 2:
        return out
    if pool == "flatten":
        return out.flatten(1)
    if pool == "avg":  # (B, C, ...) maps: over every axis after the channels; (B, T, C) tokens: over T
        return out.mean(dim=tuple(range(2, out.dim()))) if out.dim() >= 4 else out.mean(dim=1)
    if out.dim() != 3:
        raise ValueError(f"pool={pool!r} needs a (batch, tokens, channels) output, got shape {tuple(out.shape)}")
    if pool == "cls":
        return out[:, 0]
    if mask is None:
        return out.mean(dim=1) if pool == "mean" else out[:, -1]
    m = mask.to(out.device)
    if m.shape != out.shape[:2]:
        raise ValueError(f"attention mask {tuple(m.shape)} does not fit the layer's {tuple(out.shape[:2])} tokens")
    if pool == "mean":
        w = m.to(out.dtype)[..., None]
        return (out * w).sum(dim=1) / w.sum(dim=1).clamp_min(1)
    # "last": the last kept token of each row (right or left padding alike)
    positions = torch.arange(m.shape[1], device=m.device).expand_as(m)
    last = torch.where(m.bool(), positions, -1).amax(dim=1).clamp_min(0)
    return out[torch.arange(out.shape[0], device=out.device), last]


class ModuleBackbone(nn.Module):
    """A frozen ``module`` mapping an input batch to the pooled output of its submodule ``layer``.

    Args:
      module: any torch module (kept in eval mode, its parameters frozen).
      layer: the name of a submodule (``module.get_submodule(layer)``), or "" for the module's own output.
      pool: how a layer's (B, ...) output becomes (B, features): see the module docstring.
      transform: what turns one dataset item into the module's input (an image transform), or None.
      transform_id: a string naming ``transform`` (for cache keys); None: "custom" when a transform is given.
      name: the model's name in cache keys and results; the module's class name when None.
      collate: turns a list of items into the module's input batch (None: torch's default collation).

    ``dim`` is 0 until ``measure(example_batch)`` sets it (a subclass may know it).
    """

    def __init__(self, module: nn.Module, *, layer: str, pool: str = "avg",
                 transform: Callable[[Any], Any] | None = None, transform_id: str | None = None,
                 name: str | None = None) -> None:
        super().__init__()
        if not isinstance(module, nn.Module):
            raise TypeError(f"module: expected a torch.nn.Module, got {type(module).__name__}")
        if pool not in MODULE_POOLS:
            raise ValueError(f"pool: expected one of {MODULE_POOLS}, got {pool!r}")
        self.model = module.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.layer, self.pool = layer, pool
        self.resolve(layer)
        self._transform, self._transform_id = transform, transform_id
        self.name = name or type(module).__name__
        self.weights_source = "module"
        self.dim = 0

    def resolve(self, layer: str) -> nn.Module:
        """The submodule named ``layer`` ("" is the module itself); ValueError listing the names otherwise."""
        if layer == "":
            return self.model
        try:
            return self.model.get_submodule(layer)
        except AttributeError:
            names = [n for n, _ in self.model.named_modules() if n][:12]
            raise ValueError(f"layer: {layer!r} is not a submodule of {type(self.model).__name__}; some of its "
                             f"submodules: {names}") from None

    def train(self, mode: bool = True) -> ModuleBackbone:
        return super().train(False)

    def inputs_mask(self, x: Any) -> torch.Tensor | None:
        """The attention mask of an input batch (a dict holding ``attention_mask``), else None."""
        return x.get("attention_mask") if isinstance(x, dict) else None

    def call(self, x: Any) -> Any:
        """Runs the module on a batch (a dict is passed as keyword arguments)."""
        return self.model(**x) if isinstance(x, dict) else self.model(x)

    def capture(self, names: Sequence[str], run: Callable[[], Any], stop: bool) -> tuple[dict[str, torch.Tensor], Any]:
        """({name: the output tensor of submodule ``name``}, what ``run()`` returned -- None when ``stop`` ends the
        pass as soon as every named output is seen). Hooks are removed whatever happens; a submodule that did not
        run is a ValueError."""
        targets = {name: self.resolve(name) for name in dict.fromkeys(names)}
        captured: dict[str, torch.Tensor] = {}

        def hook_for(name: str) -> Callable[..., None]:
            def hook(module: nn.Module, inputs: Any, output: Any) -> None:
                captured.setdefault(name, first_tensor(output))
                if stop and len(captured) == len(targets):
                    raise _Stop

            return hook

        handles = [mod.register_forward_hook(hook_for(name)) for name, mod in targets.items()]
        out = None
        try:
            out = run()
        except _Stop:
            pass
        finally:
            for h in handles:
                h.remove()
        missing = [n for n in targets if n not in captured]
        if missing:
            raise ValueError(f"layer: {missing} did not run in the forward pass")
        return captured, out

    def forward_layers(self, x: Any, layers: Sequence[str]) -> list[torch.Tensor]:
        """The pooled outputs of several ``layers`` from one forward pass: [(B, d_l)]."""
        captured, _ = self.capture(layers, lambda: self.call(x), stop=True)
        mask = self.inputs_mask(x)
        return [pool_tokens(captured[name], self.pool, mask) for name in layers]

    def forward(self, x: Any) -> torch.Tensor:
        return self.forward_layers(x, [self.layer])[0]

    def measure(self, example: Any) -> int:
        """Sets and returns ``dim`` from one input batch."""
        with torch.no_grad():
            self.dim = int(self(example).shape[1])
        return self.dim

    def transform(self, paper: bool = False, **_: Any) -> Callable[[Any], Any] | None:
        if paper:
            raise ValueError(f"transform: {self.name} is a wrapped module; the paper's image transforms belong to "
                             "timm backbones -- give transform= to Backbone.from_module")
        return self._transform

    def transform_id(self, paper: bool = False, **_: Any) -> str:
        if self._transform is None:
            return "none (items go to the module as they are)"
        if self._transform_id is None:
            raise ValueError("transform_id: a wrapped module's transform cannot be identified safely; pass "
                             "transform_id='...' to Backbone.from_module to cache its features")
        return "custom:" + self._transform_id

    def weights_digest(self) -> str:
        """sha256 over the names, shapes and bytes of every tensor of the module's state dict (kept until a
        tensor changes in place: torch's version counters tell)."""
        from ._files import sha256_parts

        state = self.model.state_dict()
        stamp = tuple((k, v.data_ptr(), v._version) for k, v in state.items())
        cached = getattr(self, "_digest", None)
        if cached is not None and cached[0] == stamp:
            return str(cached[1])
        parts = (p for k, v in state.items()
                 for p in (k.encode(), str(tuple(v.shape)).encode(), str(v.dtype).encode(),
                           v.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()))
        self._digest = (stamp, sha256_parts(parts))
        return self._digest[1]
