"""DP-SGD's clipping kernels (gpubp.kernels.cuda_private) without a GPU: the simulated cases
of ``tests/cudasim_privacy.py`` in a subprocess, PTX for sm_70 (where the toolkit still
targets it), sm_80 and sm_90, and ``ptxas -v`` on it (registers, shared memory, no spills)."""

import re

import numpy as np
import pytest

from gpubp.kernels import reference_private as RP
from tests.test_cuda_kernels import PTXAS, TESTS, _gpu_or_skip, _ptxas, run_simulated

CCS = [(7, 0), (8, 0), (9, 0)]
NAMES = {f"{k}_{d}" for k in ("example_norm", "clip_rows") for d in ("float32", "float64")}


def test_clipping_kernels_and_private_fits_in_the_simulator():
    run_simulated(TESTS / "cudasim_privacy.py")


def _ptx(cc):
    from numba import config  # the simulator has no NVVM

    if config.ENABLE_CUDASIM:
        pytest.skip("Numba's CUDA simulator compiles no PTX (NUMBA_ENABLE_CUDASIM=1)")
    from numba.cuda.cudadrv.error import CCSupportError

    from gpubp.kernels import cuda_private  # numba.cuda: only when PTX is asked for

    try:
        return cuda_private.compile_ptx(cc=cc)
    except CCSupportError as exc:  # e.g. sm_70 was dropped by the CUDA 13 toolkit
        pytest.skip(f"this CUDA toolkit's NVVM cannot target sm_{cc[0]}{cc[1]}: {exc}")


@pytest.mark.parametrize("cc", CCS, ids=lambda cc: f"sm_{cc[0]}{cc[1]}")
def test_clipping_kernels_compile_and_assemble(cc, tmp_path):
    from gpubp.kernels.cuda_device import ROW_THREADS

    ptx = _ptx(cc)
    assert set(ptx) == NAMES
    assert PTXAS is not None, "nvidia-cuda-nvcc-cu12 (test extra) ships no ptxas"
    for name, text in ptx.items():
        assert re.search(rf"^\.target sm_{cc[0]}{cc[1]}\b", text, re.MULTILINE), name
        if name.endswith("float32"):  # single precision throughout
            doubles = re.findall(r"^\s*(\S+\.f64)\b", text, re.MULTILINE)
            assert not doubles, f"{name} does double-precision work: {doubles}"
        if name.startswith("clip_rows"):  # min() would turn a NaN norm into 1
            assert not re.search(r"\bmin(\.ftz)?\.f(32|64)\b", text), name
        report = _ptxas(text, cc, tmp_path / f"{name}.ptx")
        smem = re.search(r"(\d+) bytes smem", report)
        shared = int(smem.group(1)) if smem else 0
        kernel, dtype = name.rsplit("_", 1)
        expected = 2 * ROW_THREADS if kernel == "example_norm" else 0  # the two partials
        assert shared == expected * np.dtype(dtype).itemsize, (name, report)
        assert not any(int(s) for s in re.findall(r"(\d+) bytes spill", report)), report
        assert "0 bytes stack frame" in report, (name, report)


def test_the_twin_clips_to_C_and_keeps_nan():
    rng = np.random.default_rng(0)
    P = 5
    inputs = [rng.normal(size=(P, 3)), rng.normal(size=(P, 4))]
    deltas = [rng.normal(size=(P, 4)) / P, rng.normal(size=(P, 2)) / P]
    deltas[1][3, 0] = np.nan
    norms = P * np.sqrt(sum(((a ** 2).sum(1) + 1) * (d ** 2).sum(1)
                            for a, d in zip(inputs, deltas)))
    RP.clip_example_rows(inputs, deltas, 0.5)
    clipped = np.sqrt(sum(((a ** 2).sum(1) + 1) * (d ** 2).sum(1)
                          for a, d in zip(inputs, deltas)))
    finite = np.arange(P) != 3
    np.testing.assert_allclose(clipped[finite], np.minimum(1, 0.5 / (norms + 1e-6))[finite]
                               * norms[finite], rtol=1e-12)
    assert np.isnan(deltas[0][3]).all()


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_clipping_kernels_on_the_gpu(dtype):
    _gpu_or_skip()
    import cupy

    from gpubp.backends.cuda import CudaBackend

    be, rng = CudaBackend(), np.random.default_rng(4)
    tol = {np.float32: 1e-5, np.float64: 1e-12}[dtype]
    P, sizes = 300, [70, 33, 1, 10]
    inputs = [rng.normal(size=(P, n)).astype(dtype) for n in sizes[:-1]]
    deltas = [(rng.normal(size=(P, n)) / P).astype(dtype) for n in sizes[1:]]
    stream = cupy.cuda.Stream(non_blocking=True)  # not the default: launches must follow
    with stream:
        got = [cupy.asarray(d) for d in deltas]
        be.clip_example_rows([cupy.asarray(a) for a in inputs], got, 0.05)
        stream.synchronize()
    RP.clip_example_rows(inputs, deltas, 0.05)
    for g, w in zip(got, deltas):
        np.testing.assert_allclose(cupy.asnumpy(g), w, rtol=tol, atol=0)
