"""The GEMM-alternatives benchmark (benchmarks/gemm_alternatives.py) computes the step's
products it claims to: each way's outputs against NumPy's on small odd shapes. The ways
run in a subprocess, so Numba's worker threads (split-2) never start in the test
process, beside the BLAS threads of the other tests. Nothing is asserted about speed."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import gemm_alternatives  # noqa: E402 - a script beside this file, not a package module

SIZES, P = (37, 19, 17, 5), 9  # halves of 16 and 8 rows: both threads have work

_RUN = """
import json, sys
sys.path.insert(0, {here!r})
import gemm_alternatives as g
_, acts, deltas, grads = g.step_seconds({way!r}, {sizes!r}, {P}, "float64", 2)
print(json.dumps([[x.tolist() for x in xs] for xs in (acts, deltas, grads)]))
"""


def _reference():
    """The step's products by NumPy, in the order the benchmark makes them."""
    W, acts, deltas, grads = gemm_alternatives.operands(SIZES, P, "float64")
    for l in range(len(W)):
        acts[l + 1] = acts[l] @ W[l]
    for l in range(len(W) - 1, -1, -1):
        grads[l] = acts[l].T @ deltas[l + 1]
        if l > 0:
            deltas[l] = deltas[l + 1] @ W[l].T
    return acts, deltas, grads


@pytest.mark.parametrize("way", ["openblas-all", "openblas-1", "split-2"])
def test_each_way_makes_the_step_products(way):
    code = _RUN.format(here=str(HERE), way=way, sizes=SIZES, P=P)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=600, check=True)
    got = json.loads(out.stdout.splitlines()[-1])
    for name, mine, ref in zip(("acts", "deltas", "grads"), got, _reference()):
        for l, (x, y) in enumerate(zip(mine, ref)):
            np.testing.assert_allclose(np.array(x), y, rtol=1e-12, atol=1e-12,
                                       err_msg=f"{way}: {name}[{l}]")


def test_table_gives_ratios_to_openblas_all():
    text = gemm_alternatives.table({"784-10@8": {"openblas-all": 100.0, "split-2": 50.0}})
    assert "| 784-10@8 | 100 | 50 | 2.00 |" in text


def test_case_is_checked():
    assert gemm_alternatives.parse_case("784-512-10@64") == ((784, 512, 10), 64)
    with pytest.raises(ValueError, match=r"case must look like '784-512-512-10@128', got 'x'"):
        gemm_alternatives.parse_case("x")
