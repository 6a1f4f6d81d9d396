"""pyred: diffused redundancy in pretrained representations, fast.

Public API:
  draw_subsets, Subsets          -- neuron subsets (the paper's sampler, or your own lists)
  linear_cka, subset_cka, subset_pair_cka, GramStats  -- batched linear CKA
  train_probes, ProbeResult      -- K linear probes on K subsets, trained at once
  pyred.ops.gathered_block_sums, pyred.ops.segment_sums,
  pyred.ops.gathered_linear, pyred.ops.gathered_weight_grad -- the kernels
  Backbone, datasets.load, extract_features, FeatureSet -- pretrained timm backbones,
                                    datasets, cached feature extraction
  native_info                    -- which native modules loaded
"""

from ._native import native_info
from . import datasets
from .backbones import Backbone
from .features import FeatureSet, extract_features
from .cka import linear_cka, subset_cka, subset_pair_cka
from .gram import GramStats, Moments
from .probes import ProbeEvaluation, ProbeResult, train_probes
from .subsets import Subsets, draw_subsets
from . import ops

__version__ = "0.1.0"

__all__ = [
    "Backbone",
    "FeatureSet",
    "GramStats",
    "Moments",
    "ProbeEvaluation",
    "ProbeResult",
    "Subsets",
    "datasets",
    "draw_subsets",
    "extract_features",
    "linear_cka",
    "native_info",
    "ops",
    "subset_cka",
    "subset_pair_cka",
    "train_probes",
    "__version__",
]
