"""Extract a backbone's features once, into a cache that later stages memory-map.

``extract_features(backbone, dataset, cache_dir=...)`` streams features to disk
in chunks under a key made of everything that determines them (model, a digest
of its weights, layer, pooling, the transform's identity, dataset, split, size,
what the dataset holds -- its files by path, size and mtime, or its arrays'
bytes, and its labels: :meth:`pyred.datasets.LabeledImages.content_id` --,
AMP, pyred's version). A transform is identified by the backbone's resolved
data config (``Backbone.transform_id``) or by a ``transform_id`` the caller
gives -- never by its ``repr``, which can hold a memory address (no reuse) or
hide the function it wraps (``Lambda()``: two transforms, one key). Every file
is written to a temporary name and renamed into place; a
chunk counts as done only once its checksum record exists, so an extraction
killed at any point resumes from its last complete chunk. When all chunks are
there they are joined into ``features.npy`` / ``labels.npy`` with a
``meta.json`` holding their sha256; a later call verifies the checksums and
memory-maps the arrays, and recomputes (with a warning) anything corrupt.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import torch

from . import _checks as check
from ._files import atomic_path, digest, remove, sha256_file, write_json, write_npy
from ._version import __version__
from .module_backbone import batch_rows, module_device, to_device
from .progress import progress_bar
from .transforms import SeededImages

CACHE_FORMAT = 1


@dataclass
class FeatureSet:
    """X: (n, d) float32 (a read-only memory map when cached); y: (n,) int64;
    class_names: list of C names; metadata: how the features were made
    (model, layer, dataset, ...); path: the cache folder or None."""

    X: np.ndarray
    y: np.ndarray
    class_names: list[str]
    metadata: dict[str, Any] = field(default_factory=dict)
    path: str | None = None

    def __len__(self) -> int:
        return len(self.y)

    @property
    def images(self) -> int:
        """How many distinct images the rows come from (rows / views)."""
        return int(self.metadata.get("images", len(self.y)))

    @property
    def view(self) -> np.ndarray:
        """(n,) int64: which augmented view of its image each row is (all 0 without ``views``)."""
        return np.arange(len(self.y), dtype=np.int64) // max(1, self.images)

    @property
    def image_index(self) -> np.ndarray:
        """(n,) int64: which image of the dataset each row comes from."""
        return np.arange(len(self.y), dtype=np.int64) % max(1, self.images)


def extract_features(backbone: Any, dataset: Any, *, batch_size: int | None = None, device: Any = None,
                     num_workers: int = 0, amp: bool = False, cache_dir: str | os.PathLike[str] | None = None,
                     transform: Callable[[Any], Any] | str | None = "backbone", transform_id: str | None = None,
                     chunk_size: int = 4096, progress: bool = True,
                     augment: str | Callable[[Any], Any] | None = None,
                     views: int = 1, seed: int = 0, image_size: int = 224,
                     normalization: Any = "model", layers: Sequence[str] | str | None = None) -> Any:
    """Features of every image (or text) of ``dataset`` under ``backbone``: a FeatureSet, or with ``layers``
    one FeatureSet per layer, all from one forward pass.

    Args:
      backbone: a :class:`pyred.Backbone` (or any module mapping (B, 3, H, W) to (B, d)
        with ``name``/``layer``/``pool`` attributes and ``weights_digest()``).
      dataset: a :class:`pyred.datasets.LabeledImages` (``targets``, ``classes``,
        ``name``, ``split``).
      batch_size: images per forward pass; None: 16 on the CPU (small batches keep a
        small network's activations in cache: benchmarks/test_extract_speed.py), 128
        on a GPU.
      device: where the backbone runs (its current device when None).
      num_workers: DataLoader worker processes for decoding and transforms.
      amp: autocast (bfloat16 on CPU, float16 on CUDA); features are stored as float32.
      cache_dir: folder for the cache; None computes in memory, with no cache.
      transform: "backbone" for ``backbone.transform()``, "paper" for
        ``backbone.transform(paper=True)``, a callable, or None for items that
        are already tensors.
      transform_id: a string that identifies a callable ``transform`` in the
        cache key (e.g. "resize32-totensor-v1"); required to cache features of a
        callable transform, since pyred cannot tell two functions apart safely.
      chunk_size: samples per cache chunk (the unit of resumption).
      progress: show a tqdm progress bar.
      augment: None (clean images through ``transform``), or "paper" (the paper's
        training augmentation at ``image_size``, normalised by ``normalization``:
        see :mod:`pyred.transforms`) or a callable augmentation (with ``transform_id``
        to cache) -- then ``transform`` is not used, and ``views`` augmented views of
        every image are computed: the cheap approximation of the paper's online
        protocol (:class:`pyred.FeatureStream`). View v of image i is augmented under
        a seed fixed by (seed, v, i): the augmentations a FeatureStream with this
        seed draws in epoch v.
      views: V >= 1 augmented views per image (needs ``augment``); the FeatureSet
        has V n rows, view-major (``.view``, ``.image_index`` say which is which).
      seed: for ``augment``; image_size, normalization: for ``augment`` and for
        ``transform="paper"`` (see FeatureStream).
      layers: None (the backbone's own layer: one FeatureSet), or layer names -- "all" for every hidden
        state of an ``hf:`` backbone -- for a backbone with ``forward_layers`` (``Backbone.from_module``,
        ``hf:``): a list of FeatureSets, one per layer, each cached under its own key; the layers of one
        chunk of samples are computed together and written before the next, so memory holds one chunk.

    Returns:
      :class:`FeatureSet`; ``metadata["cache"]`` says "hit", "computed" or
      "resumed" (with ``metadata["chunks_reused"]``).
    """
    batch_size = check.optional_integer(batch_size, "batch_size", min=1)
    chunk_size = check.integer(chunk_size, "chunk_size", min=1)
    for attr in ("targets", "classes", "name", "split"):
        if not hasattr(dataset, attr):
            raise TypeError(f"dataset: expected a pyred.datasets.LabeledImages (missing .{attr}); "
                            "build one with pyred.datasets.load(...)")
    views = check.integer(views, "views", min=1)
    seed = check.integer(seed, "seed", min=0)
    image_size = check.integer(image_size, "image_size", min=1)
    data, tid = _images(backbone, dataset, transform, transform_id, augment, views, seed, image_size, normalization,
                        caching=cache_dir is not None)
    dev = torch.device(device) if device is not None else module_device(backbone)
    backbone = backbone.to(dev).eval()
    if batch_size is None:
        batch_size = 128 if dev.type == "cuda" else 16
    names = _layer_names(backbone, layers)
    content = _content(dataset) if cache_dir is not None else None
    keys = [CacheKey.of(backbone, dataset, data, tid, amp, views if augment is not None else None, seed, content,
                        layer=name) for name in names]
    run = _Runner(backbone, data, batch_size, dev, num_workers, amp, progress, names)
    classes = list(dataset.classes)
    if cache_dir is None:
        Xs = run.features(0, len(data), desc=f"features {keys[0].model} {dataset.describe()}")
        out = [FeatureSet(X, np.asarray(data.targets, dtype=np.int64), classes, {**k.to_json(), "cache": "none"})
               for X, k in zip(Xs, keys)]
        return out if layers is not None else out[0]
    out = _cached(os.path.expanduser(os.fspath(cache_dir)), keys, run, data, classes, chunk_size)
    return out if layers is not None else out[0]


def _cached(cache_dir: str, keys: list[CacheKey], run: _Runner, data: Any, classes: list[str],
            chunk_size: int) -> list[FeatureSet]:
    """The FeatureSets of ``keys`` from the cache, or extracted into it (every layer from one pass)."""
    folders = [os.path.join(cache_dir, _slug(f"{k.model}-{k.dataset}-{k.split}"), k.digest) for k in keys]
    for folder in folders:
        os.makedirs(folder, exist_ok=True)
    cached = [_load_complete(folder) for folder in folders]
    if all(c is not None for c in cached):
        return cast("list[FeatureSet]", cached)
    if len(keys) > 1:  # one chunk of every layer in memory at a time: rows x (d_1 + ... + d_L) floats
        dims = [k.dim for k in keys]
        if min(dims) < 0 and len(data):  # widths known only by running: one sample tells
            dims = [int(X.shape[1]) for X in run.features(0, 1, bar=progress_bar(None, False))]
        chunk_size = max(1, min(chunk_size, (256 << 20) // (4 * max(1, sum(dims)))))
    return _extract_to_cache(folders, run, data, [k.to_json() for k in keys], classes, chunk_size)


def _layer_names(backbone: Any, layers: Sequence[str] | str | None) -> list[str | None]:
    """[None] (the backbone's own layer), or the layer names asked for."""
    if layers is None:
        return [None]
    if not hasattr(backbone, "forward_layers"):
        raise ValueError(f"layers: {type(backbone).__name__} reads one layer; several layers from one pass need "
                         "Backbone.from_module(...) or an hf: backbone")
    if layers == "all":
        if not hasattr(backbone, "all_layers"):
            raise ValueError("layers: 'all' means every hidden state of an hf: backbone; name the layers of a "
                             "wrapped module")
        return list(backbone.all_layers())
    if isinstance(layers, str):
        return [layers]
    names = [check.string(x, "layers") for x in layers]
    if not names or len(set(names)) != len(names):
        raise ValueError(f"layers: expected distinct layer names, got {layers!r}")
    return list(names)


@dataclass(frozen=True)
class CacheKey:
    """Everything that determines the rows of a FeatureSet; its digest names the cache folder.

    model, weights (the digest of the state dict), weights_source, layer, pool, dim: the backbone;
    transform: what identifies the transform or augmentation; dataset, split, n (rows): the images;
    amp; pyred's version; with an augmentation, views, augment_seed and images (n = views x images);
    with a cache, content (:meth:`pyred.datasets.LabeledImages.content_id`).
    """

    model: str
    weights: str
    weights_source: str
    layer: str
    pool: str | None
    dim: int
    transform: str
    dataset: str
    split: str
    n: int
    amp: bool
    pyred: str = __version__
    views: int | None = None
    augment_seed: int | None = None
    images: int | None = None
    content: str | None = None

    @classmethod
    def of(cls, backbone: Any, dataset: Any, data: Any, transform: str, amp: bool, views: int | None, seed: int,
           content: str | None, layer: str | None = None) -> CacheKey:
        """The key of ``data`` (the images as they go through the backbone) drawn from ``dataset``; ``views``:
        None for clean images, else the views per image of an augmentation under ``seed``; ``layer``: one of
        several layers read in one pass (its width from ``backbone.layer_dim`` where it tells, else -1)."""
        augmented: dict[str, Any] = (dict(views=views, augment_seed=seed, images=len(dataset)) if views is not None
                                     else {})
        own = getattr(backbone, "layer", "penultimate")
        dim = int(getattr(backbone, "dim", 0))
        if layer is not None:  # the same key whichever layer of the pass is the backbone's own
            dim = int(backbone.layer_dim(layer)) if hasattr(backbone, "layer_dim") else -1
        return cls(getattr(backbone, "name", type(backbone).__name__),
                   backbone.weights_digest() if hasattr(backbone, "weights_digest") else "unknown",
                   getattr(backbone, "weights_source", "unknown"), own if layer is None else layer,
                   getattr(backbone, "pool", None), dim, transform, dataset.name,
                   dataset.split, len(data), bool(amp), content=content, **augmented)

    def to_json(self) -> dict[str, Any]:
        """The key as plain data (meta.json; the optional parts are absent when unset, so a clean
        extraction's key is what it was before augmentations existed)."""
        out = {k: v for k, v in dataclasses.asdict(self).items()
               if v is not None or k not in ("views", "augment_seed", "images", "content")}
        out["format"] = CACHE_FORMAT
        return out

    @property
    def digest(self) -> str:
        return digest(self.to_json(), 20)


def _images(backbone: Any, dataset: Any, transform: Any, transform_id: str | None, augment: Any, views: int,
            seed: int, image_size: int, normalization: Any, caching: bool) -> tuple[Any, str]:
    """(the dataset as the backbone sees it -- transformed, or ``views`` seeded augmented passes --, the
    string that identifies what was done to the images)."""
    if augment is None:
        if views > 1:
            raise ValueError(f"views: {views} views of clean images would all be the same; pass augment='paper' "
                             "(or a callable) for augmented views")
        transform, tid = _resolve_transform(backbone, transform, transform_id, caching,
                                            dict(size=image_size, normalization=normalization))
        return (dataset.with_transform(transform) if hasattr(dataset, "with_transform") else dataset), tid
    augmentation, tid = _augment(backbone, augment, transform_id, image_size, normalization, caching)
    return SeededImages(dataset, augmentation, seed, views), tid


def _content(dataset: Any) -> str:
    """The dataset's content digest for the cache key, or the error that says how to give one."""
    from .content import UnknownContent

    if not hasattr(dataset, "content_id"):
        raise ValueError(f"dataset: a {type(dataset).__name__} cannot say what it holds (no content_id()); build a "
                         "pyred.datasets.LabeledImages to cache its features, or pass cache_dir=None")
    try:
        return cast(str, dataset.content_id())
    except UnknownContent as exc:
        raise ValueError(f"dataset: {exc}, so cached features could go stale when its images change; pass "
                         "LabeledImages(..., fingerprint='...') -- a string that changes whenever the images do -- "
                         "to cache its features, or cache_dir=None") from None


def _resolve_transform(backbone: Any, transform: Any, transform_id: str | None, caching: bool,
                       paper_options: dict[str, Any] | None = None) -> tuple[Any, str]:
    """(the transform to apply, the string that identifies it in the cache key)."""
    if transform_id is not None:
        check.string(transform_id, "transform_id")
    if isinstance(transform, str):
        check.choice(transform, "transform", ("backbone", "paper"))
        paper = transform == "paper"
        kw = dict(paper_options or {}) if paper else {}
        if transform_id is None:
            if not hasattr(backbone, "transform_id"):
                if caching:
                    raise ValueError(f"transform_id: backbone {type(backbone).__name__} has no transform_id(); pass "
                                     "transform_id= naming its transform to cache its features")
                transform_id = "unidentified"
            else:
                transform_id = backbone.transform_id(paper=paper, **kw)
        return backbone.transform(paper=paper, **kw), transform_id
    if transform is None:
        return None, transform_id or "none (items are tensors)"
    if not callable(transform):
        raise TypeError(f"transform: expected 'backbone', 'paper', a callable or None, got {transform!r}")
    if transform_id is None:
        if caching:
            raise ValueError("transform_id: a custom transform cannot be identified safely (its repr may hold a "
                             "memory address or hide the function it wraps); pass transform_id='...' naming it to "
                             "cache its features, or cache_dir=None")
        transform_id = "unidentified"
    return transform, "custom:" + transform_id


def _augment(backbone: Any, augment: Any, transform_id: str | None, image_size: int, normalization: Any,
             caching: bool) -> tuple[Any, str]:
    """(the augmentation to apply, the string that identifies it in the cache key)."""
    from .transforms import describe, train_transform
    from .transforms import normalization as norm

    if augment == "paper":
        mean, std = norm(backbone, normalization)
        return train_transform(image_size, mean, std), describe("paper", image_size, mean, std)
    if not callable(augment) or isinstance(augment, str):
        raise TypeError(f"augment: expected 'paper', None or a callable augmentation, got {augment!r}")
    if transform_id is None:
        if caching:
            raise ValueError("transform_id: a custom augmentation cannot be identified safely; pass "
                             "transform_id='...' naming it to cache its views, or cache_dir=None")
        return augment, "custom augment: unidentified"
    return augment, "custom augment:" + check.string(transform_id, "transform_id")


class _Runner:
    def __init__(self, backbone: Any, data: Any, batch_size: int, device: torch.device, num_workers: int, amp: bool,
                 progress: bool, layers: Sequence[str | None] = (None,)) -> None:
        self.backbone, self.data, self.batch_size = backbone, data, batch_size
        self.device, self.num_workers, self.amp, self.progress = device, num_workers, amp, progress
        self.layers = list(layers)

    def _forward(self, batch: Any) -> list[torch.Tensor]:
        if self.layers == [None]:
            return [self.backbone(batch)]
        return list(self.backbone.forward_layers(batch, self.layers))

    def features(self, start: int, stop: int, desc: str = "features", bar: Any = None) -> list[np.ndarray]:
        """[(stop - start, d_l) float32 features of samples [start, stop)], one per layer."""
        subset = torch.utils.data.Subset(self.data, range(start, stop))
        loader = torch.utils.data.DataLoader(subset, batch_size=self.batch_size, shuffle=False,
                                             num_workers=self.num_workers,
                                             pin_memory=self.device.type == "cuda")
        own_bar = bar is None
        if own_bar:
            bar = progress_bar(None, self.progress, total=stop - start, desc=desc, unit="img")
        parts: list[list[np.ndarray]] = [[] for _ in self.layers]
        dtype = torch.float16 if self.device.type == "cuda" else torch.bfloat16
        dtype_in = next((p.dtype for p in self.backbone.parameters()), None)  # float64 models take float64 images
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=dtype, enabled=self.amp):
            for batch, _ in loader:
                # images, a dict of tensors; texts (a list of strings) are tokenised by the model itself
                batch = to_device(batch, self.device)
                if isinstance(batch, torch.Tensor) and dtype_in is not None and batch.is_floating_point():
                    batch = batch.to(dtype_in)
                for part, out in zip(parts, self._forward(batch)):
                    part.append(out.float().cpu().numpy())
                bar.update(batch_rows(batch))
        if own_bar:
            bar.close()
        if not parts[0]:
            return [np.zeros((0, getattr(self.backbone, "dim", 0)), dtype=np.float32) for _ in self.layers]
        return [np.concatenate(p).astype(np.float32, copy=False) for p in parts]


def _extract_to_cache(folders: list[str], run: _Runner, data: Any, metas: list[dict[str, Any]], classes: list[str],
                      chunk_size: int) -> list[FeatureSet]:
    """Each layer's features into its folder, chunk by chunk (every layer of a chunk from one pass), then
    joined; a chunk done for every layer is not recomputed (the unit of resumption)."""
    n = len(data)
    targets = np.asarray(data.targets, dtype=np.int64)
    starts = list(range(0, n, chunk_size)) or [0]
    reused = 0
    bar = progress_bar(None, run.progress, total=n, desc=f"features {metas[0]['model']} {metas[0]['dataset']}/"
                                                          f"{metas[0]['split']}", unit="sample")
    for c, start in enumerate(starts):
        stop = min(n, start + chunk_size)
        bases = [os.path.join(folder, f"chunk-{c:05d}") for folder in folders]
        if all([_chunk_ok(base, stop - start) for base in bases]):
            reused += 1
            bar.update(stop - start)
            continue
        for base, X in zip(bases, run.features(start, stop, bar=bar)):
            write_npy(base + ".X.npy", X)
            write_npy(base + ".y.npy", targets[start:stop])
            write_json(base + ".json", {"rows": stop - start, "X": sha256_file(base + ".X.npy"),
                                        "y": sha256_file(base + ".y.npy")})  # the commit record, written last
    bar.close()
    out = []
    for folder, meta in zip(folders, metas):
        fs = _join_chunks(folder, len(starts), n, meta, classes)
        fs.metadata["cache"] = "resumed" if reused else "computed"
        fs.metadata["chunks_reused"] = reused
        out.append(fs)
    return out


def _join_chunks(folder: str, chunks: int, n: int, meta: dict[str, Any], classes: list[str]) -> FeatureSet:
    """The chunks of one folder joined into one array per kind, the manifest written last."""
    d: int | None = None  # the features' width, from the "X" chunks
    for kind, dtype in (("X", np.float32), ("y", np.int64)):
        parts = [np.load(os.path.join(folder, f"chunk-{c:05d}.{kind}.npy"), mmap_mode="r") for c in range(chunks)]
        d = parts[0].shape[1] if kind == "X" else d
        shape = (n, cast(int, d)) if kind == "X" else (n,)
        with atomic_path(os.path.join(folder, "features.npy" if kind == "X" else "labels.npy")) as tmp:
            arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shape)
            row = 0
            for p in parts:
                arr[row:row + len(p)] = p
                row += len(p)
            arr.flush()
            del arr
    manifest = {**meta, "class_names": classes, "dim": int(cast(int, d)),
                "sha256": {"features.npy": sha256_file(os.path.join(folder, "features.npy")),
                           "labels.npy": sha256_file(os.path.join(folder, "labels.npy"))}}
    write_json(os.path.join(folder, "meta.json"), manifest)
    for c in range(chunks):
        for suffix in (".X.npy", ".y.npy", ".json"):
            remove(os.path.join(folder, f"chunk-{c:05d}{suffix}"))
    fs = _load_complete(folder)
    if fs is None:  # what was just written (and fsynced) does not read back: the disk is full or failing
        raise OSError(f"{folder}: the feature cache just written does not match its checksums (is the disk full or "
                      "failing?); it was removed -- extract again, or pass cache_dir=None")
    return fs


def _load_complete(folder: str) -> FeatureSet | None:
    """The cached FeatureSet when its manifest and checksums are intact; None to (re)compute."""
    manifest = os.path.join(folder, "meta.json")
    if not os.path.exists(manifest):
        return None
    try:
        with open(manifest) as f:
            meta = json.load(f)
        if not isinstance(meta, dict) or not isinstance(meta.get("sha256"), dict):
            raise ValueError("meta.json is not a manifest (an object with checksums)")
        for name, want in meta["sha256"].items():
            if name not in ("features.npy", "labels.npy") or sha256_file(os.path.join(folder, name)) != want:
                raise ValueError(f"{name}: checksum mismatch")
        X = np.load(os.path.join(folder, "features.npy"), mmap_mode="r")
        y = np.load(os.path.join(folder, "labels.npy"), mmap_mode="r")
        if X.shape[0] != meta["n"] or y.shape[0] != meta["n"]:
            raise ValueError("row count differs from the manifest")
    except (OSError, ValueError, KeyError, TypeError) as exc:  # JSONDecodeError is a ValueError
        warnings.warn(f"pyred feature cache {folder} is corrupt ({exc}); recomputing it", RuntimeWarning,
                      stacklevel=3)
        for name in ("meta.json", "features.npy", "labels.npy"):
            remove(os.path.join(folder, name))
        return None
    return FeatureSet(X, y, list(meta["class_names"]), {**meta, "cache": "hit"}, folder)


def _chunk_ok(base: str, rows: int) -> bool:
    record = base + ".json"
    if not os.path.exists(record):
        return False
    try:
        with open(record) as f:
            rec = json.load(f)
        ok = (isinstance(rec, dict) and rec["rows"] == rows and sha256_file(base + ".X.npy") == rec["X"]
              and sha256_file(base + ".y.npy") == rec["y"])
    except (OSError, ValueError, KeyError, TypeError):
        ok = False
    if not ok:
        warnings.warn(f"pyred feature cache chunk {base} is corrupt or partial; recomputing it", RuntimeWarning,
                      stacklevel=4)
        for suffix in (".json", ".X.npy", ".y.npy"):
            remove(base + suffix)
    return ok


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)[:80]
