"""Study protocols ("features", "views", "paper") and the paper's per-(model, dataset) defaults in sweeps."""

import glob
import json
import sqlite3

import pytest

from pyred import paper
from pyred.study import config_id, identity, load_config
from pyred.study.cli import main


def one_error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("pyred: error: "), err
    return err[0]


@pytest.mark.slow
def test_paper_and_views_runs_record_their_protocol(tmp_path, capsys):
    out = tmp_path / "run"
    common = ["--image-size", "32", "--epochs", "2", "--fractions", "0.5", "--seeds", "1", "--out", str(out),
              "--quiet"]
    assert main(["run", "--protocol", "paper"] + common) == 0
    report = (out / "report.md").read_text()
    assert report.startswith("# pyred report (protocol: paper)")
    assert "protocol **paper (freshly augmented training images through the backbone at every step; 32 px)**" in report
    assert main(["run", "--protocol", "views", "--views", "2"] + common) == 0
    assert (out / "report.md").read_text().startswith("# pyred report (protocol: views)")
    with sqlite3.connect(out / "results.sqlite") as c:
        rows = c.execute("SELECT config_id, fraction, accuracy, cka FROM results").fetchall()
        idents = [json.loads(r[0]) for r in c.execute("SELECT identity FROM configs")]
    assert len(rows) == 4 and all(r[2] is not None and r[3] is not None for r in rows)  # 0.5 and the full layer
    assert sorted(i["protocol"]["name"] for i in idents) == ["paper", "views"]
    # the views run cached 2 augmented views of every training image; the paper run cached none
    metas = [json.load(open(p)) for p in glob.glob(str(out / "cache" / "*" / "*" / "meta.json"))]
    views = [m for m in metas if m.get("views")]
    assert len(views) == 1 and views[0]["views"] == 2 and views[0]["n"] == 2 * views[0]["images"]
    assert views[0]["split"] == "train" and "RandomResizedCrop" in views[0]["transform"]
    assert all("size=32" in m["transform"] for m in metas)
    capsys.readouterr()
    assert main(["runs", str(out)]) == 0
    listing = capsys.readouterr().out
    assert "protocol paper (freshly augmented" in listing and "protocol views (2 augmented views" in listing
    assert main(["report", str(out), "--all"]) == 0
    assert (out / "report.md").read_text().startswith("# pyred report (protocol: paper, views)")


def test_the_paper_table_sets_each_pairs_options_and_grid(tmp_path):
    cfg = load_config(None, models=["resnet18.tv_in1k", "tf_efficientnet_lite0"], datasets=["flowers102", "digits"],
                      out=str(tmp_path))
    ident = identity(cfg)
    pairs = ident.recipe_options_by_pair
    assert pairs["resnet18.tv_in1k|flowers102"]["epochs"] == 50
    assert pairs["resnet18.tv_in1k|flowers102"]["lr_step"] == 10
    assert pairs["resnet18.tv_in1k|digits"]["weight_decay"] == 5e-4  # the schedule alone differs there
    assert pairs["tf_efficientnet_lite0|flowers102"]["weight_decay"] == 1e-4
    assert "tf_efficientnet_lite0|digits" not in pairs  # the paper has nothing to say about it
    assert ident.fractions == {"resnet18.tv_in1k": list(paper.RESNET18_GRID),
                                  "tf_efficientnet_lite0": list(paper.MAIN_GRID)}
    assert cfg.options_for("resnet18.tv_in1k", "flowers102")["weight_decay"] == 1e-4
    # --epochs alone: the step follows it (4 epochs -> step 1), not the table's 10 of 50
    short = load_config(None, models=["resnet18"], datasets=["cifar10"], epochs=4, out=str(tmp_path))
    assert short.options_for("resnet18", "cifar10") == dict(epochs=4, weight_decay=5e-4, batch_size=256)
    assert identity(short).recipe_options["lr_step"] == 1 and identity(short).recipe_options_by_pair is None
    # a user value overrides the table, and a fixed grid overrides the model's
    mine = load_config(None, models=["resnet18"], datasets=["cifar10"], fractions=[0.1], out=str(tmp_path))
    assert identity(mine).fractions == [0.1]


def test_workers_only_change_how_the_work_runs(tmp_path):
    base = identity(load_config(None, out=str(tmp_path), protocol="paper"))
    assert identity(load_config(None, out=str(tmp_path), protocol="paper", num_workers=2)) == base
    # AMP changes the features, so it changes the configuration
    amp = identity(load_config(None, out=str(tmp_path), protocol="paper", amp=True))
    assert amp.amp is True and config_id(amp) != config_id(base)
    assert amp.describe_protocol().endswith("224 px, AMP)") and "AMP" not in base.describe_protocol()


def test_the_default_configuration_keeps_its_id(tmp_path):
    """The protocol and the paper's table must not move configurations they do not touch: the default
    study had this id before they existed, and its stored results stay its results."""
    assert config_id(identity(load_config(None, out=str(tmp_path)))) == "2192c8408fd5"
    assert "protocol" not in identity(load_config(None, out=str(tmp_path))).to_json()
    sized = identity(load_config(None, out=str(tmp_path), image_size=64))
    assert sized.to_json()["protocol"] == {"name": "features", "image_size": 64, "normalization": "model"}


@pytest.mark.parametrize("args, message", [
    (["--protocol", "online"], "argument --protocol: invalid choice: 'online'"),
    (["--protocol", "views", "--views", "0"], "views: expected an integer >= 1, got 0"),
    (["--protocol", "paper", "--image-size", "4"], "image_size: expected an integer >= 8, got 4"),
    (["--protocol", "paper", "--recipe", "lbfgs"], "recipe: protocol 'paper' trains on a stream"),
    (["--views", "3"], "views: only protocol 'views' uses views (protocol is 'features')"),
    (["--workers", "-1"], "num_workers: expected an integer >= 0, got -1"),
    (["--protocol", "paper", "--image-size", "8.5"], "argument --image-size: invalid int value"),
])
def test_bad_protocol_settings(tmp_path, capsys, args, message):
    out = tmp_path / "never"
    if message.startswith("argument"):  # argparse's own errors
        with pytest.raises(SystemExit):
            main(["run", "--out", str(out), "--quiet"] + args)
        assert message in capsys.readouterr().err
    else:
        assert main(["run", "--out", str(out), "--quiet"] + args) == 2
        assert message in one_error_line(capsys)
    assert not (out / "results.sqlite").exists()


@pytest.mark.parametrize("lines, message", [
    ('val_augment = "reference"', "val_augment: 'reference' applies to protocol 'paper'"),
    ('protocol = "views"\nstream_seeds = "per-seed"', "stream_seeds: 'per-seed' applies to protocol 'paper'"),
    ('protocol = "paper"\naugment_on = "gpu"', "augment_on: expected one of"),
    ('protocol = "views"\nviews = 2.5', "views: expected an integer, got 2.5"),
    ('normalization = "cifar"', "normalization: expected one of"),
    ('protocol = "paper"\nmodels = [{ name = "s", features = "F" }]\ndatasets = ["features"]',
     "protocol: 'paper' runs the backbone on images"),
])
def test_bad_protocol_config_files(tmp_path, capsys, lines, message):
    from test_study import make_features

    feats = make_features(tmp_path / "f.npz")
    out = tmp_path / "never"
    cfg = tmp_path / "bad.toml"
    cfg.write_text(lines.replace("F", str(feats)) + f'\nout = "{out}"\n')
    assert main(["run", str(cfg), "--quiet"]) == 2
    assert message in one_error_line(capsys)
    assert not (out / "results.sqlite").exists()


@pytest.mark.slow
def test_paper_protocol_runs_views_per_seed_streams_and_augmented_validation(tmp_path):
    """PCA, least-PCA and the authors' uniform projections under protocol "paper" (the PCA basis from one
    augmented pass over the training images, as calculate_pca.py), each seed's heads on a stream of its own,
    validation with the training augmentation drawn anew at each evaluation."""
    import dataclasses

    from pyred.study.data import load_layer_data
    from pyred.study.distributed import Distributed
    from pyred.study.plan import plan_units
    from pyred.study.runner import run

    cfg = load_config(None, protocol="paper", image_size=32, epochs=2, fractions=[0.25], seeds=[1, 2],
                      out=str(tmp_path / "o"))
    cfg = dataclasses.replace(cfg, methods=("random", "pca", "pca-bottom", "randproj-uniform"),
                              stream_seeds="per-seed", val_augment="reference", cka_samples=50)
    base = dataclasses.replace(cfg, stream_seeds="shared", val_augment="clean")
    assert identity(cfg).id != identity(base).id
    data = load_layer_data(cfg, cfg.models[0], cfg.datasets[0], Distributed.setup(None), False)
    probes = [u for u in plan_units(cfg, "c", data) if u.kind == "probes" and u.method == "random"]
    # seed 1's heads, then seed 2's with the full layer (drawn under seed 2): one unit and one stream each
    assert [(u.stream_seed, sorted(set(u.subsets.seeds[u.heads.start:u.heads.stop].tolist()))) for u in probes] \
        == [(1, [1]), (2, [2])]
    run(cfg, progress=False, say=None)
    with sqlite3.connect(tmp_path / "o" / "results.sqlite") as c:
        rows = c.execute("SELECT method, fraction, seed, accuracy, cka FROM results").fetchall()
    methods = {r[0] for r in rows}
    assert methods == {"random", "pca", "pca-bottom", "randproj-uniform"}
    assert all(r[3] is not None and r[4] is not None for r in rows)
    full_pca = [r[4] for r in rows if r[0] == "pca" and r[1] == 1.0]
    assert full_pca and abs(full_pca[0] - 1.0) < 1e-5  # all principal directions: a rotation of the layer
