"""Transcribes the reference's scripts into data: ``python -m pyred.paper.transcribe REPO [OUT.json]``.

REPO is a checkout of the paper's code (github.com/nvedant07/diffused-redundancy, at ae5569f for the
table shipped as ``reference_scripts.json``). Every ``scripts/*.sh`` is run by bash with ``python`` and
``srun`` replaced by recorders, so the loops, brace expansions and Slurm arrays (``#SBATCH -a``) expand
exactly as bash expands them; no training runs. Any other command of a script would run (in a temporary
folder), so transcribe only a checkout you trust. Each script becomes blocks: runs that
share the model, checkpoint, config file, mode and schedule, as cross products of datasets x sizes x
seeds x layers, with the full-layer runs (``--fraction 1``) listed apart.
"""

from __future__ import annotations

import collections
import itertools
import json
import os
import re
import subprocess
import sys
import tempfile
from typing import Any

_RECORDER = r"""
python() { printf 'CALL'; for a in "$@"; do printf '\x1f%s' "$a"; done; printf '\n'; }
export -f python
srun() { shift 2; "$@"; }
"""
CONSTANT = ("module", "model", "checkpoint_path", "config_file", "mode", "epochs", "step_lr", "batch_size")


def expand_script(path: str, scripts_dir: str) -> list[dict[str, Any]]:
    """The python invocations of one script, as {argument: value} (flags without a value: True)."""
    with open(path) as f:
        text = f.read()
    array = re.search(r"#SBATCH -a (\d+)(?:-(\d+))?", text)
    tasks: list[int | None] = [None]
    if array:
        tasks = list(range(int(array.group(1)), int(array.group(2) or array.group(1)) + 1))
    # Slurm wrappers run other scripts of the folder (``bash -c './partially_inverted_reps/scripts/X.sh'``)
    body = text.replace("'./partially_inverted_reps/scripts/", f"'bash {scripts_dir.rstrip('/')}/")
    calls = []
    with tempfile.TemporaryDirectory() as cwd:
        for task in tasks:
            env = dict(os.environ, SLURM_JOBID="1")
            if task is not None:
                env["SLURM_ARRAY_TASK_ID"] = str(task)
            out = subprocess.run(["bash", "-c", _RECORDER + body], capture_output=True, text=True, env=env,
                                 cwd=cwd, timeout=120).stdout
            calls += [_arguments(line.split("\x1f")[1:]) for line in out.splitlines() if line.startswith("CALL")]
    return calls


def _arguments(argv: list[str]) -> dict[str, Any]:
    if argv[:1] != ["-m"]:
        raise ValueError(f"expected python -m MODULE ..., got {argv[:3]}")
    out: dict[str, Any] = {"module": argv[1].rsplit(".", 1)[-1]}
    rest, i = argv[2:], 0
    while i < len(rest):
        key = rest[i][2:]
        if i + 1 < len(rest) and not rest[i + 1].startswith("--"):
            out[key], i = rest[i + 1], i + 2
        else:
            out[key], i = True, i + 1
    return out


def _seed(value: str) -> int:
    # `for seed in {1}` is no brace expansion in bash: the script passed the literal "{1}", which the
    # reference's argparse refuses; seed 1 is what it meant
    return 1 if value == "{1}" else int(value)


def _number(value: str) -> float | int:
    f = float(value)
    return int(f) if f == int(f) and "." not in value else f


def _is_full(call: dict[str, Any]) -> bool:
    return "num_features" not in call and call.get("fraction") in ("1", "1.")


def blocks(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The calls of one script as cross-product blocks (see the module's doc)."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = collections.OrderedDict()
    for c in calls:
        groups.setdefault(tuple(c.get(k) for k in CONSTANT), []).append(c)
    out = []
    for key, cs in groups.items():
        const = dict(zip(CONSTANT, key))
        ckpt, config = const.pop("checkpoint_path"), const.pop("config_file")
        const["checkpoint"] = ckpt.rsplit("/", 1)[-1] if ckpt else None
        const["config"] = config.rsplit("/", 1)[-1] if config else None
        for k in ("epochs", "step_lr", "batch_size"):
            if const[k] is not None:
                const[k] = int(float(const[k]))
        size_key = "num_features" if any("num_features" in c for c in cs) else "fraction"
        by_place: dict[tuple[Any, ...], set[Any]] = collections.defaultdict(set)
        for c in cs:
            if not _is_full(c) and size_key in c:
                place = (c["finetuning_dataset"], _seed(c["seed"]), int(c["layers"]) if "layers" in c else None)
                by_place[place].add(_number(c[size_key]))
        by_sizes: dict[tuple[Any, ...], set[tuple[Any, ...]]] = collections.defaultdict(set)
        for place, values in by_place.items():
            by_sizes[tuple(sorted(values))].add(place)
        for sizes, places in by_sizes.items():
            by_datasets: dict[tuple[Any, ...], set[str]] = collections.defaultdict(set)
            for ds, seed, layer in places:
                by_datasets[(seed, layer)].add(ds)
            cells: dict[tuple[str, ...], set[tuple[Any, ...]]] = collections.defaultdict(set)
            for seed_layer, names in by_datasets.items():
                cells[tuple(sorted(names))].add(seed_layer)
            for dss, seed_layers in cells.items():
                seeds = sorted({s for s, _ in seed_layers})
                layers = sorted({x for _, x in seed_layers}, key=lambda x: -1 if x is None else x)
                if set(itertools.product(seeds, layers)) != seed_layers:
                    raise ValueError(f"runs of {dss} are no cross product of seeds x layers: {sorted(seed_layers)}")
                size_name = "num_features" if size_key == "num_features" else "fractions"
                out.append(dict(const, datasets=list(dss), seeds=seeds, layers=layers, **{size_name: list(sizes)}))
        full = sorted({(c["finetuning_dataset"], _seed(c["seed"])) for c in cs if _is_full(c)})
        if full:
            out.append(dict(const, full_layer=[list(x) for x in full]))
    return out


def transcribe(repo: str) -> dict[str, list[dict[str, Any]]]:
    """{script stem: blocks} for every scripts/*.sh of the reference checkout ``repo``."""
    scripts = os.path.join(repo, "scripts")
    names = sorted(n for n in os.listdir(scripts) if n.endswith(".sh"))
    return {n[:-3]: blocks(expand_script(os.path.join(scripts, n), scripts)) for n in names}


def main(argv: list[str]) -> int:
    if len(argv) not in (1, 2):
        print("usage: python -m pyred.paper.transcribe REPO [OUT.json]", file=sys.stderr)
        return 2
    table = transcribe(argv[0])
    text = json.dumps(table, indent=1, sort_keys=True) + "\n"
    if len(argv) == 2:
        with open(argv[1], "w") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
