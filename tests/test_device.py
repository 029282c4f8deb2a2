"""Device selection: fallback to the CPU with a warning that says why, or an error."""

import pytest

import gpubp
from gpubp.backends import devices as base


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(base, "cuda_status", lambda: (False, "CuPy is not installed"))


def test_cuda_falls_back_with_a_reason(no_gpu):
    with pytest.warns(RuntimeWarning, match=r"device='cuda' requested but no GPU is usable \(CuPy is not installed\); using the CPU"):
        net = gpubp.Network([3, 2], device="cuda")
    assert net.device == "cpu"
    assert net.backend.device == "cpu"


def test_cuda_without_fallback_raises(no_gpu):
    with pytest.raises(RuntimeError, match="no GPU is usable: CuPy is not installed"):
        gpubp.Network([3, 2], device="cuda", fallback=False)


def test_auto_is_silent(no_gpu, recwarn):
    net = gpubp.Network([3, 2], device="auto")
    assert net.device == "cpu"
    assert len(recwarn) == 0


def test_environment_sets_the_default(no_gpu, monkeypatch):
    monkeypatch.setenv("GPUBP_DEVICE", "cuda")
    with pytest.warns(RuntimeWarning, match="using the CPU"):
        assert gpubp.Network([3, 2]).device == "cpu"
    monkeypatch.setenv("GPUBP_DEVICE", "nonsense")
    with pytest.raises(ValueError, match="device must be one of"):
        gpubp.Network([3, 2])


def test_probe_failures_never_escape(monkeypatch):
    import gpubp.backends.cuda as cuda_backend

    def broken():
        raise OSError("libcuda.so: cannot open shared object file")

    monkeypatch.setattr(cuda_backend, "probe", broken)
    usable, reason = base.cuda_status()
    assert not usable and "libcuda.so" in reason


def test_cpu_backends():
    assert gpubp.Network([3, 2], device="cpu").backend.name == "cpu"
    assert gpubp.Network([3, 2], backend="reference").backend.name == "reference"
    with pytest.raises(ValueError, match="backend 'cuda' does not run on device 'cpu'"):
        gpubp.Network([3, 2], device="cpu", backend="cuda")
