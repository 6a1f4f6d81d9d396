"""Analysis of a sweep's database and its report: PNG plots and report.md.

``analyse(DIR)`` reads DIR/results.sqlite and writes DIR/analysis.json: per
(model, dataset, layer, method) the mean +- population std of accuracy and CKA
per fraction, the full layer's accuracy, DR(delta) under both rules on the
paper's delta grid, and per-class disparity (Gini, max - min, CV) per fraction.
``write_report(DIR)`` draws accuracy vs fraction (seed band, full-layer line),
CKA vs fraction, DR vs delta, Gini vs accuracy and a class x fraction heatmap,
and writes report.md with a DR table laid out like the paper's Table 1.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict

import numpy as np

from . import analysis as A
from .store import ResultStore

PLOTS = ("accuracy_vs_fraction.png", "cka_vs_fraction.png", "dr_vs_delta.png", "gini_vs_accuracy.png")


def analyse(out: str) -> dict:
    """Computes the measures from DIR/results.sqlite; writes and returns DIR/analysis.json."""
    path = os.path.join(out, "results.sqlite")
    if not os.path.exists(path):
        raise FileNotFoundError(f"report: no results.sqlite in {out} (run 'pyred run' first)")
    store = ResultStore(path)
    try:
        rows = store.rows()
    finally:
        store.close()
    groups: dict[tuple, list] = defaultdict(list)
    for r in rows:
        groups[(r["model"], r["dataset"], r["layer"], r["method"])].append(r)
    result = []
    for (model, dataset, layer, method), rs in sorted(groups.items()):
        g = {"model": model, "dataset": dataset, "layer": layer, "method": method}
        acc = [r for r in rs if r["accuracy"] is not None]
        if acc:
            f, mean, std, n = A.seed_stats([r["fraction"] for r in acc], [r["accuracy"] for r in acc])
            g["accuracy"] = {"fraction": f.tolist(), "mean": mean.tolist(), "std": std.tolist(), "n": n.tolist()}
            full = [r["accuracy"] for r in acc if r["fraction"] == 1.0]
            sub = f < 1.0
            if full and np.mean(full) > 0 and sub.any():
                full_acc = float(np.mean(full))
                g["full_accuracy"] = full_acc
                fr, am = f[sub & (f > 0)], mean[sub & (f > 0)]
                if len(fr):
                    g["dr"] = {rule: {str(d): A.diffused_redundancy(fr, am, full_acc, d, rule) for d in (0.9, 0.95)}
                               for rule in A.RULES}
                    deltas, curve = A.dr_curve(fr, am, full_acc, "paper30", "nearest")
                    g["dr_curve"] = {"delta": deltas.tolist(), "dr": curve.tolist()}
            per_class = defaultdict(list)
            for r in acc:
                if r["per_class"]:
                    per_class[r["fraction"]].append([np.nan if v is None else v for v in r["per_class"]])
            disparity = []
            for frac in sorted(per_class):
                pc = np.nanmean(np.array(per_class[frac], dtype=float), axis=0)
                pc = pc[np.isfinite(pc)]
                disparity.append({"fraction": frac, "per_class": pc.tolist(), "gini": A.gini(pc),
                                  "max_min": A.max_min(pc), "cv": A.coefficient_of_variation(pc),
                                  "accuracy": float(np.mean([r["accuracy"] for r in acc if r["fraction"] == frac]))})
            g["disparity"] = disparity
        ck = [r for r in rs if r["cka"] is not None]
        if ck:
            f, mean, std, n = A.seed_stats([r["fraction"] for r in ck], [r["cka"] for r in ck])
            g["cka"] = {"fraction": f.tolist(), "mean": mean.tolist(), "std": std.tolist()}
        result.append(g)
    doc = {"groups": result}
    tmp = os.path.join(out, "analysis.json.tmp")
    with open(tmp, "w") as fh:
        json.dump(doc, fh, indent=1)
    os.replace(tmp, os.path.join(out, "analysis.json"))
    return doc


def write_report(out: str) -> str:
    """Plots and report.md from DIR/analysis.json (computed first when missing). Returns report.md's path."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise RuntimeError("the report needs matplotlib: pip install 'pyred[demo]' (or matplotlib)") from exc
    path = os.path.join(out, "analysis.json")
    doc = analyse(out) if not os.path.exists(path) else json.load(open(path))
    groups = doc["groups"]
    label = lambda g: f"{g['model']} / {g['dataset']} ({g['method']})"  # noqa: E731

    def save(fig, name):
        fig.tight_layout()
        tmp = os.path.join(out, name + ".tmp.png")
        fig.savefig(tmp, dpi=110)
        plt.close(fig)
        os.replace(tmp, os.path.join(out, name))

    def band(ax, g, key, upper):
        """Mean line with a +- std band over seeds, for fractions in (0, upper]."""
        f, m, s = (np.array(g[key][k]) for k in ("fraction", "mean", "std"))
        keep = (f > 0) & (f <= upper)
        line, = ax.plot(f[keep], m[keep], marker="o", ms=3, label=label(g))
        ax.fill_between(f[keep], (m - s)[keep], (m + s)[keep], color=line.get_color(), alpha=0.2)
        return line

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for g in groups:
        if "accuracy" not in g:
            continue
        line = band(ax, g, "accuracy", upper=0.999)
        if "full_accuracy" in g:
            ax.axhline(g["full_accuracy"], color=line.get_color(), ls="--", lw=1)
    ax.set(xscale="log", xlabel="fraction of neurons", ylabel="test accuracy",
           title="Probe accuracy vs fraction (mean ± std over seeds; dashed: full layer)")
    ax.legend(fontsize=7)
    save(fig, PLOTS[0])

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for g in groups:
        if "cka" in g:
            band(ax, g, "cka", upper=1.0)
    ax.set(xscale="log", xlabel="fraction of neurons", ylabel="linear CKA with the full layer",
           title="CKA(subset, full layer)")
    ax.legend(fontsize=7)
    save(fig, PLOTS[1])

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for g in groups:
        if "dr_curve" in g:
            ax.plot(g["dr_curve"]["delta"], g["dr_curve"]["dr"], marker=".", label=label(g))
    ax.set(xlabel="δ (fraction of full-layer accuracy)", ylabel="diffused redundancy DR(δ)",
           title="DR vs δ (nearest rule)")
    ax.legend(fontsize=7)
    save(fig, PLOTS[2])

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for g in groups:
        if g.get("disparity"):
            ax.plot([d["accuracy"] for d in g["disparity"]], [d["gini"] for d in g["disparity"]], marker="o", ms=3,
                    label=label(g))
    ax.set(xlabel="mean test accuracy", ylabel="Gini of per-class accuracy", title="Per-class disparity")
    ax.legend(fontsize=7)
    save(fig, PLOTS[3])

    heatmaps = []
    for i, g in enumerate(groups):
        if not g.get("disparity"):
            continue
        M = np.array([d["per_class"] for d in g["disparity"]])
        fig, ax = plt.subplots(figsize=(6.5, 3.8))
        im = ax.imshow(M.T, aspect="auto", cmap="viridis", vmin=0, vmax=1)
        ax.set_xticks(range(len(g["disparity"])), [f"{d['fraction']:g}" for d in g["disparity"]], rotation=60,
                      fontsize=7)
        ax.set(xlabel="fraction", ylabel="class", title=f"Per-class accuracy: {label(g)}")
        fig.colorbar(im, ax=ax)
        name = f"class_heatmap_{i}.png"
        save(fig, name)
        heatmaps.append((label(g), name))

    lines = ["# pyred report", "", f"Run folder: `{out}`", ""]
    models = sorted({(g["model"], g["layer"]) for g in groups if "dr" in g})
    datasets = sorted({g["dataset"] for g in groups if "dr" in g})
    if models:
        lines += ["## Diffused redundancy DR(0.9) (Table 1 layout; nearest rule, random subsets)", "",
                  "| model | layer | " + " | ".join(datasets) + " |", "|---|---|" + "---|" * len(datasets)]
        for m, layer in models:
            cells = []
            for d in datasets:
                g = next((g for g in groups if (g["model"], g["layer"], g["dataset"], g["method"]) ==
                          (m, layer, d, "random") and "dr" in g), None)
                cells.append(f"{g['dr']['nearest']['0.9']:.2f}" if g else "–")
            lines.append(f"| {m} | {layer} | " + " | ".join(cells) + " |")
        lines += ["", "DR under both rules and deltas:", "",
                  "| model / dataset (method) | full acc. | DR(0.9) nearest | DR(0.9) threshold | DR(0.95) nearest |",
                  "|---|---|---|---|---|"]
        for g in groups:
            if "dr" in g:
                lines.append(f"| {label(g)} | {g['full_accuracy']:.4f} | {g['dr']['nearest']['0.9']:.2f} | "
                             f"{g['dr']['threshold']['0.9']:.2f} | {g['dr']['nearest']['0.95']:.2f} |")
    lines += ["", "## Accuracy and CKA per fraction (mean ± std over seeds)", ""]
    for g in groups:
        if "accuracy" not in g:
            continue
        lines += [f"### {label(g)}", "", "| fraction | accuracy | CKA | Gini |", "|---|---|---|---|"]
        cka = dict(zip(g.get("cka", {}).get("fraction", []), zip(g.get("cka", {}).get("mean", []),
                                                                  g.get("cka", {}).get("std", []))))
        gini = {d["fraction"]: d["gini"] for d in g.get("disparity", [])}
        for f, m, s in zip(g["accuracy"]["fraction"], g["accuracy"]["mean"], g["accuracy"]["std"]):
            c = f"{cka[f][0]:.3f} ± {cka[f][1]:.3f}" if f in cka else "–"
            lines.append(f"| {f:g} | {m:.4f} ± {s:.4f} | {c} | {gini.get(f, float('nan')):.3f} |")
        lines.append("")
    lines += ["## Plots", ""] + [f"![{p}]({p})" for p in PLOTS] + [f"![{t}]({n})" for t, n in heatmaps]
    report = os.path.join(out, "report.md")
    with open(report + ".tmp", "w") as fh:
        fh.write("\n".join(lines) + "\n")
    os.replace(report + ".tmp", report)
    return report
