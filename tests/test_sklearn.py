"""gpubp.sklearn.estimators: scikit-learn's own estimator checks, Pipeline, GridSearchCV, string labels."""

import pickle

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")

from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from gpubp import datasets
from gpubp.sklearn.estimators import MLPClassifier, MLPRegressor


# "invscaling" lowers the rate with the number of rows seen, so repeating a row (more rows)
# and weighting it (fewer) train differently, in scikit-learn's estimator as in this one.
_EXPECTED_FAILURES = {"invscaling": {
    f"check_sample_weight_equivalence_on_{kind}_data": "invscaling's rate follows the rows seen"
    for kind in ("dense", "sparse")}}


# scikit-learn's checks fit with few iterations on purpose; the ConvergenceWarning that a
# stochastic MLP then raises (as scikit-learn's own does) is expected there and only there.
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@parametrize_with_checks([MLPClassifier(max_iter=100), MLPRegressor(max_iter=100),
                          MLPClassifier(max_iter=30, solver="sgd", learning_rate_init=0.05,
                                        learning_rate="invscaling"),
                          MLPRegressor(solver="lbfgs", max_iter=50)],
                         expected_failed_checks=lambda est: _EXPECTED_FAILURES.get(
                             est.learning_rate, {}))
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


@pytest.fixture(scope="module")
def iris():
    return datasets.load("iris", scale=False)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # fixed budget
def test_string_labels_and_probabilities(iris):
    names = np.array(["setosa", "versicolor", "virginica"])
    clf = MLPClassifier((16,), max_iter=300, learning_rate_init=0.01, random_state=0)
    clf.fit(StandardScaler().fit_transform(iris.X_train), names[iris.y_train])
    assert list(clf.classes_) == list(names)
    X_test = StandardScaler().fit(iris.X_train).transform(iris.X_test)
    pred = clf.predict(X_test)
    assert pred.dtype == names.dtype and set(pred) <= set(names)
    assert np.mean(pred == names[iris.y_test]) >= 0.85  # scikit-learn's own: 0.889
    proba = clf.predict_proba(X_test)
    assert proba.shape == (len(X_test), 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_array_equal(names[proba.argmax(axis=1)], pred)
    assert clf.n_iter_ == len(clf.loss_curve_) <= 300 and clf.device_ == "cpu"


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # fixed budget
def test_binary_uses_one_logistic_output():
    d = datasets.load("breast_cancer")
    X, y = d.X_train, d.y_train
    clf = MLPClassifier((8,), max_iter=200, learning_rate_init=0.01, random_state=0,
                        early_stopping=True).fit(X, y)
    assert clf.out_activation_ == "logistic" and clf.n_outputs_ == 1
    assert clf.coefs_[-1].shape == (8, 1)
    assert clf.best_validation_score_ == max(clf.validation_scores_)
    assert clf.score(X, y) > 0.93  # scikit-learn's own, same parameters: 0.937


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # fixed budget
def test_pipeline_and_grid_search(iris):
    pipe = make_pipeline(StandardScaler(), MLPClassifier(max_iter=200, random_state=0))
    grid = GridSearchCV(pipe, {"mlpclassifier__hidden_layer_sizes": [(4,), (16,)],
                               "mlpclassifier__learning_rate_init": [0.01]}, cv=3)
    grid.fit(iris.X_train, iris.y_train)
    assert grid.best_params_["mlpclassifier__hidden_layer_sizes"] in [(4,), (16,)]
    assert grid.score(iris.X_test, iris.y_test) >= 0.85


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # fixed budget
def test_regressor_fits_a_smooth_function():
    rng = np.random.default_rng(0)
    X = rng.uniform(-2, 2, size=(400, 2))
    y = np.sin(X[:, 0]) + 0.5 * X[:, 1] ** 2
    reg = MLPRegressor(hidden_layer_sizes=(32,), activation="tanh", max_iter=500, learning_rate_init=0.01,
                       random_state=0).fit(X, y)
    assert reg.predict(X).shape == (400,)
    assert reg.score(X, y) > 0.95
    Y2 = np.column_stack([y, -y])
    reg2 = clone(reg).set_params(max_iter=50).fit(X, Y2)
    assert reg2.predict(X).shape == (400, 2)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # fixed budget
def test_pickle_round_trip_predicts_the_same(iris):
    clf = MLPClassifier((8,), max_iter=50, random_state=0).fit(iris.X_train, iris.y_train)
    again = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(again.predict_proba(iris.X_test), clf.predict_proba(iris.X_test))


def test_warm_start_continues(iris):
    clf = MLPClassifier((8,), max_iter=5, random_state=0, warm_start=True, tol=0)
    with pytest.warns(ConvergenceWarning, match=r"Maximum iterations \(5\) reached"):
        clf.fit(iris.X_train, iris.y_train)
    first = [c.copy() for c in clf.coefs_]
    with pytest.warns(ConvergenceWarning):
        clf.fit(iris.X_train, iris.y_train)
    # scikit-learn's meaning: n_iter_ counts this fit's epochs, loss_curve_ all of them
    assert clf.n_iter_ == 5 and len(clf.loss_curve_) == 10 and clf.t_ == 10 * len(iris.X_train)
    assert not np.array_equal(first[0], clf.coefs_[0])


@pytest.mark.parametrize("params,exc,pattern", [
    ({"solver": "newton"}, ValueError, r"solver must be one of \('lbfgs', 'sgd', 'adam'\).*got 'newton'"),
    ({"activation": "swish"}, ValueError, r"activation must be one of .*got 'swish'"),
    ({"hidden_layer_sizes": (0,)}, ValueError, r"hidden_layer_sizes must hold positive"),
    ({"learning_rate": "optimal"}, ValueError, r"learning_rate must be one of .*got 'optimal'"),
    ({"n_iter_no_change": 0}, ValueError, r"n_iter_no_change must be >= 1, got 0"),
    ({"max_fun": 0, "solver": "lbfgs"}, ValueError, r"max_fun must be >= 1, got 0"),
    ({"dtype": "float16"}, ValueError, r"dtype must be None, 'float32' or 'float64'"),
    ({"max_iter": 0}, ValueError, r"max_iter must be >= 1, got 0"),
    ({"alpha": -1.0}, ValueError, r"alpha must be >= 0.0, got -1.0"),
    ({"batch_size": "big"}, TypeError, r"batch_size must be an integer, got 'big'"),
    ({"validation_fraction": 1.5}, ValueError, r"validation_fraction must be in \(0, 1\)"),
])
def test_bad_parameters_fail_at_fit(iris, params, exc, pattern):
    clf = MLPClassifier(**params)  # scikit-learn's rule: __init__ never validates
    with pytest.raises(exc, match=pattern):
        clf.fit(iris.X_train, iris.y_train)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # fixed budget
def test_single_class_and_unfitted():
    # scikit-learn's rule: one class trains a model that predicts it
    clf = MLPClassifier(max_iter=5).fit(np.zeros((4, 2)), ["a"] * 4)
    assert list(clf.predict(np.ones((3, 2)))) == ["a"] * 3
    with pytest.raises(NotFittedError):
        MLPRegressor().predict(np.zeros((2, 2)))
