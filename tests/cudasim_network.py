"""A whole network trained on the simulated ``cuda`` backend against ``reference``.

Run in a subprocess with ``NUMBA_ENABLE_CUDASIM=1`` by ``tests/test_cuda_backend.py``
(see ``tests/cudasim_kernels.py`` for why). The simulated backend is the real
:class:`~gpubp.backends.cuda.CudaBackend` with NumPy in place of CuPy, so this covers
the backend's wiring (workspaces, the device cost, the optimizer hooks) and every kernel
in its place in forward and backward passes.
"""

import types

import numpy as np
import pytest
from numba import config

import gpubp
from gpubp.backends import cuda as cuda_backend
from gpubp.backends import cuda_rows
from gpubp.kernels import cuda as K
from tests.conftest import make_targets
from tests.cudasim_support import prepare

if not config.ENABLE_CUDASIM:
    pytest.skip("needs NUMBA_ENABLE_CUDASIM=1 before numba is imported "
                "(tests/test_cuda_backend.py runs this file that way)", allow_module_level=True)

prepare()  # a faster GIL switch; a lock the simulator's shared memory lacks

RTOL = {"float32": 1e-5, "float64": 1e-10}


def _problem(loss, P=37, n_in=13, n_out=5, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(P, n_in))
    return X, make_targets(rng, P, n_out, loss)


def _pair(dtype, hidden, output, loss, **options):
    cuda = gpubp.Network([13, 7, 5], hidden=hidden, output=output, loss=loss, device="cuda",
                         dtype=dtype, seed=0, fallback=False, **options)
    ref = gpubp.Network([13, 7, 5], hidden=hidden, output=output, loss=loss, device="cpu",
                        backend="reference", dtype=dtype, seed=0)
    return cuda, ref


def test_the_simulator_is_the_cuda_device():
    assert cuda_backend.probe() == (True, "Numba CUDA simulator")
    net = gpubp.Network([13, 7, 5], device="cuda", fallback=False)
    assert net.device == "cuda" and net.backend.name == "cuda"
    assert net.backend.xp is np


@pytest.mark.parametrize("dtype, hidden, output, loss, optimizer, weight_grad", [
    # each pairing once, both dtypes, every weight_grad choice (the kernels' own dtype
    # coverage is in cudasim_kernels.py)
    ("float32", "sigmoid", "softmax", "cross_entropy", "sgd", "fused"),
    ("float64", "sigmoid", "softmax", "cross_entropy", "sgd", "auto"),
    ("float64", "tanh", "softmax", "cross_entropy", "adam", "fused"),
    ("float32", "relu", "sigmoid", "binary_cross_entropy", "sgd", "cublas"),
    ("float64", "sigmoid", "identity", "mse", "adam", "fused"),
])
def test_training_matches_reference(dtype, hidden, output, loss, optimizer, weight_grad):
    X, Y = _problem(loss)
    cuda, ref = _pair(dtype, hidden, output, loss, weight_grad=weight_grad)
    assert cuda.backend.weight_grad == weight_grad
    # Two epochs of a full batch (37 rows) and of a short last batch (37 = 32 + 5).
    kwargs = {"epochs": 2, "batch_size": 32, "shuffle": False, "verbose": 0,
              "optimizer": optimizer, "lr": 0.05}
    h_cuda = cuda.fit(X, Y, **kwargs)
    h_ref = ref.fit(X, Y, **kwargs)
    rtol = RTOL[dtype]
    np.testing.assert_allclose(h_cuda.history["loss"], h_ref.history["loss"], rtol=rtol)
    (W_c, b_c), (W_r, b_r) = cuda.get_params(), ref.get_params()
    for got, want in zip(W_c + b_c, W_r + b_r):
        assert got.dtype == np.dtype(dtype)
        np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol)
    # and training moved the parameters at all (a no-op update would also "match")
    W0 = gpubp.Network([13, 7, 5], hidden=hidden, output=output, loss=loss, device="cpu",
                       backend="reference", dtype=dtype, seed=0).get_params()[0]
    assert not np.allclose(W_c[0], W0[0])


def test_momentum_and_gradients_match_reference():
    X, Y = _problem("cross_entropy")
    cuda, ref = _pair("float64", "tanh", "softmax", "cross_entropy")
    for net in (cuda, ref):
        net.fit(X, Y, optimizer=gpubp.optim.optimizers.SGD(lr=0.1, momentum=0.9, nesterov=True),
                epochs=1, batch_size=37, shuffle=False, verbose=0)
    assert cuda.loss(X, Y) == pytest.approx(ref.loss(X, Y), rel=1e-10)
    for got, want in zip(*(net.gradients(X, Y) for net in (cuda, ref))):
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-12)


def test_cost_is_a_backend_scalar_that_floats():
    X, Y = _problem("cross_entropy", P=8)
    net = gpubp.Network([13, 7, 5], device="cuda", dtype="float32", seed=0, fallback=False)
    net._load(X.astype(np.float32), Y.astype(np.float32))
    net._forward(8)
    first = float(net._backward(8))
    cost = net._backward(8)  # the same batch again: the same value, the backend's scalar
    assert cost.shape == () and float(cost) == first and np.isfinite(first)
    assert net._backward(8) is cost  # no allocation, no new view per step


# -- host work per step -------------------------------------------------------------------


class Counter:
    """Counts kernel launches (by name) through gpubp.kernels.cuda.Kernel, those replayed
    from the backend's cache of bound launches too (both run ``Kernel._simulate``)."""

    def __init__(self, monkeypatch):
        self.names = []
        launch = K.Kernel._simulate

        def counted(kernel, *args):
            self.names.append(kernel.name)
            return launch(kernel, *args)

        monkeypatch.setattr(K.Kernel, "_simulate", counted)


@pytest.mark.parametrize("sizes", [[13, 7, 5], [13, 9, 7, 5]], ids=["L2", "L3"])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_host_work_per_step(monkeypatch, sizes, optimizer):
    """A step: at most 3L + 2 launches, no view built and no copy after the first step."""
    X, Y = _problem("cross_entropy", P=24, n_out=5)
    net = gpubp.Network(sizes, device="cuda", dtype="float32", seed=0, fallback=False)
    opt = gpubp.optim.optimizers.get_optimizer(optimizer, None, None, None)
    be, L = net.backend, net.L
    Xd, Yd = be.resident(X.astype(np.float32)), be.resident(Y.astype(np.float32))
    order = be.resident(np.random.default_rng(0).permutation(24))
    counter = Counter(monkeypatch)
    net._train_step(opt, Xd, Yd, order[:8])  # builds the views
    first = dict(be.counts)
    assert first["views"] > 0
    for start in (8, 16):
        counter.names.clear()
        before = dict(be.counts)
        net._train_step(opt, Xd, Yd, order[start:start + 8])
        assert len(counter.names) <= 3 * L + 2, counter.names
        assert counter.names.count(opt.name + "_step" if opt.name == "adam" else "sgd_step") == 1
        assert be.counts == before, "a step built views or copied between host and device"
    # and the step computed what the reference computes from the same batch
    ref = gpubp.Network(sizes, device="cpu", backend="reference", dtype="float32", seed=0)
    ref_opt = gpubp.optim.optimizers.get_optimizer(optimizer, None, None, None)
    host_order = be.to_host(order)
    for start in (0, 8, 16):
        ref._train_step(ref_opt, X.astype(np.float32), Y.astype(np.float32),
                        host_order[start:start + 8])
    for got, want in zip(*(n.get_params()[0] for n in (net, ref))):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_views_are_rebuilt_when_a_workspace_grows():
    X, Y = (a.astype(np.float32) for a in _problem("cross_entropy", P=40))
    net = gpubp.Network([13, 7, 5], device="cuda", dtype="float32", seed=0, fallback=False)
    be, opt = net.backend, gpubp.optim.optimizers.SGD(lr=0.1)
    net._train_step(opt, X, Y, np.arange(8))
    built = be.counts["views"]
    net._train_step(opt, X, Y, np.arange(8, 16))
    assert be.counts["views"] == built  # cached
    net._train_step(opt, X, Y, np.arange(16, 40))  # 24 rows: the workspaces grow
    assert be.counts["views"] > built
    # no view of the old workspaces is kept (they are released): every cached view is
    # of a current workspace, the parameters or the backend's own scratch
    live = [net._activations_flat, net._deltas_flat, net.targets, net.theta,
            net.nabla_theta, be.cost_total, be.correct_total, *be._scratch.values()]
    for view in be._views.values():
        owner = view if view.base is None else view.base
        assert any(owner is array for array in live), view.shape
    # the step after growing used the new workspaces: it trained on the right rows
    ref = gpubp.Network([13, 7, 5], device="cpu", backend="reference", dtype="float32",
                        seed=0)
    ref_opt = gpubp.optim.optimizers.SGD(lr=0.1)
    for rows in (np.arange(8), np.arange(8, 16), np.arange(16, 40)):
        ref._train_step(ref_opt, X, Y, rows)
    for got, want in zip(net.get_params()[0], ref.get_params()[0]):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_host_data_is_staged_and_counted():
    """Host (not resident) X: gathered into pinned staging, one upload each for X and Y."""
    X, Y = (a.astype(np.float32) for a in _problem("cross_entropy", P=24))
    net = gpubp.Network([13, 7, 5], device="cuda", dtype="float32", seed=0, fallback=False)
    be = net.backend
    net._train_step(gpubp.optim.optimizers.SGD(lr=0.1), X, Y, np.arange(8))
    before = be.counts["copies"]
    net._train_step(gpubp.optim.optimizers.SGD(lr=0.1), X, Y, np.arange(8, 16))
    assert be.counts["copies"] - before == 2
    np.testing.assert_array_equal(net.activations[0][:8], X[8:16])
    np.testing.assert_array_equal(net.targets[:8], Y[8:16])


def test_resident_data_is_uploaded_once_per_fit(monkeypatch):
    X, Y = (a.astype(np.float32) for a in _problem("cross_entropy", P=24))
    net = gpubp.Network([13, 7, 5], device="cuda", dtype="float32", seed=0, fallback=False)
    be = net.backend
    before = be.counts["copies"]
    net.fit(X, Y, epochs=2, batch_size=8, verbose=0)
    # X and Y once, the shuffled order once per epoch; nothing per step
    assert be.counts["copies"] - before == 2 + 2
    monkeypatch.setattr(cuda_rows, "RESIDENT_FRACTION", 0.0)  # nothing fits
    before = be.counts["copies"]
    net.fit(X, Y, epochs=1, batch_size=8, verbose=0)
    assert be.counts["copies"] - before == 2 * 3  # X and Y rows, staged, every step


@pytest.mark.parametrize("flop, fused", [(10**9, True), (1, False)])
def test_weight_grad_auto_on_both_sides_of_the_threshold(monkeypatch, flop, fused):
    monkeypatch.setattr(cuda_backend, "FUSED_MAX_FLOP", flop)
    X, Y = (a.astype(np.float64) for a in _problem("cross_entropy", P=16))
    net = gpubp.Network([13, 7, 5], device="cuda", dtype="float64", seed=0, fallback=False)
    assert net.backend.weight_grad == "auto"
    assert net.backend.uses_fused_grad(16, 13, 7) is fused
    counter = Counter(monkeypatch)
    dW, db = net.gradients(X, Y)
    assert ("weight_bias_grad" in counter.names) is fused
    ref = gpubp.Network([13, 7, 5], device="cpu", backend="reference", dtype="float64",
                        seed=0)
    for got, want in zip(dW + db, sum(ref.gradients(X, Y), [])):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_epoch_loss_is_summed_in_float64_on_the_device():
    X, Y = (a.astype(np.float32) for a in _problem("cross_entropy", P=37))
    net = gpubp.Network([13, 7, 5], device="cuda", dtype="float32", seed=0, fallback=False)
    ref = gpubp.Network([13, 7, 5], device="cpu", backend="reference", dtype="float32",
                        seed=0)
    kwargs = {"epochs": 1, "batch_size": 8, "shuffle": False, "verbose": 0}
    got = net.fit(X, Y, **kwargs).history["loss"][0]
    want = ref.fit(X, Y, **kwargs).history["loss"][0]
    assert got == pytest.approx(want, rel=1e-6)
    assert net.backend.cost_total.dtype == np.float64
    assert float(net.backend.cost_total[0]) / 37 == got


def test_wide_output_layer_trains_like_reference():
    X, Y = _problem("cross_entropy", P=20, n_out=40)  # 40 > WIDE_OUTPUT: a warp per row
    nets = [gpubp.Network([13, 6, 40], device=d, backend=b, dtype="float64", seed=0,
                          fallback=False) for d, b in (("cuda", None), ("cpu", "reference"))]
    losses = [n.fit(X, Y, epochs=1, batch_size=10, shuffle=False, verbose=0).history["loss"]
              for n in nets]
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-10)


def test_a_diverged_network_reports_nan_loss():
    X, Y = _problem("cross_entropy", P=8)
    net = gpubp.Network([13, 7, 5], device="cuda", dtype="float32", seed=0, fallback=False)
    net.theta[0] = np.nan  # as a diverged step would leave it
    with pytest.warns(RuntimeWarning, match="the loss is not finite"):
        assert np.isnan(net.loss(X, Y))


def test_probe_trial_kernel_catches_a_kernel_that_did_nothing(monkeypatch):
    from gpubp.backends import cuda as cuda_probe

    xp = types.SimpleNamespace(full=np.full, float32=np.float32, asnumpy=np.asarray)
    x = np.arange(8, dtype=np.float32) - 3.5
    assert cuda_probe._trial_kernel(xp, x)
    monkeypatch.setattr(cuda_backend.CudaBackend, "hidden_delta", lambda *a: None)
    assert not cuda_probe._trial_kernel(xp, x)
