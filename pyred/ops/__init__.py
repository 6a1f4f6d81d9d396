"""pyred's kernels: gathered reductions over many index lists at once.

Inputs may be torch tensors (CPU or CUDA), numpy arrays or cupy arrays; the
result has the input's kind and device and is float64.
"""

from .heads import gathered_linear, gathered_weight_grad
from .reductions import gathered_block_sums, segment_sums

__all__ = ["gathered_block_sums", "gathered_linear", "gathered_weight_grad", "segment_sums"]
