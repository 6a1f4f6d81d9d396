"""A study folder's report, recomputed from its database every time: analysis.json, PNG plots, report.md.

Plots: accuracy vs fraction (seed band, full-layer line), CKA vs fraction, DR vs
delta, Gini vs accuracy, and a class x fraction heatmap per group. report.md has
a DR table laid out like the paper's Table 1. By default the latest
configuration is reported; ``config=`` picks another, ``all_configs=True``
reports each configuration in its own section (never mixed in one curve).
Log-scaled fraction plots need a fraction strictly inside (0, 1); without one
they are left out and the report says so.
"""

from __future__ import annotations

import glob
import os

import numpy as np

from .._files import atomic_write, remove, write_json
from .aggregate import analyse
from .errors import StudyError
from .store import ResultStore, writable

PLOTS = ("accuracy_vs_fraction.png", "cka_vs_fraction.png", "dr_vs_delta.png", "gini_vs_accuracy.png")


def database(out: str) -> str:
    return os.path.join(out, "results.sqlite")


def analyse_folder(out: str, config: str | None = None, all_configs: bool = False, dest: str | None = None) -> dict:
    """Reads DIR/results.sqlite (read-only), writes and returns analysis.json for the chosen
    configuration(s) into ``dest`` (DIR by default)."""
    dest = _destination(out, dest)
    store = ResultStore.read(database(out))
    try:
        ids = store.resolve(config, all_configs)
        infos = {c.id: c for c in store.configs()}
        doc = {"configs": [{"id": cid, "identity": infos[cid].identity, "complete": infos[cid].complete,
                            "progress": infos[cid].progress(), "groups": analyse(cid, store.rows(cid))}
                           for cid in ids]}
    finally:
        store.close()
    write_json(os.path.join(dest, "analysis.json"), doc)
    return doc


def _destination(out: str, dest: str | None) -> str:
    """Where the analysis and report go: ``dest``, or the study folder itself when it can be written."""
    if dest is None:
        if not writable(os.path.abspath(out)):
            raise StudyError(f"{out} is read-only: pass --out DIR to write the report somewhere else (the "
                             "database is only read)")
        return out
    os.makedirs(dest, exist_ok=True)
    if not writable(os.path.abspath(dest)):
        raise StudyError(f"--out: {dest} is read-only")
    return dest


def write_report(out: str, config: str | None = None, all_configs: bool = False, dest: str | None = None) -> str:
    """analysis.json, the plots and report.md of the study folder ``out``, written into ``dest`` (``out``
    by default). Returns report.md's path."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise StudyError("the report needs matplotlib: pip install 'pyred[demo]' (or matplotlib)") from exc
    doc = analyse_folder(out, config, all_configs, dest)
    dest = dest or out
    several = len(doc["configs"]) > 1
    protocols = sorted({(c["identity"].get("protocol") or {"name": "features"})["name"] for c in doc["configs"]})
    lines = [f"# pyred report (protocol: {', '.join(protocols) or 'features'})", "", f"Study folder: `{out}`", ""]
    written: list[str] = []
    for c in doc["configs"]:
        prefix = f"{c['id']}_" if several else ""
        lines += _config_section(c, several)
        lines += _plots(plt, dest, c, prefix, written)
    with atomic_write(os.path.join(dest, "report.md")) as f:
        f.write("\n".join(lines) + "\n")
    for path in glob.glob(os.path.join(dest, "*.png")):  # plots of an earlier report that this one does not have
        name = os.path.basename(path)
        if name not in written and (name.endswith(PLOTS) or "class_heatmap_" in name):
            remove(path)
    return os.path.join(dest, "report.md")


def _label(g: dict) -> str:
    return f"{g['model']} / {g['dataset']} ({g['method']})"


def _describe(identity: dict) -> str:
    from .config import describe_protocol

    ck = identity.get("cka")
    cka = "no CKA" if not ck else f"CKA on {ck['samples']} test samples ({'debiased' if ck['debiased'] else 'biased'})"
    opts = ", ".join(f"{k}={v}" for k, v in identity["recipe_options"].items() if v is not None)
    by_pair = identity.get("recipe_options_by_pair")
    if by_pair:  # the paper's per-(model, dataset) defaults changed some options
        opts += "; per model|dataset: " + "; ".join(
            f"{pair}: " + ", ".join(f"{k}={v}" for k, v in o.items() if v is not None and identity["recipe_options"]
                                    .get(k) != v) for pair, o in by_pair.items())
    return (f"protocol **{describe_protocol(identity)}**; recipe `{identity['recipe']}` ({opts}); fractions "
            f"{identity['fractions']}; seeds {identity['seeds']} (full layer: seed {identity['full_layer_seed']}); "
            f"methods {identity['methods']}; {cka}")


def _config_section(c: dict, several: bool) -> list[str]:
    groups = c["groups"]
    proto = (c["identity"].get("protocol") or {"name": "features"})["name"]
    lines = [f"## Configuration `{c['id']}` (protocol {proto})" if several
             else f"Configuration `{c['id']}`: {_describe(c['identity'])}", ""]
    if several:
        lines += [_describe(c["identity"]), ""]
    if not c.get("complete", True):
        lines += [f"**This configuration is {c['progress']}.** Its tables and plots show the units finished so "
                  "far; run `pyred run` with the same configuration again to finish it.", ""]
    models = sorted({(g["model"], g["layer"]) for g in groups if "dr" in g})
    datasets = sorted({g["dataset"] for g in groups if "dr" in g})
    if models:
        lines += ["### Diffused redundancy DR(0.9) (Table 1 layout; nearest rule, random subsets)", "",
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
                lines.append(f"| {_label(g)} | {g['full_accuracy']:.4f} | {g['dr']['nearest']['0.9']:.2f} | "
                             f"{g['dr']['threshold']['0.9']:.2f} | {g['dr']['nearest']['0.95']:.2f} |")
        lines.append("")
    else:
        lines += ["No fraction strictly between 0 and 1 (or no full-layer run): no DR table, and no log-scaled "
                  "fraction plots.", ""]
    missing = [g for g in groups if "dr_missing" in g]
    if missing:
        lines += ["DR is missing for:", ""] + [f"- {_label(g)}: {g['dr_missing']}" for g in missing] + [""]
    diverged = [g for g in groups if g.get("diverged")]
    if diverged:
        lines += ["Probe heads that diverged (their training loss became NaN or infinite; a head that kept weights "
                  "from before it diverged keeps its accuracy, the others have none and are left out of the means "
                  "and DR):", ""]
        for g in diverged:
            heads = ", ".join(f"f={d['fraction']:g} seed {d['seed']}" + (" (kept earlier weights)"
                                                                        if d["kept_earlier_weights"] else "")
                              for d in g["diverged"])
            lines.append(f"- {_label(g)}: {len(g['diverged'])} heads: {heads}")
        lines.append("")
    lines += ["### Accuracy and CKA per fraction (mean ± std over seeds)", ""]
    for g in groups:
        if "accuracy" not in g and "cka" not in g:
            continue
        lines += [f"#### {_label(g)}", "", "| fraction | accuracy | CKA | Gini |", "|---|---|---|---|"]
        acc = g.get("accuracy", {})
        cka = dict(zip(g.get("cka", {}).get("fraction", []), zip(g.get("cka", {}).get("mean", []),
                                                                  g.get("cka", {}).get("std", []))))
        accs = dict(zip(acc.get("fraction", []), zip(acc.get("mean", []), acc.get("std", []))))
        gini = {d["fraction"]: d["gini"] for d in g.get("disparity", [])}
        for f in sorted(set(accs) | set(cka)):
            a = f"{accs[f][0]:.4f} ± {accs[f][1]:.4f}" if f in accs else "–"
            k = f"{cka[f][0]:.3f} ± {cka[f][1]:.3f}" if f in cka else "–"
            lines.append(f"| {f:g} | {a} | {k} | {gini.get(f, float('nan')):.3f} |")
        lines.append("")
    return lines


def _plots(plt, out: str, c: dict, prefix: str, written: list) -> list[str]:
    groups = c["groups"]

    def save(fig, name):
        fig.tight_layout()
        with atomic_write(os.path.join(out, prefix + name), "wb") as f:
            fig.savefig(f, dpi=110, format="png")
        plt.close(fig)
        written.append(prefix + name)
        return prefix + name

    def in_range(g, key):
        f = np.array(g.get(key, {}).get("fraction", []))
        return bool(((f > 0) & (f < 1)).any())

    def band(ax, g, key, upper):
        """Mean line with a +- std band over seeds, for fractions in (0, upper]."""
        f, m, s = (np.array(g[key][k]) for k in ("fraction", "mean", "std"))
        keep = (f > 0) & (f <= upper)
        line, = ax.plot(f[keep], m[keep], marker="o", ms=3, label=_label(g))
        ax.fill_between(f[keep], (m - s)[keep], (m + s)[keep], color=line.get_color(), alpha=0.2)
        return line

    names = []
    acc_groups = [g for g in groups if in_range(g, "accuracy")]
    if acc_groups:
        fig, ax = plt.subplots(figsize=(6.5, 4.2))
        for g in acc_groups:
            line = band(ax, g, "accuracy", upper=0.999)
            if "full_accuracy" in g:
                ax.axhline(g["full_accuracy"], color=line.get_color(), ls="--", lw=1)
        ax.set(xscale="log", xlabel="fraction of neurons", ylabel="test accuracy",
               title="Probe accuracy vs fraction (mean ± std over seeds; dashed: full layer)")
        ax.legend(fontsize=7)
        names.append(save(fig, PLOTS[0]))
    cka_groups = [g for g in groups if in_range(g, "cka")]
    if cka_groups:
        fig, ax = plt.subplots(figsize=(6.5, 4.2))
        for g in cka_groups:
            band(ax, g, "cka", upper=1.0)
        ax.set(xscale="log", xlabel="fraction of neurons", ylabel="linear CKA with the full layer",
               title="CKA(subset, full layer)")
        ax.legend(fontsize=7)
        names.append(save(fig, PLOTS[1]))
    dr_groups = [g for g in groups if "dr_curve" in g]
    if dr_groups:
        fig, ax = plt.subplots(figsize=(6.5, 4.2))
        for g in dr_groups:
            ax.plot(g["dr_curve"]["delta"], g["dr_curve"]["dr"], marker=".", label=_label(g))
        ax.set(xlabel="δ (fraction of full-layer accuracy)", ylabel="diffused redundancy DR(δ)",
               title="DR vs δ (nearest rule)")
        ax.legend(fontsize=7)
        names.append(save(fig, PLOTS[2]))
    gini_groups = [g for g in groups if g.get("disparity")]
    if gini_groups:
        fig, ax = plt.subplots(figsize=(6.5, 4.2))
        for g in gini_groups:
            ax.plot([d["accuracy"] for d in g["disparity"]], [d["gini"] for d in g["disparity"]], marker="o", ms=3,
                    label=_label(g))
        ax.set(xlabel="mean test accuracy", ylabel="Gini of per-class accuracy", title="Per-class disparity")
        ax.legend(fontsize=7)
        names.append(save(fig, PLOTS[3]))
    heatmaps = []
    for i, g in enumerate(gini_groups):
        M = np.array([d["per_class"] for d in g["disparity"]])
        fig, ax = plt.subplots(figsize=(6.5, 3.8))
        im = ax.imshow(M.T, aspect="auto", cmap="viridis", vmin=0, vmax=1)
        ax.set_xticks(range(len(g["disparity"])), [f"{d['fraction']:g}" for d in g["disparity"]], rotation=60,
                      fontsize=7)
        ax.set(xlabel="fraction", ylabel="class", title=f"Per-class accuracy: {_label(g)}")
        fig.colorbar(im, ax=ax)
        heatmaps.append((_label(g), save(fig, f"class_heatmap_{i}.png")))
    return ["### Plots", ""] + [f"![{n}]({n})" for n in names] + [f"![{t}]({n})" for t, n in heatmaps] + [""]


def layer_cka_heatmap(matrix, names_a: list, names_b: list, path: str, title: str) -> str:
    """A layer x layer CKA heatmap (PNG, written atomically). Returns the path."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise StudyError("the heatmap needs matplotlib: pip install 'pyred[demo]' (or matplotlib)") from exc
    M = np.asarray(matrix, dtype=float)
    fig, ax = plt.subplots(figsize=(1.2 + 0.45 * len(names_b), 1.0 + 0.4 * len(names_a)))
    im = ax.imshow(M, cmap="magma", vmin=0, vmax=1, origin="lower")
    ax.set_xticks(range(len(names_b)), names_b, rotation=60, fontsize=7)
    ax.set_yticks(range(len(names_a)), names_a, fontsize=7)
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, dpi=110, format="png")
    plt.close(fig)
    return path
