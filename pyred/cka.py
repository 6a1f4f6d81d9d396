"""Linear CKA of whole layers and of many neuron subsets at once.

Two roads give the same numbers. The feature road (:class:`pyred.GramStats`):
one centred d x d Gram (and, for the debiased estimator, one fourth-moment
Gram) of the layer, then gathered sums over the subsets -- never a per-subset
copy of the features. The sample road (:mod:`pyred.sample_gram`): n x n Grams,
built incrementally along each chain of nested subsets -- for layers too wide
for a d x d Gram. ``route="auto"`` takes the cheaper one.
"""

from __future__ import annotations

from typing import Any, Literal, cast, get_args

from . import _checks as check
from . import cka_autograd
from .gram import MAX_GRAM_DIM, GramStats
from .numerics import require_finite
from .ops.arrays import float_matrix, from_torch
from .sample_gram import features_road_cost, sample_road_cka, sample_road_cost, sample_road_rbf_cka
from .subsets import Subsets, as_subsets

Route = Literal["auto", "features", "samples"]
Kernel = Literal["linear", "rbf"]
ROUTES: tuple[str, ...] = get_args(Route)
KERNELS: tuple[str, ...] = get_args(Kernel)
MAX_SAMPLE_GRAM = 32768  # n above this: an n x n float64 Gram would take over 8 GB


def linear_cka(X: Any, Y: Any, *, debiased: bool = False, chunk_size: int | None = None,
               route: Route = "auto") -> Any:
    """Linear CKA between two representations of the same n samples.

    Args:
      X: (n, d) float array (torch CPU/CUDA, numpy or cupy); Y: (n, e), same kind/device.
      debiased: False for the biased HSIC estimator (the paper's, Kornblith et
        al. 2019); True for the unbiased HSIC estimator (Song et al. 2012), n >= 4.
      chunk_size: samples per Gram chunk (default: about 256 MB of float32).
      route: "features" (d x d, e x e and d x e Grams), "samples" (two n x n
        Grams -- for wide layers) or "auto" (fewer multiply-adds; "samples"
        whenever d or e > 65,536).

    Returns:
      CKA as a Python float; 0.0 when either side has no variance. When X or Y is a torch
      tensor that requires grad (and grad mode is on): a 0-d float64 tensor whose gradient is
      exact (plain differentiable torch on the chosen route's algebra; see :mod:`pyred.cka_autograd`).
    """
    route = cast(Route, check.choice(route, "route", ROUTES))
    if route == "auto":
        n, d, e = _rows(X), _width(X), _width(Y, "Y")
        wide = max(d, e) > MAX_GRAM_DIM
        route = "samples" if wide or (n <= MAX_SAMPLE_GRAM and n * n * (d + e) < n * (d * d + e * e + d * e) / 2) \
            else "features"
    if cka_autograd.wants_grad(X, Y):
        d = _width(X)
        return cka_autograd.subset_cka(X, Subsets.from_lists([range(d)], d=d), _as_target(X, Y), debiased,
                                       route)[0]
    if route == "features":
        return GramStats.from_features(X, Y, debiased=debiased, chunk_size=chunk_size, target_name="Y").cka()
    d = _width(X)
    return float(subset_cka(X, Subsets.from_lists([range(d)], d=d), _as_target(X, Y), debiased=debiased,
                            route="samples")[0])


def _as_target(X: Any, Y: Any) -> Any:
    """Y with the same number of rows as X, or the precise error named Y."""
    y, _ = float_matrix(Y, "Y", check_finite=False)
    if y.shape[0] != _rows(X):
        raise ValueError(f"Y: expected {_rows(X)} samples (rows) like X, got {y.shape[0]}")
    return Y


def subset_cka(X: Any, subsets: Subsets | Any, target: Any = None, *, debiased: bool = False,
               chunk_size: int | None = None, route: Route = "auto", kernel: Kernel = "linear",
               sigma: float | None = None, target_gram: Any = None) -> Any:
    """CKA of each neuron subset of X with a target representation.

    Args:
      X: (n, d) float features (torch CPU/CUDA, numpy or cupy).
      subsets: K subsets of [0, d): a :class:`pyred.Subsets` or a sequence of index lists.
      target: (n, e) features of the same samples, or None for the full layer X
        (the paper's "part vs whole").
      debiased: unbiased HSIC estimator instead of the paper's biased one.
      chunk_size: samples per Gram chunk (feature road).
      route: "features" (one d x d Gram, then O(k^2) per subset), "samples"
        (n x n Grams, one pass over the columns per chain of nested subsets --
        for wide layers) or "auto" (the one with fewer multiply-adds; the
        sample road whenever d > 65,536, the feature road whenever n > 32,768).
        Both give the same numbers up to rounding.
      kernel: "linear", or "rbf": the Gaussian kernel with bandwidth ``sigma``
        (default 0.8; RBF only) times the median pairwise distance (Kornblith et
        al. 2019's rule, per subset); the target's Gram is the RBF Gram of
        ``target`` (or of X).
        RBF goes through the sample road.
      target_gram: an (n, n) kernel Gram of the target, used instead of
        ``target`` (any kernel; with kernel="rbf" only).

    Returns:
      (K,) float64 array of X's kind and device: CKA(X[:, S_k], target). An
      empty subset (k = 0) or one without variance gets 0.0. With the linear kernel,
      when X or target is a torch tensor that requires grad (and grad mode is on), the
      result carries autograd history and its gradient is exact (see
      :mod:`pyred.cka_autograd`); every other road returns a result without history.
    """
    d = _width(X)
    subsets = as_subsets(subsets, d)
    route = cast(Route, check.choice(route, "route", ROUTES))
    kernel = cast(Kernel, check.choice(kernel, "kernel", KERNELS))
    if kernel == "rbf":
        if route == "features":
            raise ValueError("route: the RBF kernel has no feature-space form; use route='samples' (or 'auto')")
        route = "samples"
        sigma = check.number(0.8 if sigma is None else sigma, "sigma", min=0, min_exclusive=True)
    elif target_gram is not None:
        raise ValueError("target_gram: only with kernel='rbf' (give target= features for linear CKA)")
    elif sigma is not None:
        raise ValueError(f"sigma: the bandwidth of the RBF kernel; kernel is 'linear', which has none "
                         f"(got sigma={sigma!r}; pass kernel='rbf' or drop sigma)")
    if route == "auto":
        route = choose_route(_rows(X), d, subsets, debiased)
    if kernel == "linear" and cka_autograd.wants_grad(X, target):
        return cka_autograd.subset_cka(X, subsets, target, debiased, route)
    if route == "features":
        return GramStats.from_features(X, target, debiased=debiased, chunk_size=chunk_size).subset_cka(subsets)
    x, kind = float_matrix(X, "X")
    y = None
    if target is not None:
        y, _ = float_matrix(target, "target")
        if y.shape[0] != x.shape[0]:
            raise ValueError(f"target: expected {x.shape[0]} samples (rows) like X, got {y.shape[0]}")
        if y.device != x.device:
            raise ValueError(f"target: expected the same device as X ({x.device}), got {y.device}")
    n = x.shape[0]
    if n < 2 or (debiased and n <= 3):
        raise ValueError(f"X: {'debiased' if debiased else 'linear'} CKA needs at least {4 if debiased else 2} "
                         f"samples, got n={n}")
    S = subsets.to(x.device)
    if kernel == "linear":
        return from_torch(require_finite(sample_road_cka(x, S, y, debiased), "subset_cka"), kind)
    L = None
    if target_gram is not None:
        if target is not None:
            raise ValueError("target_gram: give target or target_gram, not both")
        L, _ = float_matrix(target_gram, "target_gram")
        if L.shape != (n, n):
            raise ValueError(f"target_gram: expected an ({n}, {n}) Gram, got {tuple(L.shape)}")
        L = L.to(x.device)
    # (kernel is "rbf" here: sigma is set)
    return from_torch(require_finite(sample_road_rbf_cka(x, S, y, L, debiased, cast(float, sigma)), "subset_cka"), kind)


def choose_route(n: int, d: int, subsets: Subsets, debiased: bool = False) -> Literal["features", "samples"]:
    """The road with fewer multiply-adds, within both roads' memory limits (see :func:`subset_cka`)."""
    if d > MAX_GRAM_DIM:
        return "samples"
    if n > MAX_SAMPLE_GRAM:
        return "features"
    features = features_road_cost(n, d) * (3 if debiased else 1)  # debiased: also (X o X)^T (X o X) and Q
    return "samples" if sample_road_cost(n, d, subsets) < features else "features"


def subset_pair_cka(X: Any, subsets_a: Subsets | Any, subsets_b: Subsets | Any, *, debiased: bool = False,
                    chunk_size: int | None = None) -> Any:
    """CKA between pairs of neuron subsets of one layer: CKA(X[:, A_k], X[:, B_k]).

    Args:
      X: (n, d) float features; subsets_a, subsets_b: K subsets each.
      debiased, chunk_size: as in :func:`subset_cka`.

    Returns:
      (K,) float64 array of X's kind and device.
    """
    d = _width(X)
    a = as_subsets(subsets_a, d, "subsets_a")
    b = as_subsets(subsets_b, d, "subsets_b")
    if len(a) != len(b):
        raise ValueError(f"subsets_b: expected {len(a)} subsets (as many as subsets_a), got {len(b)}")
    return GramStats.from_features(X, debiased=debiased, chunk_size=chunk_size).subset_pair_cka(a, b)


def _rows(X: Any) -> int:
    shape = getattr(X, "shape", None)
    return int(shape[0]) if shape is not None and len(shape) == 2 else len(X)


def _width(X: Any, name: str = "X") -> int:
    """X's number of columns, for any input ``float_matrix`` accepts (arrays, tensors, nested lists)."""
    shape = getattr(X, "shape", None)
    if shape is None or len(shape) != 2:
        shape = float_matrix(X, name, check_finite=False)[0].shape  # raises the precise error if not 2-D
    return int(shape[1])
