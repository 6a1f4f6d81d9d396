"""Streaming moment statistics behind every CKA number in pyred.

Linear CKA between a neuron subset S of a layer X (n x d) and a target T
(the full layer, or another layer Y, n x e) only needs the centred Gram
C = Xc^T Xc and, for the debiased estimator, the fourth-moment matrix
P = (Xc o Xc)^T (Xc o Xc) (design.md, "The algebra"). ``GramStats`` gathers
them from sample chunks in O(d^2) memory: each chunk is shifted by a fixed
reference point (the first chunk's mean unless given), multiplied in the
chunk's precision (float32 keeps GEMM speed; float64 input stays float64),
and added into float64 accumulators; the shift is removed exactly when the
statistics are read. So any chunking gives the same result as one big chunk.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .ops.arrays import check_all_finite, float_matrix, from_torch, to_torch
from .ops.reductions import gathered_block_sums, segment_sums
from .subsets import Subsets, as_subsets

F64 = torch.float64


@dataclass(frozen=True)
class Moments:
    """Centred statistics of n samples (all float64, on the accumulator's device).

    C: (d, d) centred Gram Xc^T Xc.  mean: (d,) the feature means.  P: (d, d) (Xc o Xc)^T (Xc o Xc), debiased only.
    Cxy: (d, e) Xc^T Yc and Cyy: (e, e) Yc^T Yc, with a target only.
    q: (d,) (Xc o Xc)^T u_Y, where u_Y are the per-sample squared norms of Yc
    (debiased with a target only); uu_y: sum of u_Y^2 (idem).
    """

    n: int
    C: torch.Tensor
    mean: torch.Tensor
    P: torch.Tensor | None = None
    Cxy: torch.Tensor | None = None
    Cyy: torch.Tensor | None = None
    q: torch.Tensor | None = None
    uu_y: torch.Tensor | None = None


def _hsic(xy, uu, su_a, su_b, n: int, debiased: bool):
    """Linear HSIC up to a factor that cancels in CKA.

    biased: ||Xa^T Xb||_F^2 of centred features (Kornblith et al. 2019).
    debiased: the unbiased estimator of Song et al. (2012) in feature space,
    ||Xa^T Xb||^2 - n/(n-2) u_a.u_b + (sum u_a)(sum u_b)/((n-1)(n-2)).
    """
    if not debiased:
        return xy
    return xy - n / (n - 2) * uu + su_a * su_b / ((n - 1) * (n - 2))


def _ratio(num, den_a, den_b):
    """num / sqrt(den_a den_b), defined as 0 where a side has no (estimated) variance."""
    prod = den_a * den_b
    safe = prod > 0
    return torch.where(safe, num / torch.sqrt(torch.where(safe, prod, torch.ones_like(prod))),
                       torch.zeros_like(num))


class GramStats:
    """Streaming accumulator for linear CKA of a layer's neuron subsets.

    Args:
      dim: width d of the layer X whose subsets are compared.
      target_dim: width e of a second layer Y fed alongside X (CKA of subsets
        of X against Y); None compares subsets against the full layer X.
      debiased: also gather the fourth moments the unbiased HSIC needs.
      shift, target_shift: (d,) / (e,) reference points subtracted before
        multiplying; the first chunk's means when None. Any value gives the same
        result up to rounding; one near the mean keeps float32 products accurate.
      device: where the accumulators live; the first chunk's device when None.

    Feed ``update(x)`` (or ``update(x, y)``) with (b, d) [and (b, e)] chunks of
    torch/numpy/cupy floats, then read ``subset_cka``, ``subset_pair_cka`` or
    ``cka``. Results are float64 arrays of the first chunk's kind and device.
    Memory is O(d^2 + d e + e^2) float64 whatever the number of samples.
    """

    def __init__(self, dim: int, target_dim: int | None = None, *, debiased: bool = False,
                 shift: Any = None, target_shift: Any = None, device: Any = None):
        for name, v in (("dim", dim), ("target_dim", target_dim)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ValueError(f"{name}: expected an integer >= 1, got {v!r}")
        self.dim, self.target_dim, self.debiased = dim, target_dim, bool(debiased)
        self.n = 0
        self._started = False
        self._device = torch.device(device) if device is not None else None
        self._shift_in = (shift, target_shift)
        self._acc: dict[str, torch.Tensor] = {}
        self._kind = "torch"
        self._moments: Moments | None = None
        self._terms: dict[str, Any] | None = None

    # -- accumulation ----------------------------------------------------------------
    def update(self, x: Any, y: Any = None, *, check_finite: bool = True) -> "GramStats":
        """Adds a chunk: x (b, dim) and, with a target, y (b, target_dim). Returns self.

        A NaN/Inf in the chunk raises ValueError naming its row and column, and
        leaves the statistics as they were.
        """
        xt, kind = float_matrix(x, "x", check_finite=False)
        if xt.shape[1] != self.dim:
            raise ValueError(f"x: expected {self.dim} features per sample, got {xt.shape[1]}")
        yt = None
        if self.target_dim is not None:
            if y is None:
                raise ValueError("y: this GramStats has a target (target_dim set); pass update(x, y)")
            yt, _ = float_matrix(y, "y", check_finite=False)
            if yt.shape != (xt.shape[0], self.target_dim):
                raise ValueError(f"y: expected shape ({xt.shape[0]}, {self.target_dim}) to match x, "
                                 f"got {tuple(yt.shape)}")
        elif y is not None:
            raise ValueError("y: this GramStats has no target; create it with target_dim=e to pass y")
        if not self._started:
            self._start(xt, yt, kind, check_finite)
        # Every chunk is multiplied in the precision the first chunk fixed.
        z = xt.to(self._device, self._cd) - self._sx
        z_sum = z.sum(0)
        if check_finite:
            _check_sum_finite(z_sum, xt, "x")
        w = w_sum = None
        if yt is not None:
            w = yt.to(self._device, self._cd) - self._sy
            w_sum = w.sum(0)
            if check_finite:
                _check_sum_finite(w_sum, yt, "y")
        self._add_x(z, z_sum)
        if w is not None:
            self._add_xy(z, w, w_sum)
        self.n += xt.shape[0]
        self._moments = None
        self._terms = None
        return self

    def _start(self, xt, yt, kind, check_finite, names=("x", "y")):
        """Fixes the device, the compute precision and the shifts from the first chunk (or whole array)."""
        self._started = True
        self._kind = kind
        if self._device is None:
            self._device = xt.device
        self._cd = F64 if xt.dtype == F64 else torch.float32
        shift, target_shift = self._shift_in
        self._sx = self._vector(shift, self.dim, "shift", xt, check_finite and names[0])
        if yt is not None:
            self._sy = self._vector(target_shift, self.target_dim, "target_shift", yt, check_finite and names[1])

    def _vector(self, v, dim, name, chunk, check_as):
        """The shift in compute precision: given, or the chunk's column means
        (which also reveal any NaN/Inf; ``check_as`` names the array, or is False)."""
        if v is None:
            mean = chunk.to(self._device, self._cd).mean(0)
            if check_as:
                _check_sum_finite(mean, chunk, check_as)
            return mean
        t, _ = float_matrix(to_torch(v, name)[0].reshape(1, -1), name)
        if t.shape[1] != dim:
            raise ValueError(f"{name}: expected {dim} values, got {t.shape[1]}")
        return t[0].to(self._device, self._cd)

    def _add(self, key: str, value: torch.Tensor) -> None:
        value = value.to(F64)
        if key in self._acc:
            self._acc[key] += value
        else:
            self._acc[key] = value.clone()

    def _add_x(self, z, z_sum):
        self._add("bx", z_sum)
        self._add("G", symmetric_product(z))
        if self.debiased:
            z2 = z * z
            self._add("ax", z2.sum(0))
            self._add("P0", symmetric_product(z2))
            self._add("Q", z2.T @ z)

    def _add_xy(self, z, w, w_sum):
        self._add("by", w_sum)
        self._add("Gy", symmetric_product(w))
        self._add("Gxy", z.T @ w)
        if self.debiased:
            z2 = z * z
            w64 = w.to(F64)
            v = (w64 * w64).sum(1)  # per-sample squared norm about the shift
            z64 = z.to(F64)
            self._add("sv", v.sum())
            self._add("svv", (v * v).sum())
            self._add("svw", v @ w64)
            self._add("z2v", (z64 * z64).T @ v)
            self._add("zv", z64.T @ v)
            self._add("H", z2.T @ w)

    # -- centred statistics ------------------------------------------------------------
    def moments(self) -> Moments:
        """The centred statistics of everything fed so far (see :class:`Moments`)."""
        if self.n == 0:
            raise ValueError("GramStats: no samples yet; call update() first")
        if self._moments is not None:
            return self._moments
        a, n = self._acc, self.n
        dx = a["bx"] / n  # mean minus shift
        C = a["G"] - n * torch.outer(dx, dx)
        P = Cxy = Cyy = q = uu_y = None
        if self.debiased:
            # sum_s (z_si - dx_i)^2 (z_sj - dx_j)^2 expanded in the moments about the shift.
            Q, ax, bx = a["Q"], a["ax"], a["bx"]
            d_i, d_j = dx[:, None], dx[None, :]
            P = (a["P0"] - 2 * d_j * Q - 2 * d_i * Q.T + d_j ** 2 * ax[:, None] + d_i ** 2 * ax[None, :]
                 + 4 * d_i * d_j * a["G"] - 2 * d_i * d_j ** 2 * bx[:, None] - 2 * d_i ** 2 * d_j * bx[None, :]
                 + n * d_i ** 2 * d_j ** 2)
        if self.target_dim is not None:
            dy = a["by"] / n
            Cxy = a["Gxy"] - n * torch.outer(dx, dy)
            Cyy = a["Gy"] - n * torch.outer(dy, dy)
            if self.debiased:
                # u_s = v_s - 2 w_s.dy + |dy|^2 is sample s's squared norm about Y's mean.
                E = dy @ dy
                diag_c = torch.diagonal(C)
                q = (a["z2v"] - 2 * dx * a["zv"] + dx ** 2 * a["sv"]
                     - 2 * (a["H"] @ dy - 2 * dx * (a["Gxy"] @ dy) + dx ** 2 * (a["by"] @ dy))
                     + E * diag_c)
                uu_y = (a["svv"] + 4 * dy @ a["Gy"] @ dy + n * E ** 2 - 4 * dy @ a["svw"]
                        + 2 * E * a["sv"] - 4 * E * (dy @ a["by"]))
        self._moments = Moments(n, C, self._sx.to(F64) + dx, P, Cxy, Cyy, q, uu_y)
        return self._moments

    def _cka_terms(self) -> dict[str, Any]:
        """Per-feature vectors and scalars shared by every CKA query."""
        if self._terms is not None:
            return self._terms
        m = self.moments()
        n = m.n
        if self.debiased and n <= 3:
            raise ValueError(f"debiased CKA needs at least 4 samples, got n={n}")
        W = m.C * m.C
        c = torch.diagonal(m.C).clone()  # per-feature sums of squares: sum of u over a subset
        if self.target_dim is None:
            t, hsic_tt_xy = W.sum(1), W.sum()
            q, uu_t, su_t = (m.P.sum(1), m.P.sum(), c.sum()) if self.debiased else (None, None, None)
        else:
            t, hsic_tt_xy = (m.Cxy * m.Cxy).sum(1), (m.Cyy * m.Cyy).sum()
            q, uu_t, su_t = (m.q, m.uu_y, torch.diagonal(m.Cyy).sum()) if self.debiased else (None, None, None)
        self._terms = {
            "n": n, "W": W, "c": c, "t": t, "q": q,
            "mats": torch.stack([W, m.P]) if self.debiased else W,
            "hsic_tt": _hsic(hsic_tt_xy, uu_t, su_t, su_t, n, self.debiased),
            "su_t": su_t,
        }
        return self._terms

    # -- CKA -----------------------------------------------------------------------------
    def subset_cka(self, subsets: Subsets | Any) -> Any:
        """(K,) float64: CKA(X[:, S_k], target) for each subset (target: full X or Y)."""
        T = self._cka_terms()
        S = as_subsets(subsets, self.dim).to(self._device)
        n, deb = T["n"], self.debiased
        if deb:
            vec = segment_sums(torch.stack([T["t"], T["q"], T["c"]]), S)  # (K, 3)
            blk = gathered_block_sums(T["mats"], S)  # (K, 2)
            num = _hsic(vec[:, 0], vec[:, 1], vec[:, 2], T["su_t"], n, True)
            den = _hsic(blk[:, 0], blk[:, 1], vec[:, 2], vec[:, 2], n, True)
        else:
            num = segment_sums(T["t"], S)
            den = gathered_block_sums(T["W"], S)
        return from_torch(_ratio(num, den, T["hsic_tt"]), self._kind)

    def subset_pair_cka(self, subsets_a: Subsets | Any, subsets_b: Subsets | Any) -> Any:
        """(K,) float64: CKA(X[:, A_k], X[:, B_k]) for K pairs of subsets of X."""
        T = self._cka_terms()
        A = as_subsets(subsets_a, self.dim, "subsets_a").to(self._device)
        B = as_subsets(subsets_b, self.dim, "subsets_b").to(self._device)
        if len(A) != len(B):
            raise ValueError(f"subsets_b: expected {len(A)} subsets (as many as subsets_a), got {len(B)}")
        K, n, deb = len(A), T["n"], self.debiased
        # One fused call for the three blocks A x B, A x A, B x B.
        blk = gathered_block_sums(T["mats"], Subsets.concat([A, A, B]), Subsets.concat([B, A, B]))
        if deb:
            sc = segment_sums(T["c"], Subsets.concat([A, B]))
            sa, sb = sc[:K], sc[K:]
            h = [_hsic(blk[i * K:(i + 1) * K, 0], blk[i * K:(i + 1) * K, 1], u, v, n, True)
                 for i, (u, v) in enumerate(((sa, sb), (sa, sa), (sb, sb)))]
        else:
            h = [blk[i * K:(i + 1) * K] for i in range(3)]
        return from_torch(_ratio(h[0], h[1], h[2]), self._kind)

    def cka(self) -> float:
        """Linear CKA between the whole layer X and the target (1.0 without a target)."""
        T = self._cka_terms()
        n, deb = T["n"], self.debiased
        c_sum = T["c"].sum()
        hsic_xx = _hsic(T["W"].sum(), self.moments().P.sum() if deb else None, c_sum, c_sum, n, deb)
        hsic_xt = _hsic(T["t"].sum(), T["q"].sum() if deb else None, c_sum, T["su_t"], n, deb)
        return float(_ratio(hsic_xt, hsic_xx, T["hsic_tt"]))


def symmetric_product(z: torch.Tensor, block: int = 512) -> torch.Tensor:
    """z^T z for a (b, d) chunk, computing only the blocks on and above the diagonal.

    The result is symmetric, so for d > block this skips up to half of the
    GEMM work (about 30 % for d = 2048 with 512-wide blocks).
    """
    d = z.shape[1]
    if d <= block:
        return z.T @ z
    out = torch.empty(d, d, dtype=z.dtype, device=z.device)
    edges = list(range(0, d, block)) + [d]
    for a in range(len(edges) - 1):
        za = z[:, edges[a]:edges[a + 1]]
        for b in range(a, len(edges) - 1):
            blk = za.T @ z[:, edges[b]:edges[b + 1]]
            out[edges[a]:edges[a + 1], edges[b]:edges[b + 1]] = blk
            if b != a:
                out[edges[b]:edges[b + 1], edges[a]:edges[a + 1]] = blk.T
    return out


def _check_sum_finite(column_sums: torch.Tensor, chunk: torch.Tensor, name: str) -> None:
    """NaN/Inf anywhere in a chunk shows in its column sums: check those (cheap), locate only on failure."""
    if bool(torch.isfinite(column_sums).all()):
        return
    check_all_finite(chunk, name)  # raises with the first bad (row, column)
    raise ValueError(f"{name}: feature values too large to sum in {column_sums.dtype} (overflow)")


def default_chunk_rows(width: int) -> int:
    """Rows per chunk so that one float32 chunk of ``width`` features is about 256 MB."""
    return max(256, (1 << 26) // max(1, width))
