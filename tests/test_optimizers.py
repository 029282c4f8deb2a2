"""Optimizers and schedules: the update equations against hand-written NumPy, on every
CPU backend (so each backend's fused sgd_update/adam_update kernel is exercised), plus
names, validation and state export."""

import math

import numpy as np
import pytest

import gpubp
from gpubp.backends import get_backend
from gpubp.optim.optimizers import SGD, Adam, from_config, get_optimizer
from gpubp.optim.schedules import Constant, CosineDecay, StepDecay, get_schedule


def _params(rng, dtype=np.float64):
    return [rng.normal(size=(3, 4)).astype(dtype), rng.normal(size=(4,)).astype(dtype)]


def _run(backend_name, opt, steps=4, seed=0):
    """Apply ``steps`` updates with fixed pseudo-random gradients; return host params."""
    rng = np.random.default_rng(seed)
    be = get_backend("cpu", backend_name)
    params = [be.to_device(p) for p in _params(rng)]
    grads_seq = [[rng.normal(size=p.shape) for p in params] for _ in range(steps)]
    for grads in grads_seq:
        opt.step(be, params, [be.to_device(g) for g in grads])
    return [be.to_host(p) for p in params], grads_seq


def _numpy_sgd(params, grads_seq, lr, momentum=0.0, nesterov=False, wd=0.0):
    params = [p.copy() for p in params]
    v = [np.zeros_like(p) for p in params]
    for grads in grads_seq:
        for i, (p, g) in enumerate(zip(params, grads)):
            g = g + wd * p
            if momentum:
                v[i] = momentum * v[i] + g
                step = g + momentum * v[i] if nesterov else v[i]
            else:
                step = g
            p -= lr * step
    return params


def _numpy_adam(params, grads_seq, lr, b1, b2, eps, wd=0.0):
    params = [p.copy() for p in params]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    for t, grads in enumerate(grads_seq, start=1):
        for i, (p, g) in enumerate(zip(params, grads)):
            g = g + wd * p
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * g * g
            p -= lr * (m[i] / (1 - b1 ** t)) / (np.sqrt(v[i] / (1 - b2 ** t)) + eps)
    return params


@pytest.mark.parametrize("momentum,nesterov,wd", [(0.0, False, 0.0), (0.9, False, 0.0),
                                                  (0.9, True, 0.01), (0.5, False, 0.1)])
def test_sgd_matches_the_equations(backend, momentum, nesterov, wd):
    opt = SGD(lr=0.05, momentum=momentum, nesterov=nesterov, weight_decay=wd)
    got, grads_seq = _run(backend, opt)
    expected = _numpy_sgd(_params(np.random.default_rng(0)), grads_seq, 0.05, momentum,
                          nesterov, wd)
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, rtol=1e-12, atol=1e-14)
    assert opt.iterations == 4


@pytest.mark.parametrize("wd", [0.0, 0.01])
def test_adam_matches_the_equations(backend, wd):
    opt = Adam(lr=0.01, beta1=0.8, beta2=0.95, eps=1e-7, weight_decay=wd)
    got, grads_seq = _run(backend, opt)
    expected = _numpy_adam(_params(np.random.default_rng(0)), grads_seq, 0.01, 0.8, 0.95, 1e-7, wd)
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, rtol=1e-10, atol=1e-13)


def test_first_adam_step_moves_each_entry_by_lr():
    """With bias correction, step 1 is lr * g / (|g| + eps): every entry moves by ~lr."""
    opt = Adam(lr=0.01)
    be = get_backend("cpu", "reference")
    p = np.zeros(5)
    opt.step(be, [p], [np.array([3.0, -2.0, 0.5, -1e-3, 10.0])])
    np.testing.assert_allclose(np.abs(p), 0.01, rtol=1e-4)


def test_schedules():
    assert Constant()(0.3, 7, 10) == 0.3
    step = StepDecay(step_size=3, gamma=0.5)
    assert [step(1.0, e, 10) for e in range(7)] == [1, 1, 1, 0.5, 0.5, 0.5, 0.25]
    cos = CosineDecay(min_lr=0.1)
    assert cos(1.0, 0, 10) == 1.0
    assert cos(1.0, 5, 10) == pytest.approx(0.55)
    assert cos(1.0, 10, 10) == pytest.approx(0.1)
    assert CosineDecay(period=4)(2.0, 9, 100) == 0.0  # stays at min_lr after the period
    assert cos(1.0, 3, 10) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.3)))


def test_fit_applies_the_schedule_per_epoch():
    X = np.random.default_rng(0).normal(size=(20, 3))
    y = (X[:, 0] > 0).astype(int)
    net = gpubp.Network([3, 2], seed=0, backend="reference")
    hist = net.fit(X, y, epochs=6, lr=0.8, verbose=0, optimizer="momentum",
                   schedule=StepDecay(step_size=2, gamma=0.5))
    assert hist["lr"] == [0.8, 0.8, 0.4, 0.4, 0.2, 0.2]
    hist = net.fit(X, y, epochs=4, lr=0.8, verbose=0, schedule="cosine")
    assert hist["lr"][0] == 0.8 and hist["lr"][-1] == pytest.approx(0.8 * 0.5 * (1 + math.cos(0.75 * math.pi)))


def test_names_build_the_right_optimizers():
    assert isinstance(get_optimizer("sgd"), SGD) and get_optimizer("sgd").momentum == 0
    assert get_optimizer("momentum").momentum == 0.9 and not get_optimizer("momentum").nesterov
    assert get_optimizer("nesterov").nesterov
    adam = get_optimizer("ADAM", lr=0.02, schedule="step", weight_decay=0.1)
    assert isinstance(adam, Adam) and adam.lr == 0.02 and adam.weight_decay == 0.1
    assert isinstance(adam.schedule, StepDecay)
    mine = SGD(lr=0.3)
    assert get_optimizer(mine) is mine


def test_config_round_trip():
    for opt in (SGD(lr=0.2, momentum=0.8, nesterov=True, weight_decay=1e-3,
                    schedule=StepDecay(4, 0.3)),
                Adam(lr=1e-2, beta1=0.5, schedule=CosineDecay(period=7, min_lr=1e-4))):
        again = from_config(opt.get_config())
        assert type(again) is type(opt) and again.get_config() == opt.get_config()
        assert again.schedule == opt.schedule


def test_state_round_trip_continues_identically():
    a = Adam(lr=0.05)
    _run("reference", a, steps=3)
    be = get_backend("cpu", "reference")
    params = _params(np.random.default_rng(5))
    b = Adam(lr=0.05)
    b.load_state(be, params, a.iterations, a.state_arrays(be))
    assert b.iterations == 3
    for key in ("m", "v"):
        for x, y in zip(a.state[key], b.state[key]):
            np.testing.assert_array_equal(x, y)
    with pytest.raises(ValueError, match=r"optimizer state 'm.0' must have shape \(3, 4\)"):
        b.load_state(be, params, 3, {"m.0": np.zeros(2), "m.1": np.zeros(4)})


@pytest.mark.parametrize("make,exc,pattern", [
    (lambda: SGD(lr=0), ValueError, r"lr must be > 0, got 0"),
    (lambda: SGD(momentum=1.0), ValueError, r"momentum must be in \[0, 1\), got 1.0"),
    (lambda: SGD(nesterov=True), ValueError, r"nesterov=True needs momentum > 0"),
    (lambda: SGD(weight_decay=-1), ValueError, r"weight_decay must be >= 0, got -1"),
    (lambda: Adam(beta1=1.0), ValueError, r"beta1 must be in \[0, 1\), got 1.0"),
    (lambda: Adam(eps="x"), TypeError, r"eps must be a number, got 'x'"),
    (lambda: StepDecay(step_size=0), ValueError, r"step_size must be > 0, got 0"),
    (lambda: StepDecay(gamma=2.0), ValueError, r"gamma must be in \(0, 1\], got 2.0"),
    (lambda: CosineDecay(period=2.5), TypeError, r"period must be an integer, got 2.5"),
    (lambda: get_schedule("linear"), ValueError, r"schedule must be one of .*got 'linear'"),
    (lambda: get_optimizer("adagrad"), ValueError, r"optimizer must be one of .*got 'adagrad'"),
])
def test_bad_arguments(make, exc, pattern):
    with pytest.raises(exc, match=pattern):
        make()


@pytest.mark.parametrize("optimizer", ["momentum", "nesterov", "adam"])
def test_every_optimizer_trains(backend, optimizer):
    from gpubp import datasets

    d = datasets.load("iris")
    net = gpubp.Network([4, 8, 3], hidden="tanh", seed=0, backend=backend)
    lr = 0.02 if optimizer == "adam" else 0.05
    net.fit(d.X_train, d.y_train, epochs=30, batch_size=16, lr=lr, optimizer=optimizer,
            weight_decay=1e-4, verbose=0)
    assert net.evaluate(d.X_test, d.y_test)["accuracy"] >= 0.85
