"""The docs say what the code does: docs/api.md's signatures are the code's, every public name is
documented, the README's kernel example runs, and every file the README links to exists."""

import inspect
import os
import re

import pytest

import pyred
import pyred.datasets
import pyred.study

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
API = os.path.join(ROOT, "docs", "api.md")
README = os.path.join(ROOT, "README.md")

pytestmark = pytest.mark.skipif(not os.path.exists(API), reason="docs/ is not beside the tests (an installed copy)")


def documented() -> list[tuple[str, str]]:
    """(dotted name, signature text) of every '### `pyred.name(...)`' heading of docs/api.md."""
    out = []
    for line in open(API, encoding="utf-8"):
        m = re.match(r"### `(pyred(?:\.\w+)+)(\(.*\))`$", line.strip())
        if m:
            out.append((m.group(1), m.group(2)))
    return out


def signature_text(obj) -> str:
    """The signature as the docs write it: no annotations."""
    sig = inspect.signature(obj)
    params = [p.replace(annotation=inspect.Parameter.empty) for p in sig.parameters.values()]
    text = str(sig.replace(parameters=params, return_annotation=inspect.Signature.empty))
    return text.replace("<built-in function print>", "print")


def resolve(dotted: str):
    obj = pyred
    for part in dotted.split(".")[1:]:
        obj = getattr(obj, part)
    return obj


@pytest.mark.parametrize("name, written", documented())
def test_each_documented_signature_is_the_codes(name, written):
    assert signature_text(resolve(name)) == written, name


def test_every_public_callable_is_documented():
    names = {n for n, _ in documented()}
    public = [f"pyred.{n}" for n in pyred.__all__ if callable(getattr(pyred, n)) and not n.startswith("_")]
    types_documented_in_prose = {"pyred.FeatureSet", "pyred.Moments", "pyred.ProbeEvaluation", "pyred.ProbeResult"}
    missing = [n for n in public if n not in names and n not in types_documented_in_prose]
    assert missing == []
    text = open(API, encoding="utf-8").read()
    assert all(n.split(".")[-1] in text for n in types_documented_in_prose)


def test_the_readme_is_a_front_door_whose_links_hold():
    text = open(README, encoding="utf-8").read()
    assert len(text.splitlines()) <= 250
    for target in re.findall(r"\]\(([^)#]+)\)", text):
        if not target.startswith("http"):
            assert os.path.exists(os.path.join(ROOT, target)), target


def test_the_readmes_kernel_example_runs():
    text = open(README, encoding="utf-8").read()
    block = text.split("## For your own code: the kernels", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    scope: dict = {}
    exec(compile(block, "README.md (kernels)", "exec"), scope)  # noqa: S102 -- the README's own example
    assert scope["cka"].shape == (len(scope["S"]),)
