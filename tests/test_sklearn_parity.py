"""gpubp.sklearn.estimators against scikit-learn itself: the same parameters and ``random_state`` give
the same fit (same initial weights, batches, penalty, stopping), on the bundled data sets.

L-BFGS, SGD and Adam, with and without sample weights, agree to rounding: SGD and Adam
train on the compiled epoch, weighted or not.
"""

import warnings

import numpy as np
import pytest

sklearn_nn = pytest.importorskip("sklearn.neural_network")

import gpubp.sklearn.estimators as gs  # noqa: E402
from gpubp import datasets  # noqa: E402


@pytest.fixture(scope="module", params=["iris", "wine"])
def data(request):
    return datasets.load(request.param)


def _fit_both(make, X, y, **fit_kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning at the fixed budget, both
        return [make(module).fit(X, y, **fit_kwargs) for module in (sklearn_nn, gs)]


@pytest.mark.parametrize("solver, weighted, atol", [
    ("lbfgs", False, 1e-8), ("lbfgs", True, 1e-8), ("sgd", True, 1e-8), ("adam", True, 1e-8),
    # sgd and adam take the compiled epoch, weighted or not
    ("sgd", False, 1e-8), ("adam", False, 1e-8),
])
def test_classifier_fits_like_scikit_learn(data, solver, weighted, atol):
    sw = np.random.default_rng(0).uniform(0.2, 3.0, len(data.y_train)) if weighted else None
    theirs, ours = _fit_both(
        lambda m: m.MLPClassifier((16,), solver=solver, max_iter=60, random_state=0,
                                  learning_rate_init=0.01),
        data.X_train, data.y_train, sample_weight=sw)
    assert ours.n_iter_ == theirs.n_iter_
    assert ours.loss_ == pytest.approx(theirs.loss_, rel=1e-7)
    np.testing.assert_allclose(ours.predict_proba(data.X_test),
                               theirs.predict_proba(data.X_test), atol=atol)
    np.testing.assert_array_equal(ours.predict(data.X_test), theirs.predict(data.X_test))
    if solver != "lbfgs":
        np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=1e-7)


def test_regressor_with_early_stopping_fits_like_scikit_learn(data):
    theirs, ours = _fit_both(
        lambda m: m.MLPRegressor(hidden_layer_sizes=(8,), solver="sgd", max_iter=80, random_state=0,
                                 learning_rate_init=0.01, early_stopping=True,
                                 n_iter_no_change=5),
        data.X_train, data.y_train.astype(float))
    assert ours.n_iter_ == theirs.n_iter_
    np.testing.assert_allclose(ours.validation_scores_, theirs.validation_scores_, rtol=1e-8)
    assert ours.best_validation_score_ == pytest.approx(theirs.best_validation_score_, rel=1e-8)
    np.testing.assert_allclose(ours.predict(data.X_test), theirs.predict(data.X_test), rtol=1e-7,
                               atol=1e-9)


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("solver", ["sgd", "adam"])
def test_stochastic_solvers_take_the_compiled_epoch(data, solver, weighted, monkeypatch):
    from gpubp.core import compiled

    calls = []
    original = compiled.train_epoch
    monkeypatch.setattr(compiled, "train_epoch",
                        lambda *a, **k: calls.append(1) or original(*a, **k))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf = gs.MLPClassifier((8,), solver=solver, max_iter=3, random_state=0)
        sw = np.arange(len(data.y_train)) % 3 + 0.5 if weighted else None
        clf.fit(data.X_train, data.y_train, sample_weight=sw)
        assert len(calls) == clf.n_iter_ == 3
        clf.partial_fit(data.X_train, data.y_train)  # one more epoch, warm
    assert len(calls) == 4 and clf.n_iter_ == 1 and len(clf.loss_curve_) == 4
