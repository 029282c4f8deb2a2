"""The activations added with gelu through the CUDA kernels and the simulated ``cuda``
backend, against the reference. Run by ``tests/test_activations.py`` in a subprocess with
``NUMBA_ENABLE_CUDASIM=1`` (see ``tests/cudasim_kernels.py`` for why)."""

import numpy as np
import pytest
from numba import config

import gpubp
from gpubp.kernels import cuda as K
from gpubp.kernels import reference as R
from gpubp.optim.optimizers import SGD
from tests.cudasim_support import prepare

if not config.ENABLE_CUDASIM:
    pytest.skip("needs NUMBA_ENABLE_CUDASIM=1 before numba is imported "
                "(tests/test_activations.py runs this file that way)", allow_module_level=True)

prepare()

NEW = ("leaky_relu", "elu", "selu", "softplus", "gelu", "gelu_tanh", "silu")
TOL = {np.float64: dict(rtol=1e-12, atol=1e-14), np.float32: dict(rtol=2e-5, atol=2e-6)}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", NEW)
def test_kernels_equal_the_reference(name, dtype):
    rng = np.random.default_rng(0)
    z = (rng.normal(size=(9, 5)) * 4).astype(dtype)
    z[0, :3] = [-800, 800, 0]  # saturated, and the kink
    b = rng.normal(size=5).astype(dtype)
    want, got = z.copy(), z.copy()
    kept_want, kept_got = np.empty_like(z), np.empty_like(z)
    R.bias_activation(want, b, name, 0.2, kept_want)
    K.bias_activation(got, b, name, 0.2, kept_got)
    np.testing.assert_allclose(got, want, **TOL[dtype])
    np.testing.assert_array_equal(kept_got, kept_want)
    plain = z.copy()
    K.bias_activation(plain, b, name, 0.2)  # without z_out: the same a
    np.testing.assert_array_equal(plain, got)
    source = kept_want if name in R.FROM_Z else want
    delta = rng.normal(size=z.shape).astype(dtype)
    delta_want, delta_got = delta.copy(), delta.copy()
    R.hidden_delta(delta_want, source, name, 0.2)
    K.hidden_delta(delta_got, source, name, 0.2)
    np.testing.assert_allclose(delta_got, delta_want, **TOL[dtype])


@pytest.mark.parametrize("name", NEW)
def test_training_on_the_cuda_backend_equals_reference(name):
    """Mixed layers (gelu keeps z between two others), a few SGD steps with momentum."""
    rng = np.random.default_rng(1)
    X, Y = rng.normal(size=(23, 6)), rng.normal(size=(23, 3))
    slope = 0.2 if name == "leaky_relu" else None
    nets = [gpubp.Network([6, 7, 5, 4, 3], hidden=[name, "gelu", name], output="identity",
                          dtype="float64", seed=2, negative_slope=slope, **where)
            for where in (dict(device="cuda", fallback=False), dict(backend="reference"))]
    assert nets[0].backend.name == "cuda"
    for net in nets:
        net.fit(X, Y, epochs=2, batch_size=8, optimizer=SGD(lr=0.05, momentum=0.5),
                shuffle=False, verbose=0)
    np.testing.assert_allclose(nets[0].get_params()[0][0], nets[1].get_params()[0][0],
                               rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(nets[0].backend.to_host(nets[0].theta), nets[1].theta,
                               rtol=1e-10, atol=1e-12)
