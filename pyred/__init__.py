"""pyred: diffused redundancy in pretrained representations, fast.

Public API:
  draw_subsets, Subsets          -- neuron subsets (the paper's sampler, or your own lists)
  linear_cka, subset_cka, subset_pair_cka, GramStats  -- batched linear CKA
  pyred.ops.gathered_block_sums, pyred.ops.segment_sums -- the kernels
  native_info                    -- which native modules loaded
"""

from ._native import native_info
from .cka import linear_cka, subset_cka, subset_pair_cka
from .gram import GramStats, Moments
from .subsets import Subsets, draw_subsets
from . import ops

__version__ = "0.1.0"

__all__ = [
    "GramStats",
    "Moments",
    "Subsets",
    "draw_subsets",
    "linear_cka",
    "native_info",
    "ops",
    "subset_cka",
    "subset_pair_cka",
    "__version__",
]
