"""The report's figures, from a configuration's group summaries: PNG files written atomically.

Accuracy vs fraction (seed band, full-layer line), CKA vs fraction, DR vs delta,
Gini vs accuracy, a class x fraction heatmap per group; and the layer x layer
CKA heatmap of ``pyred cka``. Log-scaled fraction plots need a fraction strictly
inside (0, 1); groups without one are left out of them.
"""

from __future__ import annotations

import os
from typing import Any, cast

import numpy as np

from .._files import atomic_write
from .aggregate import DiffusedRedundancy, GroupSummary, SeedCurve, depth_series
from .errors import StudyError

PLOTS = ("accuracy_vs_fraction.png", "cka_vs_fraction.png", "dr_vs_delta.png", "gini_vs_accuracy.png",
         "dr_vs_depth.png")
HEATMAP = "class_heatmap_{}.png"


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend, or StudyError saying how to get it."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise StudyError("the report needs matplotlib: pip install 'pyred[demo]' (or matplotlib)") from exc
    return plt


class Figures:
    """Writes one configuration's figures into ``folder``, their names prefixed by ``prefix``; ``written``
    collects the file names."""

    def __init__(self, folder: str, prefix: str, written: list[str]):
        self.plt, self.folder, self.prefix, self.written = pyplot(), folder, prefix, written

    def save(self, fig: Any, name: str) -> str:
        fig.tight_layout()
        with atomic_write(os.path.join(self.folder, self.prefix + name), "wb") as f:
            fig.savefig(f, dpi=110, format="png")
        self.plt.close(fig)
        self.written.append(self.prefix + name)
        return self.prefix + name

    def all(self, groups: list[GroupSummary], layer_order: list[str] | None = None) -> list[str]:
        """Every figure of the groups; returns report.md's lines that show them."""
        names = [name for name in (self.accuracy(groups), self.cka(groups), self.dr(groups), self.gini(groups),
                                   self.depth(groups, layer_order or [])) if name]
        heatmaps = [(g.label, self.heatmap(g, i)) for i, g in enumerate(g for g in groups if g.disparity)]
        return ["### Plots", ""] + [f"![{n}]({n})" for n in names] + [f"![{t}]({n})" for t, n in heatmaps] + [""]

    def _axes(self) -> tuple[Any, Any]:
        return cast("tuple[Any, Any]", self.plt.subplots(figsize=(6.5, 4.2)))

    def accuracy(self, groups: list[GroupSummary]) -> str | None:
        shown = [g for g in groups if g.accuracy is not None and _inside(g.accuracy)]
        if not shown:
            return None
        fig, ax = self._axes()
        for g in shown:
            line = _band(ax, cast(SeedCurve, g.accuracy), g.label, upper=0.999)
            if g.full_accuracy is not None:
                ax.axhline(g.full_accuracy, color=line.get_color(), ls="--", lw=1)
        ax.set(xscale="log", xlabel="fraction of neurons", ylabel="test accuracy",
               title="Probe accuracy vs fraction (mean ± std over seeds; dashed: full layer)")
        ax.legend(fontsize=7)
        return self.save(fig, PLOTS[0])

    def cka(self, groups: list[GroupSummary]) -> str | None:
        shown = [g for g in groups if g.cka is not None and _inside(g.cka)]
        if not shown:
            return None
        fig, ax = self._axes()
        for g in shown:
            _band(ax, cast(SeedCurve, g.cka), g.label, upper=1.0)
        ax.set(xscale="log", xlabel="fraction of neurons", ylabel="linear CKA with the full layer",
               title="CKA(subset, full layer)")
        ax.legend(fontsize=7)
        return self.save(fig, PLOTS[1])

    def dr(self, groups: list[GroupSummary]) -> str | None:
        shown = [g for g in groups if g.dr is not None]
        if not shown:
            return None
        fig, ax = self._axes()
        for g in shown:
            ax.plot(cast(DiffusedRedundancy, g.dr).curve_delta, cast(DiffusedRedundancy, g.dr).curve_dr, marker=".",
                    label=g.label)
        ax.set(xlabel="δ (fraction of full-layer accuracy)", ylabel="diffused redundancy DR(δ)",
               title="DR vs δ (nearest rule)")
        ax.legend(fontsize=7)
        return self.save(fig, PLOTS[2])

    def gini(self, groups: list[GroupSummary]) -> str | None:
        shown = [g for g in groups if g.disparity]
        if not shown:
            return None
        fig, ax = self._axes()
        for g in shown:
            ax.plot([d.accuracy for d in g.disparity], [d.gini for d in g.disparity], marker="o", ms=3, label=g.label)
        ax.set(xlabel="mean test accuracy", ylabel="Gini of per-class accuracy", title="Per-class disparity")
        ax.legend(fontsize=7)
        return self.save(fig, PLOTS[3])

    def depth(self, groups: list[GroupSummary], order: list[str]) -> str | None:
        """DR(0.9) layer by layer, one line per (model, dataset) with several layers."""
        series = {k: [g for g in v if g.dr is not None] for k, v in depth_series(groups, order).items()}
        series = {k: v for k, v in series.items() if len(v) > 1}
        if not series:
            return None
        fig, ax = self._axes()
        labels = [layer for layer in order if any(g.layer == layer for gs in series.values() for g in gs)]
        labels += sorted({g.layer for gs in series.values() for g in gs} - set(labels))
        for (model, dataset), gs in series.items():  # each point at its layer's place in the configured order
            ax.plot([labels.index(g.layer) for g in gs], [cast(DiffusedRedundancy, g.dr).get("nearest", 0.9)
                                                          for g in gs], marker="o", label=f"{model} / {dataset}")
        ax.set_xticks(range(len(labels)), labels, rotation=60, fontsize=7)
        ax.set(xlabel="layer", ylabel="DR(0.9)", title="Diffused redundancy across layers (nearest rule)")
        ax.legend(fontsize=7)
        return self.save(fig, PLOTS[4])

    def heatmap(self, g: GroupSummary, i: int) -> str:
        M = np.array([d.per_class for d in g.disparity])
        fig, ax = self.plt.subplots(figsize=(6.5, 3.8))
        im = ax.imshow(M.T, aspect="auto", cmap="viridis", vmin=0, vmax=1)
        ax.set_xticks(range(len(g.disparity)), [f"{d.fraction:g}" for d in g.disparity], rotation=60, fontsize=7)
        ax.set(xlabel="fraction", ylabel="class", title=f"Per-class accuracy: {g.label}")
        fig.colorbar(im, ax=ax)
        return self.save(fig, HEATMAP.format(i))


def _inside(curve: SeedCurve) -> bool:
    """Whether a fraction strictly inside (0, 1) was tested (a log-scaled axis needs one)."""
    f = np.array(curve.fraction)
    return bool(((f > 0) & (f < 1)).any())


def _band(ax: Any, curve: SeedCurve, label: str, upper: float) -> Any:
    """Mean line with a +- std band over seeds, for fractions in (0, upper]."""
    f, m, s = np.array(curve.fraction), np.array(curve.mean), np.array(curve.std)
    keep = (f > 0) & (f <= upper)
    line, = ax.plot(f[keep], m[keep], marker="o", ms=3, label=label)
    ax.fill_between(f[keep], (m - s)[keep], (m + s)[keep], color=line.get_color(), alpha=0.2)
    return line


def layer_cka_heatmap(matrix: Any, names_a: list[str], names_b: list[str], path: str, title: str) -> str:
    """A layer x layer CKA heatmap (PNG, written atomically). Returns the path."""
    plt = pyplot()
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
