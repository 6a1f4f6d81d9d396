"""The features a study works on, per (model, dataset): from an .npz file, or extracted
(and cached) from a backbone's layer on the dataset's train / val / test splits."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from .._files import digest
from .config import ModelSpec, StudyConfig
from .distributed import Distributed
from .npz import load_features_file


@dataclass
class LayerData:
    """One model's layer on one dataset. X_*: (n, d) float32 arrays (memory maps when cached);
    y_*: (n,) int64; X_val / y_val None when the recipe's own 90/10 split applies.
    ``identity`` is a digest of where the features came from (the feature-cache keys, which
    cover the weights digest, layer, pooling, transform and split; or the file's content)."""

    model: str
    dataset: str
    layer: str
    X_train: Any
    y_train: Any
    X_val: Any
    y_val: Any
    X_test: Any
    y_test: Any
    class_names: list | None
    identity: str

    @property
    def dim(self) -> int:
        return int(self.X_train.shape[1])


def load_layer_data(cfg: StudyConfig, model: ModelSpec, dataset: str, dist: Distributed, progress: bool,
                    features_digest: str | None = None) -> LayerData:
    """The features of ``model`` on ``dataset``; under torch.distributed rank 0 extracts first
    and the other ranks then read its cache. ``features_digest``: the sha256 of ``model.features``."""
    if model.features:
        z = load_features_file(model.features)
        return LayerData(model.name, dataset, model.layer, z["X_train"], z["y_train"], z["X_val"], z["y_val"],
                         z["X_test"], z["y_test"], z["class_names"], str(features_digest))
    from .. import datasets
    from ..backbones import Backbone
    from ..features import extract_features

    cache = cfg.cache_dir or os.path.join(os.path.abspath(cfg.out), "cache")
    splits = {}

    def extract():
        bb = Backbone(model.name, pretrained=model.pretrained, weights=model.weights, layer=model.layer,
                      pool=model.pool)
        for split in ("train", "val", "test"):
            splits[split] = extract_features(bb, datasets.load(dataset, split), batch_size=cfg.batch_size,
                                             device=cfg.device, cache_dir=cache, progress=progress)

    dist.rank_zero_first(extract)
    ident = digest([os.path.basename(splits[s].path or "") for s in ("train", "val", "test")])
    return LayerData(model.name, dataset, model.layer, splits["train"].X, splits["train"].y, splits["val"].X,
                     splits["val"].y, splits["test"].X, splits["test"].y, splits["test"].class_names, ident)
