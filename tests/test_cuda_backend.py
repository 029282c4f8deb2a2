"""The ``cuda`` backend: probe, options, a simulated network, and the real GPU path.

``probe()`` is exercised against a fake ``cupy`` module for each way a machine can lack a
usable GPU (it must name the reason and never raise). The whole-network comparison with
the reference backend runs ``tests/cudasim_network.py`` under the simulator in a
subprocess. Tests marked ``gpu`` train on a real device and skip, with the reason, here.
"""

import os
import re
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

import gpubp
from gpubp.backends import base
from gpubp.backends import cuda as cuda_backend

TESTS = Path(__file__).resolve().parent


@pytest.fixture(autouse=True)
def fresh_probe():
    cuda_backend.probe.cache_clear()
    yield
    cuda_backend.probe.cache_clear()


def test_probe_here_never_raises():
    usable, reason = cuda_backend.probe()
    assert isinstance(usable, bool) and isinstance(reason, str) and reason
    assert base.cuda_status() == (usable, reason)


def _fake_cupy(driver=13000, runtime=13000, devices=1, available=True, matmul=None,
               driver_error=None):
    """A stand-in ``cupy`` module with just what ``probe`` touches."""

    def driver_version():
        if driver_error:
            raise driver_error
        return driver

    rt = types.SimpleNamespace(driverGetVersion=driver_version,
                               runtimeGetVersion=lambda: runtime,
                               getDeviceCount=lambda: devices)

    def arange(n, dtype=None):
        if matmul is not None:
            raise matmul
        return np.arange(n, dtype=dtype)

    return types.SimpleNamespace(cuda=types.SimpleNamespace(runtime=rt),
                                 is_available=lambda: available, arange=arange,
                                 float32=np.float32)


@pytest.mark.parametrize("fake, expected", [
    (None, "CuPy is not installed"),
    (_fake_cupy(driver_error=RuntimeError("cudaErrorInsufficientDriver")), "no CUDA driver"),
    (_fake_cupy(driver=0), "no CUDA driver"),
    (_fake_cupy(devices=0), "no CUDA device"),
    (_fake_cupy(driver=12040, runtime=13000),
     r"wrong CUDA version: the driver supports CUDA 12\.4 but CuPy was built for CUDA 13\.0"),
    (_fake_cupy(available=False), "CuPy reports no usable CUDA device"),
    (_fake_cupy(matmul=MemoryError("out of memory")), "a trial CuPy operation failed"),
], ids=["no-cupy", "driver-error", "no-driver", "no-device", "old-driver", "unavailable",
        "trial-fails"])
def test_probe_names_the_reason(monkeypatch, fake, expected):
    monkeypatch.setattr(cuda_backend, "simulated", lambda: False)
    monkeypatch.setitem(sys.modules, "cupy", fake)  # None makes `import cupy` fail
    usable, reason = cuda_backend.probe()
    assert not usable
    assert re.search(expected, reason), reason


def test_probe_accepts_an_older_driver_of_the_same_major_version(monkeypatch):
    monkeypatch.setattr(cuda_backend, "simulated", lambda: False)
    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy(driver=12040, runtime=12080,
                                                        matmul=MemoryError("stop here")))
    _, reason = cuda_backend.probe()
    assert "wrong CUDA version" not in reason and "stop here" in reason


def test_probe_is_cached_and_never_raises(monkeypatch):
    def broken():
        raise OSError("libcuda.so.1: cannot open shared object file")

    monkeypatch.setattr(cuda_backend, "_probe", broken)
    usable, reason = cuda_backend.probe()
    assert not usable and "libcuda.so.1" in reason
    monkeypatch.setattr(cuda_backend, "_probe", lambda: (True, "not asked again"))
    assert cuda_backend.probe() == (usable, reason)


def test_fallback_names_the_probe_reason(monkeypatch):
    monkeypatch.setattr(cuda_backend, "simulated", lambda: False)
    monkeypatch.setitem(sys.modules, "cupy", None)
    with pytest.warns(RuntimeWarning, match=r"no GPU is usable \(CuPy is not installed"):
        net = gpubp.Network([3, 2], device="cuda")
    assert net.device == "cpu"
    with pytest.raises(RuntimeError, match="CuPy is not installed"):
        gpubp.Network([3, 2], device="cuda", fallback=False)


def test_weight_grad_is_checked():
    with pytest.raises(ValueError, match=r"weight_grad must be one of \('fused', 'cublas'\), got 'gemm'"):
        cuda_backend.CudaBackend(weight_grad="gemm")


def test_network_trains_on_the_simulated_device():
    # In a fresh interpreter: the simulator must be on before numba is first imported.
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         str(TESTS / "cudasim_network.py")],
        cwd=TESTS.parent, env=env, capture_output=True, text=True, timeout=900, check=False,
    )
    tail = (proc.stdout + proc.stderr)[-6000:]
    assert proc.returncode == 0, f"simulated network cases failed:\n{tail}"
    assert re.search(r"\d+ passed", proc.stdout) and "skipped" not in proc.stdout, tail


# -- a real GPU -----------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("weight_grad", ["fused", "cublas"])
@pytest.mark.parametrize("dtype, rtol", [("float32", 1e-4), ("float64", 1e-10)])
def test_cuda_trains_like_cpu(weight_grad, dtype, rtol):
    usable, reason = cuda_backend.probe()
    if not usable or cuda_backend.simulated():
        pytest.skip(f"no usable CUDA GPU: {reason}")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 13))
    Y = np.eye(5)[rng.integers(0, 5, 300)]
    nets = [gpubp.Network([13, 32, 5], hidden="tanh", output="softmax", loss="cross_entropy",
                          device=device, dtype=dtype, seed=0, fallback=False,
                          weight_grad=weight_grad)
            for device in ("cuda", "cpu")]
    assert nets[0].device == "cuda" and nets[0].backend.xp.__name__ == "cupy"
    histories = [net.fit(X, Y, epochs=3, batch_size=64, shuffle=False, verbose=0, lr=0.1)
                 for net in nets]
    # float32: cuBLAS and BLAS sum in different orders; three epochs compound it a little
    np.testing.assert_allclose(histories[0].history["loss"], histories[1].history["loss"],
                               rtol=rtol)
    for got, want in zip(*([*W, *b] for W, b in (net.get_params() for net in nets))):
        np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(nets[0].forward(X), nets[1].forward(X), rtol=rtol, atol=rtol)
