"""Streaming moment statistics behind every CKA number in pyred.

The algebra. Let Xc be the n x d features centred per column (centring
commutes with picking columns, so it is done once) and C = Xc^T Xc. For
subsets S and T of the columns, with W = C o C (elementwise square):

  ||Xc_S^T Xc||_F^2   = sum_{i in S} r_i,  r = rowsum(W)        (a segment sum)
  ||Xc_S^T Xc_T||_F^2 = sum_{i in S, j in T} W_ij              (a gathered block sum)
  CKA(S, whole)      = sum_{i in S} r_i / sqrt(sum_{i,j in S} W_ij * ||C||_F^2)

which is linear CKA (Kornblith et al. 2019, biased HSIC) without any n x n
Gram. The unbiased HSIC of Song et al. (2012) in feature space is
||Xa^T Xb||^2 - n/(n-2) u_a.u_b + (sum u_a)(sum u_b)/((n-1)(n-2)), u the
per-sample squared norms: u_S.u_T = sum_{i in S, j in T} P_ij with
P = (Xc o Xc)^T (Xc o Xc), and sum u_S = sum_{i in S} C_ii -- one more d x d
Gram and the same gathered sums. Against another layer Y (n x e),
||Xc_S^T Yc||_F^2 = sum_{i in S} ||(Xc^T Yc)_{i,:}||^2.

``GramStats`` gathers these from sample chunks in O(d^2) memory: each chunk
is shifted by a fixed reference point (the first chunk's mean unless given)
and scaled by a power of two that brings its largest entry to [0.5, 1) --
exact, and CKA is invariant to it -- then multiplied in the chunk's precision
(float32 keeps GEMM speed; float64 input stays float64) and added into float64
sums. So any chunking gives the same result as one big chunk, and features
of any finite magnitude (1e-30 or 1e30 in float32) neither overflow nor
vanish in the products.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, cast

import torch

from . import _checks as check
from .numerics import absmax, exponent, ldexp, ratio, require_finite, stream_exponent
from .ops.arrays import check_all_finite, float_matrix, from_torch, to_torch
from .ops.reductions import gathered_block_sums, segment_sums
from .subsets import Subsets, as_subsets

F64 = torch.float64
MAX_GRAM_DIM = 65536  # d above this: a d x d float64 Gram would take over 32 GB


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


def _hsic(xy: Any, uu: Any, su_a: Any, su_b: Any, n: int, debiased: bool) -> Any:
    """Linear HSIC up to a factor that cancels in CKA.

    biased: ||Xa^T Xb||_F^2 of centred features (Kornblith et al. 2019).
    debiased: the unbiased estimator of Song et al. (2012) in feature space,
    ||Xa^T Xb||^2 - n/(n-2) u_a.u_b + (sum u_a)(sum u_b)/((n-1)(n-2)).
    """
    if not debiased:
        return xy
    return xy - n / (n - 2) * uu + su_a * su_b / ((n - 1) * (n - 2))


@dataclass
class _Sums:
    """float64 sums over samples of products of the shifted, scaled chunks z (of X) and w (of Y).

    Each sum is homogeneous in z and w; ``DEGREES`` gives its (z, w) degrees, so a
    change of the common power-of-two scale multiplies it by 2^(deg_z dz + deg_w dw).
    """

    bx: Any = None   # sum_s z_s                      (d,)
    G: Any = None    # sum_s z_s z_s^T                 (d, d)
    ax: Any = None   # sum_s z_s o z_s                 (d,)   debiased
    P0: Any = None   # sum_s (z o z)(z o z)^T          (d, d) debiased
    Q: Any = None    # sum_s (z o z) z^T               (d, d) debiased
    by: Any = None   # sum_s w_s                       (e,)   target
    Gy: Any = None   # sum_s w_s w_s^T                 (e, e) target
    Gxy: Any = None  # sum_s z_s w_s^T                 (d, e) target
    sv: Any = None   # sum_s v_s, v_s = |w_s|^2        ()     target, debiased
    svv: Any = None  # sum_s v_s^2                     ()
    svw: Any = None  # sum_s v_s w_s                   (e,)
    z2v: Any = None  # sum_s (z_s o z_s) v_s           (d,)
    zv: Any = None   # sum_s z_s v_s                   (d,)
    H: Any = None    # sum_s (z_s o z_s) w_s^T         (d, e)

    DEGREES = {"bx": (1, 0), "G": (2, 0), "ax": (2, 0), "P0": (4, 0), "Q": (3, 0), "by": (0, 1), "Gy": (0, 2),
               "Gxy": (1, 1), "sv": (0, 2), "svv": (0, 4), "svw": (0, 3), "z2v": (2, 2), "zv": (1, 2), "H": (2, 1)}

    def add(self, name: str, value: torch.Tensor) -> None:
        value = value.to(F64)
        current = getattr(self, name)
        setattr(self, name, value.clone() if current is None else current.add_(value))

    def rescale(self, dz: int, dw: int) -> None:
        """Multiplies every sum by 2^(deg_z dz + deg_w dw) (exact, unless it underflows to 0)."""
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if v is not None:
                a, b = self.DEGREES[f.name]
                setattr(self, f.name, ldexp(v, a * dz + b * dw))


class _Scaled:
    """A stream's power-of-two scale 2^E: chunks are multiplied by 2^-E before their products, E following
    :func:`pyred.numerics.stream_exponent` (earlier sums are rescaled when it changes)."""

    def __init__(self) -> None:
        self.E: int | None = None

    def apply(self, z: torch.Tensor, zmax: float, sums: _Sums, which: int, dtype: torch.dtype) -> torch.Tensor:
        """z * 2^-E in ``dtype`` (in place when z is already of ``dtype``), after raising E if the
        exponent of zmax = max|z| needs it (rescaling ``sums`` to match)."""
        new = stream_exponent(self.E, exponent(zmax), dtype)
        if self.E is not None and new != self.E:
            sums.rescale(*((self.E - new, 0) if which == 0 else (0, self.E - new)))
        self.E = new
        if z.dtype == dtype:
            return ldexp(z, -self.E, inplace=True)
        return ldexp(z, -self.E).to(dtype)


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
    :meth:`from_features` builds one from whole arrays.
    """

    def __init__(self, dim: int, target_dim: int | None = None, *, debiased: bool = False,
                 shift: Any = None, target_shift: Any = None, device: Any = None) -> None:
        self.dim = check.integer(dim, "dim", min=1)
        if self.dim > MAX_GRAM_DIM:
            raise ValueError(f"dim: a layer of width {self.dim} needs a {self.dim} x {self.dim} float64 Gram "
                             f"({8 * self.dim ** 2 / 2**30:.0f} GB); for layers wider than {MAX_GRAM_DIM} use "
                             "pyred.subset_cka(..., route='samples'), which works through n x n sample Grams")
        self.target_dim = check.optional_integer(target_dim, "target_dim", min=1)
        self.debiased = check.boolean(debiased, "debiased")
        self.n = 0
        self._device = torch.device(device) if device is not None else None
        self._shift_in = (shift, target_shift)
        self._sx: torch.Tensor | None
        self._sy: torch.Tensor | None
        self._sx = self._sy = None  # the shifts, in compute precision (set by the first chunk)
        self._cd: torch.dtype | None = None  # compute dtype
        self._sums = _Sums()
        self._scale_x, self._scale_y = _Scaled(), _Scaled()
        self._kind = "torch"
        self._moments: Moments | None = None
        self._terms: dict[str, Any] | None = None

    @classmethod
    def from_features(cls, X: Any, target: Any = None, *, debiased: bool = False, chunk_size: int | None = None,
                      x_name: str = "X", target_name: str = "target") -> GramStats:
        """The statistics of whole arrays: X (n, d) and optionally target (n, e), same kind and device.

        The shifts are the exact column means (computing them also checks every
        value for NaN/Inf); the arrays are then fed in chunks of ``chunk_size``
        samples (default: about 256 MB of float32). ``x_name``/``target_name``
        name the arrays in error messages.
        """
        x, kind = float_matrix(X, x_name, check_finite=False)
        y = None
        if target is not None:
            y, _ = float_matrix(target, target_name, check_finite=False)
            if y.shape[0] != x.shape[0]:
                raise ValueError(f"{target_name}: expected {x.shape[0]} samples (rows) like {x_name}, "
                                 f"got {y.shape[0]}")
            if y.device != x.device:
                raise ValueError(f"{target_name}: expected the same device as {x_name} ({x.device}), got {y.device}")
        n = x.shape[0]
        if n < 2:
            raise ValueError(f"{x_name}: linear CKA needs at least 2 samples, got {n}")
        if debiased and n <= 3:
            raise ValueError(f"{x_name}: debiased CKA needs at least 4 samples, got n={n}")
        chunk_size = check.optional_integer(chunk_size, "chunk_size", min=1)
        rows = chunk_size or default_chunk_rows(x.shape[1] + (y.shape[1] if y is not None else 0))
        stats = cls(x.shape[1], None if y is None else y.shape[1], debiased=debiased,
                    shift=_column_means(x, x_name), target_shift=None if y is None else _column_means(y, target_name))
        for s in range(0, n, rows):
            stats._feed(x[s:s + rows], None if y is None else y[s:s + rows], kind, check_finite=False)
        return stats

    # -- accumulation ----------------------------------------------------------------
    def update(self, x: Any, y: Any = None, *, check_finite: bool = True) -> GramStats:
        """Adds a chunk: x (b, dim) and, with a target, y (b, target_dim). Returns self.

        A NaN/Inf in the chunk raises ValueError naming its row and column, and
        leaves the statistics as they were.
        """
        xt, kind, yt = paired_chunk(x, y, self.dim, self.target_dim, "GramStats", check_finite=False)
        return self._feed(xt, yt, kind, check_finite)

    def _feed(self, xt: torch.Tensor, yt: torch.Tensor | None, kind: str, check_finite: bool) -> GramStats:
        if self._cd is None:
            self._start(xt, yt, kind, check_finite)
        # Every chunk is multiplied in the precision the first chunk fixed. Both chunks are
        # checked before anything is added, so a bad chunk leaves the statistics as they were.
        # (_start set the shifts and the compute dtype)
        z, zmax = _shifted(xt, cast(torch.Tensor, self._sx), self._device, cast(torch.dtype, self._cd), "x")
        w = wmax = None
        if yt is not None:
            w, wmax = _shifted(yt, cast(torch.Tensor, self._sy), self._device, cast(torch.dtype, self._cd), "y")
        z = self._scale_x.apply(z, zmax, self._sums, 0, cast(torch.dtype, self._cd))
        self._add_x(z)
        if w is not None:
            w = self._scale_y.apply(w, cast(float, wmax), self._sums, 1, cast(torch.dtype, self._cd))
            self._add_xy(z, w)
        self.n += xt.shape[0]
        self._moments = None
        self._terms = None
        return self

    def _start(self, xt: torch.Tensor, yt: torch.Tensor | None, kind: str, check_finite: bool) -> None:
        """Fixes the device, the compute precision and the shifts from the first chunk."""
        self._kind = kind
        if self._device is None:
            self._device = xt.device
        self._cd = F64 if xt.dtype == F64 else torch.float32
        shift, target_shift = self._shift_in
        self._sx = self._vector(shift, self.dim, "shift", xt, "x" if check_finite else None)
        if yt is not None:
            self._sy = self._vector(target_shift, self.target_dim, "target_shift", yt, "y" if check_finite else None)

    def _vector(self, v: Any, dim: int | None, name: str, chunk: torch.Tensor, check_as: str | None) -> torch.Tensor:
        """The shift, float64: given, or the chunk's column means (which also reveal any NaN/Inf)."""
        if v is None:
            return _column_means(chunk, check_as).to(self._device)
        t, _ = float_matrix(to_torch(v, name)[0].reshape(1, -1), name)
        if t.shape[1] != dim:
            raise ValueError(f"{name}: expected {dim} values, got {t.shape[1]}")
        return t[0].to(self._device, F64)

    def _add_x(self, z: torch.Tensor) -> None:
        S = self._sums
        S.add("bx", z.sum(0))
        S.add("G", symmetric_product(z))
        if self.debiased:
            z2 = z * z
            S.add("ax", z2.sum(0))
            S.add("P0", symmetric_product(z2))
            S.add("Q", z2.T @ z)

    def _add_xy(self, z: torch.Tensor, w: torch.Tensor) -> None:
        S = self._sums
        S.add("by", w.sum(0))
        S.add("Gy", symmetric_product(w))
        S.add("Gxy", z.T @ w)
        if self.debiased:
            z2 = z * z
            w64 = w.to(F64)
            v = (w64 * w64).sum(1)  # per-sample squared norm about the shift
            z64 = z.to(F64)
            S.add("sv", v.sum())
            S.add("svv", (v * v).sum())
            S.add("svw", v @ w64)
            S.add("z2v", (z64 * z64).T @ v)
            S.add("zv", z64.T @ v)
            S.add("H", z2.T @ w)

    # -- centred statistics ------------------------------------------------------------
    def moments(self) -> Moments:
        """The centred statistics of everything fed so far, in the features' own units (see :class:`Moments`)."""
        m = self._scaled_moments()
        ex = self._scale_x.E or 0
        ey = self._scale_y.E or 0

        def up(t: torch.Tensor | None, k: int) -> Any:  # None where t is None
            return None if t is None else ldexp(t, k)

        return Moments(m.n, up(m.C, 2 * ex), cast(torch.Tensor, self._sx) + up(m.mean, ex), up(m.P, 4 * ex),
                       up(m.Cxy, ex + ey), up(m.Cyy, 2 * ey), up(m.q, 2 * ex + 2 * ey), up(m.uu_y, 4 * ey))

    def _scaled_moments(self) -> Moments:
        """Centred statistics of the scaled data (``mean`` here: the mean minus the shift, scaled).
        CKA is invariant to the scales, so it reads these."""
        if self.n == 0:
            raise ValueError("GramStats: no samples yet; call update() first")
        if self._moments is not None:
            return self._moments
        a, n = self._sums, self.n
        dx = a.bx / n  # mean minus shift
        C = a.G - n * torch.outer(dx, dx)
        P = Cxy = Cyy = q = uu_y = None
        if self.debiased:
            # sum_s (z_si - dx_i)^2 (z_sj - dx_j)^2 expanded in the moments about the shift.
            Q, ax, bx = a.Q, a.ax, a.bx
            d_i, d_j = dx[:, None], dx[None, :]
            P = (a.P0 - 2 * d_j * Q - 2 * d_i * Q.T + d_j ** 2 * ax[:, None] + d_i ** 2 * ax[None, :]
                 + 4 * d_i * d_j * a.G - 2 * d_i * d_j ** 2 * bx[:, None] - 2 * d_i ** 2 * d_j * bx[None, :]
                 + n * d_i ** 2 * d_j ** 2)
        if self.target_dim is not None:
            dy = a.by / n
            Cxy = a.Gxy - n * torch.outer(dx, dy)
            Cyy = a.Gy - n * torch.outer(dy, dy)
            if self.debiased:
                # u_s = v_s - 2 w_s.dy + |dy|^2 is sample s's squared norm about Y's mean.
                E = dy @ dy
                diag_c = torch.diagonal(C)
                q = (a.z2v - 2 * dx * a.zv + dx ** 2 * a.sv
                     - 2 * (a.H @ dy - 2 * dx * (a.Gxy @ dy) + dx ** 2 * (a.by @ dy))
                     + E * diag_c)
                uu_y = (a.svv + 4 * dy @ a.Gy @ dy + n * E ** 2 - 4 * dy @ a.svw
                        + 2 * E * a.sv - 4 * E * (dy @ a.by))
        self._moments = Moments(n, C, dx, P, Cxy, Cyy, q, uu_y)
        return self._moments

    def _cka_terms(self) -> dict[str, Any]:
        """Per-feature vectors and scalars shared by every CKA query."""
        if self._terms is not None:
            return self._terms
        m = self._scaled_moments()
        n = m.n
        if self.debiased and n <= 3:
            raise ValueError(f"debiased CKA needs at least 4 samples, got n={n}")
        W = m.C * m.C
        c = torch.diagonal(m.C).clone()  # per-feature sums of squares: sum of u over a subset
        if self.target_dim is None:
            t, hsic_tt_xy = W.sum(1), W.sum()
            q, uu_t, su_t = ((cast(torch.Tensor, m.P).sum(1), cast(torch.Tensor, m.P).sum(), c.sum()) if self.debiased
                             else (None, None, None))
        else:  # (P is set when debiased, Cxy and Cyy with a target)
            t, hsic_tt_xy = ((cast(torch.Tensor, m.Cxy) * cast(torch.Tensor, m.Cxy)).sum(1),
                             (cast(torch.Tensor, m.Cyy) * cast(torch.Tensor, m.Cyy)).sum())
            q, uu_t, su_t = ((m.q, m.uu_y, torch.diagonal(cast(torch.Tensor, m.Cyy)).sum()) if self.debiased
                             else (None, None, None))
        self._terms = {
            "n": n, "W": W, "c": c, "t": t, "q": q,
            "mats": torch.stack([W, cast(torch.Tensor, m.P)]) if self.debiased else W,
            "hsic_tt": _hsic(hsic_tt_xy, uu_t, su_t, su_t, n, self.debiased),
            "su_t": su_t,
        }
        return self._terms

    # -- CKA -----------------------------------------------------------------------------
    def subset_cka(self, subsets: Subsets | Any) -> Any:
        """(K,) float64: CKA(X[:, S_k], target) for each subset (target: full X or Y)."""
        T = self._cka_terms()
        S = as_subsets(subsets, self.dim).to(cast(torch.device, self._device))  # set by the first chunk
        n, deb = T["n"], self.debiased
        if deb:
            vec = segment_sums(torch.stack([T["t"], T["q"], T["c"]]), S)  # (K, 3)
            blk = gathered_block_sums(T["mats"], S)  # (K, 2)
            num = _hsic(vec[:, 0], vec[:, 1], vec[:, 2], T["su_t"], n, True)
            den = _hsic(blk[:, 0], blk[:, 1], vec[:, 2], vec[:, 2], n, True)
        else:
            num = segment_sums(T["t"], S)
            den = gathered_block_sums(T["W"], S)
        return from_torch(require_finite(ratio(num, den, T["hsic_tt"]), "subset_cka"), self._kind)

    def subset_pair_cka(self, subsets_a: Subsets | Any, subsets_b: Subsets | Any) -> Any:
        """(K,) float64: CKA(X[:, A_k], X[:, B_k]) for K pairs of subsets of X."""
        T = self._cka_terms()
        A = as_subsets(subsets_a, self.dim, "subsets_a").to(cast(torch.device, self._device))  # set by the first chunk
        B = as_subsets(subsets_b, self.dim, "subsets_b").to(cast(torch.device, self._device))
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
        return from_torch(require_finite(ratio(h[0], h[1], h[2]), "subset_pair_cka"), self._kind)

    def cka(self) -> float:
        """Linear CKA between the whole layer X and the target (1.0 without a target)."""
        T = self._cka_terms()
        n, deb = T["n"], self.debiased
        c_sum = T["c"].sum()
        hsic_xx = _hsic(T["W"].sum(), cast(torch.Tensor, self._scaled_moments().P).sum() if deb else None, c_sum, c_sum,
                        n, deb)
        hsic_xt = _hsic(T["t"].sum(), T["q"].sum() if deb else None, c_sum, T["su_t"], n, deb)
        return float(require_finite(ratio(hsic_xt, hsic_xx, T["hsic_tt"]), "linear_cka"))


def paired_chunk(x: Any, y: Any, dim: int | None, target_dim: int | None, owner: str,
                 check_finite: bool) -> tuple[torch.Tensor, str, torch.Tensor | None]:
    """(x, its kind, y) of a chunk fed to a streaming accumulator ``owner``: x (b, dim) -- any width
    when dim is None -- and y (b, target_dim) exactly when the accumulator has a target."""
    xt, kind = float_matrix(x, "x", check_finite=check_finite)
    if dim is not None and xt.shape[1] != dim:
        raise ValueError(f"x: expected {dim} features per sample, got {xt.shape[1]}")
    yt = None
    if target_dim is not None:
        if y is None:
            raise ValueError(f"y: this {owner} has a target (target_dim set); pass update(x, y)")
        yt, _ = float_matrix(y, "y", check_finite=check_finite)
        if yt.shape != (xt.shape[0], target_dim):
            raise ValueError(f"y: expected shape ({xt.shape[0]}, {target_dim}) to match x, got {tuple(yt.shape)}")
    elif y is not None:
        raise ValueError(f"y: this {owner} has no target; create it with target_dim=e to pass y")
    return xt, kind, yt


def _column_means(t: torch.Tensor, check_as: str | None) -> torch.Tensor:
    """(d,) column means as float64 (summed in t's precision, or float64 where that overflows); with
    ``check_as``, a NaN/Inf raises naming that array and its first bad entry."""
    mean = t.mean(0)
    if not bool(torch.isfinite(mean).all()):
        if check_as:
            check_all_finite(t, check_as)
        mean = t.mean(0, dtype=F64)
        if not bool(torch.isfinite(mean).all()) and bool(torch.isfinite(t).all()):
            e = cast(int, exponent(absmax(t)))  # finite float64 entries whose sum overflows: average them scaled
            mean = ldexp(ldexp(t.to(F64), -e).mean(0), e)
    return mean.to(F64)


def _shifted(t: torch.Tensor, shift: torch.Tensor, device: torch.device | None, dtype: torch.dtype,
             name: str) -> tuple[torch.Tensor, float]:
    """(t - shift, max |t - shift|): in ``dtype``, or in float64 when ``dtype`` would overflow (float32
    entries near 3e38; it is scaled down before it is cast). A NaN/Inf in t raises ValueError naming
    ``name`` and the first bad (row, column)."""
    t = t.to(device)
    z = t.to(dtype) - shift.to(dtype)
    zmax = absmax(z)
    if not math.isfinite(zmax):
        check_all_finite(t, name)  # raises with the first bad (row, column) if the input holds one
        z = t.to(F64) - shift
        zmax = absmax(z)
    return z, zmax


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


def default_chunk_rows(width: int) -> int:
    """Rows per chunk so that one float32 chunk of ``width`` features is about 256 MB."""
    return max(256, (1 << 26) // max(1, width))
