"""scikit-learn drop-ins: ``MLPClassifier`` and ``MLPRegressor`` (needs ``gpubp[sklearn]``).

Modules:
    estimators  the estimators: parameters, validation, fitted attributes
    solvers     lbfgs / sgd / adam as scikit-learn runs them, on a gpubp Network
"""

from gpubp.sklearn.estimators import MLPClassifier, MLPRegressor

__all__ = ["MLPClassifier", "MLPRegressor"]
