"""The package's shape, read from its source: imports point one way, private names stay home, functions
stay small. Each rule was broken before it was written down here (issue 18)."""

import ast
import os

import pyred

ROOT = os.path.dirname(os.path.abspath(pyred.__file__))


def modules() -> dict[str, str]:
    """{dotted module name: path} of every module of the source package (the one pyred imports from)."""
    out = {}
    for here, _, files in os.walk(ROOT):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(here, f)
                name = "pyred." + os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                out[name.removesuffix(".__init__")] = path
    return out


MODULES = modules()


def imports(module: str) -> list[tuple[str, str, ast.ImportFrom | ast.Import]]:
    """(importing module, imported pyred module, the node) for every import of a pyred module in ``module``,
    at any depth (a function-level import is an edge too)."""
    path = MODULES[module]
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - (node.level - 1)])
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                name = sub if sub in MODULES else target
                if name in MODULES and name != module:
                    out.append((module, name, node))
        elif isinstance(node, ast.Import):
            out += [(module, a.name, node) for a in node.names if a.name in MODULES and a.name != module]
    return out


def test_no_import_cycles():
    """Before: datasets -> probes.data -> stream -> datasets, and stream <-> probes.data (split_train_val)."""
    graph = {m: {t for _, t, _ in imports(m)} - {"pyred"} for m in MODULES}
    index, low, stack, on, cycles = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for m in sorted(graph):
        if m not in index:
            visit(m)
    assert cycles == []


def test_no_private_name_is_imported_from_another_module():
    """Before: ops.heads took _addr, _DTYPE_CODE, _check_backend and _native_for from ops.reductions; cka,
    minibatch and layer_cka took _finite / _ratio from gram; probes took _check_backend."""
    bad = set()
    for m in MODULES:
        for _, target, node in imports(m):
            if not isinstance(node, ast.ImportFrom):
                continue
            for a in node.names:  # a private module of the package (_checks, _files) is fine; a private name is not
                private = a.name.startswith("_") and not a.name.startswith("__")
                if private and target.rpartition(".")[2] != a.name and f"{target}.{a.name}" not in MODULES:
                    bad.add(f"{m} imports {a.name} from {target}")
    assert sorted(bad) == []


def test_only_the_dispatch_layer_loads_the_native_modules():
    """Before: probes/layouts.py read the native loader directly."""
    users = sorted({m for m in MODULES for _, t, _ in imports(m) if t == "pyred._native"})
    assert users == ["pyred", "pyred.ops.dispatch"]


def test_no_test_only_code_ships():
    assert "pyred.probes.reference" not in MODULES
    native = pyred._native.cpu_module()
    assert native is None or not hasattr(native, "exp_nonpositive")


def test_no_function_is_over_80_lines():
    """Before: extract_features (97 lines), layer_cka (94) and study.config.validate (86)."""
    long = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(open(path).read())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 80:
                long.append(f"{name}.{node.name}: {node.end_lineno - node.lineno + 1} lines")
    assert long == []
