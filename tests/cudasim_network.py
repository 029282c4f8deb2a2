"""A whole network trained on the simulated ``cuda`` backend against ``reference``.

Run in a subprocess with ``NUMBA_ENABLE_CUDASIM=1`` by ``tests/test_cuda_backend.py``
(see ``tests/cudasim_kernels.py`` for why). The simulated backend is the real
:class:`~gpubp.backends.cuda.CudaBackend` with NumPy in place of CuPy, so this covers
the backend's wiring (workspaces, the device cost, the optimizer hooks) and every kernel
in its place in forward and backward passes.
"""

import sys

import numpy as np
import pytest
from numba import config

import gpubp
from gpubp.backends import cuda as cuda_backend

if not config.ENABLE_CUDASIM:
    pytest.skip("needs NUMBA_ENABLE_CUDASIM=1 before numba is imported "
                "(tests/test_cuda_backend.py runs this file that way)", allow_module_level=True)

# The simulator runs each CUDA thread as a Python thread and a barrier waits on them in a
# polling loop; a shorter GIL switch interval than the default 5 ms makes barriers, and
# these tests, markedly faster. This file runs in its own interpreter.
sys.setswitchinterval(1e-4)

RTOL = {"float32": 1e-5, "float64": 1e-10}


def _problem(loss, P=37, n_in=13, n_out=5, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(P, n_in))
    if loss == "cross_entropy":
        Y = np.eye(n_out)[rng.integers(0, n_out, P)]
    elif loss == "binary_cross_entropy":
        Y = rng.integers(0, 2, (P, n_out)).astype(float)
    else:
        Y = rng.normal(size=(P, n_out))
    return X, Y


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


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("hidden, output, loss, optimizer, weight_grad", [
    ("sigmoid", "softmax", "cross_entropy", "sgd", "fused"),
    ("tanh", "softmax", "cross_entropy", "adam", "fused"),
    ("relu", "sigmoid", "binary_cross_entropy", "sgd", "cublas"),
    ("sigmoid", "identity", "mse", "adam", "fused"),
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
        net.fit(X, Y, optimizer=gpubp.optimizers.SGD(lr=0.1, momentum=0.9, nesterov=True),
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
    first = net._backward(8)
    second = net._backward(8)  # the same batch again: a fresh array, the first unchanged
    assert first is not second
    assert first.shape == () and float(first) == float(second)
    assert np.isfinite(float(first))
