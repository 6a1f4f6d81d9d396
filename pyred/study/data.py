"""The features a study works on, per (model, dataset): from an .npz file, or extracted
(and cached) from a backbone's layer on the dataset's train / val / test splits."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import torch

from .._files import digest
from .distributed import Distributed
from .npz import load_features_file
from .schema import DatasetSpec, ModelSpec, StudyConfig

if TYPE_CHECKING:
    from ..features import FeatureSet

RANDOM_INIT_SEED = 2  # the reference code's global seed, under which it built its networks


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
    class_names: list[str] | None
    identity: str
    stream: Any = None  # protocol "paper": makes the FeatureStream of the training images (batch_size[, projection,
    #                     seed])
    dataset_name: str = ""  # the registered name (``dataset`` is its label in results, with its folder if any)
    fit_features: Any = None  # protocol "paper": () -> (n, d) features of one augmented pass (for a PCA basis)
    val_stream: Any = None  # val_augment "reference": makes the stream of augmented validation images

    @property
    def dim(self) -> int:
        return int((self.X_train if self.X_train is not None else self.X_test).shape[1])


def load_layer_data(cfg: StudyConfig, model: ModelSpec, dataset: DatasetSpec, dist: Distributed, progress: bool,
                    features_digest: str | None = None, given: Any = None,
                    reuse: dict[Any, Any] | None = None) -> LayerData:
    """The features of ``model`` on ``dataset``; under torch.distributed rank 0 extracts first
    and the other ranks then read its cache. ``features_digest``: the sha256 of ``model.features``;
    ``given``: the backbone object of a ``module:`` model; ``reuse``: a run's memory of the last model's
    backbone and of the layers one pass extracted, so that the model's other layer entries neither load the
    network again nor re-verify every layer's cache."""
    if model.features:
        z = load_features_file(model.features)
        return LayerData(model.name, dataset.label, model.layer, z["X_train"], z["y_train"], z["X_val"], z["y_val"],
                         z["X_test"], z["y_test"], z["class_names"], str(features_digest), dataset_name=dataset.name)
    from .. import datasets
    from ..features import extract_features

    cache = cfg.cache_dir or os.path.join(os.path.abspath(cfg.out), "cache")
    splits: dict[str, FeatureSet] = {}
    size = cfg.eval_size()
    norm = model.normalization_in(cfg.normalization)  # a paper key's: what the reference normalised with
    clean: dict[str, Any] = dict(transform="paper", image_size=size, normalization=norm) if size else {}
    made: dict[str, Any] = {}

    memory = reuse if reuse is not None else {}
    whole = dataclasses.replace(model, layer="")  # the network, whichever layer
    if memory.get("model") != whole:  # another network: forget the last one
        memory.clear()
        memory["model"] = whole

    def extract() -> None:
        # A random-init network is drawn under seed 2 (the reference code's global seed), so every run of the
        # study -- a resumed one, another rank -- probes the same network.
        if "backbone" not in memory:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(RANDOM_INIT_SEED)
                memory["backbone"] = given if given is not None else _backbone(model)
        bb = made["backbone"] = memory["backbone"]
        common: dict[str, Any] = dict(batch_size=cfg.batch_size, device=cfg.device, cache_dir=cache,
                                      progress=progress, num_workers=cfg.num_workers, amp=cfg.amp)
        layers = _sibling_layers(cfg, model, bb)
        if not layers and model.is_module and model.layer not in ("penultimate", getattr(bb, "layer", None)):
            layers = [model.layer]  # another layer of the given object than its own
        for split in ("val", "test") if cfg.protocol == "paper" else ("train", "val", "test"):
            kw: dict[str, Any] = dict(clean)
            if split == "train" and cfg.protocol == "views":  # V augmented views of every training image
                kw = dict(augment="paper", views=cfg.views, seed=0, image_size=size, normalization=norm)
            images = datasets.load(dataset.name, split, root=dataset.root)
            if layers:  # every layer of this model in the study from one pass, kept for its other entries
                where = (dataset.label, split, tuple(layers), repr(sorted(kw.items())))
                if where not in memory:
                    memory[where] = extract_features(bb, images, layers=layers, **common, **kw)
                splits[split] = memory[where][layers.index(model.layer)]
            else:
                splits[split] = extract_features(bb, images, **common, **kw)

    dist.rank_zero_first(extract)
    test, val = splits["test"], splits["val"]
    if cfg.protocol != "paper":
        train = splits["train"]
        ident = digest([os.path.basename(splits[s].path or "") for s in ("train", "val", "test")])
        layer = model.layer  # a module: model's object reads its own layer unless the entry names another
        if model.is_module and layer == "penultimate":
            layer = str(getattr(made["backbone"], "layer", layer))
        return LayerData(model.name, dataset.label, layer, train.X, train.y, val.X, val.y, test.X, test.y,
                         test.class_names, ident, dataset_name=dataset.name)
    return _streamed(cfg, model, dataset, made["backbone"], val, test, cast(int, size), norm)


def _backbone(model: ModelSpec) -> Any:
    from ..backbones import Backbone

    if model.is_hf:  # "avg" (the study's default pool) means the model's own: mean over the mask, or last token
        from ..hf import HFBackbone

        return HFBackbone(model.name, layer=model.layer, pool=None if model.pool == "avg" else model.pool,
                          pretrained=model.pretrained, **dict(model.timm_kwargs))
    return Backbone(model.timm_name, pretrained=model.pretrained, weights=model.weights, layer=model.layer,
                    pool=model.pool, **dict(model.timm_kwargs))


def _sibling_layers(cfg: StudyConfig, model: ModelSpec, bb: Any) -> list[str]:
    """The layers of every model entry of the study that differs from ``model`` only by its layer, when there
    are several and the backbone reads several in one pass; [] otherwise."""
    if not hasattr(bb, "forward_layers"):
        return []
    same = [m.layer for m in cfg.models if dataclasses.replace(m, layer=model.layer) == model]
    return list(dict.fromkeys(same)) if len(set(same)) > 1 else []


def _streamed(cfg: StudyConfig, model: ModelSpec, dataset: DatasetSpec, bb: Any, val: FeatureSet, test: FeatureSet,
              size: int, norm: str) -> LayerData:
    """Protocol "paper": the training features come from a stream of freshly augmented images (one per
    training seed under ``stream_seeds = "per-seed"``); validation under ``val_augment = "reference"`` from
    the validation images with the training augmentation, drawn anew at every evaluation."""
    from .. import datasets
    from ..stream import FeatureStream

    train_images = datasets.load(dataset.name, "train", root=dataset.root)
    common: dict[str, Any] = dict(device=cfg.device, image_size=size, normalization=norm,
                                  num_workers=cfg.num_workers, amp=cfg.amp, augment_on=cfg.augment_on)

    def stream(batch_size: int, projection: Any = None, seed: int = 0) -> FeatureStream:
        return FeatureStream(bb, train_images, augment="paper", batch_size=batch_size, seed=seed,
                             projection=projection, **common)

    def fit_features() -> Any:
        # one augmented pass over the training images in their order, as calculate_pca.py ran (under its seed 2)
        return stream(256, seed=2).collect()[0].cpu().numpy()

    val_stream: Callable[..., FeatureStream] | None = None
    if cfg.val_augment == "reference":
        val_images = datasets.load(dataset.name, "val", root=dataset.root)

        def augmented_val(batch_size: int, projection: Any = None) -> FeatureStream:
            return FeatureStream(bb, val_images, augment="paper", batch_size=batch_size, seed=1, shuffle=False,
                                 projection=projection, **common)

        val_stream = augmented_val

    # where the training features come from: the weights, layer, pooling, augmentation, images and order seed
    probe = stream(1)
    ident = digest([os.path.basename(val.path or ""), os.path.basename(test.path or ""), bb.weights_digest(),
                    model.layer, model.pool, probe.transform_id, train_images.describe(), train_images.content_id(),
                    "order seed 0"] + (["augmented validation, seed 1"] if val_stream is not None else []))
    return LayerData(model.name, dataset.label, model.layer, None, None, val.X, val.y, test.X, test.y,
                     test.class_names, ident, stream, dataset.name, fit_features=fit_features, val_stream=val_stream)
