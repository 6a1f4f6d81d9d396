"""What a dataset holds, as a digest: the part of the feature cache's key that follows the images.

A cache keyed by a dataset's name, split and size returns stale features when
the images change under the same names. :func:`source_identity` follows the
content instead:

* image files (an ``ImageFolder``, or files a loader names): each file's path
  relative to its root, size and modification time in nanoseconds -- one
  ``stat`` per file, no reading;
* a folder a dataset reads (torchvision's CIFAR batches, Flowers, Pets):
  every file under it, the same way;
* arrays held in memory (NumPy, torch): a sha256 of their bytes, dtype and shape;
* PIL images held in a list: a sha256 of their pixels, mode and size.

Anything else cannot be identified safely: the caller must name its content
(``LabeledImages(..., fingerprint="...")``).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from typing import Any, cast

import numpy as np


class UnknownContent(ValueError):
    """The source's content cannot be identified without reading it in a way pyred cannot trust."""


def files_identity(paths: Iterable[str | os.PathLike[str]], root: str | os.PathLike[str] | None = None) -> str:
    """sha256 over (path relative to ``root``, size, mtime_ns) of each file, in the order given."""
    h = hashlib.sha256()
    root = None if root is None else os.fspath(root)
    for p in paths:
        p = os.fspath(p)
        st = os.stat(p)
        name = os.path.relpath(p, root) if root else p
        h.update(f"{name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def tree_identity(folder: str | os.PathLike[str]) -> str:
    """:func:`files_identity` of every file under ``folder`` (sorted, paths relative to it)."""
    folder = os.fspath(folder)
    paths = []
    for here, dirs, files in os.walk(folder):
        dirs.sort()
        paths += [os.path.join(here, f) for f in sorted(files)]
    return files_identity(paths, folder)


def array_identity(a: Any) -> str:
    """sha256 of an array's dtype, shape and bytes (NumPy or torch)."""
    arr = a.detach().cpu().numpy() if hasattr(a, "detach") else np.asarray(a)
    arr = np.ascontiguousarray(arr)
    h = hashlib.sha256(f"{arr.dtype.str}{arr.shape}".encode())
    h.update(memoryview(cast(Any, arr)).cast("B"))  # numpy declares __buffer__ only for Python >= 3.12
    return h.hexdigest()


def source_identity(source: Any) -> str:
    """A digest of what ``source`` (the indexable behind a :class:`pyred.datasets.LabeledImages`) holds.
    Raises :class:`UnknownContent` when it cannot tell."""
    if isinstance(source, np.ndarray) or type(source).__module__.startswith("torch") and hasattr(source, "dtype"):
        return "array:" + array_identity(source)
    samples = getattr(source, "samples", None)  # torchvision's ImageFolder / DatasetFolder
    if isinstance(samples, list) and all(isinstance(s, tuple) and len(s) == 2 for s in samples[:1]):
        return "files:" + files_identity([p for p, _ in samples], getattr(source, "root", None))
    parts = getattr(source, "datasets", None)  # a ConcatDataset
    if isinstance(parts, (list, tuple)) and parts:
        return "concat:" + hashlib.sha256("|".join(source_identity(p) for p in parts).encode()).hexdigest()
    base = getattr(source, "_base_folder", None)  # torchvision's Flowers102, OxfordIIITPet, ...
    if base is None and isinstance(getattr(source, "base_folder", None), str) and hasattr(source, "root"):
        base = os.path.join(source.root, source.base_folder)  # CIFAR10 / CIFAR100
    if base is not None and os.path.isdir(base):
        return "tree:" + tree_identity(base)
    if isinstance(source, (list, tuple)) and source and all(hasattr(im, "tobytes") and hasattr(im, "mode")
                                                            for im in source):
        h = hashlib.sha256()
        for im in source:
            h.update(f"{im.mode}{im.size}".encode())
            h.update(im.tobytes())
        return "images:" + h.hexdigest()
    raise UnknownContent(f"cannot tell what a {type(source).__name__} holds")
