"""The CUDA backend's host side against device arrays the host cannot read.

``tests/fake_cupy.py`` stands in for CuPy: its arrays are not NumPy arrays and refuse
implicit conversion as CuPy's do, and every device→host read is counted. Each fit path
(resident X, host X too large for the device, a memory-mapped X, sparse X, sample
weights) trains here, and the reads are checked to be the documented once-per-epoch ones:
a run with four times the steps per epoch reads exactly as often.
"""

import numpy as np
import pytest
import scipy.sparse

import gpubp
from gpubp.backends import cuda as cuda_backend
from gpubp.backends import cuda_probe, placement
from gpubp.training.loop import fit as fit_loop
from tests import fake_cupy


@pytest.fixture
def fake_gpu(monkeypatch):
    """``device="cuda"`` builds a real CudaBackend over the fake CuPy; returns the ledger."""
    ledger = fake_cupy.install(monkeypatch)
    for module in (cuda_backend, cuda_probe, placement):
        monkeypatch.setattr(module, "simulated", lambda: False)
    monkeypatch.setattr(cuda_backend, "probe", lambda: (True, "Fake GPU"))
    init = cuda_backend.CudaBackend.__init__

    def fake_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self.kernels = fake_cupy.kernels()

    monkeypatch.setattr(cuda_backend.CudaBackend, "__init__", fake_init)
    monkeypatch.setattr(cuda_backend.CudaBackend, "_private_kernels",
                        staticmethod(fake_cupy.private_kernels))
    monkeypatch.setattr(cuda_backend.CudaBackend, "_wrap", lambda self, array: array)
    monkeypatch.setattr(fake_cupy._Device, "free", 2**30)
    return ledger


def _data(P=256, n=6, k=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(P, n)).astype(np.float32)
    Y = np.eye(k, dtype=np.float32)[rng.integers(0, k, P)]
    return X, Y


def _net(**kw):
    net = gpubp.Network([6, 8, 3], hidden="tanh", output="softmax", loss="cross_entropy",
                        device="cuda", seed=0, fallback=False, **kw)
    assert net.device == "cuda" and net.backend.xp.__name__ == "cupy"
    return net


def _reads(ledger, net, X, Y, batch_size, **fit):
    before = ledger.counts()
    waits = sum("event.synchronize" in s for s in ledger.syncs)
    fit_loop(net, X, Y, epochs=2, batch_size=batch_size, verbose=0, lr=0.1, **fit)
    counts = {k: v - before[k] for k, v in ledger.counts().items()}
    # a host batch's pinned buffer waits for its upload of two steps before: not a read
    counts["upload waits"] = sum("event.synchronize" in s for s in ledger.syncs) - waits
    counts["syncs"] -= counts["upload waits"]
    return counts, list(ledger.d2h)


def _host_x(monkeypatch):
    monkeypatch.setattr(fake_cupy._Device, "free", 1000)  # X (6 KiB) does not fit


def _mapped_x(tmp_path, X):
    np.save(tmp_path / "X.npy", X)
    return np.load(tmp_path / "X.npy", mmap_mode="r")


@pytest.mark.parametrize("case", ["resident", "host", "mapped", "sparse", "weights",
                                  "weights-host", "momentum", "adam", "private",
                                  "private-shuffled", "private-host"])
def test_no_device_to_host_read_per_step(fake_gpu, monkeypatch, tmp_path, case):
    X, Y = _data()
    fit, x = {}, X
    if case == "host":
        _host_x(monkeypatch)
    elif case == "mapped":
        x = _mapped_x(tmp_path, X)
    elif case == "sparse":
        X[X < 0.5] = 0
        x = scipy.sparse.csr_matrix(X)
    elif case.startswith("weights"):
        fit["sample_weight"] = np.linspace(0.5, 2.0, len(X))
        if case == "weights-host":
            _host_x(monkeypatch)
    elif case in ("momentum", "adam"):
        fit["optimizer"] = "adam" if case == "adam" else "momentum"
    elif case.startswith("private"):  # DP-SGD: the noise goes up once per step, nothing comes back
        fit["privacy"] = gpubp.DPSGD(max_grad_norm=0.5, noise_multiplier=1.0,
                                     poisson=case != "private-shuffled")
        if case == "private-host":
            _host_x(monkeypatch)
    few, few_log = _reads(fake_gpu, _net(), x, Y, 128, **fit)  # 2 steps per epoch
    many, many_log = _reads(fake_gpu, _net(), x, Y, 32, **fit)  # 8 steps per epoch
    assert few["d2h"] == many["d2h"], "\n".join(many_log[-many["d2h"]:])
    assert few["syncs"] == many["syncs"]
    # at most one per staged array (X, Y) and step, and only where rows are staged
    staged = case in ("host", "mapped", "weights-host", "private-host")
    assert many["upload waits"] <= (2 * 2 * 256 // 32 if staged else 0)
    # the documented reads: the epoch's cost and accuracy, the divergence check
    assert many["d2h"] <= 3 * 2 + 2, "\n".join(many_log[-many["d2h"]:])
    if case.startswith("private"):  # uploads per step: the noise (and a Poisson batch's
        # rows; the shuffled order goes up once per epoch), or the staged X and Y
        per_step = (many["h2d"] - few["h2d"]) / (2 * (8 - 2))
        assert per_step == {"private": 2, "private-shuffled": 1, "private-host": 3}[case]


@pytest.mark.parametrize("weighted", [False, True], ids=["plain", "sample-weights"])
def test_training_matches_the_reference_backend(fake_gpu, weighted):
    X, Y = _data()
    got = _net()
    want = gpubp.Network([6, 8, 3], hidden="tanh", output="softmax", loss="cross_entropy",
                         backend="reference", seed=0)
    fit = {"sample_weight": np.linspace(0.0, 2.0, len(X))} if weighted else {}
    h = [fit_loop(n, X, Y, epochs=2, batch_size=32, verbose=0, lr=0.1, shuffle=False,
                  **fit).history for n in (got, want)]
    np.testing.assert_allclose(h[0]["loss"], h[1]["loss"], rtol=1e-5)
    np.testing.assert_allclose(h[0]["accuracy"], h[1]["accuracy"])
    for a, b in zip(*(n.get_params()[0] for n in (got, want))):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_the_fake_refuses_what_cupy_refuses(fake_gpu):
    xp = fake_cupy.module()
    index = xp.arange(3)
    with pytest.raises(TypeError, match="Implicit conversion to a NumPy array"):
        np.asarray(index)
    with pytest.raises(TypeError):
        np.take(np.ones((4, 2)), index, axis=0)  # a host array, a device index
    with pytest.raises(TypeError, match="Unsupported type"):
        xp.ones(3) + np.ones(3)
    assert fake_gpu.counts()["d2h"] == 0
    assert float(xp.ones(()).sum()) == 1.0
    assert fake_gpu.counts() == {"d2h": 1, "h2d": 0, "syncs": 1}


def test_a_cupy_array_given_to_fit_is_trained_on_in_place(fake_gpu):
    X, Y = _data()
    xp = fake_cupy.module()
    X_dev = xp.array(X)
    net = _net()
    uploads = []
    resident = net.backend.resident
    net.backend.resident = lambda a: uploads.append(a) or resident(a)
    net.fit(X_dev, Y, epochs=1, batch_size=64, verbose=0)
    assert any(a is X_dev for a in uploads), "fit trained on a copy of the device X"
