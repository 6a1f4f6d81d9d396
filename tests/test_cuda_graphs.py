"""The probe step replayed as CUDA graphs (``cuda_graphs=True``): the same numbers as the eager step.

On the CPU a stand-in runtime plays the graph's part (capture records the call without running it,
replay runs it on the static buffers), which checks everything around the capture: warm-up steps,
one graph per batch shape, a new capture when the learning rate changes, each batch copied into the
graph's buffers. On a GPU the same comparison runs with real graphs.
"""

import numpy as np
import pytest
import torch

import pyred
from helpers.devices import DEVICES
from pyred.probes import sgd
from pyred.probes.cuda_graphs import GraphedStep
from pyred.study import ConfigError, config_id, identity, load_config


class CpuReplay:
    """Stands in for :class:`pyred.probes.cuda_graphs.CudaRuntime` on the CPU."""

    def __init__(self):
        self.aside = self.replays = 0

    def run_aside(self, fn):
        self.aside += 1
        fn()

    def capture(self, fn):
        runtime = self

        class Graph:
            def replay(self):
                runtime.replays += 1
                fn()

        return Graph()


def problem(rng, n=530, d=40, C=5):
    X = rng.normal(size=(n, d)) + 0.5
    y = np.argmax(X @ rng.normal(size=(d, C)) + rng.normal(size=(n, C)), axis=1)
    S = pyred.draw_subsets(d, [0.05, 0.3, 0.9], seeds=[0, 1])
    return X, y, S


# 10 epochs, the rate divided every 5: two rates; 477 training rows (90 % of 530) in batches of 64:
# seven full batches and one of 29, so two shapes.
OPTS = dict(epochs=10, lr_step=5, batch_size=64, eval_every=2)


def train(X, y, S, device, dtype, layout, **kw):
    return pyred.train_probes(torch.tensor(X, dtype=dtype, device=device), torch.tensor(y, device=device), S,
                              seed=3, progress=False, layout=layout, **OPTS, **kw)


def assert_same(a, b):
    for name in ("weights", "biases", "train_loss", "val_accuracy", "selected_epoch"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name


@pytest.mark.parametrize("layout", ["masked", "gathered", "grouped"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_replayed_steps_equal_eager_steps(rng, monkeypatch, layout, dtype):
    X, y, S = problem(rng)
    eager = train(X, y, S, "cpu", dtype, layout)
    made = []

    def graphed(step, device):
        made.append(GraphedStep(step, device, runtime=CpuReplay()))
        return made[-1]

    monkeypatch.setattr(sgd, "GraphedStep", graphed)
    replayed = train(X, y, S, "cpu", dtype, layout, cuda_graphs=True)
    assert_same(replayed, eager)
    assert replayed.options.cuda_graphs is True
    (g,) = made
    # two shapes x two rates; two eager warm-up steps per shape; every other step replayed
    assert g.captures == 4
    assert g.runtime.aside == 4
    assert g.runtime.replays == 10 * 8 - 4


def test_a_stale_graph_would_be_caught(rng, monkeypatch):
    """The comparison above can fail: a runner that kept its graphs across a change of rate differs."""
    X, y, S = problem(rng)
    eager = train(X, y, S, "cpu", torch.float64, "masked")

    class KeepsGraphs(GraphedStep):
        def __call__(self, X, y, lr):
            self.lr = lr  # never clears the graphs: replays the first rate's steps
            super().__call__(X, y, lr)

    monkeypatch.setattr(sgd, "GraphedStep", lambda step, device: KeepsGraphs(step, device, runtime=CpuReplay()))
    stale = train(X, y, S, "cpu", torch.float64, "masked", cuda_graphs=True)
    assert not torch.equal(stale.weights, eager.weights)


def test_cuda_graphs_need_a_cuda_device(rng):
    X, y, S = problem(rng, n=100)
    with pytest.raises(ValueError, match="cuda_graphs: CUDA graphs need a CUDA device"):
        train(X, y, S, "cpu", torch.float32, "masked", cuda_graphs=True)
    with pytest.raises(TypeError, match="cuda_graphs: expected true or false"):
        train(X, y, S, "cpu", torch.float32, "masked", cuda_graphs="yes")


def test_cuda_graphs_stay_outside_a_studys_identity(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a study on "cuda" is checked against the machine
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    on = tmp_path / "on.toml"
    on.write_text('device = "cuda"\n[recipe_options]\ncuda_graphs = true\n')
    off = tmp_path / "off.toml"
    off.write_text('device = "cuda"\n')
    a, b = load_config(str(on), out=str(tmp_path)), load_config(str(off), out=str(tmp_path))
    assert a.recipe_options["cuda_graphs"] is True
    assert config_id(identity(a)) == config_id(identity(b)) == "2192c8408fd5"  # the default configuration's id
    with pytest.raises(ConfigError, match="cuda_graphs .*needs device = \"cuda\"; the device is 'cpu'"):
        load_config(str(on), out=str(tmp_path), device="cpu")


@pytest.mark.parametrize("device", [p for p in DEVICES if p != "cpu"])
@pytest.mark.parametrize("layout", ["masked", "gathered", "grouped"])
def test_cuda_graphs_on_a_gpu(rng, monkeypatch, device, layout):
    X, y, S = problem(rng)
    eager = train(X, y, S, device, torch.float32, layout)
    made = []

    def graphed(step, dev):
        made.append(GraphedStep(step, dev))
        return made[-1]

    monkeypatch.setattr(sgd, "GraphedStep", graphed)
    replayed = train(X, y, S, device, torch.float32, layout, cuda_graphs=True)
    assert made[0].captures == 4
    assert_same(replayed, eager)
