"""The training figures of an epoch come from its batches (row-weighted means of what each
batch saw before its update, as Keras reports them), with no extra pass over the training
data unless ``tol`` asks for the full-data gradient norm; ``evaluate`` stays exact."""

import numpy as np
import pytest
from tests.conftest import make_problem

import gpubp
from gpubp.core import metrics
from gpubp.optim.optimizers import SGD


def _expected(sizes, output, loss, X, Y, B):
    """Replay the epoch batch by batch on a twin network, recording each batch's figures
    with the parameters of the moment the batch is seen."""
    twin = gpubp.Network(sizes, output=output, loss=loss, backend="reference", dtype="float64",
                         seed=0)
    opt = SGD(lr=0.5, momentum=0.5)
    cost = correct = 0.0
    for start in range(0, X.shape[0], B):
        xb, yb = X[start:start + B], Y[start:start + B]
        P = xb.shape[0]
        cost += twin.loss(xb, yb) * P
        correct += metrics.accuracy(twin.forward(xb), yb, loss) * P
        twin._train_step(opt, xb, yb)
    return cost / X.shape[0], correct / X.shape[0], twin


@pytest.mark.parametrize("output,loss,n_out", [("softmax", "cross_entropy", 3),
                                               ("sigmoid", "binary_cross_entropy", 1),
                                               ("sigmoid", "binary_cross_entropy", 3)])
def test_history_holds_the_row_weighted_batch_figures(backend, output, loss, n_out):
    sizes = [4, 6, n_out]
    X, Y = make_problem(sizes, loss, 50, seed=7)  # batches of 16, 16, 16 and 2
    net = gpubp.Network(sizes, output=output, loss=loss, backend=backend, dtype="float64",
                        seed=0)
    hist = net.fit(X, Y, epochs=1, batch_size=16, shuffle=False, verbose=0,
                   optimizer=SGD(lr=0.5, momentum=0.5))
    loss_value, accuracy, twin = _expected(sizes, output, loss, X, Y, 16)
    assert hist["loss"][0] == pytest.approx(loss_value, rel=1e-12)
    assert hist["accuracy"][0] == pytest.approx(accuracy, abs=1e-12)
    np.testing.assert_allclose(net.theta, twin.theta, rtol=1e-12, atol=1e-14)
    # the running figure is not the end-of-epoch one: evaluate is exact, on the new params
    exact = net.evaluate(X, Y)
    assert exact["loss"] == pytest.approx(twin.loss(X, Y), rel=1e-12)
    assert exact["loss"] != pytest.approx(hist["loss"][0], rel=1e-6)


def test_regressors_record_no_accuracy(backend):
    X, Y = make_problem([3, 4, 2], "mse", 20)
    net = gpubp.Network([3, 4, 2], output="identity", backend=backend, seed=0)
    assert "accuracy" not in net.fit(X, Y, epochs=1, verbose=0).history


@pytest.mark.parametrize("tol", [None, 1e-12])
def test_no_extra_pass_over_the_training_data_unless_tol(backend, tol, monkeypatch):
    X, Y = make_problem([4, 5, 3], "cross_entropy", 40)
    net = gpubp.Network([4, 5, 3], backend=backend, seed=0)
    calls = []
    for method in ("forward", "_cost_and_gradients"):
        original = getattr(net, method)
        monkeypatch.setattr(net, method, lambda *a, _m=method, _f=original, **k:
                            calls.append(_m) or _f(*a, **k))
    # the full-data gradient of tol is one pass per epoch of training.data_sums (which also
    # sums over the ranks of a distributed run)
    from gpubp.training import loop as training

    sums = training.data_sums
    monkeypatch.setattr(training, "data_sums", lambda *a, **k: calls.append("data_sums") or sums(*a, **k))
    net.fit(X, Y, epochs=3, batch_size=8, verbose=0, tol=tol)
    assert calls == ([] if tol is None else ["data_sums"] * 3)


def test_count_correct_matches_metrics(backend):
    be = gpubp.Network([2, 3], backend=backend).backend
    rng = np.random.default_rng(0)
    a = rng.random((40, 3))
    a[:5] = 0.5  # ties: the first maximum wins, as in np.argmax; 0.5 is not above 0.5
    for loss, y in (("cross_entropy", np.eye(3)[rng.integers(0, 3, 40)]),
                    ("binary_cross_entropy", rng.integers(0, 2, (40, 3)).astype(float)),
                    ("binary_cross_entropy", rng.integers(0, 2, (40, 1)).astype(float))):
        aa = a[:, :y.shape[1]]
        got = be.count_correct(aa, y, loss)
        assert int(got) == round(metrics.accuracy(aa, y, loss) * 40)
