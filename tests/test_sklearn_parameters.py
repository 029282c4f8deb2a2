"""Every training parameter of the scikit-learn estimators reaches the training.

For each of ``alpha``, ``beta_1``, ``beta_2``, ``epsilon``, ``momentum``,
``nesterovs_momentum``, ``batch_size`` and ``shuffle``: the estimator fitted with a
non-default value ends with exactly the parameters of :meth:`gpubp.Network.fit` run with the
equivalent settings (the mapping the module docstring of ``gpubp.sklearn`` documents), and
with different ones from the estimator fitted with the default value, so an estimator that
ignored the parameter fails.
"""

import numpy as np
import pytest

pytest.importorskip("sklearn")

import gpubp.sklearn
from gpubp import Network
from gpubp.optimizers import SGD, Adam
from gpubp.sklearn import MLPClassifier, MLPRegressor

LR, EPOCHS, BATCH = 0.05, 4, 16
# No weight decay (alpha=0) unless the case sets it. All max_iter=EPOCHS epochs run (tol=0,
# n_iter_no_change > max_iter), so scikit-learn's ConvergenceWarning is expected.
BASE = dict(hidden_layer_sizes=(5,), activation="tanh", learning_rate_init=LR, max_iter=EPOCHS,
            batch_size=BATCH, tol=0.0, alpha=0.0, random_state=0)

# parameter: (non-default value, solver, the equivalent fit settings)
CASES = {
    # alpha is the weight decay alpha / batch_size (module docstring)
    "alpha": (0.5, "adam", dict(optimizer=lambda: Adam(lr=LR, weight_decay=0.5 / BATCH))),
    "beta_1": (0.5, "adam", dict(optimizer=lambda: Adam(lr=LR, beta1=0.5))),
    "beta_2": (0.9, "adam", dict(optimizer=lambda: Adam(lr=LR, beta2=0.9))),
    "epsilon": (0.1, "adam", dict(optimizer=lambda: Adam(lr=LR, eps=0.1))),
    "momentum": (0.5, "sgd", dict(optimizer=lambda: SGD(lr=LR, momentum=0.5, nesterov=True))),
    "nesterovs_momentum": (False, "sgd",
                           dict(optimizer=lambda: SGD(lr=LR, momentum=0.9, nesterov=False))),
    "batch_size": (7, "adam", dict(optimizer=lambda: Adam(lr=LR), batch_size=7)),
    "shuffle": (False, "adam", dict(optimizer=lambda: Adam(lr=LR), shuffle=False)),
}


def _data(kind):
    rng = np.random.default_rng(4)
    X = rng.normal(size=(45, 3))
    if kind == "classifier":  # three classes, labels 0, 1, 2 (classes_ encodes them as is)
        return X, np.argmax(X @ rng.normal(size=(3, 3)) + rng.normal(0, 0.5, (45, 3)), axis=1)
    return X, np.sin(X[:, 0]) + X[:, 1] * X[:, 2]


@pytest.fixture
def networks_made(monkeypatch):
    """The constructor arguments of every Network the estimators build (seed included)."""
    made = []

    class Recording(Network):
        def __init__(self, *args, **kwargs):
            made.append((args, kwargs))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(gpubp.sklearn, "Network", Recording)
    return made


def _coefs(est):
    return [*est.coefs_, *est.intercepts_]


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("kind", ["classifier", "regressor"])
@pytest.mark.parametrize("param", list(CASES))
def test_parameter_changes_the_fit_as_network_fit_does(networks_made, kind, param):
    value, solver, settings = CASES[param]
    settings = dict(settings)
    make_optimizer = settings.pop("optimizer")
    Estimator = MLPClassifier if kind == "classifier" else MLPRegressor
    X, y = _data(kind)

    default = Estimator(solver=solver, **BASE).fit(X, y)
    est = Estimator(solver=solver, **{**BASE, param: value}).fit(X, y)

    # the same network (architecture, seed: same initial parameters and shuffling) trained
    # by Network.fit with the equivalent settings
    args, kwargs = networks_made[-1]
    net = Network(*args, **kwargs)
    targets = y if kind == "classifier" else y.reshape(-1, 1)
    net.fit(X, targets, epochs=EPOCHS, **{"batch_size": BATCH, "shuffle": True, **settings},
            optimizer=make_optimizer(), verbose=0)
    W, b = net.get_params()
    for got, expected in zip(_coefs(est), [*W, *b]):
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-14)

    # and the parameter matters: the default value gives a different fit
    assert networks_made[-2] == networks_made[-1]  # same network, same seed, both times
    difference = max(float(np.abs(a - c).max()) for a, c in zip(_coefs(est), _coefs(default)))
    assert difference > 1e-4, f"{param}={value!r} fits as the default does"
