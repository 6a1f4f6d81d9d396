"""The ``pyred`` command: ``run``, ``report``, ``export``, ``runs``, ``cka`` and ``paper``.

Every error a user can cause prints one line, ``pyred: error: ...``, and exits 2.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
from typing import TYPE_CHECKING

from .identity import ConfigIdentity

if TYPE_CHECKING:
    from .store import ResultStore


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got {text!r}") from None


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers separated by commas, got {text!r}") from None


def _names(text: str) -> list[str]:
    names = [x for x in text.replace(",", " ").split() if x]
    if not names:
        raise argparse.ArgumentTypeError("expected module names separated by commas")
    return names


def _layers(text: str) -> str | list[str]:
    return "all" if text.strip() == "all" else _names(text)


def _select(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--config", help="a configuration id (or a unique prefix; 'pyred runs DIR' lists them)")
    g.add_argument("--all", action="store_true", help="every configuration, each in its own section")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pyred", description="Diffused redundancy in pretrained representations.")
    sub = p.add_subparsers(dest="command")
    r = sub.add_parser("run", help="run a study (no arguments: the built-in default on digits)")
    r.add_argument("config", nargs="?", help="a TOML study configuration")
    r.add_argument("--model", action="append", dest="models",
                   help="timm model name, paper key or hf:NAME_OR_PATH (repeatable)")
    r.add_argument("--dataset", action="append", dest="datasets", help="dataset name (repeatable)")
    r.add_argument("--layers", type=_layers,
                   help="layers of every --model, one pass for all: names separated by commas, or 'all' (every "
                        "hidden state of an hf: model)")
    r.add_argument("--data-root", dest="data_root",
                   help="the folder holding the datasets given without one (for 'folder': DIR/<split>/<class>/<image>)")
    r.add_argument("--features", help=".npz with X_train, y_train, X_test, y_test[, X_val, y_val, class_names]")
    r.add_argument("--fractions", type=_floats, help="e.g. 0.01,0.1,0.5")
    r.add_argument("--seeds", type=_ints, help="e.g. 1,2,3")
    r.add_argument("--recipe", help="sgd (default), lbfgs or ridge")
    r.add_argument("--epochs", type=int, help="sgd epochs (default 100)")
    r.add_argument("--protocol", choices=("features", "views", "paper"),
                   help="how probes see the training images: features (clean, extracted once; default), "
                        "views (V augmented views per image, extracted once), paper (freshly augmented images "
                        "through the backbone at every step)")
    r.add_argument("--views", type=int, help="augmented views per image for --protocol views (default 5)")
    r.add_argument("--image-size", type=int, dest="image_size",
                   help="the paper's Resize + CenterCrop (and crop) size (default 224 for views/paper; "
                        "features: the model's own transform)")
    r.add_argument("--workers", type=int, dest="num_workers",
                   help="DataLoader worker processes decoding (and on the CPU augmenting) images (default 0)")
    r.add_argument("--amp", action="store_true", default=None,
                   help="run the backbone under autocast (float16 on CUDA, bfloat16 on the CPU)")
    r.add_argument("--device", help="cpu, cuda, cuda:1, ...")
    r.add_argument("--out", help="study folder (default pyred-run)")
    r.add_argument("--no-report", action="store_true", help="skip the plots and report.md")
    r.add_argument("--no-wait", action="store_true", help="refuse at once when another run uses the folder")
    r.add_argument("--quiet", action="store_true", help="no progress bars")
    rep = sub.add_parser("report", help="rewrite the analysis, plots and report.md of a study folder")
    rep.add_argument("dir")
    rep.add_argument("--out", help="write analysis.json, the plots and report.md here (default DIR; the database "
                                   "is only read, so DIR may be read-only)")
    _select(rep)
    ex = sub.add_parser("export", help="export a study's results to CSV and/or Parquet")
    ex.add_argument("dir")
    ex.add_argument("--csv", help="CSV file (default DIR/results.csv; '-' writes to standard output)")
    ex.add_argument("--parquet", help="Parquet file (needs pyarrow)")
    ex.add_argument("--force", action="store_true", help="overwrite existing output files")
    _select(ex)
    ru = sub.add_parser("runs", help="list the configurations and runs recorded in a study folder")
    ru.add_argument("dir")
    ck = sub.add_parser("cka", help="CKA between every pair of layers of one or two networks (a heatmap)")
    ck.add_argument("model", help="timm model name, or hf:NAME_OR_PATH (every hidden state by default)")
    ck.add_argument("--model-b", help="a second network (default: the first against itself)")
    ck.add_argument("--dataset", default="digits", help="dataset name (default digits)")
    ck.add_argument("--split", default="test", help="split (default test)")
    ck.add_argument("--data-root", dest="data_root", help="the dataset's folder (folder, text-folder, imagenet, ...)")
    ck.add_argument("--layers", type=_names, help="module names, e.g. layer1,layer2 (default: the stage outputs)")
    ck.add_argument("--layers-b", type=_names, help="module names of the second network")
    ck.add_argument("--samples", type=int, default=1000, help="images (default 1000)")
    ck.add_argument("--kernel", default="linear", help="linear (default) or rbf")
    ck.add_argument("--minibatch", type=int, help="minibatch CKA over minibatches of this size")
    ck.add_argument("--pool", default="flatten", help="flatten (default), avg or cls")
    ck.add_argument("--random-init", action="store_true", help="random-init weights instead of pretrained ones")
    ck.add_argument("--device", help="cpu, cuda, ...")
    ck.add_argument("--out", default="pyred-cka", help="output folder (default pyred-cka)")
    ck.add_argument("--quiet", action="store_true", help="no progress bar")
    from .paper_cli import add_parser

    add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("run", "report", "export", "runs", "cka", "paper", "-h", "--help"):
        argv = ["run"] + argv
    args = parser().parse_args(argv)
    from .errors import StudyError, one_line

    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("pyred: interrupted; every finished unit is saved, re-run the same command to go on", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader of our standard output left (pyred export --csv - | head): not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the interpreter's final flush is quiet
        return 0
    except (StudyError, ValueError, TypeError, OSError, RuntimeError, sqlite3.Error) as exc:
        print(f"pyred: error: {one_line(exc)}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    from .config import load_config
    from .runner import run

    overrides = dict(models=args.models, datasets=args.datasets, features=args.features, fractions=args.fractions,
                     seeds=args.seeds, recipe=args.recipe, device=args.device, out=args.out, epochs=args.epochs,
                     protocol=args.protocol, views=args.views, image_size=args.image_size,
                     num_workers=args.num_workers, amp=args.amp, data_root=args.data_root, layers=args.layers)
    if args.no_report:
        overrides["report"] = False
    cfg = load_config(args.config, **overrides)
    out = run(cfg, progress=not args.quiet, wait=not args.no_wait)
    print(f"pyred: results in {out}/results.sqlite" + (f", report {out}/report.md" if cfg.report else ""))
    return 0


def _report(args: argparse.Namespace) -> int:
    from .report import write_report

    print(f"pyred: wrote {write_report(args.dir, config=args.config, all_configs=args.all, dest=args.out)}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from .._files import atomic_write
    from .store import ResultStore, database, require_pyarrow

    store = ResultStore.read(database(args.dir))
    try:
        ids = store.resolve(args.config, args.all)
        csv_path = args.csv or os.path.join(args.dir, "results.csv")
        targets = [("--csv", csv_path)] + ([("--parquet", args.parquet)] if args.parquet else [])
        if args.parquet:
            require_pyarrow()  # before anything is written: a failed export writes nothing
        _check_export_targets(store, targets, args.force)
        table = store.parquet_table(ids) if args.parquet else None
        if csv_path == "-":
            store.write_csv(sys.stdout, ids)
        else:
            with atomic_write(csv_path, newline="") as f:
                store.write_csv(f, ids)
            print(f"pyred: wrote {csv_path}")
        if args.parquet:
            import pyarrow.parquet as pq

            with atomic_write(args.parquet, "wb") as f:
                pq.write_table(table, f)
            print(f"pyred: wrote {args.parquet}", file=sys.stderr if csv_path == "-" else sys.stdout)
    finally:
        store.close()
    return 0


def _check_export_targets(store: ResultStore, targets: list[tuple[str, str]], force: bool) -> None:
    """Refuses an output that is a folder, the database, inside a feature cache, or (without --force) an
    existing file -- before anything is written."""
    from . import store as store_module
    from .errors import StudyError

    protected = {os.path.realpath(store.path)} | {os.path.realpath(store.path + s) for s in ("-wal", "-shm")}
    caches = [os.path.realpath(c) for c in store.cache_dirs()]
    for flag, path in targets:
        if path == "-":
            if flag != "--csv":
                raise StudyError(f"{flag}: '-' (standard output) is for --csv only")
            continue
        real = os.path.realpath(path)
        if os.path.isdir(path):
            raise StudyError(f"{flag}: {path} is a directory; give a file path")
        if real in protected:
            raise StudyError(f"{flag}: {path} is the results database itself; give another file")
        if any(real == c or real.startswith(c + os.sep) for c in caches):
            raise StudyError(f"{flag}: {path} is inside the feature cache; give a file outside it")
        if os.path.exists(path) and not force:
            raise StudyError(f"{flag}: {path} exists; pass --force to overwrite it")
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise StudyError(f"{flag}: no folder {folder} to write {os.path.basename(path)} into")
        if not store_module.writable(folder):
            raise StudyError(f"{flag}: {folder} is read-only; give a path where the file can be written")


def _runs(args: argparse.Namespace) -> int:
    import time

    from .store import ResultStore, database, latest_with_results

    store = ResultStore.read(database(args.dir))
    try:
        infos = store.configs()
    finally:
        store.close()
    if not infos:
        print(f"{args.dir}: no configuration recorded yet")
        return 0
    latest = getattr(latest_with_results(infos), "id", None)
    print(f"{'config':<13} {'last run':<17} {'runs':>4} {'rows':>6}  what")
    for c in infos:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(c.last_run))
        mark = "  (latest)" if c.id == latest else ""
        print(f"{c.id:<13} {when:<17} {len(c.runs):>4} {c.rows:>6}  {_what(c.identity)}{mark}")
        print(f"{'':<13} {c.progress()}")
        for r in c.runs:
            if r.error:
                started = time.strftime("%Y-%m-%d %H:%M", time.localtime(r.started_at))
                print(f"{'':<13} run {r.id} ({started}) failed: {r.error}")
    return 0


def _what(ident: ConfigIdentity) -> str:
    """One line that tells configurations apart: models (with their file digests), data, recipe, grid,
    seeds, methods, protocol, CKA."""
    options = ", ".join(f"{k}={v}" for k, v in ident.recipe_options.items() if v is not None)
    cka = "" if ident.cka is None else f"; {ident.cka.describe()}"
    return (f"{','.join(m.describe() for m in ident.models)} on {','.join(d.describe() for d in ident.datasets)}; "
            f"{ident.recipe} {options}; {_grid_size(ident.fractions)} fractions x seeds {ident.seeds}; methods "
            f"{ident.methods}; protocol {ident.describe_protocol()}{cka}")


def _grid_size(fractions: list[float] | dict[str, list[float]]) -> str:
    if isinstance(fractions, dict):  # one grid per model
        return "/".join(str(len(g)) for g in fractions.values())
    return str(len(fractions))


def _cka(args: argparse.Namespace) -> int:
    import numpy as np

    from .. import datasets
    from .._files import atomic_write
    from ..backbones import Backbone
    from ..layer_cka import layer_cka
    from .plots import layer_cka_heatmap

    bb_a = Backbone(args.model, pretrained=not args.random_init)
    bb_b = Backbone(args.model_b, pretrained=not args.random_init) if args.model_b else None
    data = datasets.load(args.dataset, args.split, root=args.data_root)
    M, names_a, names_b = layer_cka(bb_a, data, layers_a=args.layers, backbone_b=bb_b, layers_b=args.layers_b,
                                    samples=args.samples,
                                    kernel=args.kernel, minibatch=args.minibatch, pool=args.pool, device=args.device,
                                    progress=not args.quiet)
    os.makedirs(args.out, exist_ok=True)
    with atomic_write(os.path.join(args.out, "layer_cka.npy"), "wb") as f:
        np.save(f, M.numpy())
    with atomic_write(os.path.join(args.out, "layer_cka.csv")) as f:
        f.write("layer," + ",".join(names_b) + "\n")
        for name, row in zip(names_a, M.tolist()):
            f.write(name + "," + ",".join(f"{v:.6f}" for v in row) + "\n")
    kind = "minibatch " if args.minibatch else ""
    title = f"{kind}{args.kernel} CKA: {args.model} x {args.model_b or args.model} ({args.dataset}/{args.split}, " \
            f"{min(args.samples, len(data))} images)"
    png = layer_cka_heatmap(M.numpy(), names_a, names_b, os.path.join(args.out, "layer_cka.png"), title)
    print(f"pyred: wrote {os.path.join(args.out, 'layer_cka.csv')}, layer_cka.npy and {png}")
    return 0


def _paper(args: argparse.Namespace) -> int:
    from .paper_cli import command

    return command(args)


COMMANDS = {"run": _run, "report": _report, "export": _export, "runs": _runs, "cka": _cka, "paper": _paper}


if __name__ == "__main__":
    sys.exit(main())
