"""The reference code's fixed-seed 90/10 train / validation split, for rows and for groups of rows.

One rule for every place that splits: the datasets' "train" / "val" splits,
:meth:`pyred.FeatureStream.split`, and the probes' own validation split.
"""

from __future__ import annotations

import os
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


def split_folders(root: str, split: str) -> tuple[list[str], bool]:
    """(the folders under ``root`` that make ``split``, whether root/val exists) for datasets kept as
    root/train, root/test and optionally root/val: "val" is root/val, else drawn from root/train (the
    caller takes its fixed-seed 10 %); "trainval" is train and val together."""
    has_val = os.path.isdir(os.path.join(root, "val"))
    parts = {"test": ["test"], "train": ["train"], "val": ["val" if has_val else "train"],
             "trainval": ["train", "val"] if has_val else ["train"]}[split]
    return parts, has_val
