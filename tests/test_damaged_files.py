"""Every file pyred reads, damaged three ways (empty, truncated, garbage): one line ``pyred: error:``
naming the file and what is wrong, exit status 2 -- or, for what pyred can rebuild (a feature cache, a
spooled unit), a warning and the work done again. Before: a truncated .safetensors raised a raw
SafetensorError and ``pyred run`` printed an 11-frame traceback with exit status 1."""

import os
import sqlite3

import numpy as np
import pytest
import torch

from pyred.study.cli import main

DAMAGE = ("empty", "truncated", "garbage")


def damage(path, how):
    data = open(path, "rb").read() if os.path.exists(path) else b""
    with open(path, "wb") as f:
        if how == "truncated":
            f.write(data[: len(data) // 2])
        elif how == "garbage":
            f.write(np.random.default_rng(7).integers(0, 256, size=max(600, len(data) // 3), dtype=np.uint8)
                    .tobytes())
        # "empty": nothing


def error_line(capsys, path):
    err = [ln for ln in capsys.readouterr().err.strip().splitlines() if ln]
    assert len(err) == 1 and err[0].startswith("pyred: error: "), err
    assert os.path.basename(str(path)) in err[0], err[0]
    return err[0]


def features_file(path, n=120, d=8):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, d)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64)
    np.savez(path, X_train=X[:80], y_train=y[:80], X_test=X[80:], y_test=y[80:], class_names=np.array(["a", "b"]))
    return path


def small_run(tmp_path, out, features):
    cfg = tmp_path / "small.toml"
    cfg.write_text(f'models = [{{ name = "s", features = "{features}" }}]\nfractions = [0.5]\nseeds = [1]\n'
                   f'out = "{out}"\nmethods = ["random"]\n[recipe_options]\nepochs = 1\n')
    return ["run", str(cfg), "--quiet", "--no-report"]


@pytest.mark.parametrize("how", DAMAGE)
def test_config_file(tmp_path, capsys, how):
    cfg = tmp_path / "study.toml"
    cfg.write_text('models = ["resnet18"]\ndatasets = ["digits"]\nfractions = [0.1, 0.5]\nseeds = [1, 2]\n')
    damage(cfg, how)
    if how == "truncated":  # half of it cuts the list open
        assert not cfg.read_text().rstrip().endswith("]")
    assert main(["run", str(cfg), "--quiet", "--out", str(tmp_path / "o")]) == 2
    error_line(capsys, cfg)
    assert not (tmp_path / "o" / "results.sqlite").exists()


@pytest.mark.parametrize("how", DAMAGE)
def test_features_file(tmp_path, capsys, how):
    path = features_file(tmp_path / "feats.npz")
    damage(path, how)
    assert main(["run", "--features", str(path), "--quiet", "--out", str(tmp_path / "o")]) == 2
    error_line(capsys, path)
    assert not (tmp_path / "o" / "results.sqlite").exists()


@pytest.mark.parametrize("how", DAMAGE)
@pytest.mark.parametrize("suffix, model", [(".pth", "resnet18"), (".pt", "resnet18"), (".bin", "resnet18"),
                                           (".safetensors", "resnet18"), (".npz", "vit_tiny_patch16_224")])
def test_weights_file(tmp_path, capsys, how, suffix, model):
    import timm

    path = tmp_path / f"w{suffix}"
    state = timm.create_model(model, pretrained=False).state_dict()
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, path)
    elif suffix == ".npz":
        np.savez(path, **{"embedding/kernel": np.zeros((16, 16, 3, 192), np.float32)})
    else:
        torch.save(state, path)
    damage(path, how)
    out = tmp_path / "o"
    cfg = tmp_path / "w.toml"
    cfg.write_text(f'models = [{{ name = "{model}", weights = "{path}" }}]\ndatasets = ["digits"]\n'
                   f'fractions = [0.5]\nseeds = [1]\nout = "{out}"\n')
    assert main(["run", str(cfg), "--quiet"]) == 2
    line = error_line(capsys, path)
    assert "weights: " in line
    capsys.readouterr()
    assert main(["runs", str(out)]) == 0  # the run that failed is listed with its error
    listing = capsys.readouterr().out
    assert "failed: " in listing and os.path.basename(str(path)) in listing


@pytest.fixture
def study(tmp_path):
    """A finished small study: (its folder, the command that ran it)."""
    out = tmp_path / "study"
    argv = small_run(tmp_path, out, features_file(tmp_path / "feats.npz"))
    assert main(argv) == 0
    return out, argv


@pytest.mark.parametrize("how", DAMAGE)
def test_results_database(study, capsys, how):
    out, argv = study
    db = out / "results.sqlite"
    damage(db, how)
    for command in (["report", str(out)], ["export", str(out), "--csv", str(out.parent / "x.csv")],
                    ["runs", str(out)]):
        assert main(command) == 2, command
        line = error_line(capsys, db)
        if how == "empty":
            assert "is empty (0 bytes)" in line
    if how == "empty":
        assert os.path.getsize(db) == 0  # no read command wrote a schema into it
        assert main(argv) == 0  # a run makes the empty file its database
    else:
        assert main(argv) == 2
        error_line(capsys, db)


@pytest.mark.parametrize("how", DAMAGE)
def test_spooled_unit_is_computed_again(study, tmp_path, how):
    out, argv = study
    with sqlite3.connect(out / "results.sqlite") as c:
        rows = c.execute("SELECT accuracy FROM results ORDER BY fraction").fetchall()
    os.makedirs(out / "spool", exist_ok=True)
    spooled = out / "spool" / "somekey.json"
    spooled.write_text('{"unit": "somekey", "config_id": "c", "label": "l", "fields": ["cka"], "rows": []}')
    damage(spooled, how)
    with pytest.warns(RuntimeWarning, match="spooled unit .*somekey.json is damaged"):
        assert main(argv) == 0
    assert (out / "spool" / "somekey.json.damaged").exists() and not spooled.exists()
    with sqlite3.connect(out / "results.sqlite") as c:
        assert c.execute("SELECT accuracy FROM results ORDER BY fraction").fetchall() == rows


@pytest.mark.parametrize("how", DAMAGE)
def test_dataset_files(tmp_path, capsys, how):
    """Fashion-MNIST's idx files and a folder dataset's images."""
    import gzip

    from PIL import Image

    fm = tmp_path / "fm"
    fm.mkdir()
    for name, shape in (("train-images-idx3-ubyte", (20, 28, 28)), ("train-labels-idx1-ubyte", (20,)),
                        ("t10k-images-idx3-ubyte", (10, 28, 28)), ("t10k-labels-idx1-ubyte", (10,))):
        header = bytes([0, 0, 8, len(shape)]) + b"".join(s.to_bytes(4, "big") for s in shape)
        with gzip.open(fm / (name + ".gz"), "wb") as f:
            f.write(header + bytes(int(np.prod(shape)) % 256 for _ in range(1)) * int(np.prod(shape)))
    bad = fm / "t10k-images-idx3-ubyte.gz"
    damage(bad, how)
    images = tmp_path / "images"
    for split in ("train", "test"):
        for cls in ("a", "b"):
            (images / split / cls).mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (8, 8), (i * 60, 0, 0)).save(images / split / cls / f"{i}.png")
    broken = images / "test" / "b" / "1.png"
    damage(broken, how)
    for dataset, path in (("fashion-mnist", fm), ("folder", images)):
        cfg = tmp_path / f"{dataset}.toml"
        cfg.write_text(f'models = [{{ name = "resnet18", pretrained = false }}]\n'
                       f'datasets = [{{ name = "{dataset}", root = "{path}" }}]\nfractions = [0.5]\nseeds = [1]\n'
                       f'out = "{tmp_path / dataset}"\nimage_size = 32\n')
        assert main(["run", str(cfg), "--quiet"]) == 2
        error_line(capsys, bad if dataset == "fashion-mnist" else broken)


def test_feature_cache_and_lock_files_are_rebuilt(tmp_path, capsys):
    out = tmp_path / "o"
    cfg = tmp_path / "c.toml"
    cfg.write_text('models = [{ name = "resnet18", pretrained = false }]\ndatasets = ["digits"]\nfractions = [0.5]\n'
                   f'seeds = [1]\nout = "{out}"\nimage_size = 16\ncka = false\n[recipe_options]\nepochs = 1\n')
    assert main(["run", str(cfg), "--quiet", "--no-report"]) == 0
    with sqlite3.connect(out / "results.sqlite") as c:
        before = c.execute("SELECT accuracy FROM results ORDER BY fraction").fetchall()
        c.execute("DELETE FROM units")  # so the next run reads the features again
    caches = [os.path.join(r, f) for r, _, fs in os.walk(out / "cache") for f in fs]
    for path, how in zip(sorted(caches), DAMAGE * 3):
        damage(path, how)
    damage(out / ".pyred.lock", "garbage")
    with pytest.warns(RuntimeWarning, match="feature cache .* is corrupt"):
        assert main(["run", str(cfg), "--quiet", "--no-report"]) == 0
    with sqlite3.connect(out / "results.sqlite") as c:
        assert c.execute("SELECT accuracy FROM results ORDER BY fraction").fetchall() == before
