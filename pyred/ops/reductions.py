"""Gathered reductions over many neuron subsets: the public face of the kernels.

``segment_sums`` and ``gathered_block_sums`` validate their inputs, then run on
the device of the data: the C++ kernels for CPU tensors, the CUDA kernels (on
the caller's current stream, without synchronising) for CUDA tensors, and the
pure-torch reference where a native module is missing. Both are also
registered as ``torch.library`` custom ops (``torch.ops.pyred.segment_sums``
and ``torch.ops.pyred.block_sums``) with fake implementations, so they compose
with ``torch.compile``.
"""

from __future__ import annotations

from typing import Any

import torch

from ..subsets import Subsets, as_subsets
from .arrays import as_float, from_torch, to_torch
from .dispatch import DTYPE_CODE, address, call_native, check_backend, native_for
from .reference import block_sums_backward, block_sums_torch, segment_sums_backward, segment_sums_torch


# -- custom ops: tensors in, tensors out; inputs are already validated -----------------
@torch.library.custom_op("pyred::segment_sums", mutates_args=())
def _segment_sums_op(values: torch.Tensor, indices: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    return _segment_sums_impl(values, indices, offsets, "auto")


@_segment_sums_op.register_fake
def _(values: torch.Tensor, indices: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    return values.new_empty((offsets.shape[0] - 1, values.shape[0]), dtype=torch.float64)


@torch.library.custom_op("pyred::block_sums", mutates_args=())
def _block_sums_op(mats: torch.Tensor, row_indices: torch.Tensor, row_offsets: torch.Tensor,
                   col_indices: torch.Tensor, col_offsets: torch.Tensor, max_rows: int) -> torch.Tensor:
    return _block_sums_impl(mats, row_indices, row_offsets, col_indices, col_offsets, max_rows, "auto")


@_block_sums_op.register_fake
def _(mats: torch.Tensor, row_indices: torch.Tensor, row_offsets: torch.Tensor, col_indices: torch.Tensor,
      col_offsets: torch.Tensor, max_rows: int) -> torch.Tensor:
    return mats.new_empty((row_offsets.shape[0] - 1, mats.shape[0]), dtype=torch.float64)


# -- autograd: both reductions are linear in their array, so the backward is a scatter of the output's
# gradient (in pure torch: the gradient of a sum over K lists costs what the sums cost).
def _segment_sums_setup(ctx: Any, inputs: tuple[torch.Tensor, ...], output: Any) -> None:
    values, indices, offsets = inputs
    ctx.save_for_backward(indices, offsets)
    ctx.shape, ctx.dtype = values.shape, values.dtype


def _segment_sums_grad(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
    indices, offsets = ctx.saved_tensors
    return segment_sums_backward(grad, indices, offsets, ctx.shape[1]).to(ctx.dtype), None, None


def _block_sums_setup(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
    mats, row_indices, row_offsets, col_indices, col_offsets, _ = inputs
    ctx.save_for_backward(row_indices, row_offsets, col_indices, col_offsets)
    ctx.shape, ctx.dtype = mats.shape, mats.dtype


def _block_sums_grad(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None, None, None, None]:
    d = ctx.shape[-1]
    saved: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] = ctx.saved_tensors
    return (block_sums_backward(grad, *saved, d).to(ctx.dtype), None, None, None, None, None)


_segment_sums_op.register_autograd(_segment_sums_grad, setup_context=_segment_sums_setup)
_block_sums_op.register_autograd(_block_sums_grad, setup_context=_block_sums_setup)


class _SegmentSums(torch.autograd.Function):
    """The eager path of segment_sums for values that require grad (the custom op's dispatch imports
    torch's compiler stack on its first call)."""

    @staticmethod
    def forward(ctx: Any, values: torch.Tensor, indices: torch.Tensor, offsets: torch.Tensor,
                backend: str) -> torch.Tensor:
        _segment_sums_setup(ctx, (values, indices, offsets), None)
        return _segment_sums_impl(values, indices, offsets, backend)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:
        return (*_segment_sums_grad(ctx, grad), None)


class _BlockSums(torch.autograd.Function):
    """The eager path of gathered_block_sums for mats that require grad."""

    @staticmethod
    def forward(ctx: Any, mats: torch.Tensor, row_indices: torch.Tensor, row_offsets: torch.Tensor,
                col_indices: torch.Tensor, col_offsets: torch.Tensor, max_rows: int, backend: str) -> torch.Tensor:
        _block_sums_setup(ctx, (mats, row_indices, row_offsets, col_indices, col_offsets, max_rows), None)
        return _block_sums_impl(mats, row_indices, row_offsets, col_indices, col_offsets, max_rows, backend)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None, None, None, None, None]:
        return (*_block_sums_grad(ctx, grad), None)


def _segment_sums_impl(values: torch.Tensor, indices: torch.Tensor, offsets: torch.Tensor,
                       backend: str) -> torch.Tensor:
    module = native_for(values, backend)
    if module is None:
        return segment_sums_torch(values, indices, offsets)
    M, d = values.shape
    out = torch.empty(offsets.numel() - 1, M, dtype=torch.float64, device=values.device)
    call_native(module, "segment_sums", values, values=address(values), values_count=values.numel(),
                dtype=DTYPE_CODE[values.dtype], M=M, d=d, indices=address(indices), nnz=indices.numel(),
                offsets=address(offsets), num_offsets=offsets.numel(), out=address(out), out_count=out.numel())
    return out


def _block_sums_impl(mats: torch.Tensor, row_indices: torch.Tensor, row_offsets: torch.Tensor,
                     col_indices: torch.Tensor, col_offsets: torch.Tensor, max_rows: int,
                     backend: str) -> torch.Tensor:
    module = native_for(mats, backend)
    if module is None:
        return block_sums_torch(mats, row_indices, row_offsets, col_indices, col_offsets)
    M, d, _ = mats.shape
    out = torch.empty(row_offsets.numel() - 1, M, dtype=torch.float64, device=mats.device)
    call_native(module, "block_sums", mats, mats=address(mats), mats_count=mats.numel(), dtype=DTYPE_CODE[mats.dtype],
                M=M, d=d, row_indices=address(row_indices), row_nnz=row_indices.numel(),
                row_offsets=address(row_offsets), row_num_offsets=row_offsets.numel(),
                col_indices=address(col_indices), col_nnz=col_indices.numel(), col_offsets=address(col_offsets),
                col_num_offsets=col_offsets.numel(), max_rows=max_rows, out=address(out), out_count=out.numel())
    return out


# -- public API ---------------------------------------------------------------------------
def segment_sums(values: Any, subsets: Subsets | Any, *, backend: str = "auto") -> Any:
    """Sums of values over each subset: ``out[k, m] = sum_{i in S_k} values[m, i]``.

    Args:
      values: (d,) or (M, d) float16/32/64 array (torch CPU/CUDA, numpy or cupy).
      subsets: a :class:`pyred.Subsets` (or a sequence of index lists) over [0, d).
      backend: "auto" (native kernels when loaded, else torch), "native" (fail
        without them) or "torch" (the pure-torch reference).

    Returns:
      float64 array of shape (K,) for 1-D values, (K, M) for 2-D, of the
      input's kind and device; differentiable in ``values`` (a torch tensor that
      requires grad gets an exact gradient).
    """
    t, kind = to_torch(values, "values")
    if t.dim() not in (1, 2):
        raise ValueError(f"values: expected a (d,) or (M, d) array, got shape {tuple(t.shape)}")
    squeeze = t.dim() == 1
    t = as_float(t, "values")
    if squeeze:
        t = t.unsqueeze(0)
    if t.shape[0] < 1 or t.shape[1] < 1:
        raise ValueError(f"values: expected a non-empty array, got shape {tuple(t.shape)}")
    subsets = as_subsets(subsets, t.shape[1]).to(t.device)
    check_backend(backend)
    t = t.contiguous()
    if backend == "auto" and torch.compiler.is_compiling():  # eager calls skip the custom op's dispatch
        out = _segment_sums_op(t, subsets.indices, subsets.offsets)
    elif t.requires_grad and torch.is_grad_enabled():
        out = _SegmentSums.apply(t, subsets.indices, subsets.offsets, backend)
    else:
        out = _segment_sums_impl(t, subsets.indices, subsets.offsets, backend)
    return from_torch(out[:, 0] if squeeze else out, kind)


def gathered_block_sums(mats: Any, rows: Subsets | Any, cols: Subsets | Any | None = None, *,
                        backend: str = "auto") -> Any:
    """Block sums of gathered submatrices: ``out[k, m] = sum_{i in rows_k, j in cols_k} mats[m, i, j]``.

    Args:
      mats: (d, d) or (M, d, d) float16/32/64 array (torch CPU/CUDA, numpy or cupy).
      rows: K index lists over [0, d), a :class:`pyred.Subsets` or a sequence of lists.
      cols: K index lists (same K), or None for cols = rows.
      backend: "auto", "native" or "torch" (see :func:`segment_sums`).

    Returns:
      float64 array of shape (K,) for a (d, d) input, (K, M) for (M, d, d), of
      the input's kind and device. Sums are accumulated in float64. Differentiable
      in ``mats``.
    """
    t, kind = to_torch(mats, "mats")
    if t.dim() not in (2, 3) or t.shape[-1] != t.shape[-2]:
        raise ValueError(f"mats: expected a (d, d) or (M, d, d) array, got shape {tuple(t.shape)}")
    squeeze = t.dim() == 2
    t = as_float(t, "mats")
    if squeeze:
        t = t.unsqueeze(0)
    if t.shape[0] < 1 or t.shape[1] < 1:
        raise ValueError(f"mats: expected a non-empty array, got shape {tuple(t.shape)}")
    d = t.shape[-1]
    rows = as_subsets(rows, d, "rows").to(t.device)
    cols = rows if cols is None else as_subsets(cols, d, "cols").to(t.device)
    if len(cols) != len(rows):
        raise ValueError(f"cols: expected {len(rows)} lists (as many as rows), got {len(cols)}")
    check_backend(backend)
    t = t.contiguous()
    args = (t, rows.indices, rows.offsets, cols.indices, cols.offsets, rows.max_size)
    # The custom op where torch.compile traces; eager calls skip its dispatch (its first call imports
    # torch's compiler stack).
    if backend == "auto" and torch.compiler.is_compiling():
        out = _block_sums_op(*args)
    elif t.requires_grad and torch.is_grad_enabled():
        out = _BlockSums.apply(*args, backend)
    else:
        out = _block_sums_impl(*args, backend)
    return from_torch(out[:, 0] if squeeze else out, kind)
