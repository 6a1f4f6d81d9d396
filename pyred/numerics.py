"""Scale-safe arithmetic shared by every CKA road: ratios, power-of-two scaling, finiteness.

CKA is invariant to scaling either representation, so each road multiplies its
input by a power of two 2^-E before forming any product: exact (only the
exponent changes, subnormal input included), and it keeps the degree-4 sums
that HSIC is made of inside the floating-point range. E stays 0 -- the input
is used as it is -- while the largest entry is within 2^(+-SAFE) of 1, where
those sums cannot overflow or underflow; past that window E is that entry's
binary exponent.
"""

from __future__ import annotations

import math

import torch

# The window, per compute dtype, inside which input is used unscaled: degree-4 sums of entries
# below 2^SAFE stay far from float32's 2^128 and float64's 2^1024 (and symmetrically above the
# smallest normal numbers), whatever the number of samples and features.
SAFE = {torch.float32: 20, torch.float64: 64}


def ratio(num: torch.Tensor, den_a: torch.Tensor, den_b: torch.Tensor) -> torch.Tensor:
    """num / sqrt(den_a den_b), elementwise (broadcasting), as num / sqrt(den_a) / sqrt(den_b) so that
    the product of the two degree-4 denominators is never formed (it would overflow or underflow
    where each alone does not). 0 where a side has no (estimated) variance (den <= 0). A NaN stays
    NaN -- it is never turned into a plausible 0 -- and callers raise on it. Differentiable: the
    square roots only ever see positive values."""
    safe = (den_a > 0) & (den_b > 0)
    one = torch.ones((), dtype=num.dtype, device=num.device)
    root = torch.sqrt(torch.where(den_a > 0, den_a, one)) * torch.sqrt(torch.where(den_b > 0, den_b, one))
    out = torch.where(safe, num / root, torch.zeros_like(num))
    nan = torch.isnan(den_a) | torch.isnan(den_b) | torch.isnan(num)
    return torch.where(nan, torch.full_like(out, float("nan")), out)


def require_finite(values: torch.Tensor, what: str) -> torch.Tensor:
    """``values``, or FloatingPointError: a non-finite result from finite input is pyred's fault."""
    if not bool(torch.isfinite(values).all()):
        raise FloatingPointError(f"{what}: the computation produced a non-finite value for finite input; "
                                 "please report this with the input's shape, dtype and value range")
    return values


def ldexp(t: torch.Tensor, k: int, inplace: bool = False) -> torch.Tensor:
    """t * 2^k, exact, in steps small enough that no power of two overflows t's dtype."""
    while k:
        step = max(-100, min(100, k))
        t = t.mul_(2.0 ** step) if inplace else t * (2.0 ** step)
        inplace = True  # t is a fresh tensor from here on
        k -= step
    return t


def absmax(t: torch.Tensor) -> float:
    """max |t| as a Python float (0.0 for an empty tensor)."""
    if not t.numel():
        return 0.0
    lo, hi = torch.aminmax(t.detach())
    return max(-float(lo), float(hi))


def exponent(value: float) -> int | None:
    """The binary exponent e of value (value = m 2^e with 0.5 <= |m| < 1); None for 0."""
    return math.frexp(value)[1] if value else None


def input_exponent(t: torch.Tensor, dtype: torch.dtype) -> int:
    """The E to scale ``t`` by (t * 2^-E) before it is multiplied in ``dtype``: 0 inside the window
    (see the module docstring), else the exponent of max |t|."""
    e = exponent(absmax(t))
    return 0 if e is None or abs(e) <= SAFE[dtype] else e


def stream_exponent(current: int | None, e: int | None, dtype: torch.dtype) -> int:
    """The common E of a stream of chunks after one whose largest entry has exponent ``e`` (None: all
    zeros), given the E so far (None before the first chunk). E only grows: it stays 0 while every
    chunk is inside the window, and follows the largest exponent once one is not -- so earlier sums
    are rescaled only when a chunk is far larger than every one before it."""
    safe = SAFE[dtype]
    if current is None:
        return 0 if e is None or abs(e) <= safe else e
    if e is not None and (e - current > safe or (current != 0 and e > current)):
        return e if abs(e) > safe else 0
    return current
