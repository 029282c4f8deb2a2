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
from gpubp.backends import devices as base
from gpubp.backends import cuda as cuda_backend
from gpubp.backends import cuda_probe

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


class _FakeDeviceArray(np.ndarray):
    """A NumPy array that answers CuPy's ``get()``."""

    def get(self):
        return np.asarray(self)


def _fake_cupy(driver=13000, runtime=13000, devices=1, available=True, matmul=None,
               driver_error=None, warn=None):
    """A stand-in ``cupy`` module with just what ``probe`` touches."""

    def driver_version():
        if driver_error:
            raise driver_error
        return driver

    rt = types.SimpleNamespace(driverGetVersion=driver_version,
                               runtimeGetVersion=lambda: runtime,
                               getDeviceCount=lambda: devices,
                               getDeviceProperties=lambda i: {"name": b"Fake GPU"})

    def is_available():
        if warn:
            import warnings

            warnings.warn(warn, UserWarning)
        return available

    def arange(n, dtype=None):
        if matmul is not None:
            raise matmul
        return np.arange(n, dtype=dtype).view(_FakeDeviceArray)

    return types.SimpleNamespace(cuda=types.SimpleNamespace(runtime=rt,
                                                            Device=lambda: types.SimpleNamespace(id=0)),
                                 is_available=is_available, arange=arange,
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
    monkeypatch.setattr(cuda_probe, "simulated", lambda: False)
    monkeypatch.setitem(sys.modules, "cupy", fake)  # None makes `import cupy` fail
    usable, reason = cuda_backend.probe()
    assert not usable
    assert re.search(expected, reason), reason


def test_probe_accepts_an_older_driver_of_the_same_major_version(monkeypatch):
    monkeypatch.setattr(cuda_probe, "simulated", lambda: False)
    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy(driver=12040, runtime=12080,
                                                        matmul=MemoryError("stop here")))
    _, reason = cuda_backend.probe()
    assert "wrong CUDA version" not in reason and "stop here" in reason


def test_probe_does_not_cache_a_failure(monkeypatch):
    def broken(trial):
        raise OSError("libcuda.so.1: cannot open shared object file")

    monkeypatch.setattr(cuda_probe, "_probe", broken)
    usable, reason = cuda_backend.probe()
    assert not usable
    assert reason == ("the CUDA probe failed (OSError: libcuda.so.1: cannot open shared "
                      "object file)")  # in full
    # a transient failure is not remembered: the next call probes again
    monkeypatch.setattr(cuda_probe, "_probe", lambda trial: (True, "probed again", True))
    assert cuda_backend.probe() == (True, "probed again")
    monkeypatch.setattr(cuda_probe, "_probe", broken)
    assert cuda_backend.probe() == (True, "probed again")  # a definite answer is cached


def test_a_failed_trial_is_not_cached(monkeypatch):
    monkeypatch.setattr(cuda_probe, "simulated", lambda: False)
    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy(matmul=MemoryError("out of memory")))
    assert cuda_backend.probe() == (False, "a trial CuPy operation failed (MemoryError: out "
                                           "of memory)")
    monkeypatch.setitem(sys.modules, "cupy", None)
    assert "CuPy is not installed" in cuda_backend.probe()[1]


@pytest.mark.filterwarnings("error")
def test_a_warning_while_probing_does_not_make_the_gpu_unusable(monkeypatch):
    monkeypatch.setattr(cuda_probe, "simulated", lambda: False)
    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy(warn="CUDA path could not be detected"))
    monkeypatch.setattr(cuda_backend, "_trial_kernel", lambda xp, x: True)
    usable, reason = cuda_backend.probe()
    assert usable, reason
    assert reason.startswith("Fake GPU") and "CUDA path could not be detected" in reason


def test_a_trial_kernel_with_a_wrong_result_is_reported(monkeypatch):
    monkeypatch.setattr(cuda_probe, "simulated", lambda: False)
    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy())
    monkeypatch.setattr(cuda_backend, "_trial_kernel", lambda xp, x: False)
    assert cuda_backend.probe() == (False, "a trial Numba CUDA kernel gave a wrong result")


def test_fallback_names_the_probe_reason(monkeypatch):
    monkeypatch.setattr(cuda_probe, "simulated", lambda: False)
    monkeypatch.setitem(sys.modules, "cupy", None)
    with pytest.warns(RuntimeWarning, match=r"no GPU is usable \(CuPy is not installed"):
        net = gpubp.Network([3, 2], device="cuda")
    assert net.device == "cpu"
    with pytest.raises(RuntimeError, match="CuPy is not installed"):
        gpubp.Network([3, 2], device="cuda", fallback=False)


def test_weight_grad_is_checked():
    with pytest.raises(ValueError, match=r"weight_grad must be one of \('auto', 'fused', "
                                         r"'cublas'\), got 'gemm'"):
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
@pytest.mark.parametrize("weight_grad", ["auto", "fused", "cublas"])
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


# -- the GPU-only host paths, against a fake CuPy -------------------------------------------


class _FakeDevice(_FakeDeviceArray):
    def set(self, host):
        self[...] = host


class _FakeEvent:
    def __init__(self, log, **_):
        self.log = log

    def record(self):
        self.log.append(("record", id(self)))

    def synchronize(self):
        self.log.append(("wait", id(self)))


@pytest.fixture
def gpu_backend(monkeypatch):
    """A non-simulated CudaBackend over a fake ``cupy`` (NumPy arrays that answer ``set``)."""
    log, free, ptr = [], [2**30], [0]

    def device(array):
        return np.asarray(array).view(_FakeDevice)

    cuda_ns = types.SimpleNamespace(
        get_current_stream=lambda: types.SimpleNamespace(ptr=ptr[0]),
        Device=lambda: types.SimpleNamespace(mem_info=(free[0], 2**31)),
        Event=lambda **kw: _FakeEvent(log, **kw))
    fake = types.SimpleNamespace(
        ndarray=_FakeDevice, cuda=cuda_ns, take=np.take,
        zeros=lambda shape, dtype: device(np.zeros(shape, dtype)),
        empty=lambda shape, dtype: device(np.empty(shape, dtype)),
        array=lambda a, dtype=None, copy=True: device(np.array(a, dtype=dtype, copy=True)))
    monkeypatch.setitem(sys.modules, "cupy", fake)
    monkeypatch.setitem(sys.modules, "cupyx", types.SimpleNamespace(
        empty_pinned=lambda shape, dtype: np.empty(shape, dtype)))
    monkeypatch.setattr(cuda_backend, "simulated", lambda: False)
    backend = cuda_backend.CudaBackend()
    backend.test_log, backend.test_free, backend.test_ptr = log, free, ptr
    return backend


def test_streams_are_cuda_core_streams_made_once(gpu_backend):
    from cuda.core import Stream

    first = gpu_backend._stream()
    assert isinstance(first, Stream) and gpu_backend._stream() is first
    gpu_backend.test_ptr[0] = 12345  # another current CuPy stream
    assert gpu_backend._stream() is not first


def test_host_batches_go_through_two_pinned_buffers(gpu_backend):
    X = np.arange(30, dtype=np.float32).reshape(10, 3)
    out = gpu_backend.empty((4, 3), np.float32)
    buffers = []
    for rows in ([0, 1, 2, 3], [4, 5, 6, 7], [9, 8, 1, 0]):
        gpu_backend.gather_rows(X, np.array(rows), out, None)
        np.testing.assert_array_equal(out, X[rows])
        slot = gpu_backend._staging[((4, 3), np.dtype(np.float32))]
        buffers.append(id(slot[0][1 - slot[2]]))
    assert buffers[0] == buffers[2] != buffers[1]  # alternating
    log = gpu_backend.test_log
    # each upload records an event; reusing a buffer first waits for its last upload
    assert [kind for kind, _ in log] == ["record", "record", "wait", "record"]
    assert log[2][1] == log[0][1]
    assert gpu_backend.counts["copies"] == 3


def test_resident_only_when_it_fits(gpu_backend):
    X = np.ones((100, 5), np.float32)  # 2000 bytes
    gpu_backend.test_free[0] = 3999  # half of it is less than X
    assert gpu_backend.resident(X) is X
    gpu_backend.test_free[0] = 4000
    X_dev = gpu_backend.resident(X)
    assert isinstance(X_dev, _FakeDevice) and gpu_backend.resident(X_dev) is X_dev
    index = gpu_backend.resident(np.array([3, 1, 4]))
    out = gpu_backend.empty((3, 5), np.float32)
    copies = gpu_backend.counts["copies"]
    gpu_backend.gather_rows(X_dev, index, out, None)  # a gather on the device
    assert gpu_backend.counts["copies"] == copies
    gpu_backend.gather_rows(X_dev, np.array([0, 1, 2]), out, None)  # a host index: uploaded
    assert gpu_backend.counts["copies"] == copies + 1


def test_kernel_on_a_gpu_is_compiled_once_and_launched_directly():
    from numba import types as nt

    from gpubp.kernels import cuda as K

    class Dispatcher:
        compiled = []

        def compile(self, signature):
            launches = []
            self.compiled.append((signature, launches))
            return types.SimpleNamespace(launch=lambda *a: launches.append(a))

        def __getitem__(self, config):
            raise AssertionError("launch configuration: Numba's per-call dispatch")

    signature = nt.void(nt.float32[::1], nt.int64)
    kernel = K.Kernel("k", Dispatcher(), signature, simulated=False)
    x, y = np.zeros(3, np.float32), np.ones(2, np.float32)  # stand-ins for device arrays
    kernel(4, 256, "stream", x, 3)
    kernel((1, 2, 3), (16, 16), "stream", y, 4)
    [(compiled_for, launches)] = Dispatcher.compiled
    assert compiled_for is signature
    assert launches == [((x, 3), 4, 256, "stream", 0), ((y, 4), (1, 2, 3), (16, 16),
                                                         "stream", 0)]
    assert "k(array(float32, 1d, C), int64)" in repr(kernel)
    # Numba's per-call typing is gone: the launch checks what it would have refused
    with pytest.raises(TypeError, match=r"argument 0 must be a 1-d float32 device array, "
                                        r"got ndarray float64"):
        kernel(4, 256, "stream", x.astype(np.float64), 3)
    with pytest.raises(TypeError, match="argument 0 must be a 1-d float32"):
        kernel(4, 256, "stream", x.reshape(1, 3), 3)
    with pytest.raises(TypeError, match="takes 2 arguments, got 1"):
        kernel(4, 256, "stream", x)
    assert len(launches) == 2
    # a stream given as an int (the functions' default, 0) is a cuda.core stream
    from cuda.core import Stream

    kernel(4, 256, 0, x, 3)
    assert isinstance(launches[-1][3], Stream) and launches[-1][3] is K.stream_of_handle(0)


def test_each_rank_selects_its_gpu_before_probing(monkeypatch):
    calls = []
    monkeypatch.setattr(base, "select_gpu", lambda: calls.append("select"))
    monkeypatch.setattr(cuda_backend, "probe", lambda: calls.append("probe") or (False, "x"))
    assert base.cuda_status() == (False, "x")
    assert calls == ["select", "probe"]  # the probe's context is on the rank's own GPU


def test_a_failing_gpu_selection_is_a_reason_not_an_error(monkeypatch):
    def broken():
        raise RuntimeError("cudaErrorNoDevice")

    monkeypatch.setattr(base, "select_gpu", broken)
    assert base.cuda_status() == (False, "the GPU of this rank could not be selected "
                                         "(RuntimeError: cudaErrorNoDevice)")


def test_the_simulator_left_on_with_a_gpu_present_says_so(monkeypatch):
    monkeypatch.setattr(cuda_probe, "simulated", lambda: True)
    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy(devices=2))
    assert cuda_probe.gpus_hidden_by_simulator() == 2
    monkeypatch.setattr(base, "cuda_status", lambda: (True, "Numba CUDA simulator"))
    monkeypatch.setattr(base, "gpus_hidden_by_simulator", cuda_probe.gpus_hidden_by_simulator)
    with pytest.warns(RuntimeWarning, match=r"runs Numba's CUDA simulator .* though 2 CUDA "
                                            r"device\(s\) are present"):
        assert base.resolve_device("cuda") == "cuda"
    monkeypatch.setitem(sys.modules, "cupy", None)  # no CuPy (CI): nothing is hidden
    assert cuda_probe.gpus_hidden_by_simulator() == 0
