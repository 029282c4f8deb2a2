"""The estimators' per-example methods and their privacy parameter
(gpubp.sklearn.per_example, MLPClassifier/MLPRegressor(privacy=DPSGD(...)))."""

import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

from gpubp import DPSGD
from gpubp.sklearn.estimators import MLPClassifier, MLPRegressor
from gpubp.training import privacy


def _data(P=60):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(P, 4))
    return X, (X[:, 0] + 0.5 * X[:, 1] > 0).astype(int), X @ [1.0, -2.0, 0.5, 0.0]


def _fitted(est, X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return est.fit(X, y)


@pytest.mark.parametrize("kind", ["classifier", "regressor"])
def test_per_example_methods_are_the_networks(kind):
    X, labels, values = _data()
    cls, y = (MLPClassifier, labels) if kind == "classifier" else (MLPRegressor, values)
    est = _fitted(cls(hidden_layer_sizes=(5, 3), max_iter=5, random_state=0, dtype="float64"),
                  X, y)
    net = est._net
    Y = (np.asarray(labels, float) if kind == "classifier" else values)[:, None]
    G = net.per_example_gradients(X, Y)
    np.testing.assert_allclose(est.per_example_gradient_norms(X, y),
                               np.linalg.norm(G, axis=1), rtol=1e-12)
    assert est.per_example_gradient_norms(X, y, per_layer=True).shape == (60, 3)
    np.testing.assert_allclose(est.input_gradients(X, y), net.input_gradients(X, Y),
                               rtol=1e-12)
    a = X  # scikit-learn's forward pass through the hidden layers (relu)
    for h, W, b in zip(est.hidden_activations(X), est.coefs_[:-1], est.intercepts_[:-1]):
        a = np.maximum(a @ W + b, 0)
        np.testing.assert_allclose(h, a, rtol=1e-12, atol=1e-14)


def test_private_classifier_reports_the_accountants_epsilon():
    X, labels, _ = _data()
    dp = DPSGD(max_grad_norm=1.0, noise_multiplier=1.0, delta=1e-3)
    clf = _fitted(MLPClassifier(hidden_layer_sizes=(6,), solver="sgd", max_iter=3,
                                batch_size=10, random_state=0, privacy=dp), X, labels)
    steps, q, _ = privacy.schedule(dp, 60, 10)
    assert clf.epsilon_spent_ == dp.epsilon(q, 3 * steps) and clf.n_iter_ == 3
    assert all(np.isfinite(c).all() for c in clf.coefs_)
    assert clf.get_params()["privacy"] is dp


def test_bad_privacy_parameters_are_refused_at_fit():
    X, labels, _ = _data()
    with pytest.raises(ValueError, match="privacy=DPSGD.* solver 'sgd' or 'adam', got 'lbfgs'"):
        MLPClassifier(solver="lbfgs", privacy=DPSGD()).fit(X, labels)
    with pytest.raises(TypeError, match="privacy must be None or a gpubp.DPSGD, got 1.0"):
        MLPClassifier(privacy=1.0).fit(X, labels)
