"""Flat parameters: ``W``/``b`` (and the gradients, and the optimizer state) are views into
one contiguous vector each, and a training step updates every parameter in one call."""

import numpy as np
import pytest

import gpubp
from gpubp.backends import get_backend
from gpubp.optim.optimizers import SGD, Adam

OPTIMIZERS = {
    "sgd": lambda: SGD(lr=0.1),
    "sgd+decay": lambda: SGD(lr=0.1, weight_decay=0.01),
    "momentum": lambda: SGD(lr=0.1, momentum=0.9),
    "nesterov": lambda: SGD(lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3),
    "adam": lambda: Adam(lr=0.01, weight_decay=1e-3),
}


def _net(backend, sizes=(5, 4, 3, 2), dtype="float64"):
    return gpubp.Network(list(sizes), hidden="tanh", output="softmax", backend=backend,
                         dtype=dtype, seed=0)


def _problem(sizes, P, seed=1):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(P, sizes[0])), np.eye(sizes[-1])[rng.integers(0, sizes[-1], P)]


def test_layout_follows_the_contract(backend):
    sizes = (5, 4, 3, 2)
    net = _net(backend, sizes)
    n = sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))
    assert net.theta.shape == net.nabla_theta.shape == (n,)
    assert net.theta.flags.c_contiguous and net.nabla_theta.flags.c_contiguous
    start = 0
    for l, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        assert net.layer_slices[l] == slice(start, start + n_in * n_out + n_out)
        assert net.W[l].shape == (n_in, n_out) and net.b[l].shape == (n_out,)
        for views, flat in (((net.W[l], net.b[l]), net.theta),
                            ((net.nabla_w[l], net.nabla_b[l]), net.nabla_theta)):
            block = flat[net.layer_slices[l]]
            np.testing.assert_array_equal(block, np.concatenate([v.ravel() for v in views]))
            assert all(np.shares_memory(v, block) for v in views)
        start = net.layer_slices[l].stop
    assert start == n
    # params/grads are still the per-layer views, W^1, b^1, W^2, ...
    assert all(np.shares_memory(p, net.theta) for p in net.params)
    assert all(np.shares_memory(g, net.nabla_theta) for g in net.grads)
    assert [p.shape for p in net.params] == [s for pair in zip(
        [w.shape for w in net.W], [b.shape for b in net.b]) for s in pair]


def test_views_and_flat_vector_see_the_same_memory(backend):
    net = _net(backend)
    W, b = net.get_params()
    net.set_params([w + 1 for w in W], [v - 2 for v in b])  # written into theta
    np.testing.assert_array_equal(net.theta[net.layer_slices[0]][:W[0].size],
                                  (W[0] + 1).ravel())
    net.theta[net.layer_slices[1]] = 7.0  # and theta's writes show in the views
    assert (net.W[1] == 7).all() and (net.b[1] == 7).all()
    W2, b2 = net.get_params()
    assert (W2[1] == 7).all() and not np.shares_memory(W2[1], net.theta)  # copies


def test_backward_fills_the_flat_gradient(backend):
    net = _net(backend)
    X, Y = _problem(net.sizes, 9)
    dW, db = net.gradients(X, Y)
    P = net._load(X, Y)
    net._forward(P)
    net._backward(P)
    expected = np.concatenate([g.ravel() for pair in zip(dW, db) for g in pair])
    np.testing.assert_allclose(net.nabla_theta, expected, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_a_step_is_one_update_call_over_theta(backend, name, monkeypatch):
    net = _net(backend)
    X, Y = _problem(net.sizes, 8)
    calls = []
    kernel = "adam_update" if name == "adam" else "sgd_update"
    original = getattr(net.backend, kernel)

    def spy(param, grad, *args, **kwargs):
        calls.append((param, grad))
        return original(param, grad, *args, **kwargs)

    monkeypatch.setattr(net.backend, kernel, spy)
    opt = OPTIMIZERS[name]()
    net._train_step(opt, X, Y)
    net._train_step(opt, X, Y)
    assert len(calls) == 2
    for param, grad in calls:
        assert param is net.theta and grad is net.nabla_theta
    for buf in (opt.flat_state or {}).values():
        assert buf.shape == net.theta.shape


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_flat_update_equals_per_parameter_update(backend, name):
    """The fused call over theta and one call per parameter give the same numbers."""
    be = get_backend("cpu", backend)
    rng = np.random.default_rng(3)
    shapes = [(3, 4), (4,), (4, 2), (2,)]
    sizes = [int(np.prod(s)) for s in shapes]
    theta0 = rng.normal(size=sum(sizes))
    grads = [rng.normal(size=sum(sizes)) for _ in range(4)]

    def views(flat):
        out, start = [], 0
        for shape, size in zip(shapes, sizes):
            out.append(flat[start:start + size].reshape(shape))
            start += size
        return out

    flat_opt, list_opt = OPTIMIZERS[name](), OPTIMIZERS[name]()
    theta_f, theta_l = theta0.copy(), theta0.copy()
    for g in grads:
        flat_opt.step(be, views(theta_f), views(g), theta=theta_f, nabla_theta=g)
        list_opt.step(be, views(theta_l), views(g.copy()))
    np.testing.assert_allclose(theta_f, theta_l, rtol=1e-15, atol=1e-15)
    assert flat_opt.state_arrays(be).keys() == list_opt.state_arrays(be).keys()
    for key, value in flat_opt.state_arrays(be).items():
        assert value.shape == shapes[int(key.split(".")[1])]
        np.testing.assert_allclose(value, list_opt.state_arrays(be)[key], rtol=1e-15,
                                   atol=1e-15)


@pytest.mark.parametrize("name", ["momentum", "adam"])
def test_state_is_flat_and_exported_per_parameter(name):
    net = _net("cpu")
    X, Y = _problem(net.sizes, 8)
    opt = OPTIMIZERS[name]()
    net._train_step(opt, X, Y)
    for key, buf in opt.flat_state.items():
        assert buf.shape == net.theta.shape
        for i, view in enumerate(opt.state[key]):
            assert view.shape == net.params[i].shape and np.shares_memory(view, buf)
    arrays = opt.state_arrays(net.backend)
    assert sorted(arrays) == sorted(f"{k}.{i}" for k in opt.state_names
                                    for i in range(2 * net.L))
    again = OPTIMIZERS[name]()
    again.load_state(net.backend, net.params, opt.iterations, arrays)
    for key in opt.state_names:
        np.testing.assert_array_equal(again.flat_state[key], opt.flat_state[key])


def test_theta_arguments_are_checked():
    net = _net("reference")
    opt = SGD(lr=0.1)
    with pytest.raises(ValueError, match="theta and nabla_theta must be given together"):
        opt.step(net.backend, net.params, net.grads, theta=net.theta)
    with pytest.raises(ValueError, match=r"must have shape \(\d+,\), the total size of params"):
        opt.step(net.backend, net.params, net.grads, theta=net.theta[:-1],
                 nabla_theta=net.nabla_theta[:-1])
