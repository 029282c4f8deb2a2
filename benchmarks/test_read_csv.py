"""pytest-benchmark of CSV reading (``pytest --benchmark benchmarks/test_read_csv.py``).

In a plain test run the benchmark body runs once on a small file (a smoke test);
``benchmarks/read_csv.py`` prints the ratios against pandas on the 104 MB file.
"""

import numpy as np
import pytest

from gpubp.datasets import read_csv

pd = pytest.importorskip("pandas")


@pytest.mark.parametrize("reader", ["gpubp", "pandas"])
def test_read_numeric_csv(benchmark, timing, tmp_path, reader):
    from read_csv import write_csv  # benchmarks/ is on sys.path (rootdir conftest)

    rows = 200_000 if timing else 500
    path = tmp_path / "numeric.csv"
    size = write_csv(path, rows)
    fn = (lambda: read_csv(path)) if reader == "gpubp" else \
        (lambda: pd.read_csv(path, header=None).to_numpy())
    result = benchmark(fn)
    X = result[0] if reader == "gpubp" else result[:, :-1]
    assert X.shape == (rows, 64) and np.isfinite(X).all()
    benchmark.extra_info["MB"] = size / 1e6
