"""Independent float64 NumPy references, written from the definitions.

Gram-space HSIC with the centring matrix H = I - 11^T/n (biased) and the
unbiased HSIC of Song et al. (2012) from its formula -- deliberately not the
feature-space algebra that pyred uses.
"""

import numpy as np


def hsic_biased(K, L):
    n = K.shape[0]
    H = np.eye(n) - np.ones((n, n)) / n
    return float(np.sum((H @ K @ H) * (H @ L @ H)))


def hsic_unbiased(K, L):
    n = K.shape[0]
    Kt = K - np.diag(np.diag(K))
    Lt = L - np.diag(np.diag(L))
    one = np.ones(n)
    term1 = np.trace(Kt @ Lt)
    term2 = (one @ Kt @ one) * (one @ Lt @ one) / ((n - 1) * (n - 2))
    term3 = 2.0 / (n - 2) * (one @ Kt @ Lt @ one)
    return float((term1 + term2 - term3) / (n * (n - 3)))


def cka(X, Y, debiased=False):
    """Linear CKA of X (n, d) and Y (n, e) via n x n Gram matrices; 0 where a side has no variance."""
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    hsic = hsic_unbiased if debiased else hsic_biased
    K, L = X @ X.T, Y @ Y.T
    kk, ll = hsic(K, K), hsic(L, L)
    if kk * ll <= 0 or X.shape[1] == 0 or Y.shape[1] == 0:
        return 0.0
    return hsic(K, L) / np.sqrt(kk * ll)


def subset_cka(X, lists, target=None, debiased=False):
    X = np.asarray(X, dtype=np.float64)
    T = X if target is None else np.asarray(target, dtype=np.float64)
    return np.array([cka(X[:, np.asarray(s, dtype=np.int64)], T, debiased) for s in lists])


def pair_cka(X, lists_a, lists_b, debiased=False):
    X = np.asarray(X, dtype=np.float64)
    return np.array([cka(X[:, np.asarray(a, dtype=np.int64)], X[:, np.asarray(b, dtype=np.int64)], debiased)
                     for a, b in zip(lists_a, lists_b)])


def segment_sums(values, lists):
    values = np.atleast_2d(np.asarray(values, dtype=np.float64))
    return np.array([[v[np.asarray(s, dtype=np.int64)].sum() for v in values] for s in lists])


def block_sums(mats, rows, cols):
    mats = np.asarray(mats, dtype=np.float64)
    if mats.ndim == 2:
        mats = mats[None]
    return np.array([[A[np.ix_(np.asarray(r, dtype=np.int64), np.asarray(c, dtype=np.int64))].sum() for A in mats]
                     for r, c in zip(rows, cols)])


# -- RBF CKA, written from Kornblith et al. (2019)'s definitions ------------------------------------
def gram_rbf(X, threshold=1.0):
    """exp(-|x_i - x_j|^2 / (2 threshold^2 median)), the median over all squared distances."""
    X = np.asarray(X, dtype=np.float64)
    dot = X @ X.T
    sq = np.diag(dot)
    dist = np.maximum(sq[:, None] + sq[None, :] - 2 * dot, 0)
    np.fill_diagonal(dist, 0)
    return np.exp(-dist / (2 * threshold ** 2 * np.median(dist)))


def cka_from_grams(K, L, debiased=False):
    hsic = hsic_unbiased if debiased else hsic_biased
    kk, ll = hsic(K, K), hsic(L, L)
    if kk * ll <= 0:
        return 0.0
    return hsic(K, L) / np.sqrt(kk * ll)
