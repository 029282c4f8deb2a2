"""The estimators' early-stopping split has the size ``validation_fraction`` asks for.

A split fixed at 0.1 whatever ``validation_fraction`` said was caught once only because
ten rows left a one-row validation set (issue 24). Here 1000 rows tell 0.1 from 0.2 and
0.35: the solver sees ``n_iter_ * n_train`` rows (``t_``, scikit-learn's count) with
``n_train = 1000 - ceil(validation_fraction * 1000)``, as in scikit-learn's own
estimator, with and without sample weights.
"""

import math
import warnings

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")

from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.neural_network import MLPClassifier as SkMLPClassifier  # noqa: E402
from sklearn.neural_network import MLPRegressor as SkMLPRegressor  # noqa: E402

from gpubp.sklearn.estimators import MLPClassifier, MLPRegressor  # noqa: E402

N = 1000
FRACTIONS = [0.1, 0.2, 0.35]


def _data(kind):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(N, 6))
    scores = X @ rng.normal(size=(6, 3))
    return X, scores.argmax(axis=1) if kind == "classifier" else scores[:, 0]


def _fit(estimator, X, y, **fit_params):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # 3 iterations on purpose
        return estimator.fit(X, y, **fit_params)


def _settings(fraction):
    return dict(hidden_layer_sizes=(8,), early_stopping=True, validation_fraction=fraction,
                max_iter=3, n_iter_no_change=50, batch_size=64, random_state=0)


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "sample-weight"])
@pytest.mark.parametrize("kind", ["classifier", "regressor"])
@pytest.mark.parametrize("fraction", FRACTIONS)
def test_validation_fraction_sets_the_size_of_the_training_part(fraction, kind, weighted):
    X, y = _data(kind)
    est = (MLPClassifier if kind == "classifier" else MLPRegressor)(**_settings(fraction))
    fit_params = {"sample_weight": np.linspace(0.5, 1.5, N)} if weighted else {}
    _fit(est, X, y, **fit_params)
    n_train = N - math.ceil(fraction * N)
    assert est.n_iter_ == 3 and len(est.validation_scores_) == 3
    assert est.t_ == est.n_iter_ * n_train, (fraction, est.t_ / est.n_iter_)


@pytest.mark.parametrize("kind", ["classifier", "regressor"])
@pytest.mark.parametrize("fraction", FRACTIONS)
def test_the_split_is_the_size_scikit_learns_estimator_takes(fraction, kind):
    X, y = _data(kind)
    ours = (MLPClassifier if kind == "classifier" else MLPRegressor)(**_settings(fraction))
    theirs = (SkMLPClassifier if kind == "classifier" else SkMLPRegressor)(
        **_settings(fraction))
    _fit(ours, X, y)
    _fit(theirs, X, y)
    assert ours.t_ == theirs.t_ and ours.n_iter_ == theirs.n_iter_
