import json
import os
import shutil
import subprocess
import sys

import pytest

import pyred


def test_native_info_fields():
    info = pyred.native_info()
    assert set(info) >= {"cpu_module", "openmp", "cpu_threads", "cuda_compiled", "cuda_runtime_version",
                         "cuda_device_usable", "cuda_devices", "errors", "torch"}
    assert isinstance(info["cpu_module"], bool) and isinstance(info["errors"], dict)
    if info["cuda_device_usable"]:
        assert info["cuda_compiled"] and info["cuda_devices"] >= 1


def test_ci_build_has_the_native_modules():
    # In CI the package is built from source on a machine with a compiler (and nvcc):
    # a missing module there is a build problem, not a reason to fall back silently.
    if os.environ.get("CI") != "true":
        return
    info = pyred.native_info()
    assert info["cpu_module"], info["errors"]
    if shutil.which("nvcc"):
        assert info["cuda_compiled"], info["errors"]


BLOCKER = r"""
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name in ("pyred._C", "pyred._C_cuda"):
            raise ImportError("blocked for the test: " + name)
sys.meta_path.insert(0, Block())
import json, numpy as np, pyred
rng = np.random.default_rng(0)
X = rng.normal(size=(50, 8))
info = pyred.native_info()
print(json.dumps({"info": info, "cka": pyred.subset_cka(X, [[0, 1], [2]]).tolist(),
                  "sums": pyred.ops.gathered_block_sums(np.eye(8), [[0, 1], [2, 5]]).tolist()}))
"""


@pytest.mark.slow
def test_import_falls_back_to_torch_without_native_modules():
    out = subprocess.run([sys.executable, "-c", BLOCKER], capture_output=True, text=True, check=True)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["info"]["cpu_module"] is False and res["info"]["cuda_compiled"] is False
    assert "blocked for the test" in res["info"]["errors"]["_C"]
    assert res["sums"] == [2.0, 2.0]
    import numpy as np

    X = np.random.default_rng(0).normal(size=(50, 8))
    np.testing.assert_allclose(res["cka"], pyred.subset_cka(X, [[0, 1], [2]]), rtol=1e-12)
