"""Batched probe training against training the heads one after another.

The paper's grid -- 14 fractions x 5 seeds + the full layer, K = 71 heads -- on
n = 20,000 synthetic float32 features (18,000 train, 2,000 validation; 2,000
more for testing), d = 2,048, 10 classes from a noisy random linear teacher.
The "sgd" recipe for PYRED_BENCH_EPOCHS epochs (default 3; per-epoch cost is
what differs), compared in the same process:
  loop:    (a) the 71 heads one after another in plain torch, same recipe and
           order (tests/helpers/probe_baselines.py, the reference code's way minus the backbone);
  masked:  (b) all heads as one dense (d, K C) weight with masked rows, one GEMM
           each way under torch autograd and torch.optim.SGD;
  pyred:   (c) pyred's "sgd" recipe, layout chosen by its cost rule;
  pyred (masked layout): pyred's own loop with the dense layout, for the cost rule;
  pyred (CUDA graphs): (c) with each step replayed as a CUDA graph (GPU only);
  gemm:    one float32 GEMM of the masked forward's shape, for the machine's rate.
All three trainers must end with the same test accuracies. Then "lbfgs" against
scikit-learn's LogisticRegression fitted head by head (n = 5,000, one seed's
14 heads + the full layer). Then one probe step of the 71 heads on a wide layer
(d = PYRED_BENCH_D_PROBE_WIDE, default 100,000) in each layout, and the layout crossover by
density (one epoch of 20 heads of one fraction) with the thresholds it suggests.
"""

import os

import numpy as np
import pytest
import torch

import pyred
from helpers.probe_baselines import train_heads_masked_dense, train_heads_one_by_one

N_TRAIN, N_VAL, N_TEST = 18_000, 2_000, 2_000
D = int(os.environ.get("PYRED_BENCH_D", 2048))
C = 10
EPOCHS = int(os.environ.get("PYRED_BENCH_EPOCHS", 3))
FRACTIONS = [0.0005, 0.001, 0.002, 0.003, 0.004, 0.005, 0.01, 0.05, 0.1, 0.2, 0.3, 0.5, 0.8, 0.9]


def paper_grid(d: int) -> pyred.Subsets:
    """The paper's 71 heads on d features: 14 fractions x 5 seeds, and the full layer."""
    return pyred.Subsets.concat([pyred.draw_subsets(d, FRACTIONS, [1, 2, 3, 4, 5]), pyred.draw_subsets(d, [1.0], [2])])


GRID = paper_grid(D)
RECIPE = dict(epochs=EPOCHS, eval_every=EPOCHS, lr=0.1, momentum=0.9, weight_decay=5e-4, batch_size=256, lr_step=20)
GROUP = f"sgd probes, n={N_TRAIN}, d={D}, K={len(GRID)}, {EPOCHS} epochs"


@pytest.fixture(scope="module")
def data(device):
    g = torch.Generator().manual_seed(0)
    n = N_TRAIN + N_VAL + N_TEST
    # Non-negative like pooled ReLU features (squared norm about 128); labels from a
    # noisy random linear teacher whose logits have std 6: accuracy then climbs
    # with the fraction of neurons, as in the paper.
    X = torch.relu(torch.randn(n, D, generator=g)) * (16 / D ** 0.5)
    Xc = X - X.mean(0)
    teacher = torch.randn(D, C, generator=g)
    teacher *= 6.0 / (Xc @ teacher).std()
    y = (Xc @ teacher + 0.5 * torch.randn(n, C, generator=g)).argmax(1)
    X, y = X.to(device), y.to(device)
    a, b = N_TRAIN, N_TRAIN + N_VAL
    return X[:a], y[:a], X[a:b], y[a:b], X[b:], y[b:]


def test_accuracy_sanity(data):
    Xtr, ytr, *_ = data
    assert len(torch.unique(ytr)) == C


@pytest.mark.parametrize("impl", ["pyred", "pyred (masked layout)", "pyred (gathered layout)", "pyred (grouped layout)",
                                  "pyred (CUDA graphs)", "masked", "loop", "gemm"])
def test_sgd(timed, data, impl):
    from conftest import OUTPUTS

    Xtr, ytr, Xv, yv, Xte, yte = data
    if impl == "gemm":
        W = torch.randn(D, len(GRID) * C, device=Xtr.device)
        timed(GROUP, "float32 GEMM (256 x 2048 x 710)", lambda: Xtr[:256] @ W, rounds=20)
        return
    if impl in ("loop", "masked"):
        train = train_heads_one_by_one if impl == "loop" else train_heads_masked_dense
        heads = timed(GROUP, impl, lambda: train(Xtr, ytr, Xv, yv, list(GRID), C, seed=0, **RECIPE), rounds=1)
        acc = torch.stack([((Xte[:, S.to(Xte.device)] @ W + b).argmax(1) == yte).double().mean()
                           for S, ((W, b), _) in zip(GRID, heads)])
    else:
        graphs = impl == "pyred (CUDA graphs)"
        if graphs and Xtr.device.type != "cuda":
            pytest.skip("CUDA graphs need a CUDA device")
        layout = "auto" if impl == "pyred" or graphs else impl.split("(")[1].split()[0]
        run = lambda: pyred.train_probes(Xtr, ytr, GRID, X_val=Xv, y_val=yv, seed=0, layout=layout,  # noqa: E731
                                         progress=False, cuda_graphs=graphs, **RECIPE)
        res = timed(GROUP, impl, run, rounds=2)
        acc = res.evaluate(Xte, yte).accuracy
        if impl == "pyred":
            print(f"\npyred chose layout {res.options.layout!r}")
    OUTPUTS[(GROUP, impl + " accuracy")] = acc.cpu()
    print(f"\n{impl}: mean test accuracy {float(acc.mean()):.4f} (full layer {float(acc[-1]):.4f})")
    if (GROUP, "pyred accuracy") in OUTPUTS and impl != "pyred":
        # Same heads, same steps, float32 sums in another order: equal up to a few flipped test samples.
        diff = (acc.cpu() - OUTPUTS[(GROUP, "pyred accuracy")]).abs().max()
        assert diff <= 2e-3, f"{impl}: test accuracies differ from pyred's by up to {float(diff)}"


N_LBFGS = 5000
LBFGS_HEADS = pyred.Subsets.concat([pyred.draw_subsets(D, FRACTIONS, [1]), pyred.draw_subsets(D, [1.0], [2])])


@pytest.mark.parametrize("impl", ["pyred", "scikit-learn"])
def test_lbfgs(timed, data, impl):
    lm = pytest.importorskip("sklearn.linear_model")
    from conftest import OUTPUTS

    Xtr, ytr, *_, Xte, yte = data
    Xtr, ytr = Xtr[:N_LBFGS], ytr[:N_LBFGS]
    group = f"lbfgs probes, n={N_LBFGS}, d={D}, K={len(LBFGS_HEADS)}, C=1, max_iter=100"
    if impl == "pyred":
        res = timed(group, impl, lambda: pyred.train_probes(Xtr, ytr, LBFGS_HEADS, recipe="lbfgs", C=1.0,
                                                            max_iter=100, progress=False), rounds=1)
        acc = res.evaluate(Xte, yte).accuracy.cpu()
    else:
        Xn, yn, Xt, yt = (a.cpu().numpy() for a in (Xtr, ytr, Xte, yte))

        def fit_all():
            return np.array([lm.LogisticRegression(C=1.0, max_iter=100).fit(Xn[:, S], yn).score(Xt[:, S], yt)
                             for S in (s.numpy() for s in LBFGS_HEADS)])

        acc = torch.tensor(timed(group, impl, fit_all, rounds=1))
    OUTPUTS[(group, impl + " accuracy")] = acc
    print(f"\n{impl}: lbfgs mean test accuracy {float(acc.mean()):.4f}")


def useful_gflop() -> float:
    """Useful work of one "sgd" run: forward and weight gradient, only the m_k columns of each head."""
    steps = EPOCHS * -(-N_TRAIN // 256)
    return steps * 2 * (2 * 256 * GRID.nnz * C) / 1e9  # (validation passes left out)


def test_report_useful_rate():
    """Useful GFLOP/s of pyred's run against the float32 GEMM rate, both measured above in this session."""
    from conftest import RESULTS

    gemm, mine = RESULTS.get((GROUP, "float32 GEMM (256 x 2048 x 710)")), RESULTS.get((GROUP, "pyred"))
    if gemm is None or mine is None:
        pytest.skip("run with the sgd benchmarks")
    gemm_rate = 2 * 256 * D * len(GRID) * C / 1e9 / gemm
    print(f"\nuseful work {useful_gflop():.1f} GFLOP in {mine:.2f} s = {useful_gflop() / mine:.0f} GFLOP/s; "
          f"float32 GEMM rate {gemm_rate:.0f} GFLOP/s; dense masked work "
          f"{useful_gflop() * D * len(GRID) / GRID.nnz:.1f} GFLOP")


# -- the cost rule: where the gathered kernels stop beating the dense masked layout --------
CROSSOVER_N = 4608  # 18 batches of 256


@pytest.mark.parametrize("layout", ["gathered", "masked", "grouped"])
@pytest.mark.parametrize("fraction", [0.02, 0.1, 0.3, 0.5, 0.7, 0.9])
def test_layout_crossover(timed, data, fraction, layout):
    """One epoch of 20 heads of one fraction (20 seeds): density = fraction."""
    Xtr, ytr, Xv, yv, *_ = data
    S = pyred.draw_subsets(D, [fraction], list(range(1, 21)))
    group = f"layout crossover, density {fraction:.2f}, K=20, n={CROSSOVER_N}, 1 epoch"
    timed(group, "pyred" if layout == "gathered" else f"{layout} layout",
          lambda: pyred.train_probes(Xtr[:CROSSOVER_N], ytr[:CROSSOVER_N], S, X_val=Xv[:256], y_val=yv[:256],
                                     layout=layout, epochs=1, eval_every=1, progress=False), rounds=3)



# -- wide layers: one step (forward and weight gradient) of the paper's 71 heads, per layout ----------
D_WIDE = int(os.environ.get("PYRED_BENCH_D_PROBE_WIDE", 100_000))  # past WIDE_D: "auto" avoids the masked layout


@pytest.mark.parametrize("layout", ["gathered", "grouped", "masked"])
def test_wide_step(timed, device, layout):
    """A batch of 256 through the 71 paper heads of a d = D_WIDE layer and back (weight gradient):
    "pyred" is the layout "auto" takes there (the choice README documents), the others beside it."""
    from pyred.probes.layouts import choose_layout, make_layout

    S = paper_grid(D_WIDE).to(device)
    g = torch.Generator().manual_seed(0)
    X = torch.randn(256, D_WIDE, generator=g).to(device)
    G = torch.randn(len(S), 256, C, generator=g).to(device)
    heads = make_layout(layout, S, D_WIDE)
    W = heads.from_packed(torch.randn(S.nnz, C, generator=g).to(device) * 0.01)

    def step():
        batch = heads.batch(X)
        return heads.logits(batch, W), heads.weight_grad(batch, G)

    auto = choose_layout(S, D_WIDE, device, C)
    group = f"wide-layer probe step, d={D_WIDE}, K={len(S)}, B=256 (auto: {auto})"
    timed(group, "pyred" if layout == auto else f"{layout} layout", step, rounds=3)


def crossover(times: dict[float, dict[str, float]], layout: str) -> float:
    """The density below which ``layout`` beats the masked GEMM, from {density: {layout: seconds}}:
    midway between the densest point it wins and the next one (0 when it never wins below the
    first loss, the largest density measured when it always wins)."""
    densities = sorted(times)
    wins = [times[f][layout] < times[f]["masked"] for f in densities]
    if not wins[0]:
        return 0.0
    last = wins.index(False) - 1 if False in wins else len(wins) - 1
    return densities[last] if last == len(wins) - 1 else (densities[last] + densities[last + 1]) / 2


def test_crossover_rule():
    t = {0.1: {"masked": 2, "gathered": 1}, 0.3: {"masked": 2, "gathered": 1.5}, 0.5: {"masked": 2, "gathered": 3}}
    assert crossover(t, "gathered") == 0.4
    assert crossover({0.1: {"masked": 1, "gathered": 2}}, "gathered") == 0.0
    assert crossover({0.1: {"masked": 2, "gathered": 1}, 0.5: {"masked": 2, "gathered": 1}}, "gathered") == 0.5


def test_report_crossover(device):
    """Per density: the masked layout's time over each sparse layout's, and the threshold they suggest
    for pyred.probes.layouts.GATHERED_BELOW on this device (printed, and added to PYRED_BENCH_OUT)."""
    from conftest import RESULTS, machine, report

    times: dict[float, dict[str, float]] = {}
    for (group, name), t in RESULTS.items():
        if group.startswith("layout crossover, density "):
            f = float(group.split("density ")[1].split(",")[0])
            times.setdefault(f, {})["gathered" if name == "pyred" else name.split()[0]] = t
    times = {f: ts for f, ts in times.items() if {"masked", "gathered", "grouped"} <= ts.keys()}
    if not times:
        pytest.skip("run with test_layout_crossover")
    fs = sorted(times)
    lines = [f"Layout crossover on {machine()} (one epoch, K = 20, n = {CROSSOVER_N}, d = {D}):", "",
             "| density | " + " | ".join(f"{f:.2f}" for f in fs) + " |", "|---|" + "---|" * len(fs)]
    for layout in ("gathered", "grouped"):
        lines.append(f"| masked / {layout} | " + " | ".join(f"{times[f]['masked'] / times[f][layout]:.2f}" for f in fs)
                     + " |")
    lines += ["", "Suggested thresholds (density below which the layout beats the masked GEMM): "
              + ", ".join(f"{layout} {crossover(times, layout):.2f}" for layout in ("gathered", "grouped"))]
    report("\n".join(lines))
