"""Linear CKA through n x n sample Grams: the road for layers too wide for a d x d Gram.

For a subset S of the columns of X (n x d, centred per column), K_S = Xc_S Xc_S^T
is already double-centred, and with L the target's centred Gram

  CKA(S) = <K_S, L>_F / sqrt(<K_S, K_S>_F <L, L>_F)           (biased HSIC)

or the same with the unbiased HSIC of Song et al. (2012) on K_S and L. The
paper's subsets of one seed are prefixes of one permutation, so K for the next
fraction is the previous one plus the Gram of the columns it adds: one pass
over the columns per chain of nested subsets gives every subset of the chain,
O(n^2 d) per chain instead of per subset. Against the full layer, a chain's
largest members (at least d/2 columns) may instead come from the full Gram
minus the Gram of the columns they lack, when that reads fewer columns (the
paper's grid: 0.7 d per seed instead of 0.9 d). Subsets that nest in no chain
get a Gram of their own. Columns are streamed in blocks (centred with float64
means, multiplied in the input's precision -- a block of at most 32 columns in
float64 -- and accumulated in float64), so memory is O(n^2 + n b) whatever d
is, and X is never copied in float64; on the CPU a centred transposed copy of
X in the compute precision (float32 for float32 input) is kept when it takes
at most 2 GiB, since gathering its rows reads memory in order where gathering
X's columns does not.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, cast

import torch

from .numerics import input_exponent, ldexp, ratio
from .ops import rbf as ops_rbf
from .subsets import Subsets

F64 = torch.float64


def nested_chains(S: Subsets) -> list[list[int]]:
    """The subsets grouped into chains of nested prefixes: in each chain, every list is the first
    len(list) entries of the next one. Empty lists form no chain (their CKA is 0)."""
    order = sorted((k for k in range(len(S)) if int(S.sizes[k]) > 0), key=lambda k: int(S.sizes[k]))
    lists = [S[k].cpu() for k in range(len(S))]
    chains: list[list[int]] = []
    open_by_first: dict[int, list[int]] = {}  # first index -> ids of chains that start with it
    for k in order:
        first = int(lists[k][0])
        home = None
        for c in open_by_first.get(first, []):
            last = lists[chains[c][-1]]
            if torch.equal(lists[k][:len(last)], last):
                home = c
                break
        if home is None:
            chains.append([k])
            open_by_first.setdefault(first, []).append(len(chains) - 1)
        else:
            chains[home].append(k)
    return chains


def unbiased_hsic(K: torch.Tensor, L: torch.Tensor) -> torch.Tensor:
    """The unbiased HSIC estimator (Song et al. 2012) of two n x n Grams, n >= 4 (float64 scalar)."""
    n = K.shape[0]
    Kt = K - torch.diag(torch.diagonal(K))
    Lt = L - torch.diag(torch.diagonal(L))
    trace = (Kt * Lt).sum()
    ones_k, ones_l = Kt.sum(), Lt.sum()
    cross = Kt.sum(0) @ Lt.sum(1)
    return unbiased_hsic_from_sums(trace, ones_k, ones_l, cross, n)


def unbiased_hsic_from_sums(trace: torch.Tensor | float, ones_k: torch.Tensor | float, ones_l: torch.Tensor | float,
                            cross: torch.Tensor, n: int) -> torch.Tensor:
    """The unbiased HSIC from its parts, with Kt, Lt the Grams with zeroed diagonals: trace = <Kt, Lt>,
    ones_k = 1'Kt1, ones_l = 1'Lt1, cross = (Kt 1) . (Lt 1)."""
    return (trace + ones_k * ones_l / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * cross) / (n * (n - 3))


def default_block(n: int) -> int:
    """Columns per streamed block: about 64 MB of float32 for n samples."""
    return max(64, (1 << 24) // max(1, n))


class _Columns:
    """Centred column blocks of X, in the compute precision (float32 products keep GEMM speed;
    float64 input stays float64): column means summed in float64, each gathered block centred
    (or gathered from a transposed copy centred once), its Gram added to a float64 accumulator.

    X is multiplied by 2^-E before anything else (exact; CKA does not see it): E from
    :func:`pyred.numerics.input_exponent` -- 0 for input of ordinary magnitude -- or ``exponent``
    when given (a stream of minibatches shares one), so that no product over- or underflows."""

    def __init__(self, x: torch.Tensor, block: int, exponent: int | None = None) -> None:
        self.x, self.block = x, block
        self.cd = F64 if x.dtype == F64 else torch.float32
        self.E = input_exponent(x, self.cd) if exponent is None else exponent
        self.bounds = symmetric_tiles(x.shape[0], x.device)
        # On the CPU, gathering columns of a row-major X is the slow part (see TRANSPOSE_MAX_BYTES):
        # keep X^T, centred, in the compute precision when it fits; it is copied in blocks of 128 rows
        # (each block's transpose stays in cache) and its column means are float64 sums of its rows.
        n, d = x.shape
        self.xt = None
        if x.device.type == "cpu" and n * d * torch.finfo(self.cd).bits // 8 <= TRANSPOSE_MAX_BYTES:
            import numpy as np

            xt = torch.empty(d, n, dtype=self.cd)
            for i in range(0, n, 128):
                xt[:, i:i + 128].copy_(x[i:i + 128].T)
            ldexp(xt, -self.E, inplace=True)
            mean = torch.from_numpy(np.sum(xt.numpy(), axis=1, dtype=np.float64)).div_(n)
            self.xt = xt.sub_(mean.to(self.cd)[:, None])
        else:
            mean = torch.empty(d, dtype=F64, device=x.device)
            for a in range(0, d, block):
                cols = x[:, a:a + block]
                mean[a:a + block] = ldexp(cols.to(F64), -self.E).mean(0) if self.E else cols.mean(0, dtype=F64)
        self.mean, self.mean64 = mean.to(self.cd), mean

    def _gather(self, cols: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Xc[:, cols] (n, len(cols)) in ``dtype``, scaled and centred."""
        if self.xt is not None:
            return torch.index_select(self.xt, 0, cols).to(dtype).T
        z = ldexp(torch.index_select(self.x, 1, cols).to(dtype), -self.E, inplace=True)
        return z.sub_((self.mean64 if dtype == F64 else self.mean)[cols])

    def gram_of(self, cols: torch.Tensor, out: torch.Tensor) -> None:
        """out += Xc[:, cols] Xc[:, cols]^T (n x n float64), streamed over blocks of cols -- on the
        upper block triangle only (diagonal tiles whole): call ``symmetric(out)`` before reading out."""
        b = self.bounds
        for a in range(0, cols.numel(), self.block):
            c = cols[a:a + self.block].sort().values  # a Gram is a sum over columns: any order, and sorted
            if c.numel() <= SMALL_BLOCK:
                # a few columns: multiply in float64 straight into out (one pass over it, where the
                # compute-precision product costs a temporary, a conversion and an add)
                z = self._gather(c, F64)
                for i in range(len(b) - 1):
                    out[b[i]:b[i + 1], b[i]:].addmm_(z[b[i]:b[i + 1]], z[b[i]:].T)
                continue
            z = self._gather(c, self.cd)  # (n, b), centred; gathers from X^T read memory in order
            for i in range(len(b) - 1):  # row tile i against rows b[i]: (the tiles right of the diagonal)
                out[b[i]:b[i + 1], b[i]:].add_(z[b[i]:b[i + 1]] @ z[b[i]:].T)  # widened as it is added

    def symmetric(self, out: torch.Tensor) -> torch.Tensor:
        """Fills the lower off-diagonal tiles of ``out`` from the upper ones (in place); returns it."""
        b = self.bounds
        for i in range(len(b) - 2):
            out[b[i + 1]:, b[i]:b[i + 1]] = out[b[i]:b[i + 1], b[i + 1]:].T
        return out

    def full_gram(self) -> torch.Tensor:
        n, d = self.x.shape
        out = torch.zeros(n, n, dtype=F64, device=self.x.device)
        self.gram_of(torch.arange(d, device=self.x.device), out)
        return self.symmetric(out)


TRANSPOSE_MAX_BYTES = 2 * 2**30  # X^T kept on the CPU up to this size: memory traded for gathers of rows, not columns
# Columns up to which a block's Gram is multiplied in float64 straight into the accumulator: for few
# columns the float32 product's temporary, conversion and add cost more than the float64 arithmetic saves
# (benchmarks/test_cka_speed.py's wide-layer cases).
SMALL_BLOCK = 32
HELD_GRAMS_BYTES = 1 * 2**30  # the first chain's Grams kept while the full layer's Gram is completed


def symmetric_tiles(n: int, device: torch.device) -> list[int]:
    """Row bounds of the tiles an n x n Gram is accumulated in. A symmetric product needs only the
    tiles on and above the diagonal: t tiles do (t + 1) / (2 t) of the full product's multiply-adds
    (t = 4: 62.5 %), but smaller GEMMs run slower. On the CPU, 4 tiles of at least 125 rows -- where the
    saving outweighs the slowdown (benchmarks/test_cka_speed.py's wide-layer cases). On CUDA one tile
    (cuBLAS's full GEMM) until the tiling has been timed there."""
    t = 1 if torch.device(device).type != "cpu" else max(1, min(4, n // 125))
    return [round(i * n / t) for i in range(t + 1)]


def chain_grams(x: torch.Tensor, S: Subsets, cols: _Columns, chains: list[list[int]] | None = None,
                start_with: torch.Tensor | None = None, whole: bool = True) -> Iterator[tuple[int, torch.Tensor]]:
    """Yields (k, K_k) for every non-empty subset k of ``chains`` (all of S's by default):
    K_k = Xc[:, S_k] Xc[:, S_k]^T (n x n float64), built incrementally along each chain of nested
    subsets. K_k is a buffer that the next step changes: use it before asking for the next one.
    ``start_with``: an n x n buffer to build the first chain in (zeros). ``whole=False``: only the entries
    on and above the diagonal are valid (for readers of the upper triangle: saves a copy per subset)."""
    n = x.shape[0]
    indices = S.indices.to(x.device)
    offsets = S.offsets.tolist()
    for c, chain in enumerate(nested_chains(S) if chains is None else chains):
        if c == 0 and start_with is not None:
            K = start_with.zero_()
        else:
            K = torch.zeros(n, n, dtype=F64, device=x.device)
        done = 0
        for k in chain:
            start, size = offsets[k], offsets[k + 1] - offsets[k]
            cols.gram_of(indices[start + done:start + size], K)  # the columns this member adds
            done = size
            yield k, cols.symmetric(K) if whole else K


def linear_hsic(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """The biased HSIC of two double-centred Grams, up to the factor 1/(n-1)^2 that cancels in CKA."""
    return (A * B).sum()


def split_chain(sizes: list[int], d: int) -> tuple[int, int]:
    """How to build the Grams of one chain of nested subsets (``sizes``: its members' sizes, ascending)
    when the full layer's Gram L is known: the first f members forward from an empty Gram, the others
    as L minus the Gram of the columns they lack -- those complements nest the other way, so one pass
    from the largest member down gives them all. Returns (f, columns read); f = len(sizes) when the
    forward pass alone is cheapest. Only members of at least d/2 columns come from L, so K = L - K_C
    loses at most a factor 2 of precision to cancellation. The paper's grid (..., 0.5, 0.8, 0.9): 0.7 d
    columns instead of 0.9 d."""
    best_f, best = len(sizes), sizes[-1] if sizes else 0
    for f, size in enumerate(sizes):
        if 2 * size < d:
            continue
        cost = (sizes[f - 1] if f else 0) + d - size
        if cost < best or (cost == best and f > best_f):  # a tie: fewer members from the complement
            best_f, best = f, cost
    return best_f, best


def complement_grams(x: torch.Tensor, S: Subsets, cols: _Columns, members: list[int], out: torch.Tensor,
                     whole: bool = True) -> Iterator[tuple[int, torch.Tensor]]:
    """Yields (k, K_C) for the members of a chain's tail, largest first: K_C = Xc[:, C] Xc[:, C]^T (n x n
    float64; whole, or valid on and above the diagonal) with C the columns outside S_k, built in ``out``
    (zeroed first) -- a buffer that the next step changes."""
    d = x.shape[1]
    P = S[members[-1]].to(x.device)  # every member is a prefix of the largest one
    rest = torch.ones(d, dtype=torch.bool, device=x.device)
    rest[P] = False
    out.zero_()
    cols.gram_of(torch.nonzero(rest).flatten(), out)
    yield members[-1], cols.symmetric(out) if whole else out
    for j in range(len(members) - 2, -1, -1):
        cols.gram_of(P[int(S.sizes[members[j]]):int(S.sizes[members[j + 1]])], out)
        yield members[j], cols.symmetric(out) if whole else out


def subset_grams(x: torch.Tensor, S: Subsets, cols: _Columns, with_full: bool, whole: bool = True
                 ) -> tuple[torch.Tensor | None, Iterator[tuple[int, torch.Tensor]]]:
    """(L, grams): with ``with_full``, L is the full layer's centred linear Gram (n x n float64, whole),
    else None; ``grams`` yields (k, K_k) -- K_k = Xc[:, S_k] Xc[:, S_k]^T, a buffer the next step may
    change; whole, or with ``whole=False`` valid on and above the diagonal only -- for every non-empty
    subset k. Subsets are built along their chains, forward or, with
    ``with_full``, as L minus their complement's Gram where :func:`split_chain` says so.

    L is completed from the longest-reaching chain: its forward members' last Gram, plus the columns
    between that member and the next, plus the Gram of the columns that next member lacks (the
    complement pass's last step) -- or, without a complement pass, the last member's Gram plus the
    columns it lacks. That chain's Grams are held until L is complete (at most HELD_GRAMS_BYTES; past
    that, L takes a pass of its own): for the paper's grid one pass over X gives L and 14 Grams."""
    n, d = x.shape
    chains = nested_chains(S)
    new: Callable[[], torch.Tensor] = lambda: torch.empty(n, n, dtype=F64, device=x.device)  # noqa: E731

    def split(chain: list[int]) -> int:  # without L, forward passes only
        return split_chain([int(S.sizes[k]) for k in chain], d)[0] if with_full else len(chain)

    def walk(chain: list[int], L: torch.Tensor | None, buf: torch.Tensor | None) -> Iterator[tuple[int, torch.Tensor]]:
        f = split(chain)
        if f:
            yield from chain_grams(x, S, cols, [chain[:f]], whole=whole)
        if f < len(chain):
            for k, KC in complement_grams(x, S, cols, chain[f:], new(), whole):
                yield k, torch.sub(cast(torch.Tensor, L), KC, out=buf)  # L is set: with_full

    held, L = [], None
    if with_full and chains and len(max(chains, key=len)) * n * n * 8 <= HELD_GRAMS_BYTES:
        first = max(chains, key=lambda c: int(S.sizes[c[-1]]))
        chains = [c for c in chains if c is not first]
        f = split(first)
        L = torch.zeros(n, n, dtype=F64, device=x.device)
        held = [(k, K.clone()) for k, K in chain_grams(x, S, cols, [first[:f]], start_with=L, whole=whole)] if f else []
        if f < len(first):
            tail = [(k, KC.clone()) for k, KC in complement_grams(x, S, cols, first[f:], new(), whole)]
            P = S[first[-1]].to(x.device)
            cols.gram_of(P[int(S.sizes[first[f - 1]]) if f else 0:int(S.sizes[first[f]])], L)
            L.add_(tail[-1][1])  # + the Gram of the columns first[f] lacks (its upper triangle is enough)
            cols.symmetric(L)
            held += [(k, KC.neg_().add_(L)) for k, KC in tail]  # K = L - K_C, in place
        else:
            rest = torch.ones(d, dtype=torch.bool, device=x.device)
            rest[S[first[-1]].to(x.device)] = False
            cols.gram_of(torch.nonzero(rest).flatten(), L)  # L held the chain's last Gram: add the rest
            cols.symmetric(L)
    elif with_full:
        L = cols.full_gram()

    def grams() -> Iterator[tuple[int, torch.Tensor]]:
        while held:
            yield held.pop(0)
        buf = new() if with_full else None
        for chain in chains:
            yield from walk(chain, L, buf)

    return L, grams()


def sample_road_hsic(x: torch.Tensor, S: Subsets, target: torch.Tensor | None, debiased: bool,
                     block: int | None = None, exponents: tuple[int, int] | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """HSIC(K_k, L), HSIC(K_k, K_k) for every subset k ((K,) float64 each, 0 for empty subsets) and
    HSIC(L, L) (a float64 scalar), with L the target's centred linear Gram (the full X when None).
    They are those of x 2^-Ex and target 2^-Ey (see :class:`_Columns`); ``exponents`` = (Ex, Ey)
    fixes them (Ey is Ex without a target), None picks each from its array."""
    block = block or default_block(x.shape[0])
    ex, ey = exponents if exponents is not None else (None, None)
    hsic = unbiased_hsic if debiased else linear_hsic
    kl = torch.zeros(len(S), dtype=F64, device=x.device)
    kk = torch.zeros(len(S), dtype=F64, device=x.device)
    L, grams = subset_grams(x, S, _Columns(x, block, ex), with_full=target is None)
    if target is not None:
        L = _Columns(target, block, ey).full_gram()
    L = cast(torch.Tensor, L)  # the target's Gram, or (with_full) X's
    for k, K in grams:
        kl[k], kk[k] = hsic(K, L), hsic(K, K)
    return kl, kk, hsic(L, L)


def sample_road_cka(x: torch.Tensor, S: Subsets, target: torch.Tensor | None, debiased: bool,
                    block: int | None = None) -> torch.Tensor:
    """(K,) float64 CKA(X[:, S_k], target) through n x n Grams (target: the full X when None).

    x: (n, d) float tensor (validated by the caller); target: (n, e) or None.
    """
    return ratio(*sample_road_hsic(x, S, target, debiased, block))


def median_all(A: torch.Tensor) -> torch.Tensor:
    """The median of every entry of A, the mean of the two middle ones for an even count (NumPy's rule)."""
    flat = A.reshape(-1)
    m = flat.numel()
    hi = torch.kthvalue(flat, m // 2 + 1).values
    return hi if m % 2 else 0.5 * (hi + torch.kthvalue(flat, m // 2).values)


_UPPER: dict[int, torch.Tensor] = {}


def median_from_upper(n: int, select: Callable[[list[int]], Iterable[float]]) -> float:
    """The median of all n^2 entries of a symmetric n x n distance matrix with a zero diagonal (NumPy's
    rule: the mean of the two middle ones for an even count), from its n(n-1)/2 upper values: sorted,
    the n^2 entries are the n zeros of the diagonal, then every upper value twice, so rank r > n of
    the whole is the ceil((r - n) / 2)-th upper value. ``select(ranks)``: the upper values of the given
    1-based ranks (a sorted list of one or two)."""
    m = n * n
    ranks = [m // 2 + 1] if m % 2 else [m // 2, m // 2 + 1]
    at = [(r - n + 1) // 2 for r in ranks]  # 1-based rank among the upper values; <= 0: a diagonal zero
    wanted = sorted({a for a in at if a > 0})
    got = dict(zip(wanted, select(wanted))) if wanted else {}
    vals = [float(got[a]) if a > 0 else 0.0 for a in at]
    return sum(vals) / len(vals)


def median_of_distances(D: torch.Tensor) -> torch.Tensor:
    """``median_all(D)`` for a symmetric n x n matrix of non-negative distances with a zero diagonal,
    through :func:`median_from_upper`: on the CPU one NumPy partition of the upper values for both
    middle ranks (half the values, one pass, where torch.kthvalue would scan all n^2 entries once per
    rank); elsewhere ``median_all``."""
    n = D.shape[0]
    if D.device.type != "cpu" or n < 3:
        return median_all(D)
    import numpy as np

    if n not in _UPPER:
        if len(_UPPER) > 8:
            _UPPER.clear()
        rows, cols = torch.triu_indices(n, n, 1)
        _UPPER[n] = rows * n + cols
    upper = D.reshape(-1)[_UPPER[n]].numpy()

    def select(ranks: list[int]) -> list[Any]:
        part = np.partition(upper, [r - 1 for r in ranks])
        return [part[r - 1] for r in ranks]

    return torch.tensor(median_from_upper(n, select), dtype=D.dtype)


def rbf_gram(K: torch.Tensor, sigma: float) -> torch.Tensor | None:
    """The Gaussian Gram exp(-|x_i - x_j|^2 / (2 sigma^2 m)) from a linear Gram K (n x n), with m the
    median of all squared distances (Kornblith et al. 2019's bandwidth rule); None when m = 0
    (all samples equal: no variance)."""
    sq = torch.diagonal(K)
    D = (sq[:, None] + sq[None, :] - 2.0 * K).clamp_min_(0.0)
    D.fill_diagonal_(0.0)
    med = median_of_distances(D)
    if not bool(med > 0):
        return None
    return torch.exp(D.div_(-2.0 * sigma * sigma * med))


def centred(G: torch.Tensor) -> torch.Tensor:
    """H G H in O(n^2)."""
    return G - G.mean(0, keepdim=True) - G.mean(1, keepdim=True) + G.mean()


def sample_road_rbf_cka(x: torch.Tensor, S: Subsets, target: torch.Tensor | None, target_gram: torch.Tensor | None,
                        debiased: bool, sigma: float, block: int | None = None) -> torch.Tensor:
    """(K,) float64 RBF-kernel CKA of every subset with the target: the full X's RBF Gram, a target
    layer's RBF Gram, or ``target_gram`` (any n x n kernel Gram). Squared distances add over
    coordinates, so each subset's distances come from its linear Gram along the chains."""
    n = x.shape[0]
    block = block or default_block(n)
    own = target is None and target_gram is None  # against X's own RBF Gram: its linear Gram is needed
    native = ops_rbf.available(x)  # (L lives on x's device) the native kernels read upper triangles only
    L_lin, grams = subset_grams(x, S, _Columns(x, block), with_full=own, whole=not native)
    L: torch.Tensor | None
    if target_gram is not None:
        L = ldexp(target_gram.to(F64), -input_exponent(target_gram, F64))  # exact, and CKA does not see it
    else:  # (L_lin is set when own; target is not None when not own)
        L = rbf_gram(cast(torch.Tensor, L_lin) if own else _Columns(cast(torch.Tensor, target), block).full_gram(),
                     sigma)
    out = torch.zeros(len(S), dtype=F64, device=x.device)
    if L is None:
        return out
    if native:
        for k, kl, kk, ll in _native_rbf_hsics(n, grams, L, debiased, sigma):
            out[k] = ratio(kl[None], kk[None], ll[None])[0]
        return out
    if not debiased:
        L = centred(L)
    ll = unbiased_hsic(L, L) if debiased else (L * L).sum()
    for k, K in grams:
        G = rbf_gram(K, sigma)
        if G is None:
            continue
        if debiased:
            kl, kk = unbiased_hsic(G, L), unbiased_hsic(G, G)
        else:
            # <HGH, HLH> = <G, HLH>, and ||HGH||^2 = ||G||^2 - 2 |G 1|^2 / n + (1'G1)^2 / n^2: no centred copy of G
            r = G.sum(1)
            kl, kk = (G * L).sum(), (G * G).sum() - 2.0 * (r @ r) / n + r.sum() ** 2 / (n * n)
        out[k] = ratio(kl[None], kk[None], ll[None])[0]
    return out


def _native_rbf_hsics(n: int, grams: Iterable[tuple[int, torch.Tensor]], L: torch.Tensor, debiased: bool,
                      sigma: float) -> Iterator[tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Yields (k, HSIC(G_k, L), HSIC(G_k, G_k), HSIC(L, L)) (float64 scalars) for every subset k whose RBF
    Gram G_k has variance, from the native sums over a < b of g, g^2 and g L_ab (pyred/ops/rbf.py):
    G_k is never formed. With rt the off-diagonal row sums of G (its diagonal is 1):
      biased:   <G, HLH> = 2 sum g (HLH)_ab + tr(HLH);  ||HGH||^2 = ||G||^2 - 2 |G 1|^2 / n + (1'G1)^2 / n^2
      unbiased: Song et al.'s estimator from <Gt, Lt> = 2 sum g L_ab, 1'Gt1 = 2 sum g, (Gt 1).(Lt 1) = rt.lt."""
    if debiased:
        M = L.contiguous()
        Lt = L - torch.diag(torch.diagonal(L))
        lt = Lt.sum(1)
        ones_l = lt.sum()
        ll = unbiased_hsic(L, L)
    else:
        M = centred(L).contiguous()
        trace_m = torch.trace(M)
        ll = (M * M).sum()
    for k, K in grams:
        med, sm, sg, sgg, rt = ops_rbf.rbf_median_sums(K, sigma, M)
        if not med > 0:
            continue  # all samples equal on this subset: no variance, CKA 0
        if debiased:
            kl = unbiased_hsic_from_sums(2.0 * sm, 2.0 * sg, ones_l, rt @ lt, n)
            kk = unbiased_hsic_from_sums(2.0 * sgg, 2.0 * sg, 2.0 * sg, rt @ rt, n)
        else:
            r = rt + 1.0
            kl = 2.0 * sm + trace_m
            kk = (n + 2.0 * sgg) - 2.0 * (r @ r) / n + (n + 2.0 * sg) ** 2 / (n * n)
        yield k, torch.as_tensor(kl, dtype=F64), torch.as_tensor(kk, dtype=F64), ll


def features_road_cost(n: int, d: int) -> float:
    """Multiply-adds of the d x d Gram (upper triangle)."""
    return 0.5 * n * d * d


def sample_road_cost(n: int, d: int, S: Subsets) -> float:
    """Multiply-adds of the n x n Grams against the full layer: its Gram plus one pass per chain over
    the columns :func:`split_chain` reads."""
    columns = sum(split_chain([int(S.sizes[k]) for k in chain], d)[1] for chain in nested_chains(S))
    return n * n * (d + columns)
