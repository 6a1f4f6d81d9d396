"""CUDA graphs for the probe step.

At the paper's sizes one SGD step of all K heads is a few dozen small kernels
(B = 256, C = 10), so launching them from Python costs more than running them.
:class:`GraphedStep` records a step once as a CUDA graph and then launches the
whole step at once.

For each batch shape it runs ``WARMUP`` steps eagerly on a side stream (cuBLAS
workspaces and lazily loaded kernels are set up outside any capture), then
captures one step that reads two static input buffers, and from then on copies
each batch into those buffers and replays the graph. The learning rate is
recorded in the graph as a number, so a new rate (StepLR) captures again. Every
step, eager or replayed, is a real training step: the graph runs the same
kernels on the same data in the same order as the eager step.

The step must be capture-safe: no host synchronisation, shapes fixed by the
batch's, and its effects only in-place updates of tensors that outlive it (the
heads' parameters, momentum buffers and loss sums). :class:`pyred.probes.sgd.SGDStep`
is written so.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

StepFn = Callable[[torch.Tensor, torch.Tensor, float], None]


class CudaRuntime:
    """How :class:`GraphedStep` runs work aside and captures graphs on ``device`` (a CUDA device)."""

    def __init__(self, device: Any) -> None:
        self.device = torch.device(device)
        self.stream = torch.cuda.Stream(self.device)  # type: ignore[no-untyped-call]  # torch's Stream is untyped

    def run_aside(self, fn: Callable[[], None]) -> None:
        """fn() on the side stream, ordered after the current stream's work and before its next."""
        current = torch.cuda.current_stream(self.device)
        self.stream.wait_stream(current)
        with torch.cuda.stream(self.stream):
            fn()
        current.wait_stream(self.stream)

    def capture(self, fn: Callable[[], None]) -> torch.cuda.CUDAGraph:
        """A graph of fn()'s kernels (not run now): ``.replay()`` launches them on the current stream."""
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph, stream=self.stream):
                fn()
        except RuntimeError as exc:
            raise RuntimeError(f"cuda_graphs: the probe step could not be captured as a CUDA graph ({exc}); "
                               f"train with cuda_graphs=False") from exc
        return graph


class GraphedStep:
    """``step(X, y, lr)`` replayed as CUDA graphs: the same calls, the same results, fewer launches.

    X: (B, d) float features and y: (B,) int64 labels on the device; lr: a Python float. ``runtime`` is
    a :class:`CudaRuntime` for ``device`` unless given (tests pass one that runs on the CPU).
    """

    WARMUP = 2  # eager steps per batch shape before its capture

    def __init__(self, step: StepFn, device: Any, runtime: Any = None) -> None:
        if runtime is None:
            device = torch.device(device)
            if device.type != "cuda":
                raise ValueError(f"cuda_graphs: CUDA graphs need a CUDA device; the heads train on {device}")
            runtime = CudaRuntime(device)
        self.step, self.runtime = step, runtime
        self.eager_steps: dict[tuple[Any, ...], int] = {}  # batch shape -> eager steps run
        # batch shape -> (graph, X buffer, y buffer), for the current rate
        self.graphs: dict[tuple[Any, ...], tuple[Any, torch.Tensor, torch.Tensor]] = {}
        self.lr: float | None = None
        self.captures = 0

    def __call__(self, X: torch.Tensor, y: torch.Tensor, lr: float) -> None:
        if lr != self.lr:
            self.graphs.clear()  # graphs record the rate they were captured with
            self.lr = lr
        key = (tuple(X.shape), X.dtype, X.device, tuple(y.shape), y.dtype)
        entry = self.graphs.get(key)
        if entry is None:
            if self.eager_steps.get(key, 0) < self.WARMUP:
                self.eager_steps[key] = self.eager_steps.get(key, 0) + 1
                self.runtime.run_aside(lambda: self.step(X, y, lr))
                return
            X_in, y_in = torch.empty_like(X, memory_format=torch.contiguous_format), torch.empty_like(y)
            entry = self.graphs[key] = (self.runtime.capture(lambda: self.step(X_in, y_in, lr)), X_in, y_in)
            self.captures += 1
        graph, X_in, y_in = entry
        X_in.copy_(X)
        y_in.copy_(y)
        graph.replay()
