"""The dropout CUDA kernels and a network trained with dropout, in Numba's CUDA simulator.

Run in a subprocess with ``NUMBA_ENABLE_CUDASIM=1`` by ``tests/test_dropout.py`` (see
``tests/cudasim_kernels.py`` for why). The kernels must drop exactly the entries of the
NumPy twin (:mod:`gpubp.kernels.dropout`) for the same key, and a network trained on the
simulated ``cuda`` backend must follow the reference backend's run step for step.
"""

import numpy as np
import pytest
from numba import config

import gpubp
from gpubp.kernels import cuda_dropout as KD
from gpubp.kernels import dropout as D
from gpubp.kernels import reference as R
from tests.cudasim_support import prepare

if not config.ENABLE_CUDASIM:
    pytest.skip("needs NUMBA_ENABLE_CUDASIM=1 before numba is imported "
                "(tests/test_dropout.py runs this file that way)", allow_module_level=True)

prepare()  # a faster GIL switch; a lock the simulator's shared memory lacks

RTOL = {np.float32: 1e-5, np.float64: 1e-12}
SLOPE = 0.2  # leaky_relu's, not the default
P, N = 37, 11  # a partial block


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("activation", gpubp.activations.HIDDEN)
def test_kernels_drop_the_twins_entries(dtype, activation):
    """Every hidden activation: leaky_relu with a slope not the default, and gelu,
    gelu_tanh, silu keeping z (before the mask) and taking g' of it."""
    rng = np.random.default_rng(5)
    drop = D.layer_drop(0x1234_5678_9ABC_DEF0, 2, 0.35)
    z, b = 2 * rng.normal(size=(P, N)).astype(dtype), rng.normal(size=N).astype(dtype)
    from_z = activation in R.FROM_Z
    got, want = z.copy(), z.copy()
    z_got, z_want = (np.empty_like(z), np.empty_like(z)) if from_z else (None, None)
    KD.bias_activation(got, b, activation, drop, SLOPE, z_got)
    R.bias_activation(want, b, activation, SLOPE, z_want, dropout=drop)
    dropped = ~D.kept(drop, (P, N))
    assert np.all(got[dropped] == 0) and np.all(want[dropped] == 0)  # the twin's entries
    np.testing.assert_allclose(got, want, rtol=RTOL[dtype], atol=RTOL[dtype])
    if from_z:
        np.testing.assert_array_equal(z_got, z_want)  # z^l whole, not masked
    delta = rng.normal(size=(P, N)).astype(dtype)
    got_d, want_d = delta.copy(), delta.copy()
    stored = z_want if from_z else want
    KD.hidden_delta(got_d, stored, activation, drop, SLOPE)
    R.hidden_delta(want_d, stored, activation, SLOPE, dropout=drop)
    assert np.all(got_d[dropped] == 0) and 0.2 < dropped.mean() < 0.5
    np.testing.assert_allclose(got_d, want_d, rtol=RTOL[dtype], atol=RTOL[dtype])


@pytest.mark.parametrize("dtype, hidden", [("float32", ("tanh", "relu")),
                                           ("float64", ("tanh", "relu")),
                                           ("float64", ("gelu", "leaky_relu")),
                                           ("float32", ("silu", "elu"))])
def test_training_with_dropout_matches_the_reference(dtype, hidden):
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(45, 6)), rng.integers(0, 3, 45)
    runs = {}
    slope = SLOPE if "leaky_relu" in hidden else None
    for backend, device in (("reference", "cpu"), ("cuda", "cuda")):
        net = gpubp.Network([6, 9, 7, 3], hidden=list(hidden), dropout=[0.3, 0.5],
                            seed=2, device=device, backend=backend, dtype=dtype,
                            fallback=False, negative_slope=slope)
        h = net.fit(X, y, epochs=2, batch_size=16, lr=0.2, verbose=0)
        runs[backend] = (net.get_params(), h.history["loss"])
    (W_r, b_r), loss_r = runs["reference"]
    (W_c, b_c), loss_c = runs["cuda"]
    tol = 1e-4 if dtype == "float32" else 1e-11
    np.testing.assert_allclose(loss_c, loss_r, rtol=tol)
    for got, want in zip(W_c + b_c, W_r + b_r):
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


@pytest.mark.parametrize("hidden", ["sigmoid", "gelu", "leaky_relu"])
def test_fixed_masks_on_the_simulated_backend(hidden):
    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(20, 6)), rng.integers(0, 3, 20)
    grads = {}
    slope = SLOPE if hidden == "leaky_relu" else None
    for backend, device in (("reference", "cpu"), ("cuda", "cuda")):
        net = gpubp.Network([6, 8, 3], hidden=hidden, dropout=0.4, seed=3, device=device,
                            backend=backend, dtype="float64", fallback=False,
                            negative_slope=slope)
        mask = [np.random.default_rng(9).random((20, 8)) > 0.4]
        grads[backend] = net.gradients(X, y, dropout_mask=mask)
    for got, want in zip(grads["cuda"][0] + grads["cuda"][1],
                         grads["reference"][0] + grads["reference"][1]):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)
