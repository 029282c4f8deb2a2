"""Fixtures of the benchmark suites: real epochs when timing, one small batch otherwise."""

import pytest

from gpubp import bench


@pytest.fixture
def timing(request):
    """True under ``pytest --benchmark`` (timing on), False in a plain ``pytest`` run."""
    return bool(request.config.getoption("--benchmark"))


@pytest.fixture
def epoch_batches(timing):
    """``batches(case)``: a full epoch of batches when timing, a single batch otherwise."""
    def batches(case):
        n = max(1, bench.SAMPLES_PER_EPOCH // case.batch_size) if timing else 1
        return bench.make_batches(case, n)
    return batches
