"""scikit-learn drop-ins: ``MLPClassifier`` and ``MLPRegressor`` (needs ``gpubp[sklearn]``).

Modules:
    estimators  the estimators: parameters, validation, fitted attributes
    solvers     lbfgs / sgd / adam as scikit-learn runs them, on a gpubp Network
    interop     to_sklearn / from_sklearn: scikit-learn's own estimators and back
"""

from gpubp.sklearn.estimators import MLPClassifier, MLPRegressor
from gpubp.sklearn.interop import from_sklearn, to_sklearn

__all__ = ["MLPClassifier", "MLPRegressor", "to_sklearn", "from_sklearn"]
