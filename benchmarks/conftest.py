"""Fixtures of the benchmark suites: whether this run times (``pytest --benchmark``)."""

import pytest


@pytest.fixture
def timing(request):
    """True under ``pytest --benchmark`` (timing on), False in a plain ``pytest`` run."""
    return bool(request.config.getoption("--benchmark"))
