import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest

from pyred.study import ResultStore
from pyred.study import execute as execute_module
from pyred.study.cli import main


def make_features(path, seed=0, n=900, d=40, C=4, shift=0.0):
    """Learnable synthetic features in the --features format."""
    rng = np.random.default_rng(seed)
    T = rng.normal(size=(d, C))
    X = (np.maximum(rng.normal(size=(n, d)), 0) + shift).astype(np.float32)
    y = np.argmax((X - X.mean(0)) @ T + 0.3 * rng.normal(size=(n, C)), axis=1)
    np.savez(path, X_train=X[:700], y_train=y[:700], X_test=X[700:], y_test=y[700:],
             class_names=np.array(["a", "b", "c", "d"]))
    return path


@pytest.fixture
def features_npz(tmp_path):
    return make_features(tmp_path / "feats.npz")


def write_config(path, features, out, options=None, **extra):
    keys = {"models": f'[{{ name = "synthetic", features = "{features}" }}]',
            "fractions": "[0.05, 0.1, 0.25, 0.5, 0.9]", "seeds": "[1, 2, 3]", "out": f'"{out}"',
            "methods": '["random", "first"]', **extra}
    lines = [f"{k} = {v}" for k, v in keys.items()]
    opts = {"epochs": 8, "eval_every": 2, "layout": '"gathered"', **(options or {})}
    lines.append("[recipe_options]\n" + "\n".join(f"{k} = {v}" for k, v in opts.items()))
    path.write_text("\n".join(lines) + "\n")
    return path


def table(db, config_id=None):
    with contextlib.closing(sqlite3.connect(db)) as c:
        where, params = ("WHERE config_id = ?", (config_id,)) if config_id else ("", ())
        return c.execute("SELECT model, dataset, layer, method, fraction, seed, k, accuracy, per_class, cka "
                         f"FROM results {where} ORDER BY config_id, method, fraction, seed", params).fetchall()


def config_ids(db):
    with contextlib.closing(sqlite3.connect(db)) as c:
        return [r[0] for r in c.execute("SELECT id FROM configs ORDER BY last_run DESC")]


def one_error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("pyred: error: "), err
    return err[0]


def assert_same_results(a, b):
    """Same rows, keys, k, accuracies and per-class accuracies (ratios of counts: exact);
    CKA equal to 1e-12 -- float32 GEMMs in another process may round the last bit differently."""
    assert len(a) == len(b)
    for ra, rb in zip(a, b):
        assert ra[:9] == rb[:9]
        assert (ra[9] is None and rb[9] is None) or ra[9] == pytest.approx(rb[9], rel=1e-12, abs=1e-15)


@pytest.mark.slow
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
    assert main(["export", str(out), "--parquet", str(out / "results.parquet")]) == 2  # results.csv is there
    assert "--csv: " in one_error_line(capsys) and not (out / "results.parquet").exists()
    assert main(["export", str(out), "--parquet", str(out / "results.parquet"), "--force"]) == 0
    t = pq.read_table(out / "results.parquet")
    assert t.num_rows == len(rows) and t.column("accuracy").to_pylist() == [r[7] for r in rows]
    # re-running the same configuration skips every finished unit: nothing changes, nothing duplicates
    capsys.readouterr()
    assert main(["run", str(cfg), "--quiet"]) == 0
    assert "finished units of configuration" in capsys.readouterr().out
    assert table(out / "results.sqlite") == rows
    with sqlite3.connect(out / "results.sqlite") as c:
        assert c.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 2
        assert c.execute("SELECT COUNT(*) FROM configs").fetchone()[0] == 1


# -- defect 1: results that cannot go stale -------------------------------------------------------
@pytest.mark.parametrize("change", ["seeds", "fractions", "epochs", "recipe", "cka_debiased", "features", "options"])
def test_a_changed_configuration_is_computed_not_skipped(tmp_path, features_npz, capsys, change):
    out = tmp_path / "run"
    base = write_config(tmp_path / "a.toml", features_npz, out, methods='["random"]')
    assert main(["run", str(base), "--quiet", "--no-report"]) == 0
    first = config_ids(out / "results.sqlite")
    old_rows = table(out / "results.sqlite")
    features = features_npz
    extra, options = {"methods": '["random"]'}, None
    if change == "seeds":
        extra["seeds"] = "[1, 2, 4]"
    elif change == "fractions":
        extra["fractions"] = "[0.05, 0.1, 0.3]"
    elif change == "epochs":
        options = {"epochs": 5}
    elif change == "options":
        options = {"lr": 0.05}
    elif change == "recipe":
        extra["recipe"] = '"ridge"'
    elif change == "cka_debiased":
        extra["cka_debiased"] = "true"
    else:  # another file of the same name
        os.makedirs(tmp_path / "other", exist_ok=True)
        features = make_features(tmp_path / "other" / "feats.npz", seed=5)
    changed = write_config(tmp_path / "b.toml", features, out, options=options, **extra)
    if change == "recipe":
        changed.write_text(changed.read_text().split("[recipe_options]")[0])
    capsys.readouterr()
    assert main(["run", str(changed), "--quiet"]) == 0
    assert "already in" not in capsys.readouterr().out  # nothing was skipped
    ids = config_ids(out / "results.sqlite")
    assert len(ids) == 2 and ids[1] == first[0]
    new_rows = table(out / "results.sqlite", ids[0])
    assert new_rows and new_rows != old_rows
    assert table(out / "results.sqlite", ids[1]) == old_rows  # the old configuration's rows are kept
    # the report shows the latest configuration only, and says which
    doc = json.loads((out / "analysis.json").read_text())
    assert [c["id"] for c in doc["configs"]] == [ids[0]]
    if change == "cka_debiased":
        assert "(debiased)" in (out / "report.md").read_text()
    # --config picks the older one, --all shows both in their own sections
    assert main(["report", str(out), "--config", ids[1][:6]]) == 0
    assert [c["id"] for c in json.loads((out / "analysis.json").read_text())["configs"]] == [ids[1]]
    assert main(["report", str(out), "--all"]) == 0
    report = (out / "report.md").read_text()
    assert f"## Configuration `{ids[0]}`" in report and f"## Configuration `{ids[1]}`" in report
    capsys.readouterr()
    assert main(["runs", str(out)]) == 0
    listing = capsys.readouterr().out
    assert ids[0] in listing and ids[1] in listing and "(latest)" in listing


def test_head_chunks_do_not_change_the_configuration_or_its_numbers(tmp_path, features_npz):
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["run", str(write_config(tmp_path / "a.toml", features_npz, a, head_chunks=1)), "--quiet",
                 "--no-report"]) == 0
    assert main(["run", str(write_config(tmp_path / "b.toml", features_npz, b, head_chunks=3)), "--quiet",
                 "--no-report"]) == 0
    assert config_ids(a / "results.sqlite") == config_ids(b / "results.sqlite")
    assert_same_results(table(a / "results.sqlite"), table(b / "results.sqlite"))
    # and a re-run into a with other chunks keeps one row per key, equal to what was there
    before = table(a / "results.sqlite")
    assert main(["run", str(write_config(tmp_path / "c.toml", features_npz, a, head_chunks=4)), "--quiet",
                 "--no-report"]) == 0
    assert_same_results(table(a / "results.sqlite"), before)


# -- defect 2: every finished unit is committed at once ---------------------------------------------
def test_units_are_committed_as_they_finish(tmp_path, features_npz, monkeypatch):
    out = tmp_path / "run"
    cfg = write_config(tmp_path / "c.toml", features_npz, out, head_chunks=4, methods='["random"]')
    real, calls = execute_module.run_unit, []

    def failing(cfg_, unit, *args):
        calls.append(unit.kind)
        if calls.count("probes") == 3:
            raise KeyboardInterrupt  # killed while the third of four probe chunks runs
        return real(cfg_, unit, *args)

    monkeypatch.setattr("pyred.study.runner.run_unit", failing)
    assert main(["run", str(cfg), "--quiet", "--no-report"]) == 130
    with sqlite3.connect(out / "results.sqlite") as c:
        units = [r[0] for r in c.execute("SELECT label FROM units ORDER BY finished_at")]
        accuracies = c.execute("SELECT COUNT(*) FROM results WHERE accuracy IS NOT NULL").fetchone()[0]
        ckas = c.execute("SELECT COUNT(*) FROM results WHERE cka IS NOT NULL").fetchone()[0]
    assert units == ["synthetic|features|penultimate|random|cka", "synthetic|features|penultimate|random|probes 1/4",
                     "synthetic|features|penultimate|random|probes 2/4"]
    assert ckas == 16 and accuracies == 8  # 16 heads in 4 chunks: the two finished chunks' rows
    monkeypatch.setattr("pyred.study.runner.run_unit", real)
    assert main(["run", str(cfg), "--quiet", "--no-report"]) == 0
    fresh = tmp_path / "fresh"
    assert main(["run", str(write_config(tmp_path / "f.toml", features_npz, fresh, head_chunks=4,
                                         methods='["random"]')), "--quiet", "--no-report"]) == 0
    assert_same_results(table(out / "results.sqlite"), table(fresh / "results.sqlite"))


@pytest.mark.slow
def test_resume_after_sigkill_in_the_probe_stage(tmp_path, features_npz):
    out = tmp_path / "killed"
    cfg = write_config(tmp_path / "k.toml", features_npz, out, options={"epochs": 120}, head_chunks=8)
    proc = subprocess.Popen([sys.executable, "-m", "pyred", "run", str(cfg), "--quiet", "--no-report"])
    db = out / "results.sqlite"
    probes_done = rows_done = 0
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
        if db.exists():
            try:
                with sqlite3.connect(db, timeout=1) as c:
                    probes_done = c.execute("SELECT COUNT(*) FROM units WHERE label LIKE '%probes%'").fetchone()[0]
                    rows_done = c.execute("SELECT COUNT(*) FROM results WHERE accuracy IS NOT NULL").fetchone()[0]
            except sqlite3.OperationalError:
                pass
        if probes_done >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 2 <= probes_done < 16, f"the run was not caught in its probe stage ({probes_done} probe units)"
    assert rows_done > 0
    assert main(["run", str(cfg), "--quiet", "--no-report"]) == 0
    resumed = table(db)
    fresh_out = tmp_path / "fresh"
    fresh_cfg = write_config(tmp_path / "f.toml", features_npz, fresh_out, options={"epochs": 120}, head_chunks=8)
    assert main(["run", str(fresh_cfg), "--quiet", "--no-report"]) == 0
    assert_same_results(resumed, table(fresh_out / "results.sqlite"))
    assert len(resumed) == len({r[:6] for r in resumed}) == 22


# -- defect 3: the report is a pure function of the database --------------------------------------------
def test_report_follows_the_database(tmp_path, features_npz):
    out = tmp_path / "run"
    assert main(["run", str(write_config(tmp_path / "c.toml", features_npz, out)), "--quiet"]) == 0
    groups = json.loads((out / "analysis.json").read_text())["configs"][0]["groups"]
    assert {g["method"] for g in groups} == {"random", "first"}
    with sqlite3.connect(out / "results.sqlite") as c:
        c.execute("DELETE FROM results WHERE method = 'first'")
        c.execute("UPDATE results SET accuracy = 0.5 WHERE method = 'random' AND fraction = 1.0")
    assert main(["report", str(out)]) == 0
    groups = json.loads((out / "analysis.json").read_text())["configs"][0]["groups"]
    assert [g["method"] for g in groups] == ["random"] and groups[0]["full_accuracy"] == 0.5
    assert "(first)" not in (out / "report.md").read_text()


# -- defect 6: the whole configuration is checked before any work ---------------------------------------
@pytest.mark.parametrize("line, message", [
    ('model = "resnet18"', "unknown key 'model'; did you mean 'models'?"),
    ('dataset = "digits"', "unknown key 'dataset'; did you mean 'datasets'?"),
    ('cka = "yes"', "cka: expected true or false, got 'yes'"),
    ('report = "no"', "report: expected true or false, got 'no'"),
    ("cka_samples = -5", "cka_samples: expected an integer >= 2, got -5"),
    ("out = 5", "out: expected a string, got 5"),
    ("recipe_options = 5", "recipe_options: expected a table"),
    ("[recipe_options]\nepoch = 1", "unknown option 'epoch'; did you mean 'epochs'?"),
    ("[recipe_options]\nepochs = 1.5", "epochs: expected an integer, got 1.5"),
    ('recipe = "sdg"', "recipe: unknown 'sdg'; did you mean 'sgd'?"),
    ('methods = ["randm"]', "methods: unknown 'randm'; did you mean 'random'?"),
    ("seeds = [1, -2]", "seeds: expected an integer >= 0, got -2"),
    ("seeds = [9223372036854775807, 1.5]", "seeds: expected an integer, got 1.5"),
    ("head_chunks = 0", "head_chunks: expected an integer >= 1"),
    ('fractions = "0.1"', "fractions: expected a list"),
    ('models = [{ name = "x", features = "f.npz", layr = "a" }]', "unknown key 'layr'; did you mean 'layer'?"),
    ("[recipe_options]\ninit_seeds = [1]", "init_seeds is set per head by the study"),
])
def test_bad_config_files_fail_before_any_work(tmp_path, capsys, features_npz, line, message):
    out = tmp_path / "never"
    base = {"models": f'[{{ name = "s", features = "{features_npz}" }}]', "out": f'"{out}"'}
    table_line = line.startswith("[")
    base.pop(None if table_line else line.split("=")[0].strip(), None)
    text = "\n".join(f"{k} = {v}" for k, v in base.items())
    line = line.replace("f.npz", str(features_npz))
    cfg = tmp_path / "bad.toml"
    cfg.write_text(f"{text}\n{line}\n" if table_line else f"{line}\n{text}\n")
    assert main(["run", str(cfg), "--quiet"]) == 2
    assert message in one_error_line(capsys)
    assert not (out / "results.sqlite").exists()


@pytest.mark.parametrize("args, message", [
    (["--model", "resnet_nope"], "model: 'resnet_nope' is not a timm model"),
    (["--dataset", "imagenet22k"], "dataset: unknown 'imagenet22k'"),
    (["--fractions", "0.1,1.5"], "fractions: expected a number <= 1, got 1.5"),
    (["--seeds", ""], "seeds: no seed given"),
    (["--features", "/nonexistent.npz"], "features: no such file /nonexistent.npz"),
    (["--recipe", "lbfgs", "--epochs", "3"], "recipe 'lbfgs': unknown option 'epochs'"),
])
def test_bad_command_lines_fail_before_any_work(tmp_path, capsys, args, message):
    out = tmp_path / "never"
    assert main(["run", "--out", str(out), "--quiet"] + args) == 2
    assert message in one_error_line(capsys)
    assert not (out / "results.sqlite").exists()


def test_empty_grid_and_unwritable_out(tmp_path, features_npz, capsys):
    cfg = tmp_path / "empty.toml"
    cfg.write_text(f'models = [{{ name = "s", features = "{features_npz}" }}]\nfractions = []\n')
    assert main(["run", str(cfg)]) == 2
    assert "fractions: the grid is empty" in one_error_line(capsys)
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    assert main(["run", "--features", str(features_npz), "--out", str(blocked / "sub")]) == 2
    assert "out: cannot write to" in one_error_line(capsys)
    bad = tmp_path / "bad.toml"
    bad.write_text("fractions = [0.1,\n")
    assert main(["run", str(bad)]) == 2
    assert "is not valid TOML" in one_error_line(capsys)


# -- defect 7: errors instead of tracebacks --------------------------------------------------------------
@pytest.mark.parametrize("arrays, message", [
    (dict(X_train=np.ones((10, 3), dtype=np.int64)), "X_train must be floating point, got dtype int64"),
    (dict(X_train=np.ones(10, dtype=np.float32)), "X_train must be a 2-D (samples, features) array"),
    (dict(y_train=np.linspace(0, 1, 10)), "y_train must hold integer class labels, got dtype float64"),
    (dict(y_train=np.zeros(9, dtype=np.int64)), "y_train must be 1-D with one label per row of X_train (10)"),
    (dict(X_test=np.ones((5, 4), dtype=np.float32)), "X_test has 4 features, X_train has 3"),
    (dict(X_val=np.ones((5, 3), dtype=np.float32)), "has only one of X_val / y_val"),
    (dict(y_test=None), "lacks arrays ['y_test']"),
])
def test_bad_features_files_get_one_error_line(tmp_path, capsys, arrays, message):
    base = dict(X_train=np.ones((10, 3), dtype=np.float32), y_train=np.arange(10) % 2,
                X_test=np.ones((5, 3), dtype=np.float32), y_test=np.arange(5) % 2)
    base.update(arrays)
    path = tmp_path / "bad.npz"
    np.savez(path, **{k: v for k, v in base.items() if v is not None})
    assert main(["run", "--features", str(path), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert message in one_error_line(capsys)
    path.write_bytes(b"not a zip archive")
    assert main(["run", "--features", str(path), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert "is not a readable .npz archive" in one_error_line(capsys)


def test_damaged_foreign_and_old_databases_are_refused(tmp_path, features_npz, capsys):
    out = tmp_path / "run"
    cfg = write_config(tmp_path / "c.toml", features_npz, out, fractions="[0.5]", seeds="[1]",
                       methods='["random"]', cka="false")
    db = out / "results.sqlite"
    os.makedirs(out)
    db.write_bytes(b"this is not a database, but it is long enough to look like one. " * 100)
    for argv in (["run", str(cfg), "--quiet"], ["report", str(out)], ["export", str(out)], ["runs", str(out)]):
        assert main(argv) == 2
        assert "is not a readable pyred results database" in one_error_line(capsys)
    db.unlink()
    with sqlite3.connect(db) as c:  # somebody else's database
        c.execute("CREATE TABLE people (name TEXT)")
    assert main(["run", str(cfg), "--quiet"]) == 2
    assert "is not a pyred results database" in one_error_line(capsys)
    db.unlink()
    with sqlite3.connect(db) as c:  # pyred 0.1's schema: rows without a configuration
        c.executescript("CREATE TABLE results (model TEXT); CREATE TABLE units (unit TEXT); "
                        "CREATE TABLE runs (id INTEGER);")
    assert main(["run", str(cfg), "--quiet"]) == 2
    assert "written by an older pyred" in one_error_line(capsys)
    db.unlink()
    assert main(["run", str(cfg), "--quiet", "--no-report"]) == 0
    size = os.path.getsize(db)
    with open(db, "r+b") as f:  # damage the header of every b-tree page after the first
        for offset in range(4096, size, 4096):
            f.seek(offset)
            f.write(b"\x07" * 12)
    assert main(["report", str(out)]) == 2
    line = one_error_line(capsys)
    assert "is damaged" in line or "is not a readable pyred results database" in line
    with sqlite3.connect(db) as c:
        c.execute("PRAGMA user_version = 7")
    assert main(["runs", str(out)]) == 2


# -- defects 8 and 9: one run per folder; exports that cannot destroy anything ---------------------------------
@pytest.mark.slow
def test_concurrent_runs_wait_or_refuse_and_never_duplicate(tmp_path, features_npz, capsys):
    out = tmp_path / "run"
    cfg = write_config(tmp_path / "c.toml", features_npz, out, options={"epochs": 300}, head_chunks=4)
    first = subprocess.Popen([sys.executable, "-m", "pyred", "run", str(cfg), "--quiet", "--no-report"],
                             stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "results.sqlite").exists():
        time.sleep(0.05)
    time.sleep(0.5)
    assert first.poll() is None, "the first run ended before the second could start"
    assert main(["run", str(cfg), "--quiet", "--no-report", "--no-wait"]) == 2
    assert "another pyred run (pid" in one_error_line(capsys)
    second = subprocess.run([sys.executable, "-m", "pyred", "run", str(cfg), "--quiet", "--no-report"],
                            capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    assert "waiting for it to finish" in second.stderr
    assert first.wait(timeout=300) == 0
    rows = table(out / "results.sqlite")
    assert len(rows) == len({r[:6] for r in rows}) == 22
    with sqlite3.connect(out / "results.sqlite") as c:
        assert c.execute("SELECT COUNT(*) FROM units").fetchone()[0] == 2 * (1 + 4)


def test_export_refuses_to_overwrite_what_it_reads(tmp_path, features_npz, capsys):
    out = tmp_path / "run"
    cfg = write_config(tmp_path / "c.toml", features_npz, out, fractions="[0.5]", seeds="[1]",
                       methods='["random"]')
    assert main(["run", str(cfg), "--quiet", "--no-report"]) == 0
    before = (out / "results.sqlite").read_bytes()
    for flag, target, message in [("--csv", out / "results.sqlite", "is the results database itself"),
                                  ("--parquet", out / "results.sqlite", "is the results database itself"),
                                  ("--csv", tmp_path, "is a directory"),
                                  ("--csv", out / "cache" / "x.csv", "is inside the feature cache")]:
        assert main(["export", str(out), flag, str(target)]) == 2
        assert message in one_error_line(capsys)
    assert (out / "results.sqlite").read_bytes() == before
    assert main(["export", str(out), "--config", "nope"]) == 2
    assert "--config: 'nope' matches no configurations" in one_error_line(capsys)
    assert main(["export", str(tmp_path / "missing")]) == 2
    assert "no results database" in one_error_line(capsys)


def test_full_layer_only_writes_a_report_without_fraction_plots(tmp_path, features_npz, capsys):
    out = tmp_path / "full"
    assert main(["run", "--features", str(features_npz), "--fractions", "1.0", "--seeds", "1", "--epochs", "2",
                 "--out", str(out), "--quiet"]) == 0
    report = (out / "report.md").read_text()
    assert "No fraction strictly between 0 and 1" in report
    assert not (out / "accuracy_vs_fraction.png").exists() and not (out / "cka_vs_fraction.png").exists()
    assert "| 1 | " in report


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("torchrun") is None
                    and not os.path.exists(os.path.join(os.path.dirname(sys.executable), "torchrun")),
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
    assert config_ids(two / "results.sqlite") == config_ids(one / "results.sqlite")
    store = ResultStore(two / "results.sqlite")
    try:
        assert len(store.finished_units()) == 2 * (1 + 4)  # per method: one CKA unit and 4 probe chunks
    finally:
        store.close()
    assert not os.listdir(two / "spool")  # every spooled unit reached the database


def test_pca_and_random_projection_baselines(tmp_path):
    # The label lives in the high-variance directions, so the top principal directions carry it.
    rng = np.random.default_rng(3)
    X = (rng.normal(size=(900, 40)) * np.linspace(4, 0.2, 40)) @ np.linalg.qr(rng.normal(size=(40, 40)))[0]
    y = np.argmax(X @ np.linalg.eigh(np.cov(X.T))[1][:, -3:] @ rng.normal(size=(3, 4)), axis=1)
    features = tmp_path / "lowrank.npz"
    np.savez(features, X_train=X[:700].astype(np.float32), y_train=y[:700], X_test=X[700:].astype(np.float32),
             y_test=y[700:])
    out = tmp_path / "baselines"
    cfg = write_config(tmp_path / "b.toml", features, out)
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
    # the top directions carry the label information, the bottom ones little
    fracs = [f for f in top if f < 1]
    assert np.mean([top[f] for f in fracs]) > np.mean([bottom[f] for f in fracs]) + 0.05, (top, bottom)


# -- issue 17, item 6: a failed run never hides the finished results; runs and reports say how far a
# configuration got ----------------------------------------------------------------------------------------
def test_a_run_that_fails_at_once_does_not_hide_the_results_before_it(tmp_path, features_npz, capsys, monkeypatch):
    """Before: the failed run's configuration became the latest, so `pyred report` wrote an empty report and
    `pyred export` a header-only CSV, both with exit status 0."""
    out = tmp_path / "run"
    good = write_config(tmp_path / "a.toml", features_npz, out, methods='["random"]')
    assert main(["run", str(good), "--quiet", "--no-report"]) == 0
    rows = table(out / "results.sqlite")
    bad = write_config(tmp_path / "b.toml", features_npz, out, methods='["random"]', seeds="[7]")

    def boom(*args):
        raise RuntimeError("boom")

    monkeypatch.setattr("pyred.study.runner.run_unit", boom)
    assert main(["run", str(bad), "--quiet", "--no-report"]) == 2
    assert "boom" in one_error_line(capsys)
    assert main(["report", str(out)]) == 0
    report = (out / "report.md").read_text()
    assert "| synthetic | penultimate |" in report and "0.05" in report
    assert main(["export", str(out), "--csv", str(tmp_path / "x.csv")]) == 0
    assert (tmp_path / "x.csv").read_text().count("\n") == len(rows) + 1
    capsys.readouterr()
    assert main(["runs", str(out)]) == 0
    listing = capsys.readouterr().out
    ids = config_ids(out / "results.sqlite")
    assert f"{ids[1]} " in listing and "(latest)" in listing.split(ids[1])[1].splitlines()[0]
    assert "failed: RuntimeError: boom" in listing and "incomplete: 0/" in listing
    assert "complete (" in listing and "seeds [7]" in listing and "seeds [1, 2, 3]" in listing


def test_an_incomplete_configuration_says_so_and_why_dr_is_missing(tmp_path, features_npz, capsys, monkeypatch):
    out = tmp_path / "run"
    cfg = write_config(tmp_path / "c.toml", features_npz, out, head_chunks=4, methods='["random"]')
    real, calls = execute_module.run_unit, []

    def stop_at_the_last_chunk(cfg_, unit, *args):
        calls.append(unit.kind)
        if calls.count("probes") == 4:  # the last chunk holds the full-layer head (fraction 1.0 sorts last)
            raise KeyboardInterrupt
        return real(cfg_, unit, *args)

    monkeypatch.setattr("pyred.study.runner.run_unit", stop_at_the_last_chunk)
    assert main(["run", str(cfg), "--quiet", "--no-report"]) == 130
    capsys.readouterr()
    assert main(["runs", str(out)]) == 0
    listing = capsys.readouterr().out
    assert "incomplete: 4/5 units finished; last run failed: interrupted" in listing
    assert main(["report", str(out)]) == 0
    report = (out / "report.md").read_text()
    assert "This configuration is incomplete: 4/5 units finished" in report
    assert "the full-layer head's probe unit has not finished" in report
    doc = json.loads((out / "analysis.json").read_text())["configs"][0]
    assert doc["complete"] is False and doc["groups"][0]["dr_missing"].startswith("the full-layer head")
    monkeypatch.setattr("pyred.study.runner.run_unit", real)
    assert main(["run", str(cfg), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["runs", str(out)]) == 0
    assert "complete (5/5 units)" in capsys.readouterr().out
    assert "This configuration is incomplete" not in (out / "report.md").read_text()


def test_diverged_heads_are_recorded_and_reported(tmp_path, capsys):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 20)).astype(np.float32)
    y = (X[:, 1] > 0).astype(np.int64)
    X[:, 0] *= np.float32(1e20)  # heads reading this column diverge at lr 0.1
    path = tmp_path / "wild.npz"
    np.savez(path, X_train=X[:200], y_train=y[:200], X_test=X[200:], y_test=y[200:])
    out = tmp_path / "run"
    assert main(["run", "--features", str(path), "--fractions", "0.1", "--seeds", "1,2,3,4,5", "--epochs", "2",
                 "--out", str(out), "--quiet"]) == 0
    said = capsys.readouterr().out
    assert "probe heads of wild|features|penultimate|random|probes 1/1 diverged" in said
    with sqlite3.connect(out / "results.sqlite") as c:
        flagged = c.execute("SELECT fraction, seed, accuracy FROM results WHERE diverged = 1").fetchall()
        fine = c.execute("SELECT COUNT(*) FROM results WHERE diverged = 0 AND accuracy IS NOT NULL").fetchone()[0]
    assert flagged and all(acc is None for _, _, acc in flagged) and fine >= 1
    report = (out / "report.md").read_text()
    assert "Probe heads that diverged" in report
    for f, s, _ in flagged:
        assert f"f={f:g} seed {s}" in report


# -- issue 17, item 8: a read-only study can be read -------------------------------------------------------
def test_read_commands_never_write_and_work_on_a_read_only_folder(tmp_path, features_npz, capsys, monkeypatch):
    out = tmp_path / "run"
    cfg = write_config(tmp_path / "c.toml", features_npz, out, methods='["random"]')
    assert main(["run", str(cfg), "--quiet", "--no-report"]) == 0
    rows = table(out / "results.sqlite")

    def listing():
        return {p: (os.path.getsize(out / p), os.stat(out / p).st_mtime_ns) for p in os.listdir(out)}

    before = listing()
    assert main(["runs", str(out)]) == 0
    capsys.readouterr()
    assert main(["export", str(out), "--csv", "-"]) == 0
    csv_text = capsys.readouterr().out
    assert csv_text.startswith("config_id,model") and csv_text.count("\n") >= len(rows) + 1
    assert listing() == before  # the read commands wrote nothing into the folder, not even -wal / -shm files
    # the folder read-only (an archive, a shared mount): everything but the report into it works
    monkeypatch.setattr("pyred.study.store.writable", lambda folder: os.path.abspath(folder) != str(out))
    monkeypatch.setattr("pyred.study.report.writable", lambda folder: os.path.abspath(folder) != str(out))
    assert main(["report", str(out)]) == 2
    assert f"{out} is read-only: pass --out DIR" in one_error_line(capsys)
    assert main(["report", str(out), "--out", str(tmp_path / "elsewhere")]) == 0
    assert (tmp_path / "elsewhere" / "report.md").exists() and (tmp_path / "elsewhere" / "analysis.json").exists()
    assert main(["export", str(out)]) == 2
    assert "--csv: " in one_error_line(capsys)  # DIR/results.csv cannot be written there
    assert main(["export", str(out), "--csv", str(tmp_path / "r.csv")]) == 0
    assert listing() == before


def test_a_killed_runs_log_is_read_in_a_read_only_folder(tmp_path, features_npz, capsys, monkeypatch):
    """A run killed before SQLite folded its write-ahead log into the database leaves committed rows in
    results.sqlite-wal; a read-only folder cannot take the shared-memory file that reading it needs."""
    out = tmp_path / "run"
    assert main(["run", str(write_config(tmp_path / "c.toml", features_npz, out, methods='["random"]')), "--quiet",
                 "--no-report"]) == 0
    archive = tmp_path / "archive"
    archive.mkdir()
    c = sqlite3.connect(out / "results.sqlite", isolation_level=None)
    c.execute("PRAGMA wal_autocheckpoint = 0")
    c.execute("UPDATE results SET accuracy = 0.123 WHERE fraction = 1.0")
    shutil.copyfile(out / "results.sqlite", archive / "results.sqlite")
    shutil.copyfile(out / "results.sqlite-wal", archive / "results.sqlite-wal")
    c.close()
    monkeypatch.setattr("pyred.study.store.writable", lambda folder: os.path.abspath(folder) != str(archive))
    files = sorted(os.listdir(archive))
    capsys.readouterr()
    assert main(["export", str(archive), "--csv", "-"]) == 0
    assert "0.123" in capsys.readouterr().out
    assert sorted(os.listdir(archive)) == files


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_really_read_only_folder(tmp_path, features_npz, capsys):
    out = tmp_path / "run"
    assert main(["run", str(write_config(tmp_path / "c.toml", features_npz, out, methods='["random"]')), "--quiet",
                 "--no-report"]) == 0
    for p in os.listdir(out):
        os.chmod(out / p, 0o444) if (out / p).is_file() else None
    os.chmod(out, 0o555)
    try:
        assert main(["runs", str(out)]) == 0
        assert main(["export", str(out), "--csv", "-"]) == 0
        assert main(["report", str(out), "--out", str(tmp_path / "rep")]) == 0
        assert main(["report", str(out)]) == 2
    finally:
        os.chmod(out, 0o755)


# -- issue 17: rough edges ----------------------------------------------------------------------------------
@pytest.mark.parametrize("arrays, message", [
    (dict(X_test=np.array([[1.0, np.nan, 2.0]] * 5, dtype=np.float32)),
     "X_test holds a non-finite value (nan) at row 0, column 1"),
    (dict(X_val=np.full((4, 3), np.inf, dtype=np.float32), y_val=np.zeros(4, np.int64)),
     "X_val holds a non-finite value (inf) at row 0, column 0"),
    (dict(class_names=np.array(["a", 1], dtype=object)), "class_names is an object array (pickled)"),
    (dict(class_names=np.array(["a"])), "class_names names 1 classes, but the labels go up to 1"),
    (dict(y_test=-np.ones(5, np.int64)), "y_test holds the negative label -1"),
])
def test_a_features_file_is_checked_whole_before_any_unit(tmp_path, capsys, arrays, message):
    base = dict(X_train=np.ones((10, 3), dtype=np.float32), y_train=np.arange(10) % 2,
                X_test=np.ones((5, 3), dtype=np.float32), y_test=np.arange(5) % 2)
    path = tmp_path / "bad.npz"
    np.savez(path, **{**base, **arrays})
    assert main(["run", "--features", str(path), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    line = one_error_line(capsys)
    assert message in line and str(path) in line
    assert not (tmp_path / "o" / "results.sqlite").exists()


def test_paths_in_a_toml_are_relative_to_its_folder(tmp_path, monkeypatch):
    project = tmp_path / "project"
    project.mkdir()
    make_features(project / "feats.npz")
    (project / "study.toml").write_text('models = [{ name = "s", features = "feats.npz" }]\nout = "results"\n'
                                        'fractions = [0.5]\nseeds = [1]\ncka = false\n[recipe_options]\nepochs = 1\n')
    monkeypatch.chdir(tmp_path)  # elsewhere
    assert main(["run", "project/study.toml", "--quiet", "--no-report"]) == 0
    assert (project / "results" / "results.sqlite").exists() and not (tmp_path / "results").exists()
    # a command-line path stays relative to the working directory
    assert main(["run", "project/study.toml", "--out", "here", "--quiet", "--no-report"]) == 0
    assert (tmp_path / "here" / "results.sqlite").exists()


def test_a_folder_dataset_in_a_study(tmp_path, capsys):
    from PIL import Image

    images = tmp_path / "images"
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c, cls in enumerate(("dark", "light")):
            (images / split / cls).mkdir(parents=True)
            for i in range(10):
                pixels = (rng.integers(0, 100, size=(12, 12, 3)) + 150 * c).astype(np.uint8)
                Image.fromarray(pixels).save(images / split / cls / f"{i}.png")
    cfg = tmp_path / "f.toml"
    cfg.write_text('models = [{ name = "resnet18", pretrained = false }]\n'
                   'datasets = [{ name = "folder", root = "images" }]\nfractions = [0.5]\nseeds = [1]\n'
                   'image_size = 32\nout = "out"\ncka = false\n[recipe_options]\nepochs = 2\neval_every = 1\n')
    assert main(["run", str(cfg), "--quiet", "--no-report"]) == 0
    rows = table(tmp_path / "out" / "results.sqlite")
    assert {r[1] for r in rows} == {f"folder@{images}"} and all(r[7] is not None for r in rows)
    cfg.write_text('models = [{ name = "resnet18", pretrained = false }]\ndatasets = ["folder"]\n')
    assert main(["run", str(cfg), "--quiet"]) == 2
    assert "'folder' needs its root" in one_error_line(capsys)
    assert main(["run", "--model", "resnet18", "--dataset", "folder", "--data-root", str(tmp_path / "nope"),
                 "--quiet", "--out", str(tmp_path / "o2")]) == 2
    assert "is not a folder" in one_error_line(capsys)


@pytest.mark.parametrize("device, message", [("tpu", "device: 'tpu'"), ("cuda:banana", "is not a device"),
                                             ("mps", "pyred runs on cpu or cuda")])
def test_a_device_that_is_not_there_is_refused_before_any_work(tmp_path, features_npz, capsys, device, message):
    out = tmp_path / "o"
    assert main(["run", "--features", str(features_npz), "--device", device, "--out", str(out), "--quiet"]) == 2
    assert message in one_error_line(capsys)
    assert not (out / "results.sqlite").exists()


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a CUDA device")
def test_cuda_without_a_gpu_is_refused_before_any_work(tmp_path, features_npz, capsys):
    assert main(["run", "--features", str(features_npz), "--device", "cuda", "--out", str(tmp_path / "o")]) == 2
    assert "torch sees no CUDA device on this machine" in one_error_line(capsys)
    assert not (tmp_path / "o" / "results.sqlite").exists()


def test_runs_tell_configurations_apart(tmp_path, capsys):
    out = tmp_path / "run"
    for sub, seed in (("a", 0), ("b", 5)):  # two features files of one name, other content
        (tmp_path / sub).mkdir()
        make_features(tmp_path / sub / "feats.npz", seed=seed)
        assert main(["run", str(write_config(tmp_path / f"{sub}.toml", tmp_path / sub / "feats.npz", out,
                                             fractions="[0.5]", seeds="[1]", methods='["random"]')),
                     "--quiet", "--no-report"]) == 0
    capsys.readouterr()
    assert main(["runs", str(out)]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if "synthetic" in ln]
    assert len(lines) == 2
    whats = [ln.split("  ", 1)[1].replace("(latest)", "").strip() for ln in lines]
    assert whats[0] != whats[1] and all("[features " in w and "seeds [1]" in w for w in whats)


def test_parquet_that_would_fail_writes_nothing(tmp_path, features_npz, capsys, monkeypatch):
    out = tmp_path / "run"
    assert main(["run", str(write_config(tmp_path / "c.toml", features_npz, out, fractions="[0.5]", seeds="[1]",
                                         methods='["random"]')), "--quiet", "--no-report"]) == 0
    from pyred.study.errors import StudyError

    def no_pyarrow():
        raise StudyError("--parquet: Parquet export needs pyarrow (pip install pyarrow)")

    monkeypatch.setattr("pyred.study.store.require_pyarrow", no_pyarrow)
    assert main(["export", str(out), "--parquet", str(tmp_path / "r.parquet")]) == 2
    assert "needs pyarrow" in one_error_line(capsys)
    assert not (out / "results.csv").exists() and not (tmp_path / "r.parquet").exists()


def test_write_errors_name_the_file_not_its_temporary(tmp_path):
    from pyred._files import atomic_write

    target = tmp_path / "missing" / "x.csv"
    with pytest.raises(OSError) as err:
        with atomic_write(target) as f:
            f.write("a")
    assert err.value.filename == str(target) and ".tmp" not in str(err.value)


@pytest.mark.slow
def test_export_to_a_pipe_that_closes_is_quiet(tmp_path, features_npz):
    """pyred export --csv - | head: the reader leaving is not an error (it printed '[Errno 32] Broken pipe')."""
    out = tmp_path / "run"
    assert main(["run", str(write_config(tmp_path / "c.toml", features_npz, out, fractions="[0.5]", seeds="[1]",
                                         methods='["random"]')), "--quiet", "--no-report"]) == 0
    proc = subprocess.Popen([sys.executable, "-m", "pyred", "export", str(out), "--csv", "-"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=str(tmp_path))
    proc.stdout.close()  # the reader is gone before anything is written
    assert proc.wait(timeout=120) == 0
    assert proc.stderr.read() == b""
