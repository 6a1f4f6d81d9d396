"""Image datasets with the paper's splits, behind a registry.

``load(name, split)`` returns a :class:`LabeledImages`: an indexable dataset of
(image, label) pairs (PIL RGB images, or whatever ``transform`` makes of them)
with ``targets`` (int64, known without decoding images), ``classes`` and
``name``/``split``. Splits: "train", "val", "test", and "trainval" (train + val).
Where a dataset has no official validation split, "val" is a fixed-seed 10 %
of the official training split (the reference code's 90/10 ``random_split``
with seed 0) and "train" the other 90 %.

Built in: "digits" (scikit-learn's bundled 8x8 digits; no official split, so a
fixed-seed 20 % is the test split), "fashion-mnist" (idx files from ``root``,
from Debian's /usr/share/datasets/fashion-mnist, or torchvision's download),
"cifar10", "cifar100", "flowers102", "oxford-pets" (torchvision; downloaded
when ``download=True``), "imagenet" and "places365" (their standard class-folder
layouts, ``root``/train and ``root``/val, the labelled validation set being the
test split as in the paper; never downloaded), "folder" (an image folder per
class under ``root``/<split>, torchvision's ImageFolder layout) and
"text-folder" (``root``/<split>/<class>/*.txt, :mod:`pyred.texts`).
"""

from __future__ import annotations

import gzip
import os
import zlib
from collections.abc import Callable, Sequence
from typing import Any, Literal, TypeVar, get_args

import numpy as np
import torch
from PIL import Image

from ._files import digest
from .content import array_identity, files_identity, source_identity
from .splits import split_folders, split_train_val

Split = Literal["train", "val", "test", "trainval"]
SPLITS: tuple[str, ...] = get_args(Split)
FASHION_MNIST_DIRS = ("/usr/share/datasets/fashion-mnist",)
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                         "Bag", "Ankle boot")


class LabeledImages(torch.utils.data.Dataset[tuple[Any, int]]):
    """Images (by index into ``source``) with integer labels.

    source: an indexable whose item i is a PIL image, or a (PIL image, label) pair.
    indices: which items of ``source`` form this split; targets: their labels.
    fingerprint: what the source holds, for the feature cache's key (:meth:`content_id`): None to let
      pyred tell (image files by path, size and mtime; arrays and PIL images by their bytes -- see
      :mod:`pyred.content`), a string that changes whenever the images do, or a callable returning one.
    """

    def __init__(self, source: Any, indices: Sequence[int] | np.ndarray, targets: Sequence[int] | np.ndarray,
                 classes: Sequence[str], name: str, split: str, *, transform: Callable[[Any], Any] | None = None,
                 to_image: Callable[[Any], Any] | None = None,
                 fingerprint: str | Callable[[], str] | None = None) -> None:
        self.source, self.indices = source, np.asarray(indices, dtype=np.int64)
        self.targets = np.asarray(targets, dtype=np.int64)
        if len(self.targets) != len(self.indices):
            raise ValueError("targets: one label per index expected")
        if not (fingerprint is None or isinstance(fingerprint, str) or callable(fingerprint)):
            raise TypeError(f"fingerprint: expected None, a string or a callable, got {fingerprint!r}")
        self.classes, self.name, self.split = list(classes), name, split
        self.transform, self._to_image, self.fingerprint = transform, to_image, fingerprint

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        item = self.source[int(self.indices[i])]
        image = item[0] if isinstance(item, tuple) else item
        if self._to_image is not None:
            image = self._to_image(image)
        if isinstance(image, Image.Image) and image.mode != "RGB":
            image = image.convert("RGB")  # grayscale -> 3 channels
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.targets[i])

    def with_transform(self, transform: Callable[[Any], Any] | None) -> LabeledImages:
        """The same split, producing ``transform(image)``."""
        return self.subset(np.arange(len(self)), transform)

    def subset(self, idx: Sequence[int] | np.ndarray, transform: Any = "same") -> LabeledImages:
        """The images ``idx`` of this split (with its labels, classes, name, split and fingerprint)."""
        idx = np.asarray(idx, dtype=np.int64)
        return LabeledImages(self.source, self.indices[idx], self.targets[idx], self.classes, self.name, self.split,
                             transform=self.transform if transform == "same" else transform, to_image=self._to_image,
                             fingerprint=self.fingerprint)

    def content_id(self) -> str:
        """A digest of the images and labels of this split: what the source holds (the fingerprint, or
        :func:`pyred.content.source_identity`), which of its items, and their labels. Raises
        :class:`pyred.content.UnknownContent` when the source cannot be identified without a fingerprint."""
        if isinstance(self.fingerprint, str):
            what = "given:" + self.fingerprint
        elif callable(self.fingerprint):
            what = "given:" + str(self.fingerprint())
        else:
            what = source_identity(self.source)
        return digest([what, array_identity(self.indices), array_identity(self.targets)], 32)

    def describe(self) -> str:
        return f"{self.name}/{self.split} ({len(self)} images, {len(self.classes)} classes)"


_REGISTRY: dict[str, Callable[..., Any]] = {}
_Loader = TypeVar("_Loader", bound=Callable[..., Any])


def register_dataset(name: str) -> Callable[[_Loader], _Loader]:
    """Decorator: ``fn(split, root, download) -> LabeledImages`` (or LabeledTexts) becomes ``load(name, ...)``."""

    def wrap(fn: _Loader) -> _Loader:
        _REGISTRY[name] = fn
        return fn

    return wrap


def available() -> list[str]:
    return sorted(_REGISTRY)


def load(name: str, split: Split, *, root: str | os.PathLike[str] | None = None,
         download: bool = False) -> Any:
    """One split of a registered dataset (see the module docstring): a LabeledImages, or for "text-folder" a
    :class:`pyred.texts.LabeledTexts`."""
    if name not in _REGISTRY:
        raise ValueError(f"dataset: unknown {name!r}; available: {available()}")
    if split not in SPLITS:
        raise ValueError(f"split: expected one of {SPLITS}, got {split!r}")
    return _REGISTRY[name](split, None if root is None else os.fspath(root), download)


def _pick(split: str, n_train: int) -> np.ndarray:
    """Indices of "train", "val" or "trainval" within an official training set of n_train items,
    by the same fixed-seed 90/10 rule the probes use (pyred.splits.split_train_val)."""
    if split == "trainval":
        return np.arange(n_train)
    tr, va = split_train_val(n_train)
    return (tr if split == "train" else va).numpy()


def _gray_to_pil(a: np.ndarray) -> Image.Image:
    return Image.fromarray(np.ascontiguousarray(a))  # uint8 (H, W): mode "L"


@register_dataset("digits")
def _digits(split: str, root: str | None, download: bool) -> LabeledImages:
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise RuntimeError("digits: needs scikit-learn, which ships the images: pip install 'pyred[demo]' "
                           "(or scikit-learn)") from exc

    d = load_digits()
    images = (d.images * (255.0 / 16.0)).round().astype(np.uint8)  # 0..16 -> 0..255
    targets = d.target.astype(np.int64)
    perm = np.random.default_rng(0).permutation(len(targets))
    n_test = len(targets) // 5
    trainval, test = perm[n_test:], perm[:n_test]
    if split == "test":
        idx = test
    else:
        idx = trainval[_pick(split, len(trainval))]
    return LabeledImages(images, idx, targets[idx], [str(c) for c in range(10)], "digits", split,
                         to_image=_gray_to_pil)


def read_idx(path: str) -> np.ndarray:
    """An idx file (optionally gzipped) as a numpy array."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as exc:  # gzip's errors do not name the file
        raise ValueError(f"{path}: cannot be read ({type(exc).__name__}: {exc}); the file is damaged or "
                         "truncated") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 8:
        raise ValueError(f"{path}: not an idx file of unsigned bytes")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise ValueError(f"{path}: expected {int(np.prod(shape))} values for shape {shape}, found {body.size}")
    return body.reshape(shape)


def _find_fashion(root: str | None) -> str | None:
    names = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    dirs = ([root, os.path.join(root, "FashionMNIST", "raw")] if root else []) + list(FASHION_MNIST_DIRS)
    for d in dirs:
        if all(os.path.exists(os.path.join(d, n + ".gz")) or os.path.exists(os.path.join(d, n)) for n in names):
            return d
    return None


@register_dataset("fashion-mnist")
def _fashion(split: str, root: str | None, download: bool) -> LabeledImages:
    d = _find_fashion(root)
    if d is None and download:
        import torchvision

        torchvision.datasets.FashionMNIST(root or ".", train=True, download=True)
        torchvision.datasets.FashionMNIST(root or ".", train=False, download=True)
        d = _find_fashion(root or ".")
    if d is None:
        looked = ([root] if root else []) + list(FASHION_MNIST_DIRS)
        raise FileNotFoundError(f"fashion-mnist: the idx files were not found in {looked}. Get them with "
                                "'apt-get install dataset-fashion-mnist' (Debian), or pass download=True "
                                "(torchvision, needs network) or root= a folder holding them")

    def path(n: str) -> str:
        return os.path.join(d, n + ".gz") if os.path.exists(os.path.join(d, n + ".gz")) else os.path.join(d, n)

    if split == "test":
        images, labels = read_idx(path("t10k-images-idx3-ubyte")), read_idx(path("t10k-labels-idx1-ubyte"))
        idx = np.arange(len(labels))
    else:
        images, labels = read_idx(path("train-images-idx3-ubyte")), read_idx(path("train-labels-idx1-ubyte"))
        idx = _pick(split, len(labels))
    files = [path(n) for n in (("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte") if split == "test" else
                               ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"))]
    return LabeledImages(images, idx, labels[idx].astype(np.int64), FASHION_MNIST_CLASSES, "fashion-mnist", split,
                         to_image=_gray_to_pil, fingerprint=lambda: files_identity(files))


def _torchvision(name: str, make: Callable[[str, str, bool], Any], targets_of: Callable[[Any], Any], has_val: bool,
                 split: str, root: str | None, download: bool) -> LabeledImages:
    root = root or os.path.expanduser("~/.cache/pyred/datasets")
    try:
        if has_val:  # Flowers102: official train / val / test
            parts = {"train": ["train"], "val": ["val"], "test": ["test"], "trainval": ["train", "val"]}[split]
            sources = [make(root, p, download) for p in parts]
            source: Any = torch.utils.data.ConcatDataset(sources)
            targets = np.concatenate([np.asarray(targets_of(s)) for s in sources])
            idx = np.arange(len(targets))
        else:
            source = make(root, "test" if split == "test" else "train", download)
            targets = np.asarray(targets_of(source))
            idx = np.arange(len(targets)) if split == "test" else _pick(split, len(targets))
    except RuntimeError as exc:  # torchvision: "Dataset not found or corrupted. You can use download=True ..."
        raise FileNotFoundError(f"{name}: not found under {root} ({exc}). Pass download=True (needs network) or "
                                f"root= the folder holding torchvision's copy") from exc
    classes = getattr(source, "classes", None) or getattr(getattr(source, "datasets", [None])[0], "classes", None)
    classes = classes or [str(c) for c in range(int(targets.max()) + 1)]
    return LabeledImages(source, idx, targets[idx], classes, name, split)


def _tv(cls_name: str, split_kw: str) -> Callable[[str, str, bool], Any]:
    def make(root: str, part: str, download: bool) -> Any:
        import torchvision

        cls = getattr(torchvision.datasets, cls_name)
        if split_kw == "train":
            return cls(root, train=(part == "train"), download=download)
        return cls(root, split=part, download=download)

    return make


register_dataset("cifar10")(lambda s, r, dl: _torchvision("cifar10", _tv("CIFAR10", "train"), lambda d: d.targets,
                                                          False, s, r, dl))
register_dataset("cifar100")(lambda s, r, dl: _torchvision("cifar100", _tv("CIFAR100", "train"), lambda d: d.targets,
                                                           False, s, r, dl))
register_dataset("flowers102")(lambda s, r, dl: _torchvision("flowers102", _tv("Flowers102", "split"),
                                                             lambda d: d._labels, True, s, r, dl))


def _pets(root: str, part: str, download: bool) -> Any:
    import torchvision

    return torchvision.datasets.OxfordIIITPet(root, split="test" if part == "test" else "trainval",
                                              download=download)


register_dataset("oxford-pets")(lambda s, r, dl: _torchvision("oxford-pets", _pets, lambda d: d._labels, False,
                                                              s, r, dl))


@register_dataset("folder")
def _folder(split: str, root: str | None, download: bool) -> LabeledImages:
    """root/train, root/test and optionally root/val, each with one subfolder of images per class.
    Without root/val, "val" is a fixed-seed 10 % of root/train and "train" the rest."""
    import torchvision

    if root is None:
        raise ValueError("folder: pass root= a directory with one subfolder per split (train/, test/, optionally "
                         "val/), each holding one subfolder of images per class")
    parts, has_val = split_folders(root, split)
    for part in parts:
        if not os.path.isdir(os.path.join(root, part)):
            raise FileNotFoundError(f"folder: no {os.path.join(root, part)} (expected {root}/<split>/<class>/<image>)")
    sources = [torchvision.datasets.ImageFolder(os.path.join(root, p)) for p in parts]
    source = sources[0] if len(sources) == 1 else torch.utils.data.ConcatDataset(sources)
    targets = np.concatenate([np.asarray(s.targets) for s in sources])
    if split in ("train", "val") and not has_val:
        idx = _pick(split, len(targets))
    else:
        idx = np.arange(len(targets))
    return LabeledImages(source, idx, targets[idx], sources[0].classes, f"folder:{os.path.abspath(root)}", split)


def _train_val_folders(name: str, subdirs: tuple[str, ...], split: str, root: str | None) -> LabeledImages:
    """A dataset kept as class folders under <root>/train and <root>/val (the labelled validation set, which
    the paper tests on); ``root`` may also be their parent holding one of ``subdirs``. "val" is a fixed-seed
    10 % of train, "train" the rest, as for the datasets without their own validation split."""
    import torchvision

    if root is None:
        raise ValueError(f"{name}: pass root= the folder with train/<class>/<image> and val/<class>/<image> "
                         f"(or its parent holding {' or '.join(subdirs)}/)")
    for sub in ("", *subdirs):
        base = os.path.join(root, sub)
        if os.path.isdir(os.path.join(base, "train")) and os.path.isdir(os.path.join(base, "val")):
            break
    else:
        raise FileNotFoundError(f"{name}: no train/ and val/ class folders under {root} (nor under "
                                f"{', '.join(os.path.join(root, s) for s in subdirs)})")
    source = torchvision.datasets.ImageFolder(os.path.join(base, "val" if split == "test" else "train"))
    targets = np.asarray(source.targets)
    idx = np.arange(len(targets)) if split == "test" else _pick(split, len(targets))
    return LabeledImages(source, idx, targets[idx], source.classes, f"{name}:{os.path.abspath(base)}", split)


register_dataset("imagenet")(lambda s, r, dl: _train_val_folders("imagenet", ("imagenet", "ILSVRC2012"), s, r))
register_dataset("places365")(lambda s, r, dl: _train_val_folders("places365", ("places365", "places365_standard"),
                                                                  s, r))


def _text_folder(split: str, root: str | None, download: bool) -> Any:
    from .texts import text_folder

    return text_folder(split, root)


register_dataset("text-folder")(_text_folder)
