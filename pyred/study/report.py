"""A study folder's report, recomputed from its database every time: analysis.json, PNG plots, report.md.

report.md has a DR table laid out like the paper's Table 1, DR under both rules,
what is missing and why, the heads that diverged, and per group the accuracy,
CKA and Gini per fraction; the figures are in :mod:`pyred.study.plots`. By
default the latest configuration with finished units is reported; ``config=``
picks another, ``all_configs=True`` reports each configuration in its own
section (never mixed in one curve). The database is only read, so a read-only
study folder can be reported into another folder (``dest``).
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from typing import Any

from .._files import atomic_write, remove, write_json
from .aggregate import GroupSummary, analyse, depth_series
from .errors import StudyError
from .identity import ConfigIdentity
from .plots import HEATMAP, PLOTS, Figures
from .store import ResultStore, database, writable


@dataclass(frozen=True)
class ConfigAnalysis:
    """One configuration's measures, and how far its runs got."""

    id: str
    identity: ConfigIdentity
    complete: bool
    progress: str
    groups: list[GroupSummary]

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "identity": self.identity.to_json(), "complete": self.complete,
                "progress": self.progress, "groups": [g.to_json() for g in self.groups]}


def analyse_folder(out: str, *, config: str | None = None, all_configs: bool = False,
                   dest: str | None = None) -> list[ConfigAnalysis]:
    """Reads DIR/results.sqlite (read-only), writes analysis.json for the chosen configuration(s) into
    ``dest`` (DIR by default) and returns their analyses."""
    dest = _destination(out, dest)
    store = ResultStore.read(database(out))
    try:
        ids = store.resolve(config, all_configs)
        infos = {c.id: c for c in store.configs()}
        analyses = [ConfigAnalysis(cid, infos[cid].identity, infos[cid].complete, infos[cid].progress(),
                                   analyse(cid, store.rows(cid))) for cid in ids]
    finally:
        store.close()
    write_json(os.path.join(dest, "analysis.json"), {"configs": [a.to_json() for a in analyses]})
    return analyses


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


def write_report(out: str, *, config: str | None = None, all_configs: bool = False,
                 dest: str | None = None) -> str:
    """analysis.json, the plots and report.md of the study folder ``out``, written into ``dest`` (``out``
    by default). Returns report.md's path."""
    analyses = analyse_folder(out, config=config, all_configs=all_configs, dest=dest)
    dest = dest or out
    several = len(analyses) > 1
    protocols = sorted({a.identity.protocol_name for a in analyses})
    lines = [f"# pyred report (protocol: {', '.join(protocols) or 'features'})", "", f"Study folder: `{out}`", ""]
    written: list[str] = []
    for a in analyses:
        lines += _config_section(a, several)
        lines += Figures(dest, f"{a.id}_" if several else "", written).all(a.groups, _layer_order(a.identity))
    with atomic_write(os.path.join(dest, "report.md")) as f:
        f.write("\n".join(lines) + "\n")
    for path in glob.glob(os.path.join(dest, "*.png")):  # plots of an earlier report that this one does not have
        name = os.path.basename(path)
        if name not in written and (name.endswith(PLOTS) or HEATMAP.split("{")[0] in name):
            remove(path)
    return os.path.join(dest, "report.md")


def _describe(identity: ConfigIdentity) -> str:
    cka = "no CKA" if identity.cka is None else identity.cka.describe()
    return (f"protocol **{identity.describe_protocol()}**; recipe `{identity.recipe}` ({identity.describe_options()}); "
            f"fractions {identity.fractions}; seeds {identity.seeds} (full layer: seed {identity.full_layer_seed}); "
            f"methods {identity.methods}; {cka}")


def _config_section(a: ConfigAnalysis, several: bool) -> list[str]:
    lines = [f"## Configuration `{a.id}` (protocol {a.identity.protocol_name})" if several
             else f"Configuration `{a.id}`: {_describe(a.identity)}", ""]
    if several:
        lines += [_describe(a.identity), ""]
    if not a.complete:
        lines += [f"**This configuration is {a.progress}.** Its tables and plots show the units finished so "
                  "far; run `pyred run` with the same configuration again to finish it.", ""]
    return (lines + _dr_tables(a.groups) + _across_layers(a.groups, _layer_order(a.identity))
            + _missing_and_diverged(a.groups) + _per_fraction(a.groups))


def _layer_order(identity: ConfigIdentity) -> list[str]:
    """The layers in the order the configuration lists them (a model's depth order)."""
    return list(dict.fromkeys(m.layer for m in identity.models))


def _across_layers(groups: list[GroupSummary], order: list[str]) -> list[str]:
    """Per (model, dataset) with several layers: DR, accuracy and CKA layer by layer (depth order)."""
    series = depth_series(groups, order)
    if not series:
        return []
    lines = ["### Across layers (random subsets)", "",
             "| model / dataset | layer | full acc. | DR(0.9) | acc. at f = 0.1 | CKA at f = 0.1 |",
             "|---|---|---|---|---|---|"]
    for (model, dataset), gs in series.items():
        for g in gs:
            acc = g.accuracy.at(0.1) if g.accuracy is not None else None
            cka = g.cka.at(0.1) if g.cka is not None else None
            lines.append(f"| {model} / {dataset} | {g.layer} | "
                         + (f"{g.full_accuracy:.4f}" if g.full_accuracy is not None else "–") + " | "
                         + (f"{g.dr.get('nearest', 0.9):.2f}" if g.dr is not None else "–") + " | "
                         + (f"{acc[0]:.4f} ± {acc[1]:.4f}" if acc else "–") + " | "
                         + (f"{cka[0]:.4f} ± {cka[1]:.4f}" if cka else "–") + " |")
    return lines + [""]


def _dr_tables(groups: list[GroupSummary]) -> list[str]:
    with_dr = [g for g in groups if g.dr is not None]
    if not with_dr:
        return ["No fraction strictly between 0 and 1 (or no full-layer run): no DR table, and no log-scaled "
                "fraction plots.", ""]
    models = sorted({(g.model, g.layer) for g in with_dr})
    datasets = sorted({g.dataset for g in with_dr})
    lines = ["### Diffused redundancy DR(0.9) (Table 1 layout; nearest rule, random subsets)", "",
             "| model | layer | " + " | ".join(datasets) + " |", "|---|---|" + "---|" * len(datasets)]
    for m, layer in models:
        cells = []
        for d in datasets:
            g = next((g for g in with_dr if (g.model, g.layer, g.dataset, g.method) == (m, layer, d, "random")), None)
            cells.append(f"{g.dr.get('nearest', 0.9):.2f}" if g is not None and g.dr is not None else "–")
        lines.append(f"| {m} | {layer} | " + " | ".join(cells) + " |")
    lines += ["", "DR under both rules and deltas:", "",
              "| model / dataset (method) | full acc. | DR(0.9) nearest | DR(0.9) threshold | DR(0.95) nearest |",
              "|---|---|---|---|---|"]
    for g in with_dr:
        assert g.dr is not None and g.full_accuracy is not None
        lines.append(f"| {g.label} | {g.full_accuracy:.4f} | {g.dr.get('nearest', 0.9):.2f} | "
                     f"{g.dr.get('threshold', 0.9):.2f} | {g.dr.get('nearest', 0.95):.2f} |")
    return lines + [""]


def _missing_and_diverged(groups: list[GroupSummary]) -> list[str]:
    lines = []
    missing = [g for g in groups if g.dr_missing is not None]
    if missing:
        lines += ["DR is missing for:", ""] + [f"- {g.label}: {g.dr_missing}" for g in missing] + [""]
    diverged = [g for g in groups if g.diverged]
    if diverged:
        lines += ["Probe heads that diverged (their training loss became NaN or infinite; a head that kept weights "
                  "from before it diverged keeps its accuracy, the others have none and are left out of the means "
                  "and DR):", ""]
        for g in diverged:
            heads = ", ".join(f"f={d.fraction:g} seed {d.seed}" + (" (kept earlier weights)"
                                                                   if d.kept_earlier_weights else "")
                              for d in g.diverged)
            lines.append(f"- {g.label}: {len(g.diverged)} heads: {heads}")
        lines.append("")
    return lines


def _per_fraction(groups: list[GroupSummary]) -> list[str]:
    lines = ["### Accuracy and CKA per fraction (mean ± std over seeds)", ""]
    for g in groups:
        if g.accuracy is None and g.cka is None:
            continue
        lines += [f"#### {g.label}", "", "| fraction | accuracy | CKA | Gini |", "|---|---|---|---|"]
        gini = {d.fraction: d.gini for d in g.disparity}
        fractions = set(g.accuracy.fraction if g.accuracy else []) | set(g.cka.fraction if g.cka else [])
        for f in sorted(fractions):
            acc = g.accuracy.at(f) if g.accuracy else None
            cka = g.cka.at(f) if g.cka else None
            a = f"{acc[0]:.4f} ± {acc[1]:.4f}" if acc else "–"
            k = f"{cka[0]:.3f} ± {cka[1]:.3f}" if cka else "–"
            lines.append(f"| {f:g} | {a} | {k} | {gini.get(f, float('nan')):.3f} |")
        lines.append("")
    return lines
