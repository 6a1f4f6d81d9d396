"""The ``pyred`` command: ``pyred run [CONFIG]``, ``pyred report DIR``, ``pyred export DIR``."""

from __future__ import annotations

import argparse
import sys


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


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pyred", description="Diffused redundancy in pretrained representations.")
    sub = p.add_subparsers(dest="command")
    r = sub.add_parser("run", help="run a sweep (no arguments: the built-in default on digits)")
    r.add_argument("config", nargs="?", help="a TOML sweep configuration")
    r.add_argument("--model", action="append", dest="models", help="timm model name (repeatable)")
    r.add_argument("--dataset", action="append", dest="datasets", help="dataset name (repeatable)")
    r.add_argument("--features", help=".npz with X_train, y_train, X_test, y_test[, class_names]")
    r.add_argument("--fractions", type=_floats, help="e.g. 0.01,0.1,0.5")
    r.add_argument("--seeds", type=_ints, help="e.g. 1,2,3")
    r.add_argument("--recipe", choices=["sgd", "lbfgs", "ridge"])
    r.add_argument("--epochs", type=int, help="sgd epochs (default 100)")
    r.add_argument("--device", help="cpu, cuda, cuda:1, ...")
    r.add_argument("--out", help="output folder (default pyred-run)")
    r.add_argument("--no-report", action="store_true", help="skip the plots and report.md")
    r.add_argument("--quiet", action="store_true", help="no progress bars")
    rep = sub.add_parser("report", help="(re)write the analysis, plots and report.md of a run folder")
    rep.add_argument("dir")
    ex = sub.add_parser("export", help="export a run's results to CSV and/or Parquet")
    ex.add_argument("dir")
    ex.add_argument("--csv", help="CSV path (default DIR/results.csv)")
    ex.add_argument("--parquet", help="Parquet path (needs pyarrow)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    command = args.command or "run"
    if args.command is None:
        args = parser().parse_args(["run"] + list(argv or []))
    try:
        if command == "run":
            from .sweep import load_config, run

            overrides = dict(models=args.models, datasets=args.datasets, features=args.features,
                             fractions=args.fractions, seeds=args.seeds, recipe=args.recipe, device=args.device,
                             out=args.out)
            cfg = load_config(args.config, **overrides)
            if args.epochs is not None:
                cfg.recipe_options = {**cfg.recipe_options, "epochs": args.epochs}
            if args.no_report:
                cfg.report = False
            out = run(cfg, progress=not args.quiet)
            print(f"pyred: results in {out}/results.sqlite" + ("" if not cfg.report else f", report {out}/report.md"))
        elif command == "report":
            from .report import write_report

            print(f"pyred: wrote {write_report(args.dir)}")
        elif command == "export":
            import os

            from .store import ResultStore

            db = os.path.join(args.dir, "results.sqlite")
            if not os.path.exists(db):
                raise FileNotFoundError(f"export: no results.sqlite in {args.dir}")
            store = ResultStore(db)
            try:
                print(f"pyred: wrote {store.export_csv(args.csv or os.path.join(args.dir, 'results.csv'))}")
                if args.parquet:
                    print(f"pyred: wrote {store.export_parquet(args.parquet)}")
            finally:
                store.close()
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"pyred: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
