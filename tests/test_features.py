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
