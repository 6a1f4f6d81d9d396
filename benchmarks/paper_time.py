"""How long the paper's experiments take here: ``python benchmarks/paper_time.py [--images N] [--out FILE]``.

1. Measures each paper architecture's forward throughput at 224 x 224 on this machine (random-init
   weights: speed does not depend on them), batch 16, after a warm-up batch.
2. Estimates every group of ``pyred.paper.experiments``: per run, the backbone passes a study makes under
   the named experiment's settings -- one stream per training seed ("per-seed"), ``epochs`` passes over the
   training images each, and validation (every ``eval_every`` epochs, augmented and so recomputed where the
   reference validated that way) -- divided by the measured images/s; plus the shared-stream time.
   The probe heads' own work is left out (it is a few percent of a pass, benchmarks/RESULTS.md).
3. Measures what ``stream_seeds = "per-seed"`` costs against the shared stream on a small real run
   (the default EfficientNet-Lite0 on digits at 32 px, 5 seeds, 3 epochs) in this process.

Prints a markdown table (and writes it to --out).
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time

import torch

# training / validation images of the paper's splits (train = 90 % of the official training set)
TRAIN = {"cifar10": 45_000, "cifar100": 45_000, "flowers102": 1_020, "oxford-pets": 3_312,
         "imagenet": 1_153_047, "places365": 1_622_702}
VAL = {"cifar10": 5_000, "cifar100": 5_000, "flowers102": 1_020, "oxford-pets": 368, "imagenet": 128_116,
       "places365": 180_300}


def throughput(timm_name: str, images: int) -> float:
    import pyred

    bb = pyred.Backbone(timm_name.split(".")[0], pretrained=False)
    x = torch.randn(min(16, images), 3, 224, 224)
    with torch.no_grad():
        bb(x[:2])  # warm-up
        start, seen = time.perf_counter(), 0
        while seen < images:
            bb(x)
            seen += len(x)
    return seen / (time.perf_counter() - start)


def run_passes(run, shared: bool) -> float:
    """Images through the backbone for one run of an experiment."""
    streams = 1 if shared else max(1, len(run.seeds) if run.method != "first" else 1)
    train = TRAIN[run.dataset] * run.epochs * streams
    evals = run.epochs // run.eval_every
    val = VAL[run.dataset] * (evals * streams if run.val_augment == "reference" and not shared else 1)
    return train + val


def per_seed_cost() -> tuple[float, float]:
    from pyred.study.config import load_config
    from pyred.study.runner import run

    times = []
    for mode in ("shared", "per-seed"):
        with tempfile.TemporaryDirectory() as out:
            cfg = load_config(None, protocol="paper", image_size=32, epochs=2,
                              fractions=[0.1, 0.5], seeds=[1, 2, 3, 4, 5], out=out)
            cfg = dataclasses.replace(cfg, stream_seeds=mode, cka=False, report=False)
            run(cfg, progress=False, say=None)  # features of val/test cached: the second call times the probes
            cfg = dataclasses.replace(cfg, recipe_options={"epochs": 3})
            start = time.perf_counter()
            run(cfg, progress=False, say=None)
            times.append(time.perf_counter() - start)
    return times[0], times[1]


def main() -> None:
    from pyred.paper import MODELS
    from pyred.paper import experiments as ex

    p = argparse.ArgumentParser()
    p.add_argument("--images", type=int, default=32, help="images per architecture to time (default 32)")
    p.add_argument("--out", help="also write the tables here")
    args = p.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    archs = sorted({m.timm_name.split(".")[0] for m in MODELS.values() if not m.key.startswith("resnet50_ff")})
    speed = {a: throughput(a, args.images) for a in archs}
    for k in MODELS:
        if k.startswith("resnet50_ff"):
            speed[MODELS[k].arch] = speed["resnet50_mrl"]  # the same network, another head
    lines = ["| architecture | images/s at 224 px |", "|---|---|"]
    lines += [f"| {a} | {v:.1f} |" for a, v in sorted(speed.items()) if not a.startswith("resnet50_ff")]
    lines += ["", "| group | experiments | runs | as the reference (per-seed streams) | one shared stream |",
              "|---|---|---|---|---|"]
    for g in ex.GROUPS:
        chosen = ex.select(g)
        runs = [r for e in chosen for r in e.runs]
        hours = [sum(run_passes(r, shared) / speed[MODELS[r.model].arch] for r in runs) / 3600
                 for shared in (False, True)]
        lines.append(f"| {g} | {len(chosen)} | {len(runs)} | {hours[0]:,.0f} h | {hours[1]:,.0f} h |")
    shared, per_seed = per_seed_cost()
    lines += ["", f"per-seed against shared, EfficientNet-Lite0 on 1,294 digits at 32 px, 5 seeds x 2 fractions + "
                  f"the full layer, 3 epochs: {per_seed:.1f} s against {shared:.1f} s ({per_seed / shared:.2f}x)"]
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
