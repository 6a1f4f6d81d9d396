"""The reference code's fixed-seed 90/10 train / validation split, for rows and for groups of rows.

One rule for every place that splits: the datasets' "train" / "val" splits,
:meth:`pyred.FeatureStream.split`, and the probes' own validation split.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def split_train_val(n: int, fraction: float = 0.1, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference code's fixed-seed split: randperm(n) under ``seed``; the first int(0.9 n) train."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_train = int((1 - fraction) * n)
    return perm[:n_train], perm[n_train:]


def split_groups(groups: Any, fraction: float = 0.1, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The 90/10 split of rows by group (rows of one image's augmented views stay together):
    the groups are split as ``split_train_val`` splits rows."""
    g = torch.as_tensor(np.asarray(groups), dtype=torch.int64)
    uniq, inverse = torch.unique(g, return_inverse=True)
    tr, _ = split_train_val(len(uniq), fraction, seed)
    in_train = torch.zeros(len(uniq), dtype=torch.bool)
    in_train[tr] = True
    rows = in_train[inverse]
    return torch.nonzero(rows).flatten(), torch.nonzero(~rows).flatten()
