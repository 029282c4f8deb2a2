"""Per-example gradients, norms, input gradients, Jacobians and the DP-SGD step on the
simulated ``cuda`` backend, against ``reference``.

Run in a subprocess with ``NUMBA_ENABLE_CUDASIM=1`` by ``tests/test_per_example.py`` (the
simulator must be on before Numba is first imported; see ``tests/cudasim_kernels.py``).
"""

import numpy as np
import pytest
from numba import config

import gpubp
from gpubp.core.private_step import private_step
from tests.cudasim_support import prepare

if not config.ENABLE_CUDASIM:
    pytest.skip("needs NUMBA_ENABLE_CUDASIM=1 before numba is imported "
                "(tests/test_per_example.py runs this file that way)",
                allow_module_level=True)

prepare()  # a faster GIL switch, and the simulator's shared arrays under a lock


def _pair():
    kwargs = {"hidden": "tanh", "output": "softmax", "dtype": "float64", "seed": 0}
    return (gpubp.Network([5, 4, 3], device="cuda", fallback=False, **kwargs),
            gpubp.Network([5, 4, 3], device="cpu", backend="reference", **kwargs))


def test_per_example_figures_match_reference():
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(6, 5)), rng.integers(0, 3, 6)
    cuda, ref = _pair()
    assert cuda.backend.name == "cuda"
    for method in ("per_example_gradients", "per_example_gradient_norms", "input_gradients"):
        np.testing.assert_allclose(getattr(cuda, method)(X, y), getattr(ref, method)(X, y),
                                   rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(cuda.per_example_gradient_norms(X, y, per_layer=True),
                               ref.per_example_gradient_norms(X, y, per_layer=True), rtol=1e-10)
    np.testing.assert_allclose(cuda.jacobian(X), ref.jacobian(X), rtol=1e-10, atol=1e-13)


def test_private_step_matches_reference():
    rng = np.random.default_rng(1)
    X, Y = rng.normal(size=(6, 5)), np.eye(3)[rng.integers(0, 3, 6)]
    noise = rng.normal(size=(5 * 4 + 4 + 4 * 3 + 3,))
    cuda, ref = _pair()
    for net in (cuda, ref):
        private_step(net, gpubp.SGD(lr=0.5), X, Y, np.arange(6), 0.2, noise, 8.0)
    np.testing.assert_allclose(cuda.backend.to_host(cuda.theta),
                               ref.backend.to_host(ref.theta), rtol=1e-10, atol=1e-13)


def test_private_fit_matches_reference():
    rng = np.random.default_rng(2)
    X, y = rng.normal(size=(20, 5)), rng.integers(0, 3, 20)
    cuda, ref = _pair()
    dp = gpubp.DPSGD(max_grad_norm=0.3, noise_multiplier=0.7)
    histories = [net.fit(X, y, epochs=2, batch_size=5, verbose=0, privacy=dp)
                 for net in (cuda, ref)]
    np.testing.assert_allclose(cuda.backend.to_host(cuda.theta),
                               ref.backend.to_host(ref.theta), rtol=1e-10, atol=1e-13)
    assert histories[0]["epsilon"] == histories[1]["epsilon"]
    np.testing.assert_allclose(histories[0]["loss"], histories[1]["loss"], rtol=1e-10)
