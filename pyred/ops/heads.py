"""Gathered linear heads: K probes at once, head k reading only its neuron subset.

``gathered_linear`` computes logits[k] = X[:, S_k] @ W_k and
``gathered_weight_grad`` the weight gradient X[:, S_k]^T G_k, with the weights
of all heads packed into one (nnz, C) array whose rows follow
``subsets.indices`` (head k owns rows ``offsets[k]:offsets[k+1]``). Neither forms
X[:, S_k] per head nor multiplies zero rows of a masked full-width weight. Both
are ``torch.library`` custom ops (``torch.ops.pyred.gathered_forward`` /
``gathered_weight_grad``) and the forward is wired into autograd.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..subsets import Subsets, as_subsets
from .arrays import as_float, from_torch, to_torch
from .dispatch import DTYPE_CODE, address, call_native, check_backend, native_for


# -- pure-torch references (fallback and test oracle) ----------------------------------------
def gathered_forward_torch(X: torch.Tensor, indices: torch.Tensor, offsets: torch.Tensor,
                           W: torch.Tensor) -> torch.Tensor:
    K, (B, C) = offsets.numel() - 1, (X.shape[0], W.shape[1])
    out = X.new_empty(K, B, C)
    off = offsets.tolist()
    for k in range(K):
        out[k] = X[:, indices[off[k]:off[k + 1]]] @ W[off[k]:off[k + 1]]
    return out


def gathered_weight_grad_torch(X: torch.Tensor, indices: torch.Tensor, offsets: torch.Tensor,
                               G: torch.Tensor) -> torch.Tensor:
    dW = X.new_empty(indices.numel(), G.shape[2])
    off = offsets.tolist()
    for k in range(len(off) - 1):
        dW[off[k]:off[k + 1]] = X[:, indices[off[k]:off[k + 1]]].T @ G[k]
    return dW


def features_major(X: torch.Tensor) -> torch.Tensor:
    """X (B, d) -> XT (d, B) view of a buffer whose rows are padded to B + 16.

    Rows of XT then do not sit a power of two apart, which would map a batch
    slice of XT onto a fraction of the cache sets (for batches of 256, say), and a
    batch whose size is not a multiple of 16 needs no
    padded copy inside the kernels. Transpose a batch once and pass XT to both kernels.
    """
    B, d = X.shape
    buf = X.new_empty(d, B + 16)
    buf[:, :B].copy_(X.T)
    buf[:, B:].zero_()  # the kernels read whole tiles of 16 rows: zeros past B (never stored)
    return buf[:, :B]


def _xt_args(XT: torch.Tensor) -> tuple[torch.Tensor, int, int, int]:
    """(XT, d, B, ldx) of a features-major batch whose rows are contiguous. The kernels may read all d * ldx
    elements from XT's first (row padding included: whole tiles of 16 rows), so a view whose storage ends
    before that (one cut from inside a wider buffer) is copied."""
    if XT.stride(1) != 1 and XT.shape[1] > 1:
        raise ValueError("XT: rows must be contiguous (stride 1 along the batch)")
    d, B = XT.shape
    ldx = max(XT.stride(0), B)
    if XT.numel() and XT.untyped_storage().nbytes() // XT.element_size() - XT.storage_offset() < d * ldx:
        XT, ldx = XT.contiguous(), B
    return XT, d, B, ldx


def _operand(t: torch.Tensor, XT: torch.Tensor, name: str) -> torch.Tensor:
    """t as the kernels read it: XT's dtype and device, C-contiguous (a transposed view is copied, not misread)."""
    if t.dtype != XT.dtype or t.device != XT.device:
        raise TypeError(f"{name}: expected {XT.dtype} on {XT.device} like XT, got {t.dtype} on {t.device}")
    return t.contiguous()


def _lists(indices: torch.Tensor, offsets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if indices.dtype != torch.int64 or offsets.dtype != torch.int64:
        raise TypeError(f"indices, offsets: expected int64, got {indices.dtype} and {offsets.dtype}")
    return indices.contiguous(), offsets.contiguous()


def forward_xt(XT: torch.Tensor, indices: torch.Tensor, offsets: torch.Tensor, W: torch.Tensor,
               backend: str = "auto") -> torch.Tensor:
    """Native gathered forward on a features-major batch XT (d, B): returns (K, B, C).

    XT may have padded rows (see :func:`features_major`). Index lists are trusted
    (Subsets validates them); W is copied if it is not contiguous.
    """
    W = _operand(W, XT, "W")
    indices, offsets = _lists(indices, offsets)
    module = native_for(XT, backend)
    if module is None:
        return gathered_forward_torch(XT.T, indices, offsets, W)
    XT, d, B, ldx = _xt_args(XT)
    C = W.shape[1]
    out = XT.new_empty(offsets.numel() - 1, B, C)
    call_native(module, "gathered_forward", XT, XT=address(XT), XT_count=d * ldx, dtype=DTYPE_CODE[XT.dtype], B=B,
                ldx=ldx, d=d, indices=address(indices), nnz=indices.numel(), offsets=address(offsets),
                num_offsets=offsets.numel(), W=address(W), W_count=W.numel(), C=C, out=address(out),
                out_count=out.numel())
    return out


def weight_grad_xt(XT: torch.Tensor, indices: torch.Tensor, offsets: torch.Tensor, G: torch.Tensor,
                   backend: str = "auto") -> torch.Tensor:
    """Native gathered weight gradient on a features-major batch XT (d, B): returns (nnz, C)."""
    G = _operand(G, XT, "G")
    indices, offsets = _lists(indices, offsets)
    module = native_for(XT, backend)
    if module is None:
        return gathered_weight_grad_torch(XT.T, indices, offsets, G)
    XT, d, B, ldx = _xt_args(XT)
    C = G.shape[2]
    dW = XT.new_empty(indices.numel(), C)
    call_native(module, "gathered_weight_grad", XT, XT=address(XT), XT_count=d * ldx, dtype=DTYPE_CODE[XT.dtype],
                B=B, ldx=ldx, d=d, indices=address(indices), nnz=indices.numel(), offsets=address(offsets),
                num_offsets=offsets.numel(), G=address(G), G_count=G.numel(), C=C, dW=address(dW),
                dW_count=dW.numel())
    return dW


def _forward_impl(X: torch.Tensor, indices: torch.Tensor, offsets: torch.Tensor, W: torch.Tensor,
                  backend: str = "auto") -> torch.Tensor:
    return forward_xt(features_major(X), indices, offsets, W.contiguous(), backend)


def _weight_grad_impl(X: torch.Tensor, indices: torch.Tensor, offsets: torch.Tensor, G: torch.Tensor,
                      backend: str = "auto") -> torch.Tensor:
    return weight_grad_xt(features_major(X), indices, offsets, G.contiguous(), backend)


# -- custom ops ----------------------------------------------------------------------------
@torch.library.custom_op("pyred::gathered_forward", mutates_args=())
def _forward_op(X: torch.Tensor, indices: torch.Tensor, offsets: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    return _forward_impl(X, indices, offsets, W)


@_forward_op.register_fake
def _(X: torch.Tensor, indices: torch.Tensor, offsets: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    return X.new_empty(offsets.shape[0] - 1, X.shape[0], W.shape[1])


@torch.library.custom_op("pyred::gathered_weight_grad", mutates_args=())
def _weight_grad_op(X: torch.Tensor, indices: torch.Tensor, offsets: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
    return _weight_grad_impl(X, indices, offsets, G)


@_weight_grad_op.register_fake
def _(X: torch.Tensor, indices: torch.Tensor, offsets: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
    return X.new_empty(indices.shape[0], G.shape[2])


def _setup_context(ctx: Any, inputs: tuple[torch.Tensor, ...], output: Any) -> None:
    X, indices, offsets, W = inputs
    ctx.save_for_backward(X, indices, offsets, W)


def input_grad(X: torch.Tensor, indices: torch.Tensor, offsets: torch.Tensor, W: torch.Tensor,
               grad: torch.Tensor) -> torch.Tensor:
    """dX (B, d) of the gathered heads: head k adds G_k W_k^T (B, m_k) into X's columns S_k.

    One (B, m_k) product per head, so memory is O(B d + nnz C) -- never the
    (nnz, B, C) tensor of a one-shot einsum (8.6 GB at nnz = 843k, B = 256, C = 10).
    """
    dX = torch.zeros_like(X)
    off = offsets.tolist()
    for k in range(len(off) - 1):
        b, e = off[k], off[k + 1]
        if e > b:
            dX.index_add_(1, indices[b:e], grad[k] @ W[b:e].T)
    return dX


def _backward(ctx: Any, grad: torch.Tensor, weight_grad: Callable[..., torch.Tensor] = _weight_grad_op
              ) -> tuple[torch.Tensor | None, None, None, torch.Tensor | None]:
    """Gradients of the custom op (traced: the weight gradient stays an opaque op); the eager
    autograd.Function passes the implementation itself."""
    X, indices, offsets, W = ctx.saved_tensors
    dX = dW = None
    if ctx.needs_input_grad[3]:
        dW = weight_grad(X, indices, offsets, grad)
    if ctx.needs_input_grad[0]:
        dX = input_grad(X, indices, offsets, W, grad)
    return dX, None, None, dW


_forward_op.register_autograd(_backward, setup_context=_setup_context)


class _GatheredLinear(torch.autograd.Function):
    """The eager path of ``gathered_linear``: the same forward and backward as the custom op, without
    its dispatch (whose first call imports torch's compiler stack)."""

    @staticmethod
    def forward(ctx: Any, X: torch.Tensor, indices: torch.Tensor, offsets: torch.Tensor,
                W: torch.Tensor) -> torch.Tensor:
        _setup_context(ctx, (X, indices, offsets, W), None)
        return _forward_impl(X, indices, offsets, W)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, None, None, torch.Tensor | None]:
        return _backward(ctx, grad.contiguous(), _weight_grad_impl)


# -- public API --------------------------------------------------------------------------
def _prepare(X: Any, subsets: Subsets | Any, name_w: str, other: Any, backend: str
             ) -> tuple[torch.Tensor, str, Subsets, torch.Tensor]:
    x, kind = to_torch(X, "X")
    if x.dim() != 2:
        raise ValueError(f"X: expected a 2-D (batch, features) array, got shape {tuple(x.shape)}")
    x = as_float(x, "X")
    S = as_subsets(subsets, x.shape[1]).to(x.device)
    o, _ = to_torch(other, name_w)
    o = as_float(o, name_w)
    if o.device != x.device:
        raise ValueError(f"{name_w}: expected the same device as X ({x.device}), got {o.device}")
    if o.dtype != x.dtype:
        o = o.to(x.dtype)
    check_backend(backend)
    return x, kind, S, o


def gathered_linear(X: Any, W: Any, subsets: Subsets | Any, *, backend: str = "auto") -> Any:
    """Logits of K gathered linear heads: ``out[k] = X[:, S_k] @ W[offsets[k]:offsets[k+1]]``.

    Args:
      X: (B, d) float features (torch CPU/CUDA, numpy or cupy).
      W: (nnz, C) packed head weights, rows in the order of ``subsets.indices``
        (same dtype as X after widening; cast if not).
      subsets: K subsets of [0, d) (a :class:`pyred.Subsets` or index lists).
      backend: "auto" (the custom op, native kernels when loaded; differentiable
        in X and W), "native" or "torch" (the per-head reference).

    Returns:
      (K, B, C) logits of X's dtype, kind and device (no bias: add it yourself).
    """
    x, kind, S, w = _prepare(X, subsets, "W", W, backend)
    if w.dim() != 2 or w.shape[0] != S.nnz:
        raise ValueError(f"W: expected shape ({S.nnz}, C) -- one row per subset index -- got {tuple(w.shape)}")
    if backend == "auto":
        # The custom op where torch.compile traces; eager calls skip its dispatch.
        out = _forward_op(x, S.indices, S.offsets, w) if torch.compiler.is_compiling() else \
            _GatheredLinear.apply(x, S.indices, S.offsets, w)
    else:
        out = _forward_impl(x, S.indices, S.offsets, w, backend)
    return from_torch(out, kind)


def gathered_weight_grad(X: Any, G: Any, subsets: Subsets | Any, *, backend: str = "auto") -> Any:
    """Weight gradient of K gathered heads: ``dW[offsets[k]:offsets[k+1]] = X[:, S_k]^T @ G[k]``.

    Args:
      X: (B, d) float features; G: (K, B, C) gradients of the logits.
      subsets: the K subsets; backend: as in :func:`gathered_linear`.

    Returns:
      (nnz, C) packed weight gradient of X's dtype, kind and device.
    """
    x, kind, S, g = _prepare(X, subsets, "G", G, backend)
    if g.dim() != 3 or g.shape[0] != len(S) or g.shape[1] != x.shape[0]:
        raise ValueError(f"G: expected shape ({len(S)}, {x.shape[0]}, C) -- (heads, batch, classes) -- "
                         f"got {tuple(g.shape)}")
    if backend == "auto" and torch.compiler.is_compiling():
        out = _weight_grad_op(x, S.indices, S.offsets, g)
    else:
        out = _weight_grad_impl(x, S.indices, S.offsets, g, backend)
    return from_torch(out, kind)
