"""DP-SGD on the ranks of a data-parallel run equals DP-SGD in one process.

Each rank clips its own share of every batch (the norms are per example), every rank
draws the same Poisson batches and the same noise from rank 0's generator (broadcast at
the start), rank 0 alone adds the noise, and the reduction sums the ranks' noisy clipped
sums: the parameters agree with one process's up to the order of the additions, and the
History (ε included) figure by figure. Launched with ``mpiexec`` and a timeout, as
``tests/test_distributed.py`` does.
"""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from distributed_cases import read_result  # noqa: E402
from test_distributed import assert_same_run, launch, single  # noqa: E402

DP = {"max_grad_norm": 0.4, "noise_multiplier": 0.8, "delta": 1e-5}
CASES = [
    # the fit's shuffled batches, uneven shares (47 rows in batches of 7: a last one of 5)
    {"name": "dp-shuffled-f64", "sizes": [5, 7, 3], "P": 47, "dtype": "float64",
     "fit": {"epochs": 2, "batch_size": 7, "lr": 0.2,
             "privacy": dict(DP, poisson=False)}},
    # Poisson batches of varying size (a rank's share may be empty), momentum
    {"name": "dp-poisson-momentum", "sizes": [5, 7, 6, 3], "P": 47, "dtype": "float64",
     "fit": {"epochs": 2, "batch_size": 5, "lr": 0.1, "optimizer": "momentum",
             "privacy": DP}},
    # the sums by per-layer Iallreduce messages, Adam
    {"name": "dp-poisson-iallreduce", "sizes": [5, 7, 3], "P": 47, "dtype": "float64",
     "group": {"reduction": "iallreduce"},
     "fit": {"epochs": 2, "batch_size": 8, "lr": 0.05, "optimizer": "adam", "privacy": DP}},
    # dropout: each rank masks its rows by their global places in the batch, counting
    # every batch with rows, its own share empty or not
    {"name": "dp-poisson-dropout", "sizes": [5, 7, 6, 3], "P": 47, "dtype": "float64",
     "hidden": ["gelu", "relu"], "dropout": [0.3, 0.2],
     "fit": {"epochs": 2, "batch_size": 5, "lr": 0.1, "privacy": DP}},
    {"name": "dp-poisson-f32", "sizes": [5, 8, 3], "P": 47, "dtype": "float32",
     "fit": {"epochs": 2, "batch_size": 7, "lr": 0.2, "privacy": DP}},
]
SUM_PATH = {"dp-poisson-iallreduce": "iallreduce "}


@pytest.fixture(scope="module")
def launches(tmp_path_factory):
    out = tmp_path_factory.mktemp("distributed-privacy")
    for n in (2, 3):
        proc = launch(n, CASES, out / f"n{n}", timeout=240)
        assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.mark.parametrize("n", [2, 3])
@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_private_ranks_end_with_the_single_process_result(launches, case, n):
    expected = single(case)
    assert len(expected[1]["history"]["epsilon"]) == 2
    rtol = 1e-5 if case["dtype"] == "float32" else 1e-12
    for r in range(n):
        got = read_result(launches / f"n{n}" / f"{case['name']}.rank{r}.npz")
        assert_same_run(expected, got, rtol, f"{case['name']} rank {r} of {n}")
        path = (launches / f"n{n}" / f"{case['name']}.rank{r}.sum").read_text()
        assert path.startswith(SUM_PATH.get(case["name"], "slice-sums")), path


def test_private_cuda_ranks_under_the_simulator_equal_one_cpu_process(tmp_path):
    """The clipping kernels of each rank's simulated GPU, the sums through the host."""
    case = {"name": "dp-cudasim", "sizes": [4, 5, 3], "P": 26, "dtype": "float64",
            "device": "cuda", "fit": {"epochs": 2, "batch_size": 6, "lr": 0.2,
                                      "privacy": DP}}
    proc = launch(2, [case], tmp_path, timeout=300, env={"NUMBA_ENABLE_CUDASIM": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    on_cpu = single(dict(case, device="cpu"))
    for r in range(2):
        with np.load(tmp_path / f"dp-cudasim.rank{r}.npz") as data:
            assert str(data["backend"]) == "cuda"
        got = read_result(tmp_path / f"dp-cudasim.rank{r}.npz")
        assert_same_run(on_cpu, got, 1e-12, f"private, cuda simulator, rank {r}")
