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
    with sqlite3.connect(db) as c:
        where, params = ("WHERE config_id = ?", (config_id,)) if config_id else ("", ())
        return c.execute("SELECT model, dataset, layer, method, fraction, seed, k, accuracy, per_class, cka "
                         f"FROM results {where} ORDER BY config_id, method, fraction, seed", params).fetchall()


def config_ids(db):
    with sqlite3.connect(db) as c:
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
    assert main(["export", str(out), "--parquet", str(out / "results.parquet")]) == 0
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
