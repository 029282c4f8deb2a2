"""The public Network API: shapes, reproducibility, training, prediction, evaluation."""

import numpy as np
import pytest

import gpubp
from gpubp import datasets
from tests.conftest import make_problem


def test_get_params_shapes_and_copies():
    net = gpubp.Network([64, 32, 10], hidden="sigmoid", output="softmax", loss="cross_entropy",
                        device="cpu", dtype="float32", seed=0)
    W, b = net.get_params()
    assert [w.shape for w in W] == [(64, 32), (32, 10)]
    assert [v.shape for v in b] == [(32,), (10,)]
    assert all(isinstance(a, np.ndarray) and a.dtype == np.float32 for a in W + b)
    W[0][:] = 0  # a copy: the network is untouched
    assert np.abs(net.get_params()[0][0]).sum() > 0
    assert net.device == "cpu"


def test_seeded_initialisation_is_reproducible():
    a = gpubp.Network([5, 7, 3], seed=42).get_params()[0]
    b = gpubp.Network([5, 7, 3], seed=42).get_params()[0]
    c = gpubp.Network([5, 7, 3], seed=43).get_params()[0]
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], c[0])


def test_initialisation_scales():
    """Glorot uniform for sigmoid/tanh/identity, He normal for relu."""
    glorot = gpubp.Network([400, 600, 2], hidden="tanh", seed=0).get_params()[0][0]
    limit = np.sqrt(6 / (400 + 600))
    assert np.abs(glorot).max() <= limit
    assert glorot.std() == pytest.approx(limit / np.sqrt(3), rel=0.02)
    he = gpubp.Network([400, 600, 2], hidden="relu", seed=0).get_params()[0][0]
    assert he.std() == pytest.approx(np.sqrt(2 / 400), rel=0.02)


def test_default_loss_follows_the_output():
    assert gpubp.Network([2, 2]).loss_name == "cross_entropy"
    assert gpubp.Network([2, 1], output="sigmoid").loss_name == "binary_cross_entropy"
    assert gpubp.Network([2, 1], output="identity").loss_name == "mse"


def test_forward_matches_the_equations(backend):
    X, _ = make_problem([3, 4, 2], "cross_entropy", 5)
    net = gpubp.Network([3, 4, 2], hidden="tanh", dtype="float64", seed=0, backend=backend)
    (W1, W2), (b1, b2) = net.get_params()
    a1 = np.tanh(X @ W1 + b1)
    z2 = a1 @ W2 + b2
    expected = np.exp(z2) / np.exp(z2).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(net.forward(X), expected, rtol=1e-12)


def test_forward_on_more_rows_than_a_chunk():
    from gpubp.core import network

    X, _ = make_problem([3, 2], "cross_entropy", network.CHUNK * 2 + 5)
    net = gpubp.Network([3, 2], dtype="float64", seed=0, backend="reference")
    out = net.forward(X)
    np.testing.assert_allclose(out[-5:], net.forward(X[-5:]), rtol=1e-14)
    np.testing.assert_allclose(out.sum(axis=1), 1.0)


def test_fit_reduces_the_loss_and_records_history(backend):
    d = datasets.load("iris")
    net = gpubp.Network([4, 8, 3], hidden="tanh", seed=0, backend=backend)
    before = net.loss(d.X_train, d.y_train)
    hist = net.fit(d.X_train, d.y_train, epochs=20, batch_size=16, lr=0.1,
                   validation_data=(d.X_test, d.y_test), verbose=0)
    assert isinstance(hist, gpubp.History) and len(hist) == 20
    assert set(hist.history) >= {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert hist["loss"][-1] < 0.5 * before
    assert net.evaluate(d.X_test, d.y_test)["accuracy"] >= 0.85
    assert hist["val_loss"][-1] == pytest.approx(net.evaluate(d.X_test, d.y_test)["loss"], rel=1e-6)


def test_fit_is_reproducible_with_a_seed(backend):
    X, Y = make_problem([4, 6, 3], "cross_entropy", 50)
    runs = []
    for _ in range(2):
        net = gpubp.Network([4, 6, 3], seed=7, backend=backend)
        net.fit(X, Y, epochs=3, batch_size=8, verbose=0)
        runs.append(net.get_params())
    for a, b in zip(sum(runs[0], []), sum(runs[1], [])):
        np.testing.assert_array_equal(a, b)


def test_full_batch_fit_is_plain_gradient_descent(backend):
    """One epoch over one batch = one step θ ← θ − η ∇C with the gradient of net.gradients."""
    X, Y = make_problem([3, 5, 2], "cross_entropy", 9)
    net = gpubp.Network([3, 5, 2], dtype="float64", seed=0, backend=backend)
    (W, b), (dW, db) = net.get_params(), net.gradients(X, Y)
    net.fit(X, Y, epochs=1, batch_size=9, lr=0.3, shuffle=False, verbose=0)
    W2, b2 = net.get_params()
    for new, old, g in zip(W2 + b2, W + b, dW + db):
        np.testing.assert_allclose(new, old - 0.3 * g, rtol=1e-13, atol=1e-16)


def test_last_short_batch_is_used(backend):
    """P = 10, batch 4: steps of 4, 4 and 2 examples, each the mean over its own batch."""
    X, Y = make_problem([2, 3, 2], "cross_entropy", 10)
    net = gpubp.Network([2, 3, 2], dtype="float64", seed=0, backend=backend)
    ref = gpubp.Network([2, 3, 2], dtype="float64", seed=0, backend=backend)
    net.fit(X, Y, epochs=1, batch_size=4, lr=0.5, shuffle=False, verbose=0)
    for rows in (slice(0, 4), slice(4, 8), slice(8, 10)):
        (W, b), (dW, db) = ref.get_params(), ref.gradients(X[rows], Y[rows])
        ref.set_params([w - 0.5 * g for w, g in zip(W, dW)], [v - 0.5 * g for v, g in zip(b, db)])
    for a, c in zip(sum(net.get_params(), []), sum(ref.get_params(), [])):
        np.testing.assert_allclose(a, c, rtol=1e-12, atol=1e-15)


def test_tol_stops_on_the_gradient_norm():
    X, Y = make_problem([3, 1], "mse", 40)
    net = gpubp.Network([3, 1], output="identity", dtype="float64", seed=0, backend="reference")
    hist = net.fit(X, Y, epochs=500, batch_size=40, lr=0.5, tol=1e-3, verbose=0)
    assert len(hist) < 500
    assert hist["grad_norm"][-1] <= 1e-3 < hist["grad_norm"][-2]
    assert "tol" in hist.stop_reason
    dW, db = net.gradients(X, Y)
    assert np.sqrt(sum((g ** 2).sum() for g in dW + db)) == pytest.approx(hist["grad_norm"][-1])


def test_predict_and_evaluate_classifier():
    X, _ = make_problem([4, 3], "cross_entropy", 12)
    net = gpubp.Network([4, 5, 3], seed=0, backend="reference")
    labels = net.predict(X)
    assert labels.shape == (12,) and labels.dtype.kind == "i"
    np.testing.assert_array_equal(labels, net.forward(X).argmax(axis=1))
    result = net.evaluate(X, labels)
    assert result["accuracy"] == 1.0 and set(result) == {"loss", "accuracy"}


def test_predict_binary_and_multilabel():
    X, _ = make_problem([4, 1], "binary_cross_entropy", 9)
    single = gpubp.Network([4, 1], output="sigmoid", seed=0, backend="reference")
    p = single.predict(X)
    assert p.shape == (9,)
    np.testing.assert_array_equal(p, (single.forward(X)[:, 0] > 0.5).astype(int))
    assert single.evaluate(X, p)["accuracy"] == 1.0
    multi = gpubp.Network([4, 3], output="sigmoid", seed=0, backend="reference")
    assert multi.predict(X).shape == (9, 3)


def test_regressor_predicts_outputs_and_reports_no_accuracy():
    X, Y = make_problem([4, 2], "mse", 9)
    net = gpubp.Network([4, 2], output="identity", seed=0, backend="reference")
    np.testing.assert_array_equal(net.predict(X), net.forward(X))
    assert set(net.evaluate(X, Y)) == {"loss"}
    y1 = Y[:, 0]
    net1 = gpubp.Network([4, 1], output="identity", seed=0, backend="reference")
    assert net1.loss(X, y1) == pytest.approx(net1.loss(X, y1[:, None]))


def test_inputs_as_lists_and_integer_arrays():
    net = gpubp.Network([2, 2], seed=0, backend="reference")
    out_list = net.forward([[1, 2], [3, 4]])
    out_arr = net.forward(np.array([[1.0, 2.0], [3.0, 4.0]], dtype=np.float32))
    np.testing.assert_array_equal(out_list, out_arr)


def test_verbose_2_prints_one_line_per_epoch(capsys):
    X, Y = make_problem([3, 2], "cross_entropy", 10)
    gpubp.Network([3, 2], seed=0, backend="reference").fit(X, Y, epochs=3, verbose=2)
    lines = [l for l in capsys.readouterr().out.splitlines() if l.startswith("epoch")]
    assert len(lines) == 3 and "loss:" in lines[0] and "accuracy:" in lines[0]


def test_verbose_0_is_silent(capsys):
    X, Y = make_problem([3, 2], "cross_entropy", 10)
    gpubp.Network([3, 2], seed=0, backend="reference").fit(X, Y, epochs=3, verbose=0)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
