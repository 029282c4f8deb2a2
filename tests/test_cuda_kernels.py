"""The CUDA kernels without a GPU: the simulator, PTX compilation and ``ptxas``.

- The kernel-versus-twin cases live in ``tests/cudasim_kernels.py`` and run here in a
  subprocess with ``NUMBA_ENABLE_CUDASIM=1`` (the simulator has to be chosen before Numba
  is first imported, and this pytest process has imported it normally).
- Every kernel is compiled to PTX for sm_70 (where the toolkit still targets it), sm_75,
  sm_80 and sm_90 with Numba's NVVM, and assembled with ``ptxas -v`` from the
  ``nvidia-cuda-nvcc-cu12`` wheel of the test extra (so it runs wherever the tests do);
  the registers, shared memory and spills it reports are printed (``pytest -s``), checked
  against the kernels' design, and listed in ``docs/cuda.md``.
- Tests marked ``gpu`` run the kernels on CuPy arrays on a real device.
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gpubp import kernels
from gpubp.kernels import cuda as K
from gpubp.kernels import reference as R

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
N_KERNELS = 14  # bias_act(_keep), bias_softmax, output_delta(_wide), finish_cost,
#                 hidden_delta, weight_bias_grad, sum_splits, sgd_step, adam_step,
#                 rmsprop_step, clip_sum, clip_scale


def run_simulated(case_file, timeout=900):
    """Run a pytest file under the CUDA simulator in a fresh interpreter; fail loudly."""
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(case_file)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False,
    )
    tail = (proc.stdout + proc.stderr)[-6000:]
    assert proc.returncode == 0, f"simulated cases failed:\n{tail}"
    assert re.search(r"\d+ passed", proc.stdout) and "skipped" not in proc.stdout, tail


def test_kernels_match_reference_in_the_simulator():
    run_simulated(TESTS / "cudasim_kernels.py")


# -- host-side checks (no kernel launch) ----------------------------------------------


def test_bad_names_are_rejected_before_launch():
    z = np.zeros((2, 3))
    with pytest.raises(ValueError, match="activation must be one of"):
        K.bias_activation(z, np.zeros(3), "swish")
    with pytest.raises(ValueError, match="loss must be one of"):
        K.output_delta(z, z, "softmax", "hinge", z.copy())
    with pytest.raises(ValueError, match="activation must be one of"):
        K.output_delta(z, z, "softmax", "mse", z.copy())  # g_o' of softmax is not elementwise
    with pytest.raises(ValueError, match="activation must be one of"):
        K.hidden_delta(z, z, "softmax")
    with pytest.raises(ValueError, match="velocity must be an array"):
        K.sgd_update(z, z, None, 0.1, momentum=0.9)
    with pytest.raises(TypeError, match="dtype must be float32 or float64"):
        K.kernels_for(np.int32)


def test_launch_arithmetic():
    assert K.delta_blocks(1) == 1
    assert K.delta_blocks(K.REDUCE_THREADS) == 1
    assert K.delta_blocks(K.REDUCE_THREADS + 1) == 2
    assert K.delta_blocks(10**9) == K.DELTA_MAX_BLOCKS
    assert K.delta_blocks(37, K.WIDE_OUTPUT) == 1  # a thread per row
    assert K.delta_blocks(37, K.WIDE_OUTPUT + 1) == 37  # a block per row
    assert K._blocks(10**9, 256, K.ELEMENTWISE_MAX_BLOCKS) == K.ELEMENTWISE_MAX_BLOCKS
    assert K._blocks(0, 256, 10) == 1


# -- PTX ------------------------------------------------------------------------------


def _compile(cc):
    from numba import config  # the simulator has no NVVM (nor this error class)

    if config.ENABLE_CUDASIM:
        pytest.skip("Numba's CUDA simulator compiles no PTX (NUMBA_ENABLE_CUDASIM=1)")
    from numba.cuda.cudadrv.error import CCSupportError

    try:
        return kernels.compile_ptx(cc=cc)
    except CCSupportError as exc:  # e.g. sm_70 was dropped by the CUDA 13 toolkit
        pytest.skip(f"this CUDA toolkit's NVVM cannot target sm_{cc[0]}{cc[1]}: {exc}")


@pytest.fixture(scope="module")
def ptx_by_cc():
    return {}


@pytest.mark.parametrize("cc", [(7, 0), (7, 5), (8, 0), (9, 0)], ids=lambda cc: f"sm_{cc[0]}{cc[1]}")
def test_compile_ptx(cc, ptx_by_cc):
    ptx = _compile(cc)
    ptx_by_cc[cc] = ptx
    names = {f"{k}_{d}" for k in K.kernels_for(np.float32) for d in ("float32", "float64")}
    assert set(ptx) == names and len(names) == 2 * N_KERNELS
    for name, text in ptx.items():
        assert re.search(rf"^\.target sm_{cc[0]}{cc[1]}\b", text, re.MULTILINE), name
        assert ".entry" in text, name
        if name.endswith("float32"):
            # Constants and math stay in single precision: no double arithmetic at all,
            # except the one float64 add of the epoch's cost sum.
            doubles = re.findall(r"^\s*(\S+\.f64)\b", text, re.MULTILINE)
            if name == "finish_cost_float32":
                assert sorted(doubles) == ["add.f64", "cvt.f64", "ld.global.f64",
                                           "st.global.f64"], doubles
            elif name.startswith("clip_"):  # the gradient's norm: a float64 sum, by design
                assert doubles, f"{name}: the norm is no longer summed in float64"
            else:
                assert not doubles, f"{name} does double-precision work: {doubles}"


# PTX's min/max return the non-NaN operand; kernels on the path from an output to the cost
# (and relu) must not use them where the reference would keep a NaN.
NAN_SENSITIVE = ("bias_act", "bias_act_keep", "output_delta", "output_delta_wide",
                 "finish_cost", "clip_sum")


@pytest.mark.parametrize("cc", [(8, 0)], ids=["sm_80"])
def test_nan_is_not_clipped_away_on_hardware(cc, ptx_by_cc):
    ptx = ptx_by_cc.get(cc) or _compile(cc)
    for kernel in NAN_SENSITIVE:
        for dtype in ("float32", "float64"):
            text = ptx[f"{kernel}_{dtype}"]
            assert not re.search(r"\b(min|max)(\.ftz)?\.f(32|64)\b", text), (
                f"{kernel}_{dtype} uses min/max, which drop NaN on a GPU")
    # the check can fail: the old clip, min(max(a, lo), hi), compiles to exactly that
    from numba import cuda, float32

    def old_clip(out, a):
        out[0] = min(max(a, float32(1e-38)), float32(0.9999999))

    text, _ = cuda.compile_ptx(old_clip, "void(float32[::1], float32)", cc=cc)
    assert re.search(r"\bmax(\.ftz)?\.f32\b", text) and re.search(r"\bmin(\.ftz)?\.f32\b", text)


def _ptxas_path():
    """``ptxas`` of the ``nvidia-cuda-nvcc-cu12`` wheel (the test extra), else PATH's."""
    try:
        import nvidia.cuda_nvcc
    except ImportError:
        return shutil.which("ptxas")
    for root in nvidia.cuda_nvcc.__path__:
        candidate = Path(root) / "bin" / "ptxas"
        if candidate.is_file():
            return str(candidate)
    return shutil.which("ptxas")


PTXAS = _ptxas_path()


def test_ptxas_comes_with_the_test_extra():
    """CI installs the test extra: the resource tests below must run there, not skip."""
    assert PTXAS is not None, "nvidia-cuda-nvcc-cu12 (test extra) ships no ptxas"


def _ptxas(text, cc, path):
    """``ptxas -v`` output for one PTX text, lowering ``.version`` if ptxas is older.

    Numba's NVVM may come from a newer CUDA than the installed ptxas and stamp a PTX ISA
    version that ptxas rejects; the kernels use nothing newer than ptxas knows, so the
    version line is lowered to the one ptxas names in its error, and assembled again.
    """
    arch = f"sm_{cc[0]}{cc[1]}"
    for _ in range(2):
        path.write_text(text)
        proc = subprocess.run([PTXAS, "-v", f"-arch={arch}", str(path), "-o", os.devnull],
                              capture_output=True, text=True, check=False)
        if proc.returncode == 0:
            return proc.stderr + proc.stdout
        current = re.search(r"current version is '([\d.]+)'", proc.stderr)
        if not current:
            break
        text = re.sub(r"^\.version\s+\S+", f".version {current.group(1)}", text, count=1,
                      flags=re.MULTILINE)
    pytest.fail(f"ptxas failed for {arch}:\n{proc.stderr}")


# Shared memory each kernel is designed to use, in elements of its dtype.
SHARED_ELEMENTS = {
    "bias_softmax": 2 * K.ROW_THREADS,
    "output_delta": K.REDUCE_THREADS,
    "output_delta_wide": K.ROW_THREADS,
    "finish_cost": K.REDUCE_THREADS,
    "weight_bias_grad": K.GRAD_TILE_P * (K.GRAD_TILE_I + K.GRAD_TILE_J),
}
# ... and in bytes beyond that: the int64 block sum of the rows predicted right
SHARED_EXTRA_BYTES = {"output_delta": K.REDUCE_THREADS * 8}
# The weight gradient's 16x16 blocks must fit at least two to an SM (65536 registers).
MAX_REGISTERS = {"weight_bias_grad": 65536 // (2 * K.GRAD_THREADS**2)}


@pytest.mark.parametrize("cc", [(7, 5), (8, 0), (9, 0)], ids=lambda cc: f"sm_{cc[0]}{cc[1]}")
def test_ptxas_resources(cc, tmp_path, record_property, ptx_by_cc):
    ptx = ptx_by_cc.get(cc) or _compile(cc)
    lines = []
    for name, text in sorted(ptx.items()):
        report = _ptxas(text, cc, tmp_path / f"{name}.ptx")
        used = re.search(r"Used (\d+) registers", report)
        smem = re.search(r"(\d+) bytes smem", report)
        spills = [int(s) for s in re.findall(r"(\d+) bytes spill (?:stores|loads)", report)]
        registers, shared = int(used.group(1)), int(smem.group(1)) if smem else 0
        kernel, dtype = name.rsplit("_", 1)
        itemsize = np.dtype(dtype).itemsize
        assert shared == SHARED_ELEMENTS.get(kernel, 0) * itemsize + \
            SHARED_EXTRA_BYTES.get(kernel, 0), (name, report)
        assert not any(spills), (name, report)
        assert "0 bytes stack frame" in report, (name, report)  # no local memory
        assert registers <= MAX_REGISTERS.get(kernel, 255), (name, registers)
        lines.append(f"{name:28s} {registers:3d} registers {shared:5d} B shared")
        record_property(f"sm_{cc[0]}{cc[1]}:{name}", f"{registers} regs, {shared} B smem")
    print(f"\nptxas -v, sm_{cc[0]}{cc[1]}:\n" + "\n".join(lines))


# -- a real GPU -----------------------------------------------------------------------


def _gpu_or_skip():
    from gpubp.backends import cuda as cuda_backend

    usable, reason = cuda_backend.probe()
    if not usable or cuda_backend.simulated():
        pytest.skip(f"no usable CUDA GPU: {reason}")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kernels_on_the_gpu(dtype):
    _gpu_or_skip()
    import cupy

    from gpubp.backends.cuda import CudaBackend

    be, rng, tol = CudaBackend(), np.random.default_rng(1), {np.float32: 1e-5,
                                                             np.float64: 1e-10}[dtype]
    a_prev = rng.normal(size=(37, 20)).astype(dtype)
    z = rng.normal(size=(37, 18)).astype(dtype)
    b = rng.normal(size=18).astype(dtype)
    y = np.eye(18, dtype=dtype)[rng.integers(0, 18, 37)]
    stream = cupy.cuda.Stream(non_blocking=True)  # not the default: launches must follow
    with stream:
        dz, db_, dy = (cupy.asarray(v) for v in (z, b, y))
        be.bias_activation(dz, db_, "softmax")
        delta = cupy.empty_like(dz)
        cost = be.output_delta(dz, dy, "softmax", "cross_entropy", delta)
        dW, dbias = cupy.empty((20, 18), dtype), cupy.empty(18, dtype)
        be.weight_bias_gradients(cupy.asarray(a_prev), delta, dW, dbias)
        stream.synchronize()
    R.bias_activation(z, b, "softmax")
    want_delta = np.empty_like(z)
    want_cost = R.output_delta(z, y, "softmax", "cross_entropy", want_delta)
    np.testing.assert_allclose(cupy.asnumpy(dz), z, rtol=tol, atol=tol)
    assert float(cost) == pytest.approx(want_cost, rel=tol)
    np.testing.assert_allclose(cupy.asnumpy(dW), a_prev.T @ want_delta, rtol=tol, atol=tol)
    np.testing.assert_allclose(cupy.asnumpy(dbias), want_delta.sum(0), rtol=tol, atol=tol)


def test_simulated_launches_do_not_warn():
    """The simulator's launches (the path the tests take) emit no occupancy warning; on a
    GPU Kernel never builds Numba's launch configuration, which is what warns."""
    import subprocess as sp

    code = ("import warnings, numpy as np; warnings.simplefilter('error');"
            "from gpubp.kernels import cuda as K;"
            "z = np.zeros((3, 4), np.float32); K.bias_activation(z, np.ones(4, np.float32), "
            "'relu'); assert (z == 1).all()")
    proc = sp.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                  env=dict(os.environ, NUMBA_ENABLE_CUDASIM="1"), timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
