"""Array marshalling at the API boundary: torch, numpy and cupy in, the same kind out.

Everything inside pyred computes on torch tensors; numpy arrays become CPU
tensors (sharing memory) and cupy arrays become CUDA tensors through DLPack
(zero-copy). Results go back to the caller's kind and device.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def kind_of(x: Any) -> str:
    """'torch', 'cupy' or 'numpy' (anything else numpy can read counts as numpy)."""
    if isinstance(x, torch.Tensor):
        return "torch"
    if type(x).__module__.split(".")[0] == "cupy":
        return "cupy"
    return "numpy"


def to_torch(x: Any, name: str) -> tuple[torch.Tensor, str]:
    """Returns (tensor, kind). numpy/cupy memory is shared, not copied."""
    kind = kind_of(x)
    if kind == "torch":
        return x, kind
    if kind == "cupy":
        return torch.from_dlpack(x), kind  # type: ignore[attr-defined]  # torch does not list it in __all__
    try:
        arr = np.asarray(x)
    except Exception as exc:
        raise TypeError(f"{name}: expected a torch tensor, numpy array or cupy array, got {type(x).__name__}") from exc
    if arr.dtype == object:
        raise TypeError(f"{name}: expected a numeric array, got an object array (ragged or mixed input?)")
    if arr.dtype.kind in "USV":
        raise TypeError(f"{name}: expected a numeric array, got dtype {arr.dtype} (strings or bytes)")
    if not arr.flags.writeable or any(s < 0 for s in arr.strides):
        # torch.from_numpy warns on read-only arrays and refuses negative strides (a[::-1])
        arr = arr.copy()
    return torch.from_numpy(arr), kind


def from_torch(t: torch.Tensor, kind: str) -> Any:
    """Converts a result tensor back to the caller's kind."""
    if kind == "torch":
        return t
    if kind == "cupy":
        import cupy

        return cupy.from_dlpack(t.contiguous())
    return t.detach().cpu().numpy()


def as_float(t: torch.Tensor, name: str) -> torch.Tensor:
    """float32/float64 stay; float16/bfloat16 widen to float32; anything else is refused."""
    if t.dtype in (torch.float32, torch.float64):
        return t
    if t.dtype in (torch.float16, torch.bfloat16):
        return t.float()
    raise TypeError(f"{name}: expected a floating-point array (float16/32/64), got dtype {t.dtype}")


def float_matrix(x: Any, name: str, *, check_finite: bool = True) -> tuple[torch.Tensor, str]:
    """Validates an (n, d) floating array and returns (tensor, kind).

    Raises ValueError naming ``name`` for a wrong rank, an empty axis or a
    NaN/Inf entry (with the first bad row and column); TypeError for a
    non-floating dtype. The tensor is detached from any autograd graph.
    """
    t, kind = to_torch(x, name)
    t = t.detach()  # features are data here: results carry no autograd history (pyred.cka_autograd has it)
    if t.dim() != 2:
        raise ValueError(f"{name}: expected a 2-D (samples, features) array, got shape {tuple(t.shape)}")
    if t.shape[0] == 0 or t.shape[1] == 0:
        raise ValueError(f"{name}: expected at least one sample and one feature, got shape {tuple(t.shape)}")
    t = as_float(t, name)
    if check_finite:
        check_all_finite(t, name)
    return t, kind


def check_all_finite(t: torch.Tensor, name: str) -> None:
    """Raises ValueError naming the first (row, column) that is NaN or Inf."""
    # A NaN/Inf anywhere makes the column sums non-finite: one cheap reduction
    # (a sixth of isfinite().all() here); the full test runs only when the sums
    # are not finite (a bad value, or finite values whose sum overflows).
    if t.numel() and bool(torch.isfinite(t.sum(0) if t.dim() > 1 else t.sum()).all()):
        return
    finite = torch.isfinite(t)
    if bool(finite.all()):
        return
    bad = (~finite).nonzero()[0].tolist()
    where = ", ".join(str(i) for i in bad)
    value = t[tuple(bad)].item()
    label = "row, column" if t.dim() == 2 else "position"
    raise ValueError(f"{name}: contains a non-finite value ({value}) at ({label}) = ({where}); "
                     "pyred needs finite features")
