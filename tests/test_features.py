import os
import signal
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest
import torch

import pyred

# Shared by this process and the subprocess that gets killed: the same random-init backbone,
# the same transform (identified by its transform_id in the cache key), slowed down so a kill lands mid-way.
SETUP = r"""
import time, torch, pyred
from torchvision import transforms

class SlowTransform:
    def __init__(self, delay):
        self.delay = delay
        self.inner = transforms.Compose([transforms.Resize(32), transforms.ToTensor()])
    def __call__(self, img):
        time.sleep(self.delay)
        return self.inner(img)
    def __repr__(self):
        return "SlowTransform(Resize(32), ToTensor())"

def setup(delay):
    torch.manual_seed(0)
    torch.set_num_threads(1)
    return pyred.Backbone("resnet18", pretrained=False), pyred.datasets.load("digits", "trainval"), SlowTransform(delay)
"""
ns: dict = {}
exec(SETUP, ns)


def extract(cache, delay=0.0, **kw):
    bb, ds, tf = ns["setup"](delay)
    return pyred.extract_features(bb, ds, transform=tf, transform_id="resize32-totensor", cache_dir=cache,
                                  chunk_size=128, batch_size=32, progress=False, **kw)


def test_cache_hit_returns_identical_arrays(tmp_path):
    first = extract(tmp_path)
    assert first.metadata["cache"] == "computed" and first.X.shape == (1438, 512) and first.X.dtype == np.float32
    second = extract(tmp_path)
    assert second.metadata["cache"] == "hit" and isinstance(second.X, np.memmap)
    assert np.array_equal(np.asarray(first.X), np.asarray(second.X)) and np.array_equal(first.y, second.y)
    in_memory = extract(None)
    assert in_memory.path is None and np.array_equal(in_memory.X, np.asarray(first.X))
    assert second.class_names == [str(c) for c in range(10)]
    assert second.metadata["model"] == "resnet18" and second.metadata["dataset"] == "digits"
    assert second.metadata["split"] == "trainval" and second.metadata["layer"] == "penultimate"
    # nothing temporary is left behind
    assert sorted(os.listdir(first.path)) == ["features.npy", "labels.npy", "meta.json"]


def test_corrupt_cache_is_detected_and_recomputed(tmp_path):
    good = np.asarray(extract(tmp_path).X).copy()
    path = extract(tmp_path).path
    with open(os.path.join(path, "features.npy"), "r+b") as f:
        f.seek(4096)
        f.write(b"\x00garbage\x00")
    with pytest.warns(RuntimeWarning, match="is corrupt"):
        again = extract(tmp_path)
    assert again.metadata["cache"] == "computed" and np.array_equal(np.asarray(again.X), good)


def test_key_changes_with_what_determines_the_features(tmp_path):
    a = extract(tmp_path)
    bb, ds, tf = ns["setup"](0.0)
    other = pyred.extract_features(pyred.Backbone("resnet18", pretrained=False, layer="layer3"), ds, transform=tf,
                                   transform_id="resize32-totensor", cache_dir=tmp_path, progress=False)
    assert other.path != a.path and other.X.shape[1] == 256


def test_transforms_are_keyed_by_identity_not_repr(tmp_path):
    """Two torchvision Lambda transforms both print as 'Lambda()': keyed by repr they shared one cache
    entry and the second call got the first one's features."""
    from torchvision import transforms

    bb, ds, _ = ns["setup"](0.0)
    small = ds.with_transform(None)
    small = pyred.datasets.LabeledImages(small.source, small.indices[:40], small.targets[:40], small.classes,
                                         small.name, small.split, to_image=small._to_image)
    plain = transforms.Compose([transforms.Resize(32), transforms.ToTensor()])
    bright = transforms.Compose([transforms.Resize(32), transforms.ToTensor(), transforms.Lambda(lambda t: t + 1.0)])
    dark = transforms.Compose([transforms.Resize(32), transforms.ToTensor(), transforms.Lambda(lambda t: t - 1.0)])
    assert repr(bright) == repr(dark)
    kw = dict(cache_dir=tmp_path, progress=False, batch_size=20)
    a = pyred.extract_features(bb, small, transform=bright, transform_id="bright", **kw)
    b = pyred.extract_features(bb, small, transform=dark, transform_id="dark", **kw)
    assert a.path != b.path and b.metadata["cache"] == "computed"
    assert not np.array_equal(np.asarray(a.X), np.asarray(b.X))
    again = pyred.extract_features(bb, small, transform=bright, transform_id="bright", **kw)
    assert again.metadata["cache"] == "hit" and np.array_equal(np.asarray(again.X), np.asarray(a.X))
    # a callable without an identity is never cached (its repr can hold a memory address or hide a function)
    with pytest.raises(ValueError, match="transform_id: a custom transform cannot be identified"):
        pyred.extract_features(bb, small, transform=plain, **kw)
    assert pyred.extract_features(bb, small, transform=plain, progress=False).metadata["cache"] == "none"
    # the backbone's own transforms are identified by its resolved data config
    assert "timm eval transform" in bb.transform_id() and bb.transform_id() != bb.transform_id(paper=True)
    with pytest.raises(ValueError, match="transform: expected one of"):
        pyred.extract_features(bb, small, transform="papr", **kw)


def test_meta_json_that_is_not_an_object_self_heals(tmp_path):
    good = extract(tmp_path)
    with open(os.path.join(good.path, "meta.json"), "w") as f:
        f.write("[1, 2, 3]")
    with pytest.warns(RuntimeWarning, match="is corrupt"):
        again = extract(tmp_path)
    assert again.metadata["cache"] == "computed" and np.array_equal(np.asarray(again.X), np.asarray(good.X))
    assert extract(tmp_path).metadata["cache"] == "hit"


@pytest.mark.slow
def test_killed_extraction_resumes_and_matches(tmp_path):
    cache = tmp_path / "killed"
    script = SETUP + f"""
bb, ds, tf = setup(0.004)
pyred.extract_features(bb, ds, transform=tf, transform_id="resize32-totensor", cache_dir={str(cache)!r},
                       chunk_size=128, batch_size=32, progress=False)
"""
    proc = subprocess.Popen([sys.executable, "-c", script])
    done = []
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        done = [f for root, _, files in os.walk(cache) for f in files if f.endswith(".json") and f.startswith("chunk")]
        if len(done) >= 3:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert len(done) >= 3, "the extraction finished or stalled before it could be killed"
    folder = next(root for root, _, files in os.walk(cache) if any(f.startswith("chunk") for f in files))
    assert "meta.json" not in os.listdir(folder)
    # Damage one finished chunk too: it must be found and recomputed, not used.
    with open(os.path.join(folder, "chunk-00001.X.npy"), "r+b") as f:
        f.seek(200)
        f.write(b"\xff\xff\xff\xff")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        resumed = extract(cache)
    assert any("chunk-00001 is corrupt" in str(w.message) for w in caught)
    assert resumed.metadata["cache"] == "resumed" and resumed.metadata["chunks_reused"] >= 2
    fresh = extract(tmp_path / "fresh")
    assert np.array_equal(np.asarray(resumed.X), np.asarray(fresh.X))
    assert np.array_equal(np.asarray(resumed.y), np.asarray(fresh.y))


def test_bad_arguments(tmp_path):
    bb, ds, tf = ns["setup"](0.0)
    with pytest.raises(ValueError, match="batch_size: expected an integer >= 1"):
        pyred.extract_features(bb, ds, batch_size=0)
    with pytest.raises(TypeError, match="dataset: expected a pyred.datasets.LabeledImages"):
        pyred.extract_features(bb, [torch.zeros(3, 8, 8)])


# -- the cache key follows what the dataset holds (issue 17, item 1) ----------------------------------------
def _write_folder(root, rng, count=3):
    """root/{train,test}/{a,b}/<i>.png: small random RGB images."""
    from PIL import Image

    for split in ("train", "test"):
        for cls in ("a", "b"):
            os.makedirs(os.path.join(root, split, cls), exist_ok=True)
            for i in range(count):
                pixels = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(os.path.join(root, split, cls, f"{i}.png"))


def _tiny_extract(ds, cache, **kw):
    from torchvision import transforms

    torch.manual_seed(0)
    bb = pyred.Backbone("resnet18", pretrained=False)
    tf = transforms.Compose([transforms.Resize(16), transforms.ToTensor()])
    return pyred.extract_features(bb, ds, transform=tf, transform_id="resize16-totensor", cache_dir=cache,
                                  progress=False, **kw)


def test_replaced_folder_images_are_not_served_stale(tmp_path, rng):
    """Before: the key held the folder's path, split and image count, so images replaced under the same
    names (same count) came back as the old features."""
    root = str(tmp_path / "images")
    _write_folder(root, rng)
    first = _tiny_extract(pyred.datasets.load("folder", "test", root=root), tmp_path / "cache")
    assert first.metadata["cache"] == "computed"
    hit = _tiny_extract(pyred.datasets.load("folder", "test", root=root), tmp_path / "cache")
    assert hit.metadata["cache"] == "hit"
    time.sleep(0.01)
    _write_folder(root, rng)  # new pixels, the same file names and count
    again = _tiny_extract(pyred.datasets.load("folder", "test", root=root), tmp_path / "cache")
    assert again.metadata["cache"] == "computed"
    fresh = _tiny_extract(pyred.datasets.load("folder", "test", root=root), None)
    np.testing.assert_array_equal(np.asarray(again.X), fresh.X)
    assert not np.array_equal(np.asarray(first.X), fresh.X)


def test_in_memory_images_and_labels_are_part_of_the_key(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, size=(6, 8, 8), dtype=np.uint8)
    make = lambda imgs, labels: pyred.datasets.LabeledImages(  # noqa: E731
        imgs, np.arange(6), labels, ["a", "b"], "mine", "test", to_image=lambda a: __import__("PIL.Image").Image
        .fromarray(a))
    cache = tmp_path / "cache"
    first = _tiny_extract(make(images, [0, 1] * 3), cache)
    assert _tiny_extract(make(images.copy(), [0, 1] * 3), cache).metadata["cache"] == "hit"  # same content
    relabelled = _tiny_extract(make(images, [1, 0] * 3), cache)
    assert relabelled.metadata["cache"] == "computed" and relabelled.y.tolist() == [1, 0] * 3
    changed = images.copy()
    changed[0, 0, 0] ^= 1
    assert _tiny_extract(make(changed, [0, 1] * 3), cache).metadata["cache"] == "computed"
    assert first.y.tolist() == [0, 1] * 3


def test_a_source_pyred_cannot_identify_needs_a_fingerprint(tmp_path):
    from PIL import Image

    class Opaque:  # e.g. images read from a database: nothing to stat or hash
        def __getitem__(self, i):
            return Image.new("RGB", (8, 8), (i * 40, 0, 0))

    ds = pyred.datasets.LabeledImages(Opaque(), range(4), [0, 1, 0, 1], ["a", "b"], "db", "test")
    with pytest.raises(ValueError, match="dataset: cannot tell what a Opaque holds.*fingerprint="):
        _tiny_extract(ds, tmp_path / "cache")
    assert _tiny_extract(ds, None).X.shape == (4, 512)  # without a cache nothing can go stale
    named = pyred.datasets.LabeledImages(Opaque(), range(4), [0, 1, 0, 1], ["a", "b"], "db", "test", fingerprint="v1")
    assert _tiny_extract(named, tmp_path / "cache").metadata["cache"] == "computed"
    assert _tiny_extract(named.subset(range(4)), tmp_path / "cache").metadata["cache"] == "hit"
    v2 = pyred.datasets.LabeledImages(Opaque(), range(4), [0, 1, 0, 1], ["a", "b"], "db", "test", fingerprint="v2")
    assert _tiny_extract(v2, tmp_path / "cache").metadata["cache"] == "computed"


def test_built_in_datasets_are_identified_by_their_files_or_arrays(tmp_path):
    from pyred.content import UnknownContent

    digits = pyred.datasets.load("digits", "test")
    assert digits.content_id() == pyred.datasets.load("digits", "test").content_id()
    assert digits.content_id() != pyred.datasets.load("digits", "val").content_id()
    try:
        fm = pyred.datasets.load("fashion-mnist", "test")
    except FileNotFoundError:
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    assert fm.content_id() == pyred.datasets.load("fashion-mnist", "test").content_id()
    with pytest.raises(UnknownContent):
        pyred.datasets.LabeledImages(object(), [], [], [], "x", "test").content_id()


def test_a_cache_that_does_not_read_back_is_an_error(tmp_path, monkeypatch):
    """The join's result is verified before it is used (before, a None from that check crashed with
    'NoneType' object has no attribute 'metadata')."""
    import pyred.features as features

    monkeypatch.setattr(features, "_load_complete", lambda folder: None)
    with pytest.raises(OSError, match="the feature cache just written does not match its checksums"):
        extract(tmp_path)
