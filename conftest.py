"""Project-wide pytest options.

``pytest --benchmark`` runs the pytest-benchmark suites in ``benchmarks/`` with timing on.
``pyproject.toml`` passes ``--benchmark-disable`` by default, so a plain ``pytest`` still
runs every benchmark function once, untimed and on a small epoch (see
``benchmarks/conftest.py``), which keeps the suites from rotting without slowing the tests.
"""

import pytest


def pytest_addoption(parser):
    parser.addoption(
        "--benchmark", action="store_true", default=False,
        help="time the benchmark suites in benchmarks/ (and run only those)",
    )


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    # Runs before pytest-benchmark's own (trylast) configure hook reads these options.
    if config.getoption("--benchmark"):
        config.option.benchmark_enable = True  # overrides --benchmark-disable in addopts


def pytest_collection_modifyitems(config, items):
    # Under --benchmark run only the benchmarks; the other tests are deselected (quietly),
    # not reported one by one as skipped the way --benchmark-only does.
    if not config.getoption("--benchmark"):
        return
    keep = [item for item in items if "benchmark" in getattr(item, "fixturenames", ())]
    if len(keep) < len(items):
        config.hook.pytest_deselected(items=[i for i in items if i not in keep])
        items[:] = keep
