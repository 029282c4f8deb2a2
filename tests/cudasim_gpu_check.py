"""``benchmarks/gpu_check.py``'s kernel check, run here under the simulator.

Run by ``tests/test_gpu_check.py`` in a subprocess with ``NUMBA_ENABLE_CUDASIM=1``: the
comparison the hardware check makes (every kernel on backend arrays against its NumPy
twin) must itself be right before a GPU's time is spent on it.
"""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from tests.cudasim_support import prepare

prepare()

_SPEC = importlib.util.spec_from_file_location(
    "gpu_check_runners",
    Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_check_runners.py")
runners = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(runners)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_kernel_check_passes_on_the_simulated_device(dtype):
    from gpubp.backends.cuda import CudaBackend

    results = []
    for P, n in ((1, 1), (37, 5)):
        runners._check_kernels_of(np, CudaBackend(), dtype, P, n, results)
    # 27: with the accuracy count of each output_delta case and the graph step's gather
    assert len(results) == 2 * 27 and all(r["ok"] for r in results), \
        [r for r in results if not r["ok"]]
