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
