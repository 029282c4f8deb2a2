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
P, N = 37, 11  # a partial block


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "relu", "identity"])
def test_kernels_drop_the_twins_entries(dtype, activation):
    rng = np.random.default_rng(5)
    drop = D.layer_drop(0x1234_5678_9ABC_DEF0, 2, 0.35)
    z, b = rng.normal(size=(P, N)).astype(dtype), rng.normal(size=N).astype(dtype)
    got, want = z.copy(), z.copy()
    KD.bias_activation(got, b, activation, drop)
    R.bias_activation(want, b, activation, dropout=drop)
    np.testing.assert_array_equal(got == 0, want == 0)  # the same entries dropped
    np.testing.assert_allclose(got, want, rtol=RTOL[dtype], atol=RTOL[dtype])
    delta = rng.normal(size=(P, N)).astype(dtype)
    got_d, want_d = delta.copy(), delta.copy()
    KD.hidden_delta(got_d, got, activation, drop)
    R.hidden_delta(want_d, want, activation, dropout=drop)
    assert np.array_equal(got_d == 0, ~D.kept(drop, (P, N)) | (want_d == 0))
    np.testing.assert_allclose(got_d, want_d, rtol=RTOL[dtype], atol=RTOL[dtype])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_training_with_dropout_matches_the_reference(dtype):
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(45, 6)), rng.integers(0, 3, 45)
    runs = {}
    for backend, device in (("reference", "cpu"), ("cuda", "cuda")):
        net = gpubp.Network([6, 9, 7, 3], hidden=["tanh", "relu"], dropout=[0.3, 0.5],
                            seed=2, device=device, backend=backend, dtype=dtype,
                            fallback=False)
        h = net.fit(X, y, epochs=2, batch_size=16, lr=0.2, verbose=0)
        runs[backend] = (net.get_params(), h.history["loss"])
    (W_r, b_r), loss_r = runs["reference"]
    (W_c, b_c), loss_c = runs["cuda"]
    tol = 1e-4 if dtype == "float32" else 1e-11
    np.testing.assert_allclose(loss_c, loss_r, rtol=tol)
    for got, want in zip(W_c + b_c, W_r + b_r):
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


def test_fixed_masks_on_the_simulated_backend():
    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(20, 6)), rng.integers(0, 3, 20)
    grads = {}
    for backend, device in (("reference", "cpu"), ("cuda", "cuda")):
        net = gpubp.Network([6, 8, 3], hidden="sigmoid", dropout=0.4, seed=3, device=device,
                            backend=backend, dtype="float64", fallback=False)
        mask = [np.random.default_rng(9).random((20, 8)) > 0.4]
        grads[backend] = net.gradients(X, y, dropout_mask=mask)
    for got, want in zip(grads["cuda"][0] + grads["cuda"][1],
                         grads["reference"][0] + grads["reference"][1]):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)
