"""Fixtures shared by the tests.

Random data comes from one seed per test: PYRED_TEST_SEED (an integer, or
"random" for fresh entropy) or 20261127 by default, so a run is reproducible
and a failure names the seed that made it.
"""

import os
import signal

import numpy as np
import pytest

DEFAULT_SEED = 20261127


def test_seed() -> int:
    value = os.environ.get("PYRED_TEST_SEED", str(DEFAULT_SEED))
    if value == "random":
        return int(np.random.SeedSequence().entropy % (2**32))
    return int(value)


test_seed.__test__ = False  # not a test


@pytest.fixture
def rng(request):
    seed = test_seed()
    request.node.user_properties.append(("rng seed", seed))
    print(f"rng seed {seed} (set PYRED_TEST_SEED to change it)")
    return np.random.default_rng(seed)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    """PYRED_TEST_TIMEOUT=N fails a test that runs longer than N seconds (benchmarks/gpu_check.sh sets it)."""
    limit = int(os.environ.get("PYRED_TEST_TIMEOUT", "0") or 0)
    if limit <= 0:
        yield
        return

    def on_alarm(signum, frame):
        raise TimeoutError(f"{item.nodeid} ran longer than PYRED_TEST_TIMEOUT={limit} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(limit)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
