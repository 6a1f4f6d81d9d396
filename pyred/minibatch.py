"""Minibatch CKA (Nguyen et al. 2021) for every neuron subset at once.

For minibatches b = 1..B of the same samples through X and the target,

  CKA_mb(S) = sum_b HSIC_1(K_S,b, L_b) / sqrt(sum_b HSIC_1(K_S,b, K_S,b) * sum_b HSIC_1(L_b, L_b))

with HSIC_1 the unbiased estimator of Song et al. (2012) and K_S,b, L_b the
linear Grams of the minibatch. Every subset's terms come from the minibatch's
n_b x n_b Grams, built incrementally along chains of nested subsets
(:mod:`pyred.sample_gram`), so memory is O(n_b^2 + K) whatever the number of
samples or the layer's width.

Bias. Each HSIC_1 is unbiased, but the ratio is not: CKA_mb converges to the
population CKA as the minibatches grow and estimates it with a bias of order
1/n_b otherwise, and it differs from the full-batch debiased CKA of the same
samples; tests/test_minibatch.py::test_bias_against_full_batch measures the gap
on correlated random features (n = 2,048, d = 256, minibatches of 256) and
bounds it.
"""

from __future__ import annotations

from typing import Any, cast

import torch

from . import _checks as check
from .gram import paired_chunk
from .numerics import absmax, exponent, ldexp, ratio, require_finite, stream_exponent
from .ops.arrays import from_torch
from .sample_gram import sample_road_hsic
from .subsets import Subsets, as_subsets

KERNELS = ("linear",)


class MinibatchCKA:
    """Accumulates minibatch CKA for K subsets of a layer X against a target (X itself, or another layer).

    Args:
      subsets: K subsets of X's d columns (a :class:`pyred.Subsets` or index lists).
      target_dim: width e of a target layer fed as ``update(x, y)``; None: the full layer X.
      kernel: "linear".
      batch_size: samples per minibatch; None makes every ``update`` call one minibatch.
        With a batch size, samples are buffered, so how a stream is cut into
        ``update`` calls does not change the result; ``cka()`` counts a last partial
        minibatch if it holds at least 4 samples (fewer are left out), without committing
        it: reading ``cka()`` mid-stream never changes a later answer.
    """

    def __init__(self, subsets: Subsets | Any, target_dim: int | None = None, *, kernel: str = "linear",
                 batch_size: int | None = None) -> None:
        self.subsets = subsets if isinstance(subsets, Subsets) else Subsets.from_lists(subsets)
        if len(self.subsets) == 0:
            raise ValueError("subsets: expected at least one subset, got 0")
        self.target_dim = check.optional_integer(target_dim, "target_dim", min=1)
        self.kernel = check.choice(kernel, "kernel", KERNELS)
        self.batch_size = check.optional_integer(batch_size, "batch_size", min=4)
        self.batches = 0
        self._kl: torch.Tensor | None
        self._kk: torch.Tensor | None
        self._ll: torch.Tensor | None
        self._kl = self._kk = self._ll = None
        self._E: tuple[int | None, int | None]
        self._E = (None, None)  # the powers of two the minibatches are scaled by (see _with_batch)
        self._kind = "torch"
        self._buffer: list[tuple[torch.Tensor, torch.Tensor | None]] = []
        self._dim: int | None = None

    def update(self, x: Any, y: Any = None) -> MinibatchCKA:
        """Adds samples: x (b, d) and, with a target, y (b, target_dim). Returns self."""
        xt, kind, yt = paired_chunk(x, y, self._dim, self.target_dim, "MinibatchCKA", check_finite=True)
        if self._dim is None:
            self._dim, self._kind = xt.shape[1], kind
            self.subsets = as_subsets(self.subsets, self._dim)
        if self.batch_size is None:
            self._add(xt, yt)
            return self
        self._buffer.append((xt, yt))
        while sum(b[0].shape[0] for b in self._buffer) >= self.batch_size:
            bx, by = self._take(self.batch_size)
            self._add(bx, by)
        return self

    def _take(self, count: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        xs, ys, got = [], [], 0
        while got < count:
            bx, by = self._buffer[0]
            need = count - got
            if bx.shape[0] <= need:
                self._buffer.pop(0)
            else:
                self._buffer[0] = (bx[need:], None if by is None else by[need:])
                bx, by = bx[:need], None if by is None else by[:need]
            xs.append(bx)
            ys.append(by)
            got += bx.shape[0]
        return torch.cat(xs), (None if ys[0] is None else torch.cat(cast("list[torch.Tensor]", ys)))  # all or none

    def _add(self, x: torch.Tensor, y: torch.Tensor | None) -> None:
        self._E, (self._kl, self._kk, self._ll) = self._with_batch(x, y)
        self.batches += 1

    def _with_batch(self, x: torch.Tensor, y: torch.Tensor | None
                    ) -> tuple[tuple[int, int], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """(exponents, the accumulated (kl, kk, ll) with this minibatch added), changing nothing.

        Every minibatch is multiplied by the same powers of two 2^-Ex (and 2^-Ey for the target), which
        follow the largest entries seen (:func:`pyred.numerics.stream_exponent`); the sums so far are
        rescaled when they change: kl has degree (2, 2) in (x, y), kk (4, 0) and ll (0, 4)."""
        if x.shape[0] < 4:
            raise ValueError(f"x: the unbiased HSIC needs minibatches of at least 4 samples, got {x.shape[0]}")
        old_x, old_y = self._E
        ex = stream_exponent(old_x, exponent(absmax(x)), _compute_dtype(x))
        ey = ex if y is None else stream_exponent(old_y, exponent(absmax(y)), _compute_dtype(y))
        S = self.subsets.to(x.device)
        kl, kk, ll = sample_road_hsic(x, S, None if y is None else y.to(x.device), debiased=True, exponents=(ex, ey))
        if self._kl is not None:
            # (the exponents and all three sums are set together)
            dx, dy = cast(int, old_x) - ex, cast(int, old_y) - ey
            kl = kl + ldexp(self._kl, 2 * dx + 2 * dy)
            kk = kk + ldexp(cast(torch.Tensor, self._kk), 4 * dx)
            ll = ll + ldexp(cast(torch.Tensor, self._ll), 4 * dy)
        return (ex, ey), (kl, kk, ll)

    def cka(self) -> Any:
        """(K,) float64 minibatch CKA of each subset with the target, of the first batch's kind and device.

        Reading it changes nothing: a buffered partial minibatch of at least 4 samples counts in this
        answer as the last minibatch, and stays buffered for the samples that follow."""
        kl, kk, ll = self._kl, self._kk, self._ll
        rest = sum(b[0].shape[0] for b in self._buffer)
        if rest >= 4:
            x = torch.cat([b[0] for b in self._buffer])
            y = None if self._buffer[0][1] is None else torch.cat([cast(torch.Tensor, b[1]) for b in self._buffer])
            _, (kl, kk, ll) = self._with_batch(x, y)
        if kl is None:
            raise ValueError("MinibatchCKA: no minibatch yet; call update() with at least 4 samples")
        # (kk and ll are set with kl)
        return from_torch(require_finite(ratio(kl, cast(torch.Tensor, kk), cast(torch.Tensor, ll)), "MinibatchCKA"),
                          self._kind)


def _compute_dtype(t: torch.Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32
