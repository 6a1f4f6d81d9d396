"""CKA between every pair of named layers of one or two networks: the classic layer x layer map.

One forward pass per batch feeds every layer of a network (forward hooks), so
the cost is one pass over the samples per network whatever the number of
layers. Layers are flattened (``pool="flatten"``, the usual choice for CKA
maps) or pooled. Full-batch: each layer's centred n x n Gram (linear, or RBF by
the median rule), then every pair is one inner product of Grams. Minibatch
(``minibatch=B``): Nguyen et al.'s estimator, unbiased HSIC per minibatch summed
over minibatches, for any number of samples.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from . import _checks as check
from .module_backbone import module_device, to_device
from .numerics import ratio
from .sample_gram import centred, rbf_gram, unbiased_hsic

F64 = torch.float64
KERNELS = ("linear", "rbf")


def default_layers(backbone: Any) -> list[str]:
    """The model's stage outputs from timm's feature_info (e.g. resnet: act1, layer1..layer4), else its
    top-level children."""
    info: Any = getattr(backbone.model, "feature_info", None)
    names = [f["module"] for f in info] if isinstance(info, (list, tuple)) and info and isinstance(info[0], dict) \
        else None
    if not names and hasattr(info, "module_name"):
        names = list(info.module_name())
    return names or [n for n, _ in backbone.model.named_children()]


def _modules(backbone: Any, layers: Sequence[str] | None, name: str) -> list[tuple[str, torch.nn.Module | None]]:
    if hasattr(backbone, "forward_layers"):  # a wrapped module or an hf: model reads its own layers (and pools)
        if layers is None and not hasattr(backbone, "all_layers"):
            raise ValueError(f"{name}: name the layers of a wrapped module")
        names = list(backbone.all_layers() if layers is None else layers)
        if not names:
            raise ValueError(f"{name}: expected at least one layer name")
        for layer in names:
            (backbone.hidden_index if hasattr(backbone, "hidden_index") else backbone.resolve)(layer)
        return [(layer, None) for layer in names]
    layers = default_layers(backbone) if layers is None else list(layers)
    if not layers:
        raise ValueError(f"{name}: expected at least one layer name")
    known = dict(backbone.model.named_modules())
    out = []
    for layer in layers:
        if not isinstance(layer, str) or layer not in known:
            close = difflib.get_close_matches(str(layer), [k for k in known if k], n=5, cutoff=0.5)
            raise ValueError(f"{name}: {layer!r} is not a module of {backbone.name}; close names: {close}")
        out.append((layer, known[layer]))
    return out


class _Taps:
    """Forward hooks that keep the outputs of some modules, flattened or pooled, for one forward pass."""

    def __init__(self, modules: Sequence[tuple[str, torch.nn.Module | None]], pool: str) -> None:
        from .backbones import pool_output

        self.out: dict[str, torch.Tensor] = {}
        self.handles: list[torch.utils.hooks.RemovableHandle] = []
        for name, module in modules:
            if module is None:  # read by the backbone's own forward_layers
                continue

            def hook(mod: torch.nn.Module, inputs: Any, output: Any, name: str = name) -> None:
                o = output[0] if isinstance(output, (tuple, list)) else output
                self.out[name] = pool_output(o, pool).float()

            self.handles.append(module.register_forward_hook(hook))

    def close(self) -> None:
        for h in self.handles:
            h.remove()


def _grams(feats: dict[str, torch.Tensor], names: list[str], kernel: str, sigma: float) -> list[torch.Tensor]:
    out = []
    for name in names:
        z = feats[name].to(F64)
        z = z - z.mean(0)
        K: torch.Tensor | None  # rbf_gram gives None for a layer without variance
        K = z @ z.T
        if kernel == "rbf":
            K = rbf_gram(K, sigma)
            K = torch.zeros(z.shape[0], z.shape[0], dtype=F64) if K is None else K  # no variance: CKA 0
        out.append(K)
    return out


def layer_cka(backbone_a: Any, dataset: Any, *, layers_a: Sequence[str] | None = None, backbone_b: Any = None,
              layers_b: Sequence[str] | None = None, samples: int = 1000, kernel: str = "linear",
              sigma: float = 0.8, minibatch: int | None = None, pool: str = "flatten", batch_size: int = 64,
              transform: Any = "backbone", device: Any = None,
              progress: bool = True) -> tuple[torch.Tensor, list[str], list[str]]:
    """CKA between every layer of ``backbone_a`` and every layer of ``backbone_b`` (the same network by default).

    Args:
      backbone_a, backbone_b: :class:`pyred.Backbone` s (their eval transforms are applied); an ``hf:``
        backbone or a wrapped module reads its own layers with its own pool (``pool`` is then unused).
      dataset: a :class:`pyred.datasets.LabeledImages` (or LabeledTexts for an ``hf:`` backbone); its
        first ``samples`` items are used.
      layers_a, layers_b: module names (default: the stage outputs of timm's feature_info; every hidden
        state of an ``hf:`` backbone).
      kernel: "linear" or "rbf" (bandwidth ``sigma`` x the median distance).
      minibatch: None for full-batch CKA over all samples (each layer's n x n Gram is kept:
        O(L n^2) memory); an integer >= 4 for minibatch CKA over minibatches of that size.
      pool: "flatten" (default), "avg" or "cls" for each layer's output.
      batch_size: images per forward pass (full-batch mode).
      transform: "backbone" (each network's eval transform) or a callable applied to every image.

    Returns:
      (matrix (L_a, L_b) float64 CPU tensor, names_a, names_b).
    """
    kernel = check.choice(kernel, "kernel", KERNELS)
    sigma = check.number(sigma, "sigma", min=0, min_exclusive=True)
    samples = check.integer(samples, "samples", min=4)
    minibatch = check.optional_integer(minibatch, "minibatch", min=4)
    batch_size = check.integer(batch_size, "batch_size", min=1)
    check.choice(pool, "pool", ("flatten", "avg", "cls"))
    if not (transform == "backbone" or callable(transform)):
        raise TypeError(f"transform: expected 'backbone' or a callable, got {transform!r}")
    same = backbone_b is None
    mods_a = _modules(backbone_a, layers_a, "layers_a")
    mods_b = mods_a if same and layers_b is None else _modules(backbone_a if same else backbone_b, layers_b,
                                                                "layers_b")
    n = min(samples, len(dataset))
    if n < 4:
        raise ValueError(f"dataset: layer CKA needs at least 4 samples, got {n}")
    # One network: one pass hooks the layers of both lists.
    nets = [(backbone_a, list(dict(mods_a + mods_b).items()))] if same else [(backbone_a, mods_a), (backbone_b, mods_b)]
    dev = torch.device(device) if device is not None else module_device(backbone_a)
    sums = _PairSums([m for m, _ in mods_a], [m for m, _ in mods_b], same, kernel, sigma)
    for feats_a, feats_b in _layer_outputs(nets, dataset, n, minibatch or batch_size, transform, pool, dev, progress):
        if minibatch is None:
            sums.keep(feats_a, feats_b)
        elif next(iter(feats_a.values())).shape[0] >= 4:  # a last minibatch too small for the unbiased HSIC: out
            sums.add_minibatch(feats_a, feats_b)
    if minibatch is None:
        sums.full_batch()
    return ratio(sums.kl, sums.ka[:, None], sums.kb[None, :]), sums.names_a, sums.names_b


def _layer_outputs(nets: list[tuple[Any, list[tuple[str, torch.nn.Module | None]]]], dataset: Any, n: int, step: int,
                   transform: Any, pool: str, dev: torch.device,
                   progress: bool) -> Iterator[tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]]:
    """For each batch of ``step`` of the first ``n`` images: ({layer: (b, features) CPU tensor} of the first
    network, the same of the second -- the first again when there is one network), one forward each."""
    from .progress import progress_bar

    loaders = [torch.utils.data.DataLoader(
        torch.utils.data.Subset(dataset.with_transform(bb.transform() if transform == "backbone" else transform),
                                range(n)), batch_size=step, shuffle=False) for bb, _ in nets]
    taps = [_Taps(mods, pool) for _, mods in nets]
    for bb, _ in nets:
        bb.to(dev).eval()
    try:
        with torch.inference_mode():
            for batches in progress_bar(zip(*loaders), progress, total=len(loaders[0]), desc="layer CKA",
                                        unit="batch"):
                for (bb, mods), tap, (images, _) in zip(nets, taps, batches):
                    tap.out.clear()
                    if hasattr(bb, "forward_layers"):  # texts (a list of strings) or tensors, the module's own pool
                        x = to_device(images, dev)
                        tap.out.update(zip([m for m, _ in mods], (f.flatten(1).float() for f in bb.forward_layers(x, [
                            m for m, _ in mods]))))
                    else:
                        bb.model(images.to(dev))
                feats_a = {k: v.cpu() for k, v in taps[0].out.items()}
                yield feats_a, (feats_a if len(nets) == 1 else {k: v.cpu() for k, v in taps[-1].out.items()})
    finally:
        for tap in taps:
            tap.close()


class _PairSums:
    """HSIC sums of every (layer of a, layer of b) pair: kl (L_a, L_b), and ka / kb of each layer with itself.
    Minibatch mode adds each minibatch's unbiased HSIC; full-batch mode keeps every batch's features and
    forms each layer's centred Gram once at the end."""

    def __init__(self, names_a: list[str], names_b: list[str], same: bool, kernel: str, sigma: float):
        self.names_a, self.names_b, self.same, self.kernel, self.sigma = names_a, names_b, same, kernel, sigma
        self.kl = torch.zeros(len(names_a), len(names_b), dtype=F64)
        self.ka = torch.zeros(len(names_a), dtype=F64)
        self.kb = torch.zeros(len(names_b), dtype=F64)
        self.kept: dict[tuple[str, str], list[torch.Tensor]] = {}

    def keep(self, feats_a: dict[str, torch.Tensor], feats_b: dict[str, torch.Tensor]) -> None:
        for side, feats in (("a", feats_a),) + ((("b", feats_b),) if not self.same else ()):
            for k, v in feats.items():
                self.kept.setdefault((side, k), []).append(v)

    def add_minibatch(self, feats_a: dict[str, torch.Tensor], feats_b: dict[str, torch.Tensor]) -> None:
        Ga = _grams(feats_a, self.names_a, self.kernel, self.sigma)
        Gb = _grams(feats_b, self.names_b, self.kernel, self.sigma)
        for i, Ki in enumerate(Ga):
            self.ka[i] += unbiased_hsic(Ki, Ki)
            for j, Lj in enumerate(Gb):
                self.kl[i, j] += unbiased_hsic(Ki, Lj)
        for j, Lj in enumerate(Gb):
            self.kb[j] += unbiased_hsic(Lj, Lj)

    def full_batch(self) -> None:
        fa = {k: torch.cat(v) for (side, k), v in self.kept.items() if side == "a"}
        fb = fa if self.same else {k: torch.cat(v) for (side, k), v in self.kept.items() if side == "b"}
        Ga = [centred(G) for G in _grams(fa, self.names_a, self.kernel, self.sigma)]
        Gb = Ga if self.same and self.names_b == self.names_a else [
            centred(G) for G in _grams(fb, self.names_b, self.kernel, self.sigma)]
        for i, Ki in enumerate(Ga):
            self.ka[i] = (Ki * Ki).sum()
            for j, Lj in enumerate(Gb):
                self.kl[i, j] = (Ki * Lj).sum()
        for j, Lj in enumerate(Gb):
            self.kb[j] = (Lj * Lj).sum()
