"""AdamW, RMSprop and the clipping of the gradient through the CUDA kernels, in the simulator.

Run by ``tests/test_optim_training.py`` in a subprocess with ``NUMBA_ENABLE_CUDASIM=1``:
each update kernel against its reference twin (several blocks, a grid-stride tail), then
whole runs of ``fit`` on the simulated ``cuda`` backend against the ``reference`` backend.
"""

import numpy as np
import pytest
from numba import config

import gpubp
from gpubp.kernels import cuda as K
from gpubp.kernels import reference as R
from gpubp.optim.optimizers import AdamW, RMSprop
from gpubp.optim.schedules import OneCycle, WarmupCosine
from tests.cudasim_support import prepare

if not config.ENABLE_CUDASIM:
    pytest.skip("needs NUMBA_ENABLE_CUDASIM=1 before numba is imported "
                "(tests/test_optim_training.py runs this file that way)", allow_module_level=True)

prepare()

SIZE = 300  # more than one 256-thread block
TOL = {np.float64: dict(rtol=1e-12, atol=1e-14), np.float32: dict(rtol=2e-6, atol=1e-7)}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_adamw_update(dtype):
    rng = np.random.default_rng(0)
    param = rng.normal(size=SIZE).astype(dtype)
    got = [param.copy(), np.zeros_like(param), np.zeros_like(param)]
    want = [param.copy(), np.zeros_like(param), np.zeros_like(param)]
    for step in (1, 2, 3):
        grad = rng.normal(size=SIZE).astype(dtype)
        hyper = R.AdamStep(1e-2, 0.9, 0.999, 1e-8, step, 0.0, 0.1)
        K.adam_update(got[0], grad, got[1], got[2], hyper)
        R.adam_update(want[0], grad, want[1], want[2], hyper)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, **TOL[dtype])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("momentum,centered", [(0.0, False), (0.9, False), (0.0, True),
                                               (0.5, True)])
def test_rmsprop_update(dtype, momentum, centered):
    rng = np.random.default_rng(1)
    param = rng.normal(size=SIZE).astype(dtype)

    def state():
        return [param.copy(), np.zeros_like(param),
                np.zeros_like(param) if momentum else None,
                np.zeros_like(param) if centered else None]

    got, want = state(), state()
    hyper = R.RMSpropStep(1e-2, 0.9, 1e-8, 0.01, momentum, centered)
    for _ in range(3):
        grad = rng.normal(size=SIZE).astype(dtype)
        K.rmsprop_update(got[0], grad, *got[1:], hyper)
        R.rmsprop_update(want[0], grad, *want[1:], hyper)
    for g, w in zip(got, want):
        if w is not None:
            np.testing.assert_allclose(g, w, **TOL[dtype])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("max_norm,max_value", [(1.0, 0.0), (1e3, 0.0), (0.0, 0.5)])
def test_clip_gradient(dtype, max_norm, max_value):
    grad = (np.random.default_rng(2).normal(size=SIZE) * 3).astype(dtype)
    grad[5] = np.nan if max_value else grad[5]  # a NaN is no number to clamp: it stays
    got, want = grad.copy(), grad.copy()
    K.clip_gradient(got, max_norm, max_value)
    R.clip_gradient(want, max_norm, max_value)
    np.testing.assert_allclose(got, want, **TOL[dtype])
    if max_value:
        assert np.isnan(got[5])


RUNS = {
    "adamw-clip-warmup-cosine": lambda: dict(
        optimizer=AdamW(lr=0.01, weight_decay=0.05, schedule=WarmupCosine(3)), clip_norm=0.5),
    "rmsprop-centered-clip-value": lambda: dict(
        optimizer=RMSprop(lr=0.005, momentum=0.5, centered=True), clip_value=0.05),
    "sgd-one-cycle": lambda: dict(optimizer="sgd", lr=0.5, schedule=OneCycle()),
}


@pytest.mark.parametrize("name", list(RUNS))
def test_fit_equals_the_reference_backend(name):
    rng = np.random.default_rng(3)
    X = rng.normal(size=(20, 5))
    y = np.eye(3)[rng.integers(0, 3, 20)]
    runs = []
    for device, backend in (("cuda", None), ("cpu", "reference")):
        net = gpubp.Network([5, 6, 3], device=device, backend=backend, dtype="float64",
                            seed=4, fallback=False) if device == "cuda" else \
            gpubp.Network([5, 6, 3], backend=backend, dtype="float64", seed=4)
        history = net.fit(X, y, epochs=2, batch_size=8, verbose=0, **RUNS[name]())
        runs.append((net.get_params(), history["loss"], history["lr"]))
    (got, want) = runs
    for g, w in zip(got[0][0] + got[0][1], want[0][0] + want[0][1]):
        np.testing.assert_allclose(g, w, rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(got[1], want[1], rtol=1e-11)
    assert got[2] == want[2]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_clip_norm_of_huge_entries_does_not_overflow(dtype):
    """‖(3e19, 4e19)‖ = 5e19: the squares are float64, so float32's 1.8e19 limit on a
    square is no limit on the norm (a float32 sum of squares gave inf, and a zero step)."""
    got = np.array([3e19, 4e19, 0.0], dtype)
    K.clip_gradient(got, 1.0, 0.0)
    np.testing.assert_allclose(got, [0.6, 0.8, 0.0], rtol=1e-6)
