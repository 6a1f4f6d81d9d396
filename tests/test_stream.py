"""FeatureStream: the paper's online protocol (augmented images through the backbone every step)."""

import numpy as np
import pytest
import torch

import pyred
from pyred.stream import FeatureStream, subset

SIZE = 32  # tiny images keep a float64 resnet18 quick on the CPU


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    bb = pyred.Backbone("resnet18", pretrained=False).double()
    train = subset(pyred.datasets.load("digits", "train"), np.arange(96))
    val = subset(pyred.datasets.load("digits", "val"), np.arange(40))
    Xv, yv = FeatureStream(bb, val, augment=None, image_size=SIZE, dtype=torch.float64).collect()
    return bb, train, Xv, yv


def stream(setup, **kw):
    bb, train, _, _ = setup
    return FeatureStream(bb, train, **{"batch_size": 32, "image_size": SIZE, "dtype": torch.float64, "seed": 3, **kw})


OPTS = dict(epochs=3, batch_size=32, eval_every=1, lr_step=2, progress=False)


def test_clean_stream_trains_the_same_heads_as_extracted_features(setup, rng):
    _, _, Xv, yv = setup
    s = stream(setup, augment=None)
    X, y = s.collect()
    assert X.shape == (96, s.dim) and X.dtype == torch.float64 and s.num_classes == 10 and len(s) == 3
    S = pyred.draw_subsets(s.dim, [0.05, 0.5], seeds=[1, 2])
    online = pyred.train_probes(s, None, S, X_val=Xv, y_val=yv, seed=3, **OPTS)
    # the arrays road draws its minibatch order from the same generator seed as the stream
    offline = pyred.train_probes(X, y, S, X_val=Xv, y_val=yv, seed=3, **OPTS)
    torch.testing.assert_close(online.weights, offline.weights, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(online.biases, offline.biases, rtol=1e-12, atol=1e-12)
    assert online.selected_epoch.tolist() == offline.selected_epoch.tolist()
    # unshuffled: every epoch in dataset order, like collect()
    still = stream(setup, augment=None, shuffle=False)
    for _ in range(2):
        torch.testing.assert_close(torch.cat([x for x, _ in still]), X, rtol=0, atol=0)


def test_k_heads_from_one_stream_equal_k_trainings_with_their_own_forwards(setup):
    _, _, Xv, yv = setup
    s = stream(setup, augment="paper")
    S = pyred.draw_subsets(s.dim, [0.02, 0.3], seeds=[1, 2])
    together = pyred.train_probes(s, None, S, X_val=Xv, y_val=yv, seed=3, **OPTS)
    assert s.epoch == 3 and s.last_pass["images"] == 96
    assert pyred.train_probes(stream(setup, augment=None, batch_size=48), None, S[:1], X_val=Xv, y_val=yv,
                              epochs=1, progress=False).options.batch_size == 48
    for k in range(len(S)):
        # the reference code's way: a training of its own, running the backbone on its own augmented batches
        alone = pyred.train_probes(stream(setup, augment="paper"), None, S[k:k + 1], X_val=Xv, y_val=yv,
                                   seed=3, init_seeds=[3 + k], **OPTS)
        _, W, b = together.head(k)
        torch.testing.assert_close(alone.weights, W, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(alone.biases[0], b, rtol=1e-12, atol=1e-12)


def test_augmentation_is_fresh_every_epoch_and_fixed_by_seed(setup):
    a = torch.cat([x for x, _ in stream(setup, augment="paper", shuffle=False)])
    s = stream(setup, augment="paper", shuffle=False)
    e0, e1 = (torch.cat([x for x, _ in s]) for _ in range(2))
    torch.testing.assert_close(e0, a, rtol=0, atol=0)  # same seed, same epoch: same crops
    assert (e0 - e1).abs().max() > 1e-3  # another epoch: other crops
    other = torch.cat([x for x, _ in stream(setup, augment="paper", shuffle=False, seed=4)])
    assert (other - e0).abs().max() > 1e-3
    clean = torch.cat([x for x, _ in stream(setup, augment=None, shuffle=False)])
    assert (clean - e0).abs().max() > 1e-3


def test_views_are_the_streams_first_epochs(setup):
    bb, train, _, _ = setup
    fs = pyred.extract_features(bb, train, augment="paper", views=2, seed=3, image_size=SIZE, batch_size=32,
                                progress=False)
    assert fs.X.shape == (192, 512) and fs.images == 96
    assert fs.view.tolist() == [0] * 96 + [1] * 96 and fs.image_index.tolist() == list(range(96)) * 2
    assert np.array_equal(fs.y, np.tile(np.asarray(train.targets), 2))
    s = FeatureStream(bb, train, augment="paper", shuffle=False, seed=3, image_size=SIZE, batch_size=32,
                      dtype=torch.float32)
    for v in range(2):
        epoch = torch.cat([x for x, _ in s]).numpy()
        np.testing.assert_allclose(fs.X[v * 96:(v + 1) * 96], epoch, rtol=1e-5, atol=1e-6)


def test_views_cache_key_and_grouped_split(setup, tmp_path):
    bb, train, _, _ = setup
    kw = dict(augment="paper", image_size=SIZE, batch_size=32, progress=False, cache_dir=tmp_path)
    one = pyred.extract_features(bb, train, views=2, seed=3, **kw)
    assert one.metadata["cache"] == "computed" and one.metadata["views"] == 2
    assert pyred.extract_features(bb, train, views=2, seed=3, **kw).metadata["cache"] == "hit"
    other = pyred.extract_features(bb, train, views=2, seed=4, **kw)  # another seed: other views, other entry
    assert other.metadata["cache"] == "computed" and not np.array_equal(np.asarray(other.X), np.asarray(one.X))
    again = pyred.extract_features(bb, train, views=2, seed=3, **kw)
    assert again.view.tolist() == one.view.tolist()
    # training on the FeatureSet: its own 90/10 split keeps an image's two views on one side
    from pyred.splits import split_groups

    tr, va = split_groups(one.image_index)
    assert not set(one.image_index[tr.numpy()]) & set(one.image_index[va.numpy()])
    assert len(va) == 2 * (96 - int(0.9 * 96))
    S = pyred.draw_subsets(512, [0.1], seeds=[1])
    res = pyred.train_probes(one, None, S, epochs=2, eval_every=1, progress=False)
    X, y = np.asarray(one.X), np.asarray(one.y)
    tr, va = tr.numpy(), va.numpy()
    ref = pyred.train_probes(X[tr], y[tr], S, X_val=X[va], y_val=y[va], epochs=2, eval_every=1, progress=False)
    torch.testing.assert_close(res.weights, ref.weights, rtol=0, atol=0)
    assert res.val_accuracy.shape == (1, 2)


def test_stream_without_validation_splits_its_images(setup):
    s = stream(setup, augment=None)
    S = pyred.draw_subsets(s.dim, [0.1], seeds=[1])
    res = pyred.train_probes(s, None, S, seed=3, **OPTS)
    train, val = s.split()
    Xt, yt = train.collect()
    Xv, yv = val.collect()
    assert len(yt) == int(0.9 * 96) and len(yv) == 96 - int(0.9 * 96)
    ref = pyred.train_probes(Xt, yt, S, X_val=Xv, y_val=yv, seed=3, **OPTS)
    torch.testing.assert_close(res.weights, ref.weights, rtol=1e-12, atol=1e-12)
    # a stream as the validation set: one clean pass
    ref2 = pyred.train_probes(stream(setup, augment=None), None, S, X_val=val, seed=3, **OPTS)
    torch.testing.assert_close(ref2.val_accuracy, res.val_accuracy)
    # and as the test set
    ev = res.evaluate(val)
    torch.testing.assert_close(ev.accuracy, res.evaluate(Xv, yv).accuracy)
    with pytest.raises(ValueError, match="y_test: a FeatureStream carries its own labels"):
        res.evaluate(val, yv)
    with pytest.raises(ValueError, match="y_test: expected"):
        res.evaluate(Xv)


def test_bad_input(setup):
    bb, train, Xv, yv = setup
    with pytest.raises(TypeError, match="augment: expected 'paper', None"):
        FeatureStream(bb, train, augment="autoaugment")
    with pytest.raises(TypeError, match="augment"):
        FeatureStream(bb, train, augment=5)
    with pytest.raises(ValueError, match="dataset: label 9 is outside the stream's 5 classes"):
        FeatureStream(bb, train, num_classes=5, image_size=SIZE)
    with pytest.raises(ValueError, match="dataset: a FeatureStream needs at least one batch.*no images"):
        FeatureStream(bb, subset(train, np.arange(0)), image_size=SIZE)
    with pytest.raises(ValueError, match="drop_last with 96 images < batch_size=100"):
        FeatureStream(bb, train, batch_size=100, drop_last=True, image_size=SIZE)
    with pytest.raises(TypeError, match="dataset: expected a pyred.datasets.LabeledImages"):
        FeatureStream(bb, [1, 2, 3])
    with pytest.raises(ValueError, match="batch_size"):
        FeatureStream(bb, train, batch_size=0)
    s = stream(setup, augment=None)
    S = pyred.draw_subsets(s.dim, [0.1], seeds=[1])
    with pytest.raises(ValueError, match="recipe: 'lbfgs' .* cannot read a FeatureStream"):
        pyred.train_probes(s, None, S, recipe="lbfgs")
    with pytest.raises(ValueError, match="y_train: a FeatureStream carries its own labels"):
        pyred.train_probes(s, np.zeros(96), S)
    with pytest.raises(ValueError, match="batch_size: the stream yields batches of 32"):
        pyred.train_probes(s, None, S, batch_size=64)
    with pytest.raises(ValueError, match="device: the stream computes on cpu"):
        pyred.train_probes(s, None, S, device="meta")
    assert pyred.train_probes(s, None, S, device="cpu", epochs=1, progress=False).weights.device.type == "cpu"
    with pytest.raises(ValueError, match="num_classes: the stream has 10 classes"):
        pyred.train_probes(s, None, S, num_classes=12)
    with pytest.raises(ValueError, match="X_val: expected 512 features"):
        pyred.train_probes(s, None, S, X_val=Xv[:, :5], y_val=yv)
    with pytest.raises(IndexError, match="subsets: index 600 is out of range for width d=512"):
        pyred.train_probes(s, None, [[600]])
    with pytest.raises(ValueError, match="views: 3 views of clean images"):
        pyred.extract_features(bb, train, views=3)
    with pytest.raises(ValueError, match="views"):
        pyred.extract_features(bb, train, augment="paper", views=0)
    with pytest.raises(TypeError, match="augment"):
        pyred.extract_features(bb, train, augment="strong")
    with pytest.raises(ValueError, match="transform_id: a custom augmentation"):
        pyred.extract_features(bb, train, augment=lambda im: im, cache_dir="/tmp/nope")


def test_custom_augment_must_make_tensors(setup):
    bb, train, _, _ = setup
    from torchvision import transforms as T

    ok = FeatureStream(bb, train, augment=T.Compose([T.Resize(SIZE), T.ToTensor()]), batch_size=48)
    assert ok.dim == 512 and sum(len(y) for _, y in ok) == 96
    with pytest.raises(TypeError, match="augment: the transform must turn each image into a"):
        FeatureStream(bb, train, augment=lambda im: "not a tensor", image_size=SIZE, batch_size=48)


def test_dim_is_the_width_a_custom_transform_yields():
    """Before: dim was measured on a blank 224 px image whatever the transform made, so with a
    flattened layer the stream yielded another width and subsets drawn on dim failed with an index error."""
    from torchvision import transforms as T

    torch.manual_seed(0)
    bb = pyred.Backbone("resnet18", pretrained=False, layer="layer1", pool="flatten")
    train = subset(pyred.datasets.load("digits", "train"), np.arange(20))
    s = FeatureStream(bb, train, augment=T.Compose([T.Resize(40), T.ToTensor()]), batch_size=10)
    X, _ = next(iter(s))
    assert s.dim == X.shape[1] == 64 * 10 * 10
    res = pyred.train_probes(s, None, pyred.draw_subsets(s.dim, [0.01], [1]), X_val=X, y_val=torch.arange(10) % 10,
                             epochs=1, progress=False)
    assert res.weights.shape[0] == int(0.01 * s.dim)


WIDE = r"""
import sys, torch, numpy as np, pyred
from pyred.stream import FeatureStream, subset

def peak_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024

torch.manual_seed(0)
torch.set_num_threads(1)
bb = pyred.Backbone("resnet18", pretrained=False, layer="act1", pool="flatten")
train = subset(pyred.datasets.load("digits", "train"), np.arange(400))
s = FeatureStream(bb, train, batch_size=50, image_size=80, seed=1)
for _ in s:  # one pass: the forward's own peak
    pass
before = peak_mb()
S = pyred.draw_subsets(s.dim, [0.001, 0.01, 0.05, 0.1, 0.2], seeds=[1, 2])
val = s.with_dataset(subset(pyred.datasets.load("digits", "val"), np.arange(20)), augment=None, shuffle=False)
res = pyred.train_probes(s, None, S, X_val=val, epochs=2, eval_every=1, progress=False)
print(s.dim, len(S), res.options.layout, peak_mb() - before, bool(torch.isfinite(res.weights).all()),
      int(res.weights.shape[0]), S.nnz)
"""


@pytest.mark.slow
def test_wide_flattened_layer_trains_from_a_stream_in_bounded_memory(tmp_path):
    """d = 64 x 40 x 40 = 102,400 (resnet18's stem at 80 px), K = 10 heads: the training set's features
    (400 x d float32 = 164 MB) are never held, nor a dense (d, K C) weight (41 MB a copy, four copies)."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", WIDE], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    d, K, layout, grew_mb, finite, rows, nnz = out.stdout.split()
    assert int(d) == 102400 and int(K) == 10 and layout == "gathered" and finite == "True"
    assert int(rows) == int(nnz)
    assert float(grew_mb) < 100, f"training grew the peak RSS by {grew_mb} MB"


def test_wide_layer_stream_matches_the_dense_road(setup):
    """At d >= 100k the gathered kernels (int64 offsets) give the heads the dense masked GEMM gives."""
    torch.manual_seed(0)
    bb = pyred.Backbone("resnet18", pretrained=False, layer="act1", pool="flatten")
    _, train, _, _ = setup
    small = subset(train, np.arange(40))
    s = FeatureStream(bb, small, augment=None, batch_size=20, image_size=80, seed=2)
    assert s.dim == 102400
    X, y = s.collect()
    S = pyred.draw_subsets(s.dim, [0.0005, 0.01, 0.3], seeds=[1, 2, 3, 4])
    X_val, y_val = X[:8], y[:8]
    opts = dict(epochs=2, eval_every=1, seed=2, progress=False)
    online = pyred.train_probes(s, None, S, X_val=X_val, y_val=y_val, **opts)
    dense = pyred.train_probes(X, y, S, X_val=X_val, y_val=y_val, layout="masked", batch_size=20, **opts)
    assert online.options.layout == "gathered" and len(S) == 12
    torch.testing.assert_close(online.weights, dense.weights, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(online.biases, dense.biases, rtol=1e-4, atol=1e-6)


def test_worker_processes_draw_the_same_augmentations(setup):
    """Augmentation seeded per image and epoch: DataLoader workers change nothing."""
    one = torch.cat([x for x, _ in stream(setup, augment="paper", num_workers=0)])
    two = torch.cat([x for x, _ in stream(setup, augment="paper", num_workers=2)])
    torch.testing.assert_close(two, one, rtol=0, atol=0)


def test_projection_yields_the_projected_features(setup):
    s = stream(setup, augment="paper")
    P = torch.randn(s.dim, 7, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    projected = stream(setup, augment="paper", projection=P)
    assert projected.dim == 7
    for (X, y), (Z, y2) in zip(s, projected):
        torch.testing.assert_close(Z, X @ P, rtol=1e-12, atol=1e-12)
        assert torch.equal(y, y2)
    with pytest.raises(ValueError, match="projection: expected a floating"):
        stream(setup, projection=torch.zeros(3, 2))


def test_augmented_validation_is_drawn_anew_at_every_evaluation(setup):
    """The reference validated on its 10 % split with the training augmentation, which its DataLoader drew
    anew at each validation epoch: an augmented validation stream is passed at every evaluation."""
    bb, train, _, _ = setup
    val = subset(pyred.datasets.load("digits", "val"), np.arange(20))
    aug_val = FeatureStream(bb, val, augment="paper", image_size=SIZE, dtype=torch.float64, shuffle=False, seed=1)
    s = stream(setup, augment="paper")
    S = pyred.draw_subsets(s.dim, [0.3], seeds=[1])
    res = pyred.train_probes(s, None, S, X_val=aug_val, seed=3, **OPTS)
    assert aug_val.epoch == 3 and res.eval_epochs == [1, 2, 3]  # one fresh pass per evaluation
    clean_val = FeatureStream(bb, val, augment=None, image_size=SIZE, dtype=torch.float64)
    pyred.train_probes(stream(setup, augment="paper"), None, S, X_val=clean_val, seed=3, **OPTS)
    assert clean_val.epoch == 0  # a clean one is passed once (collect) and kept
    again = FeatureStream(bb, val, augment="paper", image_size=SIZE, dtype=torch.float64, shuffle=False, seed=1)
    first, second = torch.cat([x for x, _ in again]), torch.cat([x for x, _ in again])
    assert not torch.equal(first, second)  # each pass draws other augmentations
