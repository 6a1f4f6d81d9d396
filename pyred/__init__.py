"""pyred: diffused redundancy in pretrained representations, fast.

The numerical core loads with ``import pyred`` (it needs only torch and numpy):
  draw_subsets, Subsets          -- neuron subsets (the paper's sampler, or your own lists)
  linear_cka, subset_cka, subset_pair_cka, GramStats, Moments, MinibatchCKA -- batched CKA
  train_probes, ProbeResult, ProbeEvaluation -- K linear probes on K subsets, trained at once
  FeatureStream                  -- augmented images through a backbone, batch by batch (the paper's
                                    online probe training; imports torchvision when iterated)
  pyred.ops                      -- the kernels (gathered_block_sums, segment_sums, gathered_linear, ...)
  native_info                    -- which native modules loaded

The image side loads on first use (it imports timm, torchvision and PIL):
  Backbone, datasets, extract_features, FeatureSet -- pretrained timm backbones, datasets,
                                    cached feature extraction
  layer_cka                      -- CKA between every pair of layers of one or two networks
The study application (configs, sweeps, results database, report, the ``pyred``
command) is :mod:`pyred.study`.
"""

from __future__ import annotations

import importlib
from typing import Any

from . import ops
from ._native import native_info
from ._version import __version__
from .cka import linear_cka, subset_cka, subset_pair_cka
from .gram import GramStats, Moments
from .minibatch import MinibatchCKA
from .probes import ProbeEvaluation, ProbeResult, train_probes
from .stream import FeatureStream
from .subsets import Subsets, draw_subsets

# name -> (module, attribute or None for the module itself): imported on first access.
_LAZY = {
    "Backbone": ("pyred.backbones", "Backbone"),
    "FeatureSet": ("pyred.features", "FeatureSet"),
    "extract_features": ("pyred.features", "extract_features"),
    "layer_cka": ("pyred.layer_cka", "layer_cka"),
    "datasets": ("pyred.datasets", None),
    "texts": ("pyred.texts", None),
    "study": ("pyred.study", None),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module_name, attr = _LAZY[name]
        module = importlib.import_module(module_name)
        value = module if attr is None else getattr(module, attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'pyred' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "Backbone",
    "FeatureSet",
    "FeatureStream",
    "GramStats",
    "MinibatchCKA",
    "Moments",
    "ProbeEvaluation",
    "ProbeResult",
    "Subsets",
    "datasets",
    "draw_subsets",
    "extract_features",
    "layer_cka",
    "linear_cka",
    "native_info",
    "ops",
    "subset_cka",
    "subset_pair_cka",
    "train_probes",
    "__version__",
]
