"""Which kernels run an op, and how they are called.

Every op runs on the device of its data: the C++ module ``pyred._C`` for CPU
tensors, ``pyred._C_cuda`` for CUDA tensors (on the caller's current stream),
and the pure-torch reference where a native module is missing or
``backend="torch"`` asks for it. The native entry points take raw addresses,
element counts and sizes by keyword (their pybind11 argument names), so the
native code never links libtorch.
"""

from __future__ import annotations

from typing import Any, Literal

import torch

from .. import _native

Backend = Literal["auto", "native", "torch"]
BACKENDS: tuple[str, ...] = ("auto", "native", "torch")
DTYPE_CODE = {torch.float32: 0, torch.float64: 1}  # the kernels' code for each dtype they take


def check_backend(backend: str) -> None:
    """ValueError naming ``backend`` unless it is one of BACKENDS."""
    if backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")


def native_for(t: torch.Tensor, backend: str) -> Any:
    """The native module for t's device, or None for the torch path (RuntimeError when ``backend`` is
    "native" and there is none)."""
    if backend == "torch":
        return None
    module = _native.cuda_module() if t.is_cuda else _native.cpu_module() if t.device.type == "cpu" else None
    if module is None and backend == "native":
        raise RuntimeError(f"backend='native': no native kernels for device {t.device} "
                           f"(pyred.native_info() says why)")
    return module


def address(t: torch.Tensor) -> int:
    """The tensor's data address as the kernels take it (0 for an empty tensor)."""
    return t.data_ptr() if t.numel() else 0


def call_native(module: Any, name: str, like: torch.Tensor, **arguments: Any) -> Any:
    """``module.name(**arguments, stream=...)``: both native modules take the same arguments; for a CUDA
    tensor the call runs with ``like``'s device current and on its current stream (the CPU module
    ignores the stream)."""
    if like.is_cuda:
        with torch.cuda.device(like.device):
            return getattr(module, name)(**arguments, stream=torch.cuda.current_stream(like.device).cuda_stream)
    return getattr(module, name)(**arguments, stream=0)


def cpu_simd() -> str | None:
    """The SIMD level the CPU kernels run at here (see :func:`pyred.native_info`), or None without them."""
    return _native.cpu_simd()


def cpu_kernels() -> Any:
    """The CPU module, or None (for ops that exist on the CPU only)."""
    return _native.cpu_module()
