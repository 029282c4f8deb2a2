"""Extreme inputs, divergence: no warnings (the suite runs with -W error), no silent NaN."""

import numpy as np
import pytest

import gpubp
from tests.conftest import PAIRINGS, make_targets


@pytest.mark.parametrize("hidden,output,loss", PAIRINGS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_extreme_pre_activations_stay_finite(backend, hidden, output, loss, dtype):
    """|z| up to 1e4: forward, loss and gradients finite, and no floating-point warning."""
    rng = np.random.default_rng(0)
    net = gpubp.Network([3, 4, 3], hidden=hidden, output=output, loss=loss, dtype=dtype,
                        seed=0, backend=backend)
    # weights ±1 and inputs of ±5e3 give |z| of order 1e4 in both layers (not more: the
    # check is about exp/log, not about overflowing the products themselves)
    W = [np.sign(rng.normal(size=w.shape)) for w in net.get_params()[0]]
    net.set_params(W, [np.zeros(4), np.zeros(3)])
    X = rng.choice([-5e3, 5e3], size=(8, 3))
    Y = make_targets(rng, 8, 3, loss)
    out = net.forward(X)
    assert np.isfinite(out).all()
    cost = net.loss(X, Y)
    assert np.isfinite(cost)
    dW, db = net.gradients(X, Y)
    for g in dW + db:
        assert np.isfinite(g).all()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_saturated_cross_entropy_is_large_not_infinite(backend, dtype):
    """A confidently wrong softmax costs ~ -log(tiny), a large finite number."""
    net = gpubp.Network([1, 2], hidden="sigmoid", output="softmax", dtype=dtype, backend=backend)
    net.set_params([np.array([[1.0, -1.0]])], [np.zeros(2)])
    X, y = np.array([[1e4]]), np.array([1])  # z = (1e4, -1e4): a = (1, 0), y says class 1
    cost = net.loss(X, y)
    assert np.isfinite(cost) and cost > 80
    (dW,), (db,) = net.gradients(X, y)
    np.testing.assert_allclose(db, [1.0, -1.0])  # δ = a − y exactly, even when saturated


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_saturated_sigmoid_binary_cross_entropy(backend, dtype):
    net = gpubp.Network([1, 1], output="sigmoid", dtype=dtype, backend=backend)
    net.set_params([np.array([[1.0]])], [np.zeros(1)])
    X, y = np.array([[-1e4], [1e4], [1e4]]), np.array([1, 0, 1])
    out = net.forward(X)
    np.testing.assert_array_equal(out[:, 0], [0.0, 1.0, 1.0])
    cost = net.loss(X, y)
    # the wrong examples cost -log(tiny) and -log(1 - (1 - epsneg)), finite and large
    assert np.isfinite(cost) and cost > 10
    (dW,), (db,) = net.gradients(X, y)
    np.testing.assert_allclose(db, [(-1 + 1 + 0) / 3], atol=1e-7)


def test_divergence_stops_with_clear_error_and_keeps_finite_params(backend):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 5)) * 100
    Y = rng.normal(size=(64, 2)) * 100
    net = gpubp.Network([5, 8, 2], hidden="relu", output="identity", loss="mse", seed=0,
                        backend=backend)
    with pytest.raises(gpubp.TrainingDiverged, match=r"training diverged in epoch \d+.*smaller learning rate"):
        net.fit(X, Y, epochs=50, batch_size=8, lr=10.0, verbose=0)
    W, b = net.get_params()
    assert all(np.isfinite(p).all() for p in W + b)
    assert np.isfinite(net.loss(X, Y))


def test_divergence_error_is_a_floating_point_error():
    assert issubclass(gpubp.TrainingDiverged, FloatingPointError)
