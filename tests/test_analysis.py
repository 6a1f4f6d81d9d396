import numpy as np
import pytest

from pyred import analysis as A

# The paper's ResNet50 probe accuracies vs fraction (standard and l2-robust, 5 seeds, 100 epochs; the authors'
# saved notebook outputs), the full layer from its single run.
R50 = [0.0005, 0.001, 0.002, 0.003, 0.004, 0.005, 0.01, 0.05, 0.1, 0.2, 0.3, 0.5, 0.8, 0.9]
STD = {
    "CIFAR10": ([12.3, 15.1, 18.6, 23.2, 25.2, 27.4, 37.1, 69.5, 77.9, 83.2, 85.2, 87.4, 88.8, 89.1], 89.1),
    "CIFAR100": ([1.5, 2.2, 3.3, 4.0, 4.8, 5.4, 9.4, 29.0, 41.0, 51.8, 56.8, 62.3, 66.1, 66.8], 66.3),
    "Flowers": ([2.7, 0.6, 0.9, 1.2, 1.4, 1.4, 1.6, 6.5, 13.4, 24.1, 32.7, 47.5, 56.7, 59.2], 60.9),
    "Pets": ([3.8, 3.5, 4.7, 7.8, 9.2, 13.0, 22.9, 66.3, 82.7, 88.1, 90.0, 91.1, 92.1, 92.2], 92.5),
}
L2 = {
    "CIFAR10": ([13.1, 15.7, 22.2, 25.5, 29.5, 32.8, 46.5, 74.6, 80.7, 84.1, 85.4, 86.7, 87.6, 87.7], 87.7),
    "CIFAR100": ([1.8, 2.7, 4.5, 6.2, 7.8, 9.7, 19.1, 48.4, 57.3, 62.4, 64.6, 66.1, 67.1, 67.5], 67.3),
    "Flowers": ([2.3, 0.9, 0.9, 1.1, 2.0, 2.0, 5.1, 34.5, 50.8, 62.0, 66.3, 70.2, 72.6, 73.1], 73.4),
    "Pets": ([4.2, 5.8, 8.9, 13.4, 17.1, 20.2, 35.0, 72.1, 78.3, 81.8, 82.7, 83.2, 83.4, 83.5], 83.5),
}


def test_dr_on_the_papers_resnet50_cifar10_numbers():
    accs, full = STD["CIFAR10"]
    # ratio 0.874 at f = 0.1 and 0.934 at f = 0.2: "nearest" picks 0.1, "threshold" 0.2
    assert A.diffused_redundancy(R50, accs, full, 0.9, "nearest") == pytest.approx(0.9)
    assert A.diffused_redundancy(R50, accs, full, 0.9, "threshold") == pytest.approx(0.8)
    assert A.diffused_redundancy(R50, accs, full) == pytest.approx(0.9)  # nearest is the default


# DR(0.9) nearest, DR(0.9) threshold, DR(0.95) nearest, worked out by hand from the tables above
# (the nearest rule gives the values of the paper's Table 1).
TABLE_44 = [
    (STD, "CIFAR100", 0.50, 0.50, 0.50), (STD, "Flowers", 0.20, 0.20, 0.20), (STD, "Pets", 0.90, 0.80, 0.80),
    (STD, "CIFAR10", 0.90, 0.80, 0.70), (L2, "CIFAR10", 0.90, 0.90, 0.80), (L2, "CIFAR100", 0.80, 0.80, 0.70),
    (L2, "Flowers", 0.70, 0.70, 0.50), (L2, "Pets", 0.95, 0.90, 0.90),
]


@pytest.mark.parametrize("table, task, near90, thr90, near95", TABLE_44)
def test_dr_reproduces_the_worked_table(table, task, near90, thr90, near95):
    accs, full = table[task]
    assert A.diffused_redundancy(R50, accs, full, 0.9, "nearest") == pytest.approx(near90)
    assert A.diffused_redundancy(R50, accs, full, 0.9, "threshold") == pytest.approx(thr90)
    assert A.diffused_redundancy(R50, accs, full, 0.95, "nearest") == pytest.approx(near95)


def test_vit21k_coarse_grid():
    f = [0.005, 0.05, 0.1, 0.2, 0.5, 0.9]
    cifar100 = [1.9, 35.3, 57.4, 73.0, 81.6, 83.3]
    assert A.diffused_redundancy(f, cifar100, 83.4, 0.9, "nearest") == pytest.approx(0.8)
    assert A.diffused_redundancy(f, cifar100, 83.4, 0.9, "threshold") == pytest.approx(0.5)


def test_dr_curve_and_grids():
    accs, full = STD["CIFAR10"]
    d, dr = A.dr_curve(R50, accs, full, "paper30")
    assert len(d) == 30 and d[0] == 0.0 and d[-1] == 1.0
    assert dr[-1] == pytest.approx(0.1)  # delta = 1: f = 0.9 already equals the full layer (89.1), and ties go low
    assert np.all(np.diff(dr[d >= 0.5]) <= 1e-12)  # DR falls as delta rises (this curve is monotone)
    assert len(A.DELTA_GRIDS["high10"]) == 10 and A.DELTA_GRIDS["high20"][0] == 0.75


def test_seed_stats_uses_population_std():
    f = [0.1, 0.1, 0.1, 0.5, 0.5]
    v = [1.0, 2.0, 3.0, 4.0, 6.0]
    uf, mean, std, n = A.seed_stats(f, v)
    assert uf.tolist() == [0.1, 0.5] and mean.tolist() == [2.0, 5.0] and n.tolist() == [3, 2]
    assert std == pytest.approx([np.sqrt(2 / 3), 1.0])


def test_gini_max_min_cv_by_hand():
    assert A.gini([1, 1, 1, 1]) == pytest.approx(0.0, abs=1e-7)
    # one of n holds everything: (n - 1) / n
    assert A.gini([0, 0, 0, 10]) == pytest.approx(0.75, abs=1e-7)
    # [1, 2, 3, 4]: sum (2i - 5) x_i = -3 - 2 + 3 + 12 = 10; / (4 * 10)
    assert A.gini([4, 1, 3, 2]) == pytest.approx(0.25, abs=1e-7)
    # negatives are shifted: [-1, 1] -> [0, 2] -> 0.5
    assert A.gini([-1, 1]) == pytest.approx(0.5, abs=1e-7)
    assert A.max_min([0.2, 0.9, 0.5]) == pytest.approx(0.7)
    assert A.coefficient_of_variation([2, 4]) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="values: contains NaN"):
        A.gini([1, float("nan")])


def test_pca_baselines_match_numpy_eigh():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 8)) @ rng.normal(size=(8, 8)) + 3.0
    basis = A.PCABasis(X)
    Xc = X - X.mean(0)
    evals, evecs = np.linalg.eigh(Xc.T @ Xc)
    order = np.argsort(evals)[::-1]
    np.testing.assert_allclose(basis.variances, evals[order] / 300, rtol=1e-10)
    np.testing.assert_allclose(basis.mean, X.mean(0), rtol=1e-12)
    for k in (1, 3, 8):
        top = basis.project(X, k)
        want = X @ evecs[:, order[:k]]
        np.testing.assert_allclose(np.abs(top), np.abs(want), rtol=1e-8, atol=1e-8)  # up to each column's sign
        bottom = basis.project(X, k, "bottom")
        np.testing.assert_allclose(np.abs(bottom), np.abs(X @ evecs[:, order[8 - k:]]), rtol=1e-8, atol=1e-8)
    with pytest.raises(ValueError, match="k: expected an integer <= 8, got 9"):
        basis.project(X, 9)


def test_random_projections():
    P = A.random_projection(50, 10, seed=3)
    assert P.shape == (50, 10) and np.array_equal(P, A.random_projection(50, 10, seed=3))
    U = A.random_projection(50, 10, seed=3, kind="uniform")
    assert np.all(U >= 0) and np.allclose(np.linalg.norm(U, axis=0), 1.0)


def test_dr_bad_input():
    with pytest.raises(ValueError, match="rule: expected one of"):
        A.diffused_redundancy([0.5], [1.0], 1.0, rule="closest")
    with pytest.raises(ValueError, match="accuracies: expected 2 values"):
        A.diffused_redundancy([0.1, 0.5], [1.0], 1.0)
    with pytest.raises(ValueError, match=r"fractions: each must be in \(0, 1\]"):
        A.diffused_redundancy([0.0, 0.5], [1.0, 2.0], 2.0)
    with pytest.raises(ValueError, match="full_accuracy: expected a positive number"):
        A.diffused_redundancy([0.5], [1.0], 0.0)
