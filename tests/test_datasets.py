import gzip
import os

import numpy as np
import pytest
from PIL import Image

import pyred
from pyred import datasets


def test_digits_splits_are_disjoint_and_fixed():
    parts = {s: datasets.load("digits", s) for s in ("train", "val", "test", "trainval")}
    assert len(parts["train"]) + len(parts["val"]) == len(parts["trainval"])
    assert len(parts["trainval"]) + len(parts["test"]) == 1797
    src = [set(parts[s].indices.tolist()) for s in ("train", "val", "test")]
    assert not (src[0] & src[1]) and not (src[0] & src[2]) and not (src[1] & src[2])
    again = datasets.load("digits", "train")
    assert np.array_equal(again.indices, parts["train"].indices)
    img, label = parts["test"][0]
    assert img.mode == "RGB" and img.size == (8, 8) and 0 <= label < 10
    assert parts["test"].classes == [str(c) for c in range(10)]
    assert int(parts["test"].targets[0]) == label


def write_idx(path, array):
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_fashion_mnist_idx_files_from_root(tmp_path):
    rng = np.random.default_rng(0)
    tr_img, tr_lab = rng.integers(0, 256, (50, 28, 28)), rng.integers(0, 10, 50)
    te_img, te_lab = rng.integers(0, 256, (20, 28, 28)), rng.integers(0, 10, 20)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", tr_img)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", tr_lab)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", te_img)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", te_lab)
    test = datasets.load("fashion-mnist", "test", root=tmp_path)
    assert len(test) == 20 and np.array_equal(test.targets, te_lab)
    img, label = test[3]
    assert img.mode == "RGB" and np.array_equal(np.asarray(img)[:, :, 0], te_img[3]) and label == te_lab[3]
    train = datasets.load("fashion-mnist", "train", root=tmp_path)
    val = datasets.load("fashion-mnist", "val", root=tmp_path)
    assert len(train) == 45 and len(val) == 5
    assert sorted(train.indices.tolist() + val.indices.tolist()) == list(range(50))
    assert test.classes[9] == "Ankle boot"


@pytest.mark.skipif(not os.path.exists("/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz"),
                    reason="Debian's dataset-fashion-mnist is not installed")
def test_fashion_mnist_from_debian():
    test = datasets.load("fashion-mnist", "test")
    assert len(test) == 10_000 and np.bincount(test.targets).tolist() == [1000] * 10
    assert len(datasets.load("fashion-mnist", "train")) == 54_000


def test_missing_datasets_say_where_pyred_looked(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "FASHION_MNIST_DIRS", (str(tmp_path / "nowhere"),))
    with pytest.raises(FileNotFoundError, match=r"fashion-mnist: the idx files were not found in .*apt-get install"):
        datasets.load("fashion-mnist", "train", root=tmp_path)
    with pytest.raises(FileNotFoundError, match="cifar10: not found under .*download=True"):
        datasets.load("cifar10", "test", root=tmp_path)
    with pytest.raises(ValueError, match="dataset: unknown 'imagenet21k'"):
        datasets.load("imagenet21k", "test")
    with pytest.raises(ValueError, match="imagenet: pass root= the folder with train/<class>/<image> and val/"):
        datasets.load("imagenet", "test")
    with pytest.raises(FileNotFoundError, match="places365: no train/ and val/ class folders under .*_standard"):
        datasets.load("places365", "train", root=tmp_path)
    with pytest.raises(ValueError, match="split: expected one of"):
        datasets.load("digits", "validation")


@pytest.mark.parametrize("name,sub", [("imagenet", "ILSVRC2012"), ("places365", "places365_standard"),
                                      ("imagenet", "")])
def test_imagenet_and_places365_folders(tmp_path, name, sub):
    """The standard layouts: train/<class>/ and the labelled val/<class>/, which is the test split (as in the
    paper); "val" is the fixed-seed 10 % of train. The root may be the folder or its parent."""
    from PIL import Image

    base = tmp_path / sub if sub else tmp_path
    for split, n in (("train", 20), ("val", 3)):
        for c in ("n01", "n02"):
            (base / split / c).mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (6, 5), (i, 0, 0)).save(base / split / c / f"{i}.JPEG")
    train, val, test = (datasets.load(name, s, root=tmp_path) for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (36, 4, 6)
    assert test.classes == ["n01", "n02"] and sorted(test.targets.tolist()) == [0, 0, 0, 1, 1, 1]
    assert not set(train.indices.tolist()) & set(val.indices.tolist())
    assert test[0][0].size == (6, 5)


def test_image_folder(tmp_path):
    for split, n in (("train", 10), ("test", 4)):
        for c in ("cat", "dog"):
            d = tmp_path / split / c
            d.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(np.full((6, 6), i * 20, dtype=np.uint8)).save(d / f"{i}.png")
    test = datasets.load("folder", "test", root=tmp_path)
    assert len(test) == 8 and test.classes == ["cat", "dog"]
    img, label = test[5]
    assert img.mode == "RGB" and label == 1
    train, val = datasets.load("folder", "train", root=tmp_path), datasets.load("folder", "val", root=tmp_path)
    assert len(train) == 18 and len(val) == 2
    with pytest.raises(ValueError, match="folder: pass root="):
        datasets.load("folder", "test")


def test_registry_is_open():
    @datasets.register_dataset("tiny-test")
    def tiny(split, root, download):
        return datasets.LabeledImages(np.zeros((3, 4, 4), np.uint8), [0, 1, 2], [0, 1, 0], ["a", "b"], "tiny", split,
                                      to_image=datasets._gray_to_pil)

    assert "tiny-test" in datasets.available()
    assert len(pyred.datasets.load("tiny-test", "test")) == 3
