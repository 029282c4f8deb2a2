"""The core features behind the scikit-learn drop-in on the simulated ``cuda`` backend,
against ``reference``: the exponential output with the Poisson loss (kernels and training),
weighted rows and sparse inputs (gradients and training).

Run in a subprocess with ``NUMBA_ENABLE_CUDASIM=1`` by
``tests/test_weights_sparse_poisson.py`` (the simulator must be on before Numba is first
imported; see ``tests/cudasim_kernels.py``).
"""

import numpy as np
import pytest
import scipy.sparse as sp
from numba import config

import gpubp
from gpubp.kernels import cuda as cuda_kernels
from gpubp.kernels import reference
from tests.cudasim_support import prepare

if not config.ENABLE_CUDASIM:
    pytest.skip("needs NUMBA_ENABLE_CUDASIM=1 before numba is imported "
                "(tests/test_weights_sparse_poisson.py runs this file that way)",
                allow_module_level=True)

prepare()  # a faster GIL switch, and the simulator's shared arrays under a lock

RTOL = {"float32": 1e-5, "float64": 1e-10}


def _pair(sizes, hidden, output, dtype="float64"):
    kwargs = {"hidden": hidden, "output": output, "dtype": dtype, "seed": 0}
    return (gpubp.Network(sizes, device="cuda", fallback=False, **kwargs),
            gpubp.Network(sizes, device="cpu", backend="reference", **kwargs))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_exp_and_poisson_kernels(dtype):
    rng = np.random.default_rng(0)
    z = rng.normal(0, 2, size=(9, 4)).astype(dtype)
    z[0, 0] = 1e4  # capped, finite
    b = rng.normal(size=4).astype(dtype)
    a_cuda, a_ref = z.copy(), z.copy()
    cuda_kernels.bias_activation(a_cuda, b, "exp")
    reference.bias_activation(a_ref, b, "exp")
    np.testing.assert_allclose(a_cuda, a_ref, rtol=RTOL[dtype])
    a = np.exp(rng.normal(size=(9, 4))).astype(dtype)
    y = rng.poisson(1.5, size=a.shape).astype(dtype)
    d_cuda, d_ref = np.empty_like(a), np.empty_like(a)
    c_cuda = cuda_kernels.output_delta(a, y, "exp", "poisson", d_cuda)
    c_ref = reference.output_delta(a, y, "exp", "poisson", d_ref)
    np.testing.assert_allclose(d_cuda, d_ref, rtol=RTOL[dtype])
    assert c_cuda == pytest.approx(c_ref, rel=10 * RTOL[dtype])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_poisson_training_matches_reference(dtype):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(37, 6))
    Y = rng.poisson(2.0, size=(37, 2)).astype(float)
    cuda, ref = _pair([6, 5, 2], "tanh", "exp", dtype)
    kwargs = {"epochs": 2, "batch_size": 16, "shuffle": False, "verbose": 0, "lr": 0.02}
    h_cuda, h_ref = cuda.fit(X, Y, **kwargs), ref.fit(X, Y, **kwargs)
    np.testing.assert_allclose(h_cuda["loss"], h_ref["loss"], rtol=RTOL[dtype])
    np.testing.assert_allclose(cuda.theta, ref.theta, rtol=RTOL[dtype], atol=RTOL[dtype])


@pytest.mark.parametrize("sparse", [False, True])
def test_weighted_and_sparse_gradients_match_reference(sparse):
    rng = np.random.default_rng(2)
    X = rng.normal(size=(21, 8)) * (rng.random((21, 8)) < 0.4)
    Y = np.eye(3)[rng.integers(0, 3, 21)]
    s = rng.uniform(0, 2, 21)
    Xin = sp.csr_matrix(X) if sparse else X
    cuda, ref = _pair([8, 6, 3], "relu", "softmax")
    assert cuda.loss(Xin, Y, sample_weight=s) == pytest.approx(
        ref.loss(X, Y, sample_weight=s), rel=1e-10)
    for got, want in zip(cuda.gradients(Xin, Y, sample_weight=s),
                         ref.gradients(X, Y, sample_weight=s)):
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-12)


def test_sparse_training_matches_reference():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(30, 8)) * (rng.random((30, 8)) < 0.3)
    Y = rng.integers(0, 2, (30, 3)).astype(float)  # multilabel: three sigmoid outputs
    cuda, ref = _pair([8, 5, 3], "sigmoid", "sigmoid")
    kwargs = {"epochs": 2, "batch_size": 8, "shuffle": False, "verbose": 0, "lr": 0.5}
    cuda.fit(sp.csr_matrix(X), Y, **kwargs)
    ref.fit(X, Y, **kwargs)
    np.testing.assert_allclose(cuda.theta, ref.theta, rtol=1e-10, atol=1e-12)
