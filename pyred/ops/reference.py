"""Pure-torch gathered reductions: the fallback when a native module is missing.

Same contract as the kernels (float64 results, CSR index lists); written for
clarity, with no per-subset copy of anything bigger than one gathered block.
"""

from __future__ import annotations

import torch


def segment_sums_torch(values: torch.Tensor, indices: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """values (M, d) float -> (K, M) float64 with out[k, m] = sum_{i in list k} values[m, i]."""
    K = offsets.numel() - 1
    sizes = offsets.diff()
    list_id = torch.repeat_interleave(torch.arange(K, device=values.device), sizes)
    out = torch.zeros(K, values.shape[0], dtype=torch.float64, device=values.device)
    out.index_add_(0, list_id, values[:, indices].double().T)
    return out


def block_sums_torch(mats: torch.Tensor, row_indices: torch.Tensor, row_offsets: torch.Tensor,
                     col_indices: torch.Tensor, col_offsets: torch.Tensor) -> torch.Tensor:
    """mats (M, d, d) float -> (K, M) float64 with out[k, m] = sum_{i in rows k, j in cols k} mats[m, i, j]."""
    K = row_offsets.numel() - 1
    ro, co = row_offsets.tolist(), col_offsets.tolist()
    out = torch.zeros(K, mats.shape[0], dtype=torch.float64, device=mats.device)
    for k in range(K):
        r = row_indices[ro[k]:ro[k + 1]]
        c = col_indices[co[k]:co[k + 1]]
        if r.numel() and c.numel():
            out[k] = mats[:, r][:, :, c].sum(dim=(1, 2), dtype=torch.float64)
    return out


def segment_sums_backward(grad: torch.Tensor, indices: torch.Tensor, offsets: torch.Tensor, d: int) -> torch.Tensor:
    """The gradient of segment_sums with respect to values: grad (K, M) float64 -> (M, d) float64 with
    out[m, i] = sum over the lists k that hold i (once per occurrence) of grad[k, m]."""
    K = offsets.numel() - 1
    list_id = torch.repeat_interleave(torch.arange(K, device=grad.device), offsets.diff())
    out = torch.zeros(grad.shape[1], d, dtype=torch.float64, device=grad.device)
    out.index_add_(1, indices, grad.to(torch.float64)[list_id].T)
    return out


def block_sums_backward(grad: torch.Tensor, row_indices: torch.Tensor, row_offsets: torch.Tensor,
                        col_indices: torch.Tensor, col_offsets: torch.Tensor, d: int) -> torch.Tensor:
    """The gradient of block_sums with respect to mats: grad (K, M) float64 -> (M, d, d) float64 with
    out[m, i, j] = sum over the lists k with i in rows k and j in cols k of grad[k, m]."""
    K, M = grad.shape
    ro, co = row_offsets.tolist(), col_offsets.tolist()
    out = torch.zeros(M, d * d, dtype=torch.float64, device=grad.device)
    g = grad.to(torch.float64)
    for k in range(K):
        r = row_indices[ro[k]:ro[k + 1]]
        c = col_indices[co[k]:co[k + 1]]
        if r.numel() and c.numel():
            flat = (r[:, None] * d + c[None, :]).flatten()
            out.index_add_(1, flat, g[k][:, None].expand(M, flat.numel()))
    return out.view(M, d, d)
