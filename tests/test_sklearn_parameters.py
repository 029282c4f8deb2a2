"""Every training parameter of the scikit-learn estimators reaches the training.

For each of ``alpha``, ``beta_1``, ``beta_2``, ``epsilon``, ``momentum``,
``nesterovs_momentum``, ``batch_size`` and ``shuffle``: the estimator fitted with a
non-default value ends with the parameters scikit-learn's own estimator ends with for the
same value (the drop-in: same initial weights, batches, penalty and update), and with
different ones from the estimator fitted with the default value, so an estimator that
ignored the parameter fails.
"""

import numpy as np
import pytest

sklearn_nn = pytest.importorskip("sklearn.neural_network")

from gpubp.sklearn.estimators import MLPClassifier, MLPRegressor  # noqa: E402

LR, EPOCHS, BATCH = 0.05, 4, 16
# All max_iter=EPOCHS epochs run (tol=0, n_iter_no_change > max_iter), so scikit-learn's
# ConvergenceWarning is expected.
BASE = dict(hidden_layer_sizes=(5,), activation="tanh", learning_rate_init=LR, max_iter=EPOCHS,
            batch_size=BATCH, tol=0.0, alpha=0.0, random_state=0, n_iter_no_change=100)

# parameter: (non-default value, solver)
CASES = {
    "alpha": (0.5, "adam"),
    "beta_1": (0.5, "adam"),
    "beta_2": (0.9, "adam"),
    "epsilon": (0.1, "adam"),
    "momentum": (0.5, "sgd"),
    "nesterovs_momentum": (False, "sgd"),
    "batch_size": (7, "adam"),
    "shuffle": (False, "adam"),
}


def _data(kind):
    rng = np.random.default_rng(4)
    X = rng.normal(size=(45, 3))
    if kind == "classifier":  # three classes
        return X, np.argmax(X @ rng.normal(size=(3, 3)) + rng.normal(0, 0.5, (45, 3)), axis=1)
    return X, np.sin(X[:, 0]) + X[:, 1] * X[:, 2]


def _coefs(est):
    return [*est.coefs_, *est.intercepts_]


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("kind", ["classifier", "regressor"])
@pytest.mark.parametrize("param", list(CASES))
def test_parameter_changes_the_fit_as_scikit_learn_does(kind, param):
    value, solver = CASES[param]
    Estimator = MLPClassifier if kind == "classifier" else MLPRegressor
    Theirs = sklearn_nn.MLPClassifier if kind == "classifier" else sklearn_nn.MLPRegressor
    X, y = _data(kind)

    default = Estimator(solver=solver, **BASE).fit(X, y)
    est = Estimator(solver=solver, **{**BASE, param: value}).fit(X, y)
    theirs = Theirs(solver=solver, **{**BASE, param: value}).fit(X, y)
    for got, expected in zip(_coefs(est), _coefs(theirs)):
        np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(est.loss_curve_, theirs.loss_curve_, rtol=1e-9)

    # and the parameter matters: the default value gives a different fit
    difference = max(float(np.abs(a - c).max()) for a, c in zip(_coefs(est), _coefs(default)))
    assert difference > 1e-4, f"{param}={value!r} fits as the default does"
