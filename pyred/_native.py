"""Loads the native modules ``pyred._C`` (CPU) and ``pyred._C_cuda`` (CUDA).

Never fails an import: a module that is missing or cannot load is recorded
with its error, and the pure-torch paths in :mod:`pyred.ops` take over.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

_errors: dict[str, str] = {}


def _load(name: str) -> Any:
    try:
        return importlib.import_module(f"pyred.{name}")
    except Exception as exc:  # ImportError, OSError from a bad shared library, ...
        _errors[name] = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, ModuleNotFoundError) and exc.name == f"pyred.{name}":
            here = os.path.dirname(os.path.abspath(__file__))
            _errors[name] += (f" (pyred was imported from {here}; a source checkout holds no compiled "
                              "modules: run from outside it, or install with 'pip install -e .')")
        return None


_C = _load("_C")
_C_cuda = _load("_C_cuda")

SIMD_CAPS = ("avx512f", "avx2", "baseline")  # PYRED_SIMD: the widest SIMD level the CPU heads kernels may use
if os.environ.get("PYRED_SIMD", "") not in ("",) + SIMD_CAPS:
    import warnings

    warnings.warn(f"PYRED_SIMD: expected one of {SIMD_CAPS}, got {os.environ['PYRED_SIMD']!r}; ignored", stacklevel=2)


def cpu_module() -> Any:
    """The CPU kernel module, or None when it did not load."""
    return _C


def cuda_module() -> Any:
    """The CUDA kernel module, or None when it was not built or did not load."""
    return _C_cuda


def cpu_simd() -> str | None:
    """The SIMD level the CPU heads kernels run with here ("avx512f", "avx2" or "baseline": the CPU's
    widest, capped by the environment variable PYRED_SIMD), or None without the CPU module."""
    return str(_C.simd_level()) if _C is not None and hasattr(_C, "simd_level") else None


def cuda_usable() -> bool:
    """True when the CUDA kernels are loaded, torch sees a CUDA device, and so does the
    module's own (static) CUDA runtime -- a driver older than that runtime shows no device
    to it, and the torch paths run instead of failing every call."""
    import torch

    return _C_cuda is not None and torch.cuda.is_available() and int(_C_cuda.device_count()) > 0


def native_info() -> dict[str, Any]:
    """Which native modules loaded, and what they can do.

    Returns a dict with:
      ``cpu_module``: bool, ``pyred._C`` loaded;
      ``openmp``: bool, the CPU kernels were built with OpenMP; ``cpu_threads``: int;
      ``cuda_compiled``: bool, ``pyred._C_cuda`` loaded (it is built whenever nvcc is found);
      ``cuda_runtime_version``: int or None (e.g. 13000 for CUDA 13.0);
      ``cuda_device_usable``: bool, a CUDA device is visible to torch and the CUDA kernels loaded;
      ``cuda_devices``: int, devices torch sees;
      ``errors``: dict of module name to the error that stopped it from loading;
      ``torch``: the torch version.
    """
    import torch

    return {
        "cpu_module": _C is not None,
        "openmp": bool(getattr(_C, "openmp", False)),
        "cpu_threads": int(_C.num_threads()) if _C is not None else 1,
        "cpu_simd": cpu_simd(),
        "cuda_compiled": _C_cuda is not None,
        "cuda_runtime_version": int(_C_cuda.runtime_version) if _C_cuda is not None else None,
        "cuda_device_usable": cuda_usable(),
        "cuda_devices": torch.cuda.device_count() if torch.cuda.is_available() else 0,
        "errors": dict(_errors),
        "torch": torch.__version__,
    }
