"""Each CUDA kernel against its reference twin, in Numba's CUDA simulator.

Not collected by a plain ``pytest`` (the name does not start with ``test_``): the
simulator must be switched on before Numba is first imported, which a shared pytest
process cannot guarantee, so ``tests/test_cuda_kernels.py`` runs this file in a
subprocess with ``NUMBA_ENABLE_CUDASIM=1``. Run it by hand the same way::

    NUMBA_ENABLE_CUDASIM=1 python -m pytest tests/cudasim_kernels.py

Shapes are small and odd (P=37 rows, 13 inputs, 5 outputs) so that every launch has a
partial block and the tiled kernel has remainders in each of its three dimensions.
"""

import sys

import numpy as np
import pytest
from numba import config

from gpubp.kernels import cuda as K
from gpubp.kernels import reference as R

if not config.ENABLE_CUDASIM:
    pytest.skip("needs NUMBA_ENABLE_CUDASIM=1 before numba is imported "
                "(tests/test_cuda_kernels.py runs this file that way)", allow_module_level=True)

# The simulator runs each CUDA thread as a Python thread and a barrier waits on them in a
# polling loop; a shorter GIL switch interval than the default 5 ms makes barriers, and
# these tests, markedly faster. This file runs in its own interpreter.
sys.setswitchinterval(1e-4)

RTOL = {np.float32: 1e-5, np.float64: 1e-10}
DTYPES = [np.float32, np.float64]
P, N_IN, N_OUT = 37, 13, 5


def assert_close(actual, desired, dtype):
    """Relative agreement, with an absolute floor scaled to the data for entries near 0."""
    desired = np.asarray(desired)
    scale = max(1.0, float(np.max(np.abs(desired)))) if desired.size else 1.0
    np.testing.assert_allclose(actual, desired, rtol=RTOL[dtype], atol=RTOL[dtype] * scale)


@pytest.fixture
def rng():
    return np.random.default_rng(37)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "relu", "identity", "softmax"])
@pytest.mark.parametrize("n", [N_OUT, 70])  # 70 > 2 * ROW_THREADS: rows span 3 strides
def test_bias_activation(rng, dtype, activation, n):
    # Large |z| too: the sigmoid and softmax must neither overflow nor warn.
    z = (rng.normal(size=(P, n)) * 20).astype(dtype)
    z[0, :3] = [800, -800, 0]
    b = rng.normal(size=n).astype(dtype)
    got, want = z.copy(), z.copy()
    K.bias_activation(got, b, activation)
    R.bias_activation(want, b, activation)
    assert got.dtype == dtype
    assert np.isfinite(got).all()
    assert_close(got, want, dtype)


PAIRINGS = [
    ("softmax", "cross_entropy"),
    ("sigmoid", "binary_cross_entropy"),
    ("sigmoid", "mse"),
    ("tanh", "mse"),
    ("relu", "mse"),
    ("identity", "mse"),
]


def _outputs(rng, activation, loss, dtype, shape=(P, N_OUT)):
    z = rng.normal(size=shape) * 3
    if activation != "identity":
        R.activate(z, activation)
    if loss == "cross_entropy":
        y = np.eye(shape[1])[rng.integers(0, shape[1], shape[0])]
    elif loss == "binary_cross_entropy":
        y = rng.integers(0, 2, shape).astype(float)
        z[:2, :2] = [[0.0, 1.0], [1.0, 0.0]]  # saturated outputs: the clipped costs
    else:
        y = rng.normal(size=shape)
    return z.astype(dtype), y.astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation, loss", PAIRINGS)
def test_output_delta(rng, dtype, activation, loss):
    a, y = _outputs(rng, activation, loss, dtype)
    got, want = np.full_like(a, np.nan), np.full_like(a, np.nan)
    cost = K.output_delta(a, y, activation, loss, got)
    want_cost = R.output_delta(a, y, activation, loss, want)
    assert isinstance(cost, float) and np.isfinite(cost)
    assert_close(got, want, dtype)
    assert_close(cost, want_cost, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_output_delta_many_blocks(rng, dtype):
    # 300 rows: three blocks of partial costs, the last one partial.
    a, y = _outputs(rng, "softmax", "cross_entropy", dtype, shape=(300, 3))
    got, want = np.empty_like(a), np.empty_like(a)
    partials = np.full(K.delta_blocks(300), np.nan, dtype)
    cost = np.full(1, np.nan, dtype)
    out = K.output_delta(a, y, "softmax", "cross_entropy", got, partials=partials, cost=cost)
    assert out is cost and partials.shape == (3,)
    assert_close(cost[0], R.output_delta(a, y, "softmax", "cross_entropy", want), dtype)
    assert_close(got, want, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "relu", "identity"])
def test_hidden_delta(rng, dtype, activation):
    a = rng.normal(size=(P, N_IN))
    if activation != "identity":
        R.activate(a, activation)
    a = a.astype(dtype)
    delta = rng.normal(size=(P, N_IN)).astype(dtype)
    got, want = delta.copy(), delta.copy()
    K.hidden_delta(got, a, activation)
    R.hidden_delta(want, a, activation)
    assert_close(got, want, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows, n_in, n_out", [
    (P, N_IN, N_OUT),  # one output tile; P = 2 tiles + 5
    (P, 20, 18),       # 2 x 2 output tiles, remainders in i, j and p
    (16, 15, 16),      # exact tiles: the bias row is the last row of the only tile
    (5, 16, 1),        # the bias row alone in a second tile; one column; P < TILE
])
def test_weight_bias_gradients(rng, dtype, rows, n_in, n_out):
    a_prev = rng.normal(size=(rows, n_in)).astype(dtype)
    delta = rng.normal(size=(rows, n_out)).astype(dtype)
    dW, db = np.full((n_in, n_out), np.nan, dtype), np.full(n_out, np.nan, dtype)
    want_dW, want_db = np.empty_like(dW), np.empty_like(db)
    K.weight_bias_gradients(a_prev, delta, dW, db)
    R.weight_bias_gradients(a_prev, delta, want_dW, want_db)
    assert_close(dW, want_dW, dtype)
    assert_close(db, want_db, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("momentum, nesterov, weight_decay", [
    (0.0, False, 0.0), (0.0, False, 1e-2), (0.9, False, 0.0), (0.9, True, 1e-3),
])
def test_sgd_update(rng, dtype, momentum, nesterov, weight_decay):
    param = rng.normal(size=(N_IN, N_OUT)).astype(dtype)
    velocity = rng.normal(size=param.shape).astype(dtype) if momentum else None
    got = [param.copy(), None if velocity is None else velocity.copy()]
    want = [param.copy(), None if velocity is None else velocity.copy()]
    for _ in range(3):
        grad = rng.normal(size=param.shape).astype(dtype)
        K.sgd_update(got[0], grad, got[1], 0.1, momentum, nesterov, weight_decay)
        R.sgd_update(want[0], grad, want[1], 0.1, momentum, nesterov, weight_decay)
    assert_close(got[0], want[0], dtype)
    if momentum:
        assert_close(got[1], want[1], dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("weight_decay", [0.0, 1e-2])
def test_adam_update(rng, dtype, weight_decay):
    param = rng.normal(size=(N_OUT,)).astype(dtype)
    got = [param.copy(), np.zeros_like(param), np.zeros_like(param)]
    want = [param.copy(), np.zeros_like(param), np.zeros_like(param)]
    for step in (1, 2, 3):
        grad = rng.normal(size=param.shape).astype(dtype)
        K.adam_update(*got[:1], grad, *got[1:], 1e-2, 0.9, 0.999, 1e-8, step, weight_decay)
        R.adam_update(*want[:1], grad, *want[1:], 1e-2, 0.9, 0.999, 1e-8, step, weight_decay)
    for g, w in zip(got, want):
        assert_close(g, w, dtype)
