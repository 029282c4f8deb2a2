"""Backpropagation against central differences, closed forms and a hand-worked example."""

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import gpubp
from tests.conftest import PAIRINGS, make_problem, make_targets, randomize_biases


@pytest.mark.parametrize("hidden,output,loss", PAIRINGS)
@pytest.mark.parametrize("sizes,P", [([3, 2], 1), ([4, 5, 3], 7), ([5, 4, 6, 2], 16),
                                     ([2, 3, 3, 3, 2], 5)])
def test_gradcheck_every_pairing_depth_and_batch(backend, hidden, output, loss, sizes, P):
    X, Y = make_problem(sizes, loss, P, seed=len(sizes) * 10 + P)
    net = gpubp.Network(sizes, hidden=hidden, output=output, loss=loss, dtype="float64",
                        seed=1, backend=backend)
    randomize_biases(net, seed=P)
    errors = gpubp.gradcheck(net, X, Y)
    assert errors.shape == (len(sizes) - 1,)
    assert np.all(errors <= 1), errors  # in units of the tolerance atol + rtol·scale


@pytest.mark.parametrize("factor,at_least", [(2.0, 1e5), (1 + 1e-4, 10.0)])
def test_gradcheck_detects_a_wrong_gradient(monkeypatch, factor, at_least):
    """The oracle must be able to fail: scale δ^L by 2, or by only 1 + 1e-4, and gradcheck
    sees it in every layer (errors are in units of the tolerance: > 1 fails)."""
    from gpubp.kernels import reference

    X, Y = make_problem([3, 4, 2], "cross_entropy", 6)
    net = gpubp.Network([3, 4, 2], dtype="float64", seed=0, backend="reference")
    assert np.all(gpubp.gradcheck(net, X, Y) < 0.1)
    true_output_delta = reference.output_delta

    def scaled(a, y, activation, loss, delta, *loss_param_and_weights):
        cost = true_output_delta(a, y, activation, loss, delta, *loss_param_and_weights)
        delta *= factor
        return cost

    monkeypatch.setattr(reference, "output_delta", scaled)
    assert np.all(gpubp.gradcheck(net, X, Y) > at_least)


def test_gradcheck_absolute_floor_passes_vanishing_gradients(backend):
    """A saturated softmax (cost ~1e-11): the cost changes by less than its rounding over
    ±ε, so the central differences are pure noise (here exactly 0) while backpropagation's
    gradient is ~1e-11. Only the absolute floor atol lets that correct gradient pass; the
    relative measure alone (atol=0) fails it by a factor 1/rtol."""
    net = gpubp.Network([2, 3], output="softmax", dtype="float64", backend=backend)
    net.set_params([np.array([[30.0, 0.0, -30.0], [0.0, 0.0, 0.0]])], [np.zeros(3)])
    X, y = np.array([[1.0, 0.3], [0.8, -0.2]]), np.array([0, 0])
    assert 0 < net.loss(X, y) < 1e-10
    assert gpubp.gradcheck(net, X, y)[0] <= 1
    assert gpubp.gradcheck(net, X, y, atol=0, rtol=1e-6)[0] > 1e5


@pytest.mark.parametrize("kwargs,exc,pattern", [
    ({"eps": 0.0}, ValueError, r"eps must be > 0, got 0.0"),
    ({"atol": -1e-8}, ValueError, r"atol must be >= 0, got -1e-08"),
    ({"rtol": "1e-6"}, TypeError, r"rtol must be a number, got '1e-6'"),
    ({"atol": 0, "rtol": 0}, ValueError, r"atol and rtol must not both be 0"),
])
def test_gradcheck_tolerance_arguments(kwargs, exc, pattern):
    X, Y = make_problem([3, 2], "cross_entropy", 2)
    net = gpubp.Network([3, 2], dtype="float64", backend="reference")
    with pytest.raises(exc, match=pattern):
        gpubp.gradcheck(net, X, Y, **kwargs)


def test_closed_form_one_hidden_sigmoid_layer(backend):
    """docs/design.md §1: ∂C/∂W¹_ij = (1/P) Σ_p (h_p − y_p) w²_j a¹_pj (1 − a¹_pj) x_pi."""
    rng = np.random.default_rng(3)
    P, n_in, n_hid = 11, 4, 5
    X = rng.normal(size=(P, n_in))
    y = rng.integers(0, 2, P).astype(float)
    net = gpubp.Network([n_in, n_hid, 1], hidden="sigmoid", output="sigmoid",
                        loss="binary_cross_entropy", dtype="float64", seed=4, backend=backend)
    (W1, W2), (b1, b2) = net.get_params()
    b1 = rng.normal(size=n_hid)
    b2 = rng.normal(size=1)
    net.set_params([W1, W2], [b1, b2])

    sig = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731 - moderate z, no overflow here
    a1 = sig(X @ W1 + b1)
    h = sig(a1 @ W2 + b2)[:, 0]
    w2 = W2[:, 0]
    common = (h - y)[:, None] * w2[None, :] * a1 * (1 - a1)  # (P, n_hid)
    expected_db1 = common.sum(axis=0) / P
    expected_dW1 = np.einsum("pj,pi->ij", common, X) / P
    expected_dW2 = (a1 * (h - y)[:, None]).sum(axis=0)[:, None] / P
    expected_db2 = np.array([(h - y).sum() / P])

    (dW1, dW2), (db1, db2) = net.gradients(X, y)
    np.testing.assert_allclose(dW1, expected_dW1, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(db1, expected_db1, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(dW2, expected_dW2, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(db2, expected_db2, rtol=1e-12, atol=1e-15)


def _net_2_2_1(backend):
    net = gpubp.Network([2, 2, 1], hidden="sigmoid", output="sigmoid", dtype="float64",
                        backend=backend)
    net.set_params([np.array([[0.5, -0.5], [-0.25, 0.25]]), np.array([[1.0], [-1.0]])],
                   [np.zeros(2), np.zeros(1)])
    return net


def test_hand_worked_2_2_1_single_example(backend):
    # x = (1, 2), y = 1, every bias 0.
    # z¹ = x W¹ = (1·0.5 + 2·(−0.25), 1·(−0.5) + 2·0.25) = (0, 0)  ->  a¹ = (½, ½)
    # z² = a¹ W² = ½·1 + ½·(−1) = 0                              ->  h = ½
    # C = −log ½ = ln 2
    # δ² = h − y = −½;  ∂W² = a¹ᵀ δ² = (−¼, −¼)ᵀ;  ∂b² = −½
    # δ¹ = δ² W²ᵀ ⊙ a¹(1 − a¹) = (−½·1, −½·(−1)) · ¼ = (−⅛, ⅛)
    # ∂W¹ = xᵀ δ¹ = [[−⅛, ⅛], [−¼, ¼]];  ∂b¹ = (−⅛, ⅛)
    # one SGD step with η = 1: W² = (1¼, −¾)ᵀ, b² = ½, W¹ = [[⅝, −⅝], [0, 0]], b¹ = (⅛, −⅛)
    net = _net_2_2_1(backend)
    X, y = np.array([[1.0, 2.0]]), np.array([1])
    assert net.loss(X, y) == pytest.approx(np.log(2), rel=1e-15)
    (dW1, dW2), (db1, db2) = net.gradients(X, y)
    np.testing.assert_array_equal(dW2, [[-0.25], [-0.25]])
    np.testing.assert_array_equal(db2, [-0.5])
    np.testing.assert_array_equal(dW1, [[-0.125, 0.125], [-0.25, 0.25]])
    np.testing.assert_array_equal(db1, [-0.125, 0.125])

    net.fit(X, y, epochs=1, batch_size=1, lr=1.0, shuffle=False, verbose=0)
    (W1, W2), (b1, b2) = net.get_params()
    np.testing.assert_array_equal(W2, [[1.25], [-0.75]])
    np.testing.assert_array_equal(b2, [0.5])
    np.testing.assert_array_equal(W1, [[0.625, -0.625], [0.0, 0.0]])
    np.testing.assert_array_equal(b1, [0.125, -0.125])


def test_hand_worked_2_2_1_two_examples_sum(backend):
    # Add x = (0, 0), y = 0: its z¹ = 0, a¹ = (½, ½), h = ½, δ² = +½. With the mean over
    # P = 2 each δ is halved: δ² = (−¼, +¼), so ∂b² = 0 and ∂W² = a¹ᵀ δ² = 0;
    # δ¹ = (−1/16, 1/16) and (1/16, −1/16): ∂b¹ = 0, ∂W¹ = x₁ᵀ δ¹₁ = [[−1/16, 1/16], [−⅛, ⅛]].
    net = _net_2_2_1(backend)
    X, y = np.array([[1.0, 2.0], [0.0, 0.0]]), np.array([1, 0])
    (dW1, dW2), (db1, db2) = net.gradients(X, y)
    np.testing.assert_array_equal(dW2, [[0.0], [0.0]])
    np.testing.assert_array_equal(db2, [0.0])
    np.testing.assert_array_equal(dW1, [[-0.0625, 0.0625], [-0.125, 0.125]])
    np.testing.assert_array_equal(db1, [0.0, 0.0])


def test_gradients_match_across_chunks():
    """Inputs longer than one pass are processed in chunks, reweighted to the exact mean."""
    from gpubp.core import network

    X, Y = make_problem([3, 4, 2], "cross_entropy", 2 * network.CHUNK + 37)
    net = gpubp.Network([3, 4, 2], dtype="float64", seed=0, backend="reference")
    dW, db = net.gradients(X, Y)
    # an independent full-batch computation in one pass with plain NumPy
    (W1, W2), (b1, b2) = net.get_params()
    a1 = 1 / (1 + np.exp(-(X @ W1 + b1)))
    z2 = a1 @ W2 + b2
    e = np.exp(z2 - z2.max(axis=1, keepdims=True))
    a2 = e / e.sum(axis=1, keepdims=True)
    d2 = (a2 - Y) / len(X)
    d1 = d2 @ W2.T * a1 * (1 - a1)
    np.testing.assert_allclose(dW[1], a1.T @ d2, rtol=1e-10)
    np.testing.assert_allclose(dW[0], X.T @ d1, rtol=1e-10)
    np.testing.assert_allclose(db[0], d1.sum(0), rtol=1e-10, atol=1e-17)
    assert net.loss(X, Y) == pytest.approx(-np.mean(np.sum(Y * np.log(a2), axis=1)), rel=1e-12)


pairing = st.sampled_from(PAIRINGS)

# Central differences carry an absolute rounding error of about u·c/ε ≈ 1e-10·c (u the
# float64 unit roundoff, c the size of the terms the cost is computed from, about
# max(1, |C|) here; see gpubp.core.gradcheck). They say something about a layer only when its
# gradient is well above that: the property draws those cases (a margin of 1e4).
MEANINGFUL_SCALE = 1e-6
# Binary cross-entropy takes log(1 − a) of a = sigmoid(z): near a = 1 the subtraction
# cancels, the cost carries a rounding error of about u/(1 − a), and its central
# differences one of u/((1 − a)·P·ε), while the gradient (a − y)/P stays of order 1/P:
# against the tolerance rtol/P that is 1.1e-4/(1 − a), over 1 within ~1e-4 of a = 1. The
# property keeps outputs 1e-2 away from 1 (and, to be safe, from 0): 1e-2 of the tolerance.
BCE_MARGIN = 1e-2


def _meaningful(net, X, Y):
    scale = max(1.0, abs(net.loss(X, Y)))
    dW, db = net.gradients(X, Y)
    if any(max(float(np.abs(w).max()), float(np.abs(v).max())) < MEANINGFUL_SCALE * scale
           for w, v in zip(dW, db)):
        return False
    if net.loss_name == "binary_cross_entropy":
        a = net.forward(X)
        return float(np.minimum(a, 1 - a).min()) >= BCE_MARGIN
    return True


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pair=pairing, widths=st.lists(st.integers(1, 6), min_size=2, max_size=5),
       P=st.integers(1, 9), seed=st.integers(0, 2**16), backend=st.sampled_from(["reference", "cpu"]))
def test_property_random_architectures_pass_gradcheck(pair, widths, P, seed, backend):
    hidden, output, loss = pair
    if output == "softmax" and widths[-1] < 2:
        widths[-1] = 2
    X, Y = make_problem(widths, loss, P, seed)
    net = gpubp.Network(widths, hidden=hidden, output=output, loss=loss, dtype="float64",
                        seed=seed, backend=backend)
    randomize_biases(net, seed)
    assume(_meaningful(net, X, Y))
    errors = gpubp.gradcheck(net, X, Y)
    assert np.all(errors <= 1), errors


@settings(max_examples=30, deadline=None)
@given(pair=pairing, widths=st.lists(st.integers(2, 12), min_size=2, max_size=4),
       P=st.integers(1, 20), seed=st.integers(0, 2**16), backend=st.sampled_from(["reference", "cpu"]))
def test_property_float32_agrees_with_float64(pair, widths, P, seed, backend):
    hidden, output, loss = pair
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(P, widths[0]))
    Y = make_targets(rng, P, widths[-1], loss)
    nets = {dt: gpubp.Network(widths, hidden=hidden, output=output, loss=loss, dtype=dt,
                              seed=seed, backend=backend) for dt in ("float32", "float64")}
    for net in nets.values():
        randomize_biases(net, seed)
    # the same seed gives the same weights, up to the float32 rounding of the cast
    W32, _ = nets["float32"].get_params()
    W64, _ = nets["float64"].get_params()
    for w32, w64 in zip(W32, W64):
        np.testing.assert_array_equal(w32, w64.astype(np.float32))  # cast, not re-drawn
    out32, out64 = (nets[dt].forward(X) for dt in ("float32", "float64"))
    assert out32.dtype == np.float32 and out64.dtype == np.float64
    np.testing.assert_allclose(out32, out64, rtol=1e-4, atol=1e-5)
    assert nets["float32"].loss(X, Y) == pytest.approx(nets["float64"].loss(X, Y), rel=1e-4, abs=1e-5)
    g32 = sum(nets["float32"].gradients(X, Y), [])
    g64 = sum(nets["float64"].gradients(X, Y), [])
    scale = max(float(np.abs(g).max()) for g in g64) + 1e-3
    for a, b in zip(g32, g64):
        assert a.dtype == np.float32
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-4 * scale)
