"""``pyred paper list | show NAME | run NAME``: the paper's experiments by name (:mod:`pyred.paper.experiments`)."""

from __future__ import annotations

import argparse
import os
from typing import Any


def add_parser(sub: Any) -> None:
    pp = sub.add_parser("paper", help="the paper's experiments by name: list, show, run")
    ps = pp.add_subparsers(dest="paper_command", required=True)
    ls = ps.add_parser("list", help="every experiment and group, and whether its checkpoints and datasets are here")
    ls.add_argument("--weights-dir", dest="weights_dir", help="the folder holding the paper's checkpoint files")
    ls.add_argument("--data-dir", dest="data_dir", help="the folder holding the datasets")
    ls.add_argument("--group", help="list only this group's experiments")
    sh = ps.add_parser("show", help="the expanded plan of an experiment or group, as a table")
    sh.add_argument("name", help="an experiment (a reference script's name) or a group")
    ru = ps.add_parser("run", help="run an experiment or group as one resumable study")
    ru.add_argument("name", help="an experiment (a reference script's name) or a group")
    ru.add_argument("--weights-dir", dest="weights_dir", help="the folder holding the paper's checkpoint files")
    ru.add_argument("--data-dir", dest="data_dir", help="the folder holding the datasets")
    ru.add_argument("--device", help="cpu, cuda, cuda:1, ...")
    ru.add_argument("--out", help="study folder (default pyred-paper-NAME)")
    ru.add_argument("--epochs", type=int, help="override the experiment's epochs (a quick look; not the paper's)")
    ru.add_argument("--workers", type=int, dest="num_workers", help="DataLoader worker processes (default 0)")
    ru.add_argument("--no-report", action="store_true", help="skip the plots and report.md")
    ru.add_argument("--quiet", action="store_true", help="no progress bars")


def command(args: argparse.Namespace) -> int:
    return {"list": _list, "show": _show, "run": _run}[args.paper_command](args)


def _list(args: argparse.Namespace) -> int:
    from ..paper import experiments as ex
    from .schema import DatasetSpec
    from .validate import missing_files

    table = ex.select(args.group) if args.group else list(ex.experiments().values())
    print("groups: " + "; ".join(f"{g} ({len(ex.select(g))}): {what}" for g, (what, _) in ex.GROUPS.items()))
    print()
    check = args.weights_dir is not None or args.data_dir is not None
    status: dict[Any, list[str]] = {}
    print(f"{'experiment':<62} {'runs':>4}  {'groups':<26}" + ("  here?" if check else ""))
    for e in table:
        line = f"{e.name:<62} {len(e.runs):>4}  {','.join(e.groups):<26}"
        if check:
            missing = []
            for m in e.models:
                if m not in status:
                    spec = _model_spec(m, args.weights_dir)
                    status[m] = missing_files((spec,), ()) if args.weights_dir else []
                missing += status[m]
            for d in e.datasets:
                if d not in status:
                    status[d] = missing_files((), (DatasetSpec(d, args.data_dir),))
                missing += status[d]
            line += "  yes" if not missing else f"  missing {len(missing)}: " + "; ".join(missing)[:200]
        print(line)
    print()
    print(f"{len(table)} experiments. Not experiments here ({len(ex.skipped())} scripts): "
          + "; ".join(f"{p}* {why}" for p, why in ex.SKIPPED.items()))
    if not check:
        print("Give --weights-dir / --data-dir to see which experiments can run here.")
    return 0


def _model_spec(key: str, weights_dir: str | None) -> Any:
    from ..paper import MODELS
    from .schema import ModelSpec

    m = MODELS[key]
    weights = os.path.join(weights_dir, m.checkpoint) if weights_dir and m.needs_file else None
    return ModelSpec(key, weights=weights)


def _show(args: argparse.Namespace) -> int:
    from ..paper import experiments as ex

    chosen = ex.select(args.name)
    head = (f"{'model':<24} {'dataset':<11} {'layer':<11} {'method':<16} {'epochs':>6} {'step':>4} {'wd':>7} "
            f"{'batch':>5} {'eval':>4} {'norm':<8} {'val':<9}  grid | seeds")
    for e in chosen:
        print(f"{e.name}  ({e.script}; {e.module}.py; groups: {', '.join(e.groups) or '-'})")
        print("  " + head)
        for r in e.runs:
            seeds = ",".join(map(str, r.seeds)) if r.method != "first" else "- (first k)"
            print(f"  {r.model:<24} {r.dataset:<11} {r.layer:<11} {r.method:<16} {r.epochs:>6} {r.lr_step:>4} "
                  f"{r.weight_decay:>7g} {r.batch_size:>5} {r.eval_every:>4} {r.normalization:<8} "
                  f"{r.val_augment:<9}  {r.grid()} | {seeds}"
                  + (f" (+ full layer, seed {','.join(map(str, r.full_layer_seeds))})" if r.full_layer_seeds else ""))
    if len(chosen) > 1:
        print(f"{len(chosen)} experiments, {sum(len(e.runs) for e in chosen)} runs")
    return 0


def _run(args: argparse.Namespace) -> int:
    from .config import load_config
    from .runner import run

    overrides: dict[str, Any] = dict(paper=args.name, weights_dir=args.weights_dir, data_dir=args.data_dir,
                                     device=args.device, out=args.out or f"pyred-paper-{args.name}",
                                     epochs=args.epochs, num_workers=args.num_workers)
    if args.no_report:
        overrides["report"] = False
    cfg = load_config(None, **overrides)
    out = run(cfg, progress=not args.quiet)
    print(f"pyred: results in {out}/results.sqlite" + (f", report {out}/report.md" if cfg.report else ""))
    return 0
