"""Shared set-up for the speed benchmarks: device, sizes and a ratio table.

Run:  pytest benchmarks --benchmark-enable      (add -s to see the table)
Env:  PYRED_BENCH_DEVICE=cpu|cuda, PYRED_BENCH_N, PYRED_BENCH_D, PYRED_BENCH_OUT=FILE
      (also writes the ratio table there, as markdown); test_cka_speed.py also reads
      PYRED_BENCH_N_WIDE, PYRED_BENCH_D_WIDE (the wide layer, 500 x 50,000) and
      PYRED_BENCH_N_RBF (1,000); test_probe_speed.py PYRED_BENCH_EPOCHS (3) and
      PYRED_BENCH_D_PROBE_WIDE (100,000: the wide-layer probe step).

Every ratio compares timings taken in the same process, on the same device and
data; tests never assert on wall time.
"""

import os
import platform

import pytest
import torch

RESULTS: dict[tuple[str, str], float] = {}  # (group, name) -> best seconds
OUTPUTS: dict[tuple[str, str], object] = {}  # (group, name) -> what the call returned


def bench_device() -> torch.device:
    return torch.device(os.environ.get("PYRED_BENCH_DEVICE", "cuda" if torch.cuda.is_available() else "cpu"))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@pytest.fixture(scope="session")
def device():
    return bench_device()


@pytest.fixture
def timed(benchmark, device):
    """timed(group, name, fn, rounds): benchmarks fn (synchronised), records its best time, returns its output.

    One call per test (pytest-benchmark's rule): parametrize over implementations.
    """

    def run(group, name, fn, rounds=3):
        def call():
            out = fn()
            sync(device)
            return out

        benchmark.group = group
        benchmark.name = name
        result = benchmark.pedantic(call, rounds=rounds, iterations=1, warmup_rounds=1 if rounds > 1 else 0)
        RESULTS[(group, name)] = benchmark.stats.stats.min
        OUTPUTS[(group, name)] = result
        return result

    return run


def machine() -> str:
    dev = bench_device()
    if dev.type == "cuda":
        return f"{torch.cuda.get_device_name(dev)} (torch {torch.__version__})"
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch "
            f"threads (torch {torch.__version__})")


def report(text: str) -> None:
    """Prints a table, and appends it to PYRED_BENCH_OUT when that is set."""
    print("\n\n" + text)
    out = os.environ.get("PYRED_BENCH_OUT")
    if out:
        with open(out, "a") as f:
            f.write(text + "\n\n")


def pytest_sessionfinish(session, exitstatus):
    if not RESULTS:
        return
    groups = sorted({g for g, _ in RESULTS})
    lines = [f"Machine: {machine()}", "", "| group | implementation | best time (s) | ratio to pyred |",
             "|---|---|---|---|"]
    for g in groups:
        mine = RESULTS.get((g, "pyred"))
        for (gg, name), t in sorted(RESULTS.items(), key=lambda kv: kv[1]):
            if gg != g:
                continue
            ratio = f"{t / mine:.2f}x" if mine else "-"
            lines.append(f"| {g} | {name} | {t:.4f} | {ratio} |")
    report("\n".join(lines))
