"""net.trace: the quantities of the derivation, checked against closed forms and central
differences; gradient-flow figures recorded by fit and drawn by History.plot."""

import numpy as np
import pytest

import gpubp
from gpubp.core.trace import Trace, gradient_flow

from tests.conftest import PAIRINGS, make_problem, randomize_biases

EPS = 1e-6


def _sigmoid(z):
    return 0.5 * (1 + np.tanh(0.5 * z))  # overflow-free


def test_closed_form_one_hidden_sigmoid_layer(backend):
    """docs/design.md §1: sigmoid hidden and output, binary cross-entropy, mean over P."""
    rng = np.random.default_rng(0)
    P, n0, H = 9, 4, 5
    X, y = rng.normal(size=(P, n0)), rng.integers(0, 2, P).astype(float)
    net = randomize_biases(gpubp.Network([n0, H, 1], hidden="sigmoid", output="sigmoid",
                                         dtype="float64", seed=1, backend=backend))
    t = net.trace(X, y)
    (W1, W2), (b1, b2) = net.get_params()
    a1 = _sigmoid(X @ W1 + b1)
    h = _sigmoid(a1 @ W2 + b2)[:, 0]
    np.testing.assert_array_equal(t.a[0], X)
    np.testing.assert_allclose(t.a[1], a1, rtol=1e-12)
    np.testing.assert_allclose(t.a[2][:, 0], h, rtol=1e-12)
    np.testing.assert_allclose(t.z[0], X @ W1 + b1, rtol=1e-12)
    np.testing.assert_allclose(t.delta[1][:, 0], (h - y) / P, rtol=1e-10, atol=1e-15)
    common = (h - y)[:, None] * W2[:, 0] * a1 * (1 - a1) / P  # (P, H)
    np.testing.assert_allclose(t.delta[0], common, rtol=1e-10, atol=1e-15)
    np.testing.assert_allclose(t.db[0], common.sum(axis=0), rtol=1e-10, atol=1e-15)
    np.testing.assert_allclose(t.dW[0], X.T @ common, rtol=1e-10, atol=1e-15)
    np.testing.assert_allclose(t.dW[1][:, 0], a1.T @ (h - y) / P, rtol=1e-10, atol=1e-15)
    cost = -np.mean(y * np.log(h) + (1 - y) * np.log(1 - h))
    assert t.cost == pytest.approx(cost, rel=1e-12)


def _central_differences(net, X, Y):
    """∂C/∂W^l and ∂C/∂b^l of the mean cost, by central differences of net.loss."""
    W, b = net.get_params()
    grads = []
    for which, arrays in (("W", W), ("b", b)):
        out = []
        for l, arr in enumerate(arrays):
            g = np.zeros_like(arr)
            for idx in np.ndindex(arr.shape):
                costs = []
                for sign in (1, -1):
                    arr[idx] += sign * EPS
                    net.set_params(W, b)
                    costs.append(net.loss(X, Y))
                    arr[idx] -= sign * EPS
                g[idx] = (costs[0] - costs[1]) / (2 * EPS)
            out.append(g)
        grads.append(out)
    net.set_params(W, b)
    return grads


@pytest.mark.parametrize("hidden,output,loss", PAIRINGS)
@pytest.mark.parametrize("sizes", [[3, 2], [3, 4, 2], [3, 4, 3, 2]])
def test_gradients_and_deltas_match_central_differences(hidden, output, loss, sizes):
    net = randomize_biases(gpubp.Network(sizes, hidden=hidden, output=output, loss=loss,
                                         dtype="float64", seed=2, backend="reference"))
    X, Y = make_problem(sizes, loss, P=5, seed=3)
    t = net.trace(X, Y)
    dW, db = _central_differences(net, X, Y)
    for l in range(net.L):
        np.testing.assert_allclose(t.dW[l], dW[l], rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(t.db[l], db[l], rtol=1e-6, atol=1e-8)
    # δ^l_p = ∂C/∂z^l_p: example p alone has cost c_p, so its ∂c_p/∂b^l (central
    # differences) is ∂c_p/∂z^l_p, and in the batch of P, δ^l_p carries 1/P of it
    for p in range(X.shape[0]):
        _, db_p = _central_differences(net, X[p:p + 1], Y[p:p + 1])
        for l in range(net.L):
            np.testing.assert_allclose(t.delta[l][p] * X.shape[0], db_p[l], rtol=1e-6,
                                       atol=1e-8)


def test_trace_agrees_with_forward_gradients_and_activations(backend):
    sizes = [4, 6, 5, 3]
    net = randomize_biases(gpubp.Network(sizes, hidden=["relu", "tanh"], output="softmax",
                                         dtype="float64", seed=4, backend=backend))
    X, Y = make_problem(sizes, "cross_entropy", P=11, seed=5)
    t = net.trace(X, Y)
    assert isinstance(t, Trace) and t.L == 3 and len(t.a) == 4
    assert [d.shape for d in t.delta] == [(11, 6), (11, 5), (11, 3)]
    np.testing.assert_allclose(t.a[-1], net.forward(X), rtol=1e-12)
    np.testing.assert_allclose(t.a[1], np.maximum(t.z[0], 0), rtol=1e-12)
    np.testing.assert_allclose(t.a[2], np.tanh(t.z[1]), rtol=1e-12)
    dW, db = net.gradients(X, Y)
    for ours, theirs in zip(t.dW + t.db, dW + db):
        np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-16)
    assert t.cost == pytest.approx(net.loss(X, Y), rel=1e-12)
    # the record holds copies: a later pass does not change it
    before = t.delta[0].copy()
    net.trace(X[:3] * 2, Y[:3])
    np.testing.assert_array_equal(t.delta[0], before)


def test_trace_rejects_bad_input():
    net = gpubp.Network([3, 2], seed=0)
    with pytest.raises(ValueError, match=r"X must have 3 columns"):
        net.trace(np.zeros((4, 2)), [0, 1, 0, 1])


def test_gradient_flow_over_chunks_equals_one_trace():
    """More rows than one chunk: the per-chunk 1/P is reweighted to the mean over all."""
    sizes = [3, 4, 2]
    net = randomize_biases(gpubp.Network(sizes, hidden="tanh", output="identity",
                                         dtype="float64", seed=6, backend="reference"))
    X, Y = make_problem(sizes, "mse", P=2500, seed=7)
    figures = gradient_flow(net, *net._check_XY(X, Y))
    t = net.trace(X, Y)
    for l in (1, 2):
        assert figures[f"grad_norm_W{l}"] == pytest.approx(np.linalg.norm(t.dW[l - 1]),
                                                           rel=1e-10)
        assert figures[f"mean_abs_delta{l}"] == pytest.approx(np.abs(t.delta[l - 1]).mean(),
                                                              rel=1e-10)


def _deep(hidden, epochs=2):
    from gpubp import datasets

    d = datasets.load("digits")
    net = gpubp.Network([64] + [32] * 8 + [10], hidden=hidden, seed=0)
    return net.fit(d.X_train, d.y_train, epochs=epochs, batch_size=64, lr=0.1, verbose=0,
                   gradient_flow=True)


def test_fit_records_gradient_flow_and_deep_sigmoid_gradients_vanish():
    sigmoid, relu = _deep("sigmoid"), _deep("relu")
    for h in (sigmoid, relu):
        for l in range(1, 10):
            assert len(h[f"grad_norm_W{l}"]) == 2 and len(h[f"mean_abs_delta{l}"]) == 2
    # sigmoid' <= 1/4: each layer shrinks δ on its way to the input; relu' is 0 or 1
    ratio = {name: h["mean_abs_delta1"][0] / h["mean_abs_delta9"][0]
             for name, h in (("sigmoid", sigmoid), ("relu", relu))}
    assert ratio["sigmoid"] < 1e-3 < 0.1 < ratio["relu"]
    assert "grad_norm_W1" not in gpubp.Network([3, 2], seed=0).fit(
        np.zeros((4, 3)), [0, 1, 0, 1], epochs=1, verbose=0)


def test_gradient_flow_argument_is_checked():
    with pytest.raises(TypeError, match="gradient_flow must be True or False, got 'yes'"):
        gpubp.Network([3, 2], seed=0).fit(np.zeros((4, 3)), [0, 1, 0, 1], verbose=0,
                                          gradient_flow="yes")


def test_history_plot_draws_a_log_scale_gradient_flow_panel(tmp_path):
    pytest.importorskip("matplotlib")
    h = _deep("sigmoid", epochs=2)
    fig = h.plot(tmp_path / "flow.png")
    axes = fig.get_axes()
    assert len(axes) == 3 and axes[2].get_yscale() == "log"
    assert len(axes[2].get_lines()) == 9 * 2 + 1  # norm and δ per layer, legend entry
    assert (tmp_path / "flow.png").stat().st_size > 0
    np.testing.assert_allclose(axes[2].get_lines()[0].get_ydata(), h["grad_norm_W1"])
