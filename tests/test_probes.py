import numpy as np
import pytest
import torch

import pyred
from helpers.devices import DEVICES
from helpers.probe_baselines import train_heads_one_by_one


def teacher_data(rng, n, d, C, noise=0.5, mean=1.0):
    """Learnable labels: a random linear teacher with noise, on non-centred features."""
    X = rng.normal(size=(n, d)) + mean
    T = rng.normal(size=(d, C))
    y = np.argmax((X - mean) @ T + noise * rng.normal(size=(n, C)), axis=1)
    return X, y


@pytest.mark.filterwarnings("ignore:Initializing zero-element tensors")
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layout", ["gathered", "masked", "grouped"])
def test_batched_sgd_equals_independent_trainings(rng, device, layout):
    n, d, C = 330, 12, 3
    X, y = teacher_data(rng, n + 100 + 200, d, C)
    Xtr, ytr, Xv, yv, Xte, yte = X[:n], y[:n], X[n:n + 100], y[n:n + 100], X[n + 100:], y[n + 100:]
    perm = rng.permutation(d)
    subsets = [[], perm[:1], perm[:5], np.arange(d), perm[:5], rng.permutation(d)[:7]]
    opts = dict(epochs=12, lr=0.1, momentum=0.9, weight_decay=5e-4, batch_size=32, lr_step=5, eval_every=3)
    res = pyred.train_probes(torch.tensor(Xtr, device=device), torch.tensor(ytr, device=device), subsets,
                             X_val=torch.tensor(Xv, device=device), y_val=torch.tensor(yv, device=device),
                             seed=7, progress=False, layout=layout, **opts)
    assert res.options.layout == layout
    ref = train_heads_one_by_one(Xtr, ytr, Xv, yv, subsets, C, seed=7, init_seeds=res.init_seeds.tolist(), **opts)
    assert res.init_seeds.tolist() == [7 + k for k in range(len(subsets))]
    ev = res.evaluate(torch.tensor(Xte, device=device), torch.tensor(yte, device=device))
    for k, ((W, b), epoch) in enumerate(ref):
        _, Wk, bk = res.head(k)
        assert int(res.selected_epoch[k]) == epoch
        torch.testing.assert_close(Wk.cpu(), W, rtol=1e-4, atol=1e-10)
        torch.testing.assert_close(bk.cpu(), b, rtol=1e-4, atol=1e-10)
        S = np.asarray(subsets[k], dtype=np.int64)
        acc = ((Xte[:, S] @ W.numpy() + b.numpy()).argmax(1) == yte).mean()
        assert float(ev.accuracy[k]) == pytest.approx(acc, abs=1e-12)
    assert res.val_accuracy.shape == (len(subsets), 4) and res.eval_epochs == [3, 6, 9, 12]
    assert res.train_loss.shape == (len(subsets), 12)


def test_float32_gathered_and_masked_agree(rng):
    X, y = teacher_data(rng, 600, 30, 4)
    S = pyred.draw_subsets(30, [0.1, 0.5, 1.0], [1, 2])
    kw = dict(epochs=6, eval_every=2, progress=False, seed=3)
    a = pyred.train_probes(X.astype(np.float32), y, S, layout="gathered", **kw)
    b = pyred.train_probes(X.astype(np.float32), y, S, layout="masked", **kw)
    torch.testing.assert_close(a.weights, b.weights, rtol=1e-4, atol=1e-5)
    assert a.selected_epoch.tolist() == b.selected_epoch.tolist()


@pytest.mark.parametrize("layout", ["gathered", "masked", "grouped"])
def test_lbfgs_agrees_with_scikit_learn(rng, layout):
    sklearn = pytest.importorskip("sklearn.linear_model")
    X, y = teacher_data(rng, 700, 10, 3, noise=1.0)
    Xtr, ytr, Xte, yte = X[:500], y[:500], X[500:], y[500:]
    subsets = [rng.permutation(10)[:3], rng.permutation(10)[:6], np.arange(10)]
    res = pyred.train_probes(Xtr, ytr, subsets, recipe="lbfgs", C=0.5, max_iter=500, tol=1e-10, layout=layout,
                             progress=False)
    assert res.options.layout == layout
    ev = res.evaluate(Xte, yte)
    for k, S in enumerate(subsets):
        clf = sklearn.LogisticRegression(C=0.5, tol=1e-10, max_iter=10_000).fit(Xtr[:, S], ytr)
        assert abs(float(ev.accuracy[k]) - clf.score(Xte[:, S], yte)) <= 0.005
        _, W, b = res.head(k)
        # softmax parameters are defined up to a per-feature shift across classes: compare centred
        Wc = W.numpy() - W.numpy().mean(1, keepdims=True)
        Sc = clf.coef_.T - clf.coef_.T.mean(1, keepdims=True)
        np.testing.assert_allclose(Wc, Sc, rtol=1e-3, atol=1e-4)


def test_ridge_equals_explicit_solves(rng):
    X, y = teacher_data(rng, 500, 15, 4)
    Xtr, ytr, Xv, yv = X[:400], y[:400], X[400:], y[400:]
    subsets = [[], rng.permutation(15)[:4], rng.permutation(15)[:4], np.arange(15)]
    alphas = (0.1, 10.0, 1000.0)
    res = pyred.train_probes(Xtr, ytr, subsets, recipe="ridge", X_val=Xv, y_val=yv, alphas=alphas, progress=False)
    Y = np.eye(4)[ytr]
    mu, ybar = Xtr.mean(0), Y.mean(0)
    for k, S in enumerate(subsets):
        S = np.asarray(S, dtype=np.int64)
        _, W, b = res.head(k)
        if len(S) == 0:
            np.testing.assert_allclose(b.numpy(), ybar, rtol=1e-12)
            continue
        Xc = Xtr[:, S] - mu[S]
        accs = []
        for a in alphas:
            Wa = np.linalg.solve(Xc.T @ Xc + a * np.eye(len(S)), Xc.T @ (Y - ybar))
            accs.append((((Xv[:, S] - mu[S]) @ Wa + ybar).argmax(1) == yv).mean())
        a = alphas[int(np.argmax(accs))]
        assert float(res.alpha[k]) == a
        Wa = np.linalg.solve(Xc.T @ Xc + a * np.eye(len(S)), Xc.T @ (Y - ybar))
        np.testing.assert_allclose(W.numpy(), Wa, rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(b.numpy(), ybar - mu[S] @ Wa, rtol=1e-6, atol=1e-9)


def test_evaluate_reports_per_class_accuracy(rng):
    X, y = teacher_data(rng, 400, 8, 3)
    res = pyred.train_probes(X[:300], y[:300], [[0, 1], list(range(8)), []], recipe="ridge", progress=False)
    ev = res.evaluate(X[300:], y[300:])
    assert isinstance(ev.accuracy, np.ndarray) and ev.predictions.shape == (3, 100)
    for k in range(3):
        pred = ev.predictions[k]
        for c in range(3):
            mask = y[300:] == c
            assert ev.per_class_accuracy[k, c] == pytest.approx((pred[mask] == c).mean())
        assert ev.accuracy[k] == pytest.approx((pred == y[300:]).mean())
    assert len(set(ev.predictions[2].tolist())) == 1  # the bias-only head predicts one class
    missing = res.evaluate(X[300:][y[300:] != 2], y[300:][y[300:] != 2])
    assert np.isnan(missing.per_class_accuracy[:, 2]).all()


def test_default_validation_split_is_the_reference_90_10(rng):
    X, y = teacher_data(rng, 200, 6, 2)
    res = pyred.train_probes(X, y, [[0, 1, 2]], epochs=5, eval_every=5, progress=False)
    assert res.val_accuracy.shape == (1, 1)
    tr, va = pyred.probes.data.split_train_val(200)
    assert len(tr) == 180 and len(va) == 20 and set(tr.tolist()).isdisjoint(va.tolist())


def test_bad_input_errors(rng):
    X, y = teacher_data(rng, 50, 5, 3)
    S = [[0, 1]]
    cases = [
        (dict(y_train=np.full(50, 3), num_classes=3), ValueError, r"y_train: label 3 is outside \[0, 3\)"),
        (dict(y_train=-y - 1), ValueError, "y_train: label -. is negative"),
        (dict(y_train=y + 0.5), TypeError, "y_train: labels must be integers"),
        (dict(y_train=np.zeros(50, dtype=int)), ValueError, "num_classes: a probe needs at least 2 classes"),
        (dict(y_train=np.r_[np.zeros(49, dtype=int), [0]], num_classes=3), ValueError,
         "all training labels are the same"),
        (dict(y_train=y[:40]), ValueError, "y_train: expected 50 labels"),
        (dict(X_train=np.where(np.arange(250).reshape(50, 5) == 17, np.nan, X)), ValueError,
         r"X_train: contains a non-finite value \(nan\) at \(row, column\) = \(3, 2\)"),
        (dict(X_train=X[:0], y_train=y[:0]), ValueError, "X_train: expected at least one sample"),
        (dict(recipe="adam"), ValueError, "recipe: expected one of"),
        (dict(epochs=0), ValueError, "epochs: expected an integer >= 1"),
        (dict(lr=-1.0), ValueError, "lr: expected a number >= 0"),
        (dict(momentom=0.9), TypeError, "unknown option 'momentom'; did you mean 'momentum'"),
        (dict(X_val=X), ValueError, "X_val and y_val: give both or neither"),
        (dict(X_val=X[:, :4], y_val=y), ValueError, "X_val: expected 5 features"),
        (dict(subsets=[[0, 9]]), IndexError, "index 9 is out of range"),
        (dict(recipe="lbfgs", C=0.0), ValueError, "C: expected a number > 0"),
        (dict(recipe="ridge", alphas=[]), ValueError, "alphas: expected a non-empty list"),
        (dict(init_seeds=[1, 2]), ValueError, "init_seeds: expected 1 seeds"),
        (dict(layout="sparse"), ValueError, "layout: expected"),
    ]
    for override, exc, match in cases:
        kw = dict(X_train=X, y_train=y, subsets=S, progress=False, epochs=1)
        kw.update(override)
        if kw.get("recipe") in ("lbfgs", "ridge"):
            kw.pop("epochs")
        with pytest.raises(exc, match=match):
            pyred.train_probes(kw.pop("X_train"), kw.pop("y_train"), kw.pop("subsets"), **kw)
    res = pyred.train_probes(X, y, S, epochs=1, progress=False)
    with pytest.raises(ValueError, match=r"y_test: label 7 is outside"):
        res.evaluate(X, np.full(50, 7))


@pytest.mark.filterwarnings("ignore:Initializing zero-element tensors")
def test_masked_dense_baseline_agrees_with_one_by_one(rng):
    """The benchmarks' dense baseline trains the same heads as the plain per-head loop."""
    from helpers.probe_baselines import train_heads_masked_dense

    X, y = teacher_data(rng, 300, 9, 3)
    subsets = [[], rng.permutation(9)[:4], np.arange(9)]
    opts = dict(epochs=6, batch_size=32, lr_step=3, eval_every=2)
    a = train_heads_one_by_one(X[:250], y[:250], X[250:], y[250:], subsets, 3, seed=1, **opts)
    b = train_heads_masked_dense(X[:250], y[:250], X[250:], y[250:], subsets, 3, seed=1, **opts)
    for ((Wa, ba), ea), ((Wb, bb), eb) in zip(a, b):
        assert ea == eb
        torch.testing.assert_close(Wa, Wb, rtol=1e-6, atol=1e-9)
        torch.testing.assert_close(ba, bb, rtol=1e-6, atol=1e-9)


def test_layout_rule_follows_the_cpu_simd_level(monkeypatch):
    """Where the gathered CPU kernels beat one masked GEMM depends on the SIMD level (measured at density
    0.1: 1.58x faster with AVX-512, 1.50x with AVX2 + FMA); the baseline kernels were never timed, so
    "auto" does not pick them."""
    from pyred import _native
    from pyred.probes import layouts

    S = pyred.draw_subsets(100, [0.05, 0.1], [1, 2])  # density 0.075
    for simd, want in [("avx512f", "gathered"), ("avx2", "gathered"), ("baseline", "masked"), (None, "masked")]:
        monkeypatch.setattr(_native, "cpu_simd", lambda s=simd: s)
        assert layouts.choose_layout(S, 100, torch.device("cpu")) == want, simd
    dense = pyred.draw_subsets(100, [0.5, 0.9], [1, 2])  # density 0.7
    for simd in ("avx512f", "avx2"):
        monkeypatch.setattr(_native, "cpu_simd", lambda s=simd: s)
        assert layouts.choose_layout(dense, 100, torch.device("cpu")) == "masked", simd


def test_wide_layers_take_a_layout_of_nnz_memory():
    """Past WIDE_D features, or a masked weight past MASKED_MAX_BYTES, never the masked layout: the CPU takes
    its gathered kernels; CUDA the grouped layout (torch's CUDA ops) until pyred's CUDA kernels are timed."""
    from pyred.probes import layouts

    wide = pyred.draw_subsets(layouts.WIDE_D + 1, [0.9], [1])
    assert layouts.choose_layout(wide, layouts.WIDE_D + 1, torch.device("cpu")) == "gathered"
    assert layouts.choose_layout(wide, layouts.WIDE_D + 1, torch.device("cuda")) == "grouped"
    assert layouts.choose_layout(wide, layouts.WIDE_D + 1, "cuda:1") == "grouped"
    many = pyred.draw_subsets(4096, [0.9], list(range(40)))  # 4096 x 40 x 500 float32 = 312 MiB masked
    assert layouts.choose_layout(many, 4096, torch.device("cuda"), num_classes=500) == "grouped"
    assert layouts.choose_layout(many, 4096, torch.device("cuda"), num_classes=10) == "masked"


def test_epochs_alone_scales_the_lr_step():
    """--epochs N alone used to leave StepLR at 20: with 10 epochs the rate never decayed."""
    from pyred.probes.sgd import SGDOptions

    assert SGDOptions().lr_step == 20 and SGDOptions(epochs=50).lr_step == 10
    assert SGDOptions(epochs=10).lr_step == 2 and SGDOptions(epochs=2).lr_step == 1
    assert SGDOptions(epochs=10, lr_step=7).lr_step == 7
    with pytest.raises(ValueError, match="epochs"):
        SGDOptions(epochs=0)
    res = pyred.train_probes(np.eye(4).repeat(5, 0), np.arange(4).repeat(5), [[0, 1]], epochs=4, progress=False)
    assert res.options.lr_step == 1


# -- heads that diverge are flagged, never reported as if fine (issue 17, item 5) -----------------------
def test_sgd_heads_that_diverge_at_once_have_no_accuracy(rng):
    """Before: lr=1e30 gave NaN weights, yet val_accuracy 0.30, a selected epoch, and evaluate() predicting
    class 0 everywhere (an accuracy of chance) without a warning."""
    X, y = teacher_data(rng, 400, 8, 3)
    X = X.astype(np.float32)
    S = [[0, 1], [2, 3, 4], []]
    # lr 1e30 blows up every head, the bias-only one too; features x 1e20 only the heads that read them
    for X_bad, kw, bad in ((X, dict(lr=1e30), 3), (X * np.float32(1e20), {}, 2)):
        with pytest.warns(RuntimeWarning, match=f"train_probes: {bad} of 3 heads diverged .* Likely cause: a "
                                                "learning rate too large for the features' scale"):
            res = pyred.train_probes(X_bad[:300], y[:300], S, epochs=5, eval_every=1, progress=False, **kw)
        assert res.diverged.tolist() == [True, True, bad == 3]
        assert torch.isnan(res.val_accuracy[:bad]).all() and (res.selected_epoch[:bad] == -1).all()
        ev = res.evaluate(X_bad[300:], y[300:])
        assert np.isnan(ev.accuracy[:bad]).all() and np.isnan(ev.per_class_accuracy[:bad]).all()
        assert (ev.predictions[:bad] == -1).all() and np.isfinite(ev.accuracy[bad:]).all()


def test_a_head_that_diverges_late_keeps_its_best_weights_from_before(rng):
    X, y = teacher_data(rng, 500, 6, 3)
    X = X.astype(np.float32)
    S = [[0, 1, 2], [3, 4, 5]]
    kw = dict(epochs=4, eval_every=1, lr_step=2, batch_size=50, seed=3, progress=False)
    with pytest.warns(RuntimeWarning, match="2 of 2 heads diverged"):
        late = pyred.train_probes(X[:400], y[:400], S, lr_gamma=1e12, **kw)  # lr 0.1, then 1e11 from epoch 3
    assert late.diverged.all() and torch.isnan(late.val_accuracy[:, 2:]).all()
    assert set(late.selected_epoch.tolist()) <= {1, 2}
    two = pyred.train_probes(X[:400], y[:400], S, **{**kw, "epochs": 2})  # the same first two epochs
    assert not two.diverged.any()
    for k in range(2):
        if int(late.selected_epoch[k]) == 2:
            torch.testing.assert_close(late.head(k)[1], two.head(k)[1], rtol=0, atol=0)
    ev = late.evaluate(X[400:], y[400:])
    assert np.isfinite(ev.accuracy).all() and (ev.predictions >= 0).all()


def test_only_the_heads_that_diverge_are_flagged(rng):
    X, y = teacher_data(rng, 400, 8, 3)
    X = X.astype(np.float32)
    X[:, :4] *= np.float32(1e20)  # heads reading these columns blow up at lr 0.1; the others train as usual
    S = [[0, 1], [5, 6, 7], [4, 5], [3, 7]]
    with pytest.warns(RuntimeWarning, match="2 of 4 heads diverged"):
        res = pyred.train_probes(X[:300], y[:300], S, epochs=3, eval_every=1, seed=1, progress=False)
    assert res.diverged.tolist() == [True, False, False, True]
    alone = pyred.train_probes(X[:300, 4:], y[:300], [[1, 2, 3], [0, 1]], epochs=3, eval_every=1, progress=False,
                               init_seeds=res.init_seeds[1:3].tolist(), seed=1)
    torch.testing.assert_close(res.head(1)[1], alone.head(0)[1])
    torch.testing.assert_close(res.head(2)[1], alone.head(1)[1])


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_lbfgs_is_scale_robust(rng):
    """Before: features x 1e10 gave NaN weights and x 1e20 all-zero weights, silently, where scikit-learn
    reaches its usual accuracy."""
    sklearn = pytest.importorskip("sklearn.linear_model")
    X, y = teacher_data(rng, 700, 10, 3, noise=1.0)
    X = X.astype(np.float32)
    subsets = [rng.permutation(10)[:3], np.arange(10)]
    for scale in (1e5, 1e10, 1e20, 1e30):
        Xs = X * np.float32(scale)
        res = pyred.train_probes(Xs[:500], y[:500], subsets, recipe="lbfgs", progress=False)
        assert not res.diverged.any() and torch.isfinite(res.weights).all() and (res.weights != 0).any()
        acc = res.evaluate(Xs[500:], y[500:]).accuracy
        for k, S in enumerate(subsets):
            clf = sklearn.LogisticRegression(C=1.0, max_iter=100).fit(Xs[:500][:, S].astype(np.float64), y[:500])
            assert float(acc[k]) >= clf.score(Xs[500:][:, S].astype(np.float64), y[500:]) - 0.02


def test_ridge_at_extreme_feature_scales(rng):
    """Least squares (alpha 0) is scale-equivariant: the same predictions at any feature scale."""
    X, y = teacher_data(rng, 600, 10, 3)
    S = [[0, 1, 2], list(range(10))]
    want = pyred.train_probes(X[:500], y[:500], S, recipe="ridge", alphas=[0.0], progress=False)
    for scale in (1e-30, 1e30):
        res = pyred.train_probes(X[:500] * scale, y[:500], S, recipe="ridge", alphas=[0.0], progress=False)
        assert not res.diverged.any()
        np.testing.assert_array_equal(res.evaluate(X[500:] * scale, y[500:]).predictions,
                                      want.evaluate(X[500:], y[500:]).predictions)


def test_the_progress_bar_says_what_it_shows(rng, capsys):
    pytest.importorskip("tqdm")
    X, y = teacher_data(rng, 200, 6, 3)
    pyred.train_probes(X, y, [[0, 1], [2, 3]], epochs=2, eval_every=1, progress=True)
    err = capsys.readouterr().err
    assert "mean_val_acc=" in err and "val_acc=0" not in err.replace("mean_val_acc", "")


# -- the L-BFGS solver (pyred.probes.minimize) ----------------------------------------------------------
def test_minimize_finds_the_minimum_of_a_quadratic_and_of_rosenbrock(rng):
    from pyred.probes.minimize import lbfgs

    A = rng.normal(size=(12, 12))
    H = torch.tensor(A @ A.T + 0.5 * np.eye(12))
    c = torch.tensor(rng.normal(size=12))
    want = torch.linalg.solve(H, c)

    def quadratic(x):
        return float(0.5 * x @ H @ x - c @ x), H @ x - c

    sol = lbfgs(quadratic, torch.zeros(12, dtype=torch.float64), max_iter=200, tol_grad=1e-10, tol_change=0)
    torch.testing.assert_close(sol.x, want, rtol=1e-7, atol=1e-8)
    assert sol.evaluations <= int(200 * 1.25)

    def rosenbrock(x):
        a, b = x[:-1], x[1:]
        f = (100 * (b - a * a) ** 2 + (1 - a) ** 2).sum()
        g = torch.zeros_like(x)
        g[:-1] += -400 * a * (b - a * a) - 2 * (1 - a)
        g[1:] += 200 * (b - a * a)
        return float(f), g

    sol = lbfgs(rosenbrock, torch.full((6,), -1.2, dtype=torch.float64), max_iter=500, tol_grad=1e-9, tol_change=0)
    torch.testing.assert_close(sol.x, torch.ones(6, dtype=torch.float64), rtol=1e-5, atol=1e-5)
    # the budget holds: a handful of iterations stop early, and evaluations never pass 1.25 x iterations
    short = lbfgs(rosenbrock, torch.full((6,), -1.2, dtype=torch.float64), max_iter=4)
    assert short.iterations <= 4 and short.evaluations <= 5
