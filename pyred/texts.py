"""Labelled texts: ``LabeledTexts`` and the "text-folder" dataset.

A :class:`LabeledTexts` is to text what :class:`pyred.datasets.LabeledImages` is to
images: items ``(text, label)``, ``targets``, ``classes``, ``name``, ``split``, and a
``content_id()`` -- a digest of the texts and labels -- so the feature cache follows
the content. ``datasets.load("text-folder", split, root=DIR)`` reads
DIR/<split>/<class>/*.txt (UTF-8, one text per file) with the splits of the image
"folder" dataset: train, test and val (DIR/val, or a fixed-seed 10 % of train).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from ._files import sha256_parts


class LabeledTexts(torch.utils.data.Dataset[tuple[str, int]]):
    """Texts with integer labels. texts: strings; targets: (n,) labels in [0, len(classes))."""

    def __init__(self, texts: Sequence[str], targets: Sequence[int] | np.ndarray, classes: Sequence[str], name: str,
                 split: str) -> None:
        texts = list(texts)
        if not all(isinstance(t, str) for t in texts):
            bad = next(type(t).__name__ for t in texts if not isinstance(t, str))
            raise TypeError(f"texts: expected strings, got a {bad}")
        self.texts = texts
        self.targets = np.asarray(targets, dtype=np.int64)
        if self.targets.shape != (len(texts),):
            raise ValueError(f"targets: expected one label per text ({len(texts)}), got shape {self.targets.shape}")
        self.classes, self.name, self.split = list(classes), str(name), str(split)
        if len(texts) and (self.targets.min() < 0 or self.targets.max() >= len(self.classes)):
            raise ValueError(f"targets: labels must be in [0, {len(self.classes)}) (one per class name)")

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, i: int) -> tuple[str, int]:
        return self.texts[int(i)], int(self.targets[int(i)])

    def with_transform(self, transform: Callable[[Any], Any] | None) -> LabeledTexts:
        """Texts are tokenised by the backbone itself: only the identity transform applies."""
        if transform is not None:
            raise ValueError("transform: texts go to the backbone as strings (its tokenizer runs in the forward "
                             "pass); pass no transform")
        return self

    def subset(self, idx: Sequence[int] | np.ndarray) -> LabeledTexts:
        idx = np.asarray(idx, dtype=np.int64)
        return LabeledTexts([self.texts[i] for i in idx], self.targets[idx], self.classes, self.name, self.split)

    def content_id(self) -> str:
        """sha256 over every text (its UTF-8 bytes and length) and the labels."""
        parts = (p for t in self.texts for p in (str(len(t)).encode(), t.encode("utf-8")))
        return sha256_parts([*parts, self.targets.tobytes(), repr(self.classes).encode()])[:32]

    def describe(self) -> str:
        return f"{self.name}/{self.split} ({len(self)} texts, {len(self.classes)} classes)"


def text_folder(split: str, root: str | None) -> LabeledTexts:
    """root/<split>/<class>/*.txt; without root/val, "val" is a fixed-seed 10 % of train (as "folder")."""
    from .splits import split_folders, split_train_val

    if root is None:
        raise ValueError("text-folder: pass root= a directory with train/ and test/ (optionally val/), each holding "
                         "one subfolder of .txt files per class")
    parts, has_val = split_folders(root, split)
    texts: list[str] = []
    labels: list[int] = []
    # every split numbers the classes of root/train (a class missing from one split keeps its label)
    names_from = os.path.join(root, "train") if os.path.isdir(os.path.join(root, "train")) else None
    classes: list[str] | None = None
    if names_from is not None:
        classes = sorted(d for d in os.listdir(names_from) if os.path.isdir(os.path.join(names_from, d)))
    for part in parts:
        folder = os.path.join(root, part)
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"text-folder: no {folder} (expected {root}/<split>/<class>/<text>.txt)")
        found = sorted(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d)))
        classes = classes or found
        unknown = sorted(set(found) - set(classes))
        if unknown:
            raise ValueError(f"text-folder: {folder} has classes {unknown} that {names_from or folder} has not")
        for c, name in enumerate(classes):
            sub = os.path.join(folder, name)
            for f in sorted(os.listdir(sub)) if os.path.isdir(sub) else []:
                if f.endswith(".txt"):
                    with open(os.path.join(sub, f), encoding="utf-8") as fh:
                        texts.append(fh.read())
                    labels.append(c)
    if not texts:
        raise FileNotFoundError(f"text-folder: no .txt files under {root}/{parts[0]}/<class>/")
    out = LabeledTexts(texts, labels, classes or [], f"text-folder:{os.path.abspath(root)}", split)
    if split in ("train", "val") and not has_val:
        tr, va = split_train_val(len(texts))
        out = out.subset((tr if split == "train" else va).numpy())
        out.split = split
    return out
