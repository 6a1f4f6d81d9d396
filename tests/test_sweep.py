import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest

from pyred.cli import main
from pyred.store import ResultStore


@pytest.fixture
def features_npz(tmp_path):
    """Learnable synthetic features in the --features format."""
    rng = np.random.default_rng(0)
    d, C = 40, 4
    T = rng.normal(size=(d, C))
    X = np.maximum(rng.normal(size=(900, d)), 0).astype(np.float32)
    y = np.argmax((X - X.mean(0)) @ T + 0.3 * rng.normal(size=(900, C)), axis=1)
    path = tmp_path / "feats.npz"
    np.savez(path, X_train=X[:700], y_train=y[:700], X_test=X[700:], y_test=y[700:],
             class_names=np.array(["a", "b", "c", "d"]))
    return path


def write_config(path, features, out, **extra):
    lines = [f'models = [{{ name = "synthetic", features = "{features}" }}]',
             "fractions = [0.05, 0.1, 0.25, 0.5, 0.9]", "seeds = [1, 2, 3]", f'out = "{out}"',
             "methods = [\"random\", \"first\"]"]
    for k, v in extra.items():
        lines.append(f"{k} = {v}")
    lines.append("[recipe_options]\nepochs = 8\neval_every = 2\nlayout = \"gathered\"")
    path.write_text("\n".join(lines) + "\n")
    return path


def table(db):
    with sqlite3.connect(db) as c:
        return c.execute("SELECT model, dataset, layer, method, fraction, seed, k, accuracy, per_class, cka "
                         "FROM results ORDER BY method, fraction, seed").fetchall()


def assert_same_results(a, b):
    """Same rows, keys, k, accuracies and per-class accuracies (ratios of counts: exact);
    CKA equal to 1e-12 -- float32 GEMMs in another process may round the last bit differently
    (thread count, buffer alignment)."""
    assert len(a) == len(b)
    for ra, rb in zip(a, b):
        assert ra[:9] == rb[:9]
        assert (ra[9] is None and rb[9] is None) or ra[9] == pytest.approx(rb[9], rel=1e-12, abs=1e-15)


def test_cli_end_to_end(tmp_path, features_npz, capsys):
    out = tmp_path / "run"
    cfg = write_config(tmp_path / "c.toml", features_npz, out)
    assert main(["run", str(cfg), "--quiet"]) == 0
    rows = table(out / "results.sqlite")
    # random: 5 fractions x 3 seeds + the full layer; first: 5 fractions + 1.0
    assert len(rows) == 16 + 6
    assert all(r[7] is not None and r[9] is not None for r in rows)  # accuracy and CKA for every row
    full = [r for r in rows if r[3] == "random" and r[4] == 1.0]
    assert len(full) == 1 and full[0][5] == 2 and full[0][6] == 40 and full[0][9] == pytest.approx(1.0)
    for name in ("report.md", "analysis.json", "accuracy_vs_fraction.png", "cka_vs_fraction.png", "dr_vs_delta.png",
                 "gini_vs_accuracy.png", "class_heatmap_0.png"):
        assert (out / name).exists(), name
    report = (out / "report.md").read_text()
    assert "| synthetic | penultimate |" in report and "DR(0.9)" in report
    assert main(["export", str(out)]) == 0
    assert (out / "results.csv").read_text().count("\n") == len(rows) + 1
    pq = pytest.importorskip("pyarrow.parquet")
    assert main(["export", str(out), "--parquet", str(out / "results.parquet")]) == 0
    t = pq.read_table(out / "results.parquet")
    assert t.num_rows == len(rows) and t.column("accuracy").to_pylist() == [r[7] for r in rows]
    # re-running skips finished units: nothing changes, nothing duplicates
    assert main(["run", str(cfg), "--quiet"]) == 0
    assert table(out / "results.sqlite") == rows
    with sqlite3.connect(out / "results.sqlite") as c:
        assert c.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 2


@pytest.mark.parametrize("args, message", [
    (["--model", "resnet_nope"], "model: 'resnet_nope' is not a timm model"),
    (["--dataset", "imagenet22k"], "dataset: unknown 'imagenet22k'"),
    (["--fractions", "0.1,1.5"], "fractions: 1.5 is outside [0, 1]"),
    (["--seeds", ""], "seeds: no seed given"),
    (["--features", "/nonexistent.npz"], "features: no such file /nonexistent.npz"),
])
def test_bad_configs_fail_before_any_work(tmp_path, capsys, args, message):
    out = tmp_path / "never"
    assert main(["run", "--out", str(out), "--quiet"] + args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("pyred: error: ") and message in err[0]
    assert not (out / "results.sqlite").exists()


def test_empty_grid_and_unwritable_out(tmp_path, features_npz, capsys):
    cfg = tmp_path / "empty.toml"
    cfg.write_text(f'models = [{{ name = "s", features = "{features_npz}" }}]\nfractions = []\n')
    assert main(["run", str(cfg)]) == 2
    assert "fractions: the grid is empty" in capsys.readouterr().err
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    assert main(["run", "--features", str(features_npz), "--out", str(blocked / "sub")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "out: cannot write to" in err
    bad = tmp_path / "bad.toml"
    bad.write_text("fractions = [0.1,\n")
    assert main(["run", str(bad)]) == 2
    assert "is not valid TOML" in capsys.readouterr().err


def test_resume_after_sigkill_in_the_probe_stage(tmp_path, features_npz):
    out = tmp_path / "killed"
    cfg = write_config(tmp_path / "k.toml", features_npz, out, head_chunks=8)
    # slow the probe stage down so the kill lands between chunks
    text = cfg.read_text().replace("epochs = 8", "epochs = 120")
    cfg.write_text(text)
    proc = subprocess.Popen([sys.executable, "-m", "pyred", "run", str(cfg), "--quiet", "--no-report"])
    db = out / "results.sqlite"
    probes_done = 0
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
        if db.exists():
            try:
                with sqlite3.connect(db, timeout=1) as c:
                    probes_done = c.execute("SELECT COUNT(*) FROM units WHERE unit LIKE '%probes%'").fetchone()[0]
            except sqlite3.OperationalError:
                pass
        if probes_done >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 2 <= probes_done < 16, f"the run was not caught in its probe stage ({probes_done} probe units)"
    assert main(["run", str(cfg), "--quiet", "--no-report"]) == 0
    resumed = table(db)
    fresh_out = tmp_path / "fresh"
    fresh_cfg = write_config(tmp_path / "f.toml", features_npz, fresh_out, head_chunks=8)
    fresh_cfg.write_text(fresh_cfg.read_text().replace("epochs = 8", "epochs = 120"))
    assert main(["run", str(fresh_cfg), "--quiet", "--no-report"]) == 0
    assert_same_results(resumed, table(fresh_out / "results.sqlite"))
    assert len(resumed) == len({r[:6] for r in resumed}) == 22


@pytest.mark.skipif(shutil.which("torchrun") is None and not os.path.exists(os.path.join(os.path.dirname(sys.executable),
                                                                                          "torchrun")),
                    reason="torchrun not installed")
def test_two_process_gloo_run_equals_one_process(tmp_path, features_npz):
    one, two = tmp_path / "one", tmp_path / "two"
    cfg1 = write_config(tmp_path / "one.toml", features_npz, one, head_chunks=4)
    cfg2 = write_config(tmp_path / "two.toml", features_npz, two, head_chunks=4)
    assert main(["run", str(cfg1), "--quiet", "--no-report"]) == 0
    torchrun = shutil.which("torchrun") or os.path.join(os.path.dirname(sys.executable), "torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run([torchrun, "--standalone", "--nproc_per_node=2", "-m", "pyred", "run", str(cfg2), "--quiet",
                          "--no-report"], capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert_same_results(table(two / "results.sqlite"), table(one / "results.sqlite"))
    store = ResultStore(two / "results.sqlite")
    try:
        assert len(store.finished()) == 2 * (1 + 4)  # per method: one CKA unit and 4 probe chunks
    finally:
        store.close()


def test_pca_and_random_projection_baselines(tmp_path, features_npz):
    out = tmp_path / "baselines"
    cfg = write_config(tmp_path / "b.toml", features_npz, out)
    cfg.write_text(cfg.read_text().replace('methods = ["random", "first"]',
                                           'methods = ["pca", "pca-bottom", "randproj", "randproj-uniform"]'))
    assert main(["run", str(cfg), "--quiet", "--no-report"]) == 0
    rows = table(out / "results.sqlite")
    by = {}
    for r in rows:
        by.setdefault(r[3], []).append(r)
    # PCA: one run per fraction (seed -1) plus the full projection; projections: one per seed and fraction
    assert len(by["pca"]) == len(by["pca-bottom"]) == 6 and {r[5] for r in by["pca"]} == {-1}
    assert len(by["randproj"]) == len(by["randproj-uniform"]) == 18 and {r[5] for r in by["randproj"]} == {1, 2, 3}
    for method in by:
        full = [r for r in by[method] if r[4] == 1.0]
        # every full-width view is an invertible map of the layer: CKA with it is 1 (orthogonal for PCA)
        if method.startswith("pca"):
            assert all(r[9] == pytest.approx(1.0, abs=1e-6) for r in full)
    top = {r[4]: r[7] for r in by["pca"]}
    bottom = {r[4]: r[7] for r in by["pca-bottom"]}
    assert top[0.1] > bottom[0.1]  # the top directions carry the label information, the bottom ones little
