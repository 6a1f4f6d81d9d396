"""The three probe protocols side by side: EfficientNet-Lite0 (offline pretrained) on digits.

    python benchmarks/protocols.py [--image-size 64] [--epochs 20] [--views 1,5,10] [--out DIR] [--device cpu]

Runs ``pyred run`` once per protocol -- "features" (clean features extracted once), "views" with each
V (V augmented views per training image extracted once) and "paper" (freshly augmented images through
the backbone at every step) -- on the paper's grid (14 fractions x 5 seeds + the full layer), all at
the same image size (the paper's Resize + CenterCrop for clean images) and SGD schedule, and prints a
markdown table: full-layer accuracy, DR(0.9), accuracy at f = 0.1 and 0.2, and each run's wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import time


def row(out: str) -> dict:
    with open(os.path.join(out, "analysis.json")) as f:
        g = next(g for g in json.load(f)["configs"][0]["groups"] if g["method"] == "random")
    acc = dict(zip(g["accuracy"]["fraction"], zip(g["accuracy"]["mean"], g["accuracy"]["std"])))
    return {"full": g["full_accuracy"], "dr": g["dr"]["nearest"]["0.9"], "f0.1": acc.get(0.1), "f0.2": acc.get(0.2)}


def main() -> None:
    from pyred.study.cli import main as pyred

    p = argparse.ArgumentParser()
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--views", default="1,5,10")
    p.add_argument("--out", default="protocol-runs")
    p.add_argument("--device", default=None)
    args = p.parse_args()
    runs = [("features", [])] + [(f"views (V={v})", ["--views", v]) for v in args.views.split(",")] + [("paper", [])]
    lines = ["| protocol | full layer acc. | DR(0.9) | acc. at f = 0.1 | acc. at f = 0.2 | time (s) |",
             "|---|---|---|---|---|---|"]
    for name, extra in runs:
        out = os.path.join(args.out, name.split(" ")[0] + "".join(extra[1:]))
        cmd = ["run", "--protocol", name.split(" ")[0], "--image-size", str(args.image_size), "--epochs",
               str(args.epochs), "--out", out, "--quiet"] + extra + (["--device", args.device] if args.device else [])
        start = time.perf_counter()
        assert pyred(cmd) == 0, cmd
        seconds = time.perf_counter() - start
        r = row(out)
        fmt = lambda v: f"{v[0]:.3f} ± {v[1]:.3f}" if v else "–"  # noqa: E731
        lines.append(f"| {name} | {r['full']:.3f} | {r['dr']:.2f} | {fmt(r['f0.1'])} | {fmt(r['f0.2'])} | "
                     f"{seconds:.0f} |")
        print(lines[-1], flush=True)
    print(f"\nEfficientNet-Lite0 on digits, {args.image_size} px, sgd {args.epochs} epochs "
          f"(StepLR every {max(1, round(args.epochs / 5))}), 14 fractions x 5 seeds + the full layer\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
