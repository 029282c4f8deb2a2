"""gpubp's estimators to scikit-learn's own ``MLPClassifier``/``MLPRegressor`` and back.

Both keep the same fitted attributes with the same layout (``coefs_[i]`` of shape
``(n_i, n_{i+1})``, ``intercepts_[i]`` of ``(n_{i+1},)``), so a model crosses by its
parameters and fitted attributes alone, and predicts the same on either side.
"""

import copy

import numpy as np
import sklearn.neural_network as sk_nn

from gpubp.sklearn.estimators import MLPClassifier, MLPRegressor

# the fitted attributes that cross, where the estimator has them
FITTED = ("coefs_", "intercepts_", "n_features_in_", "feature_names_in_", "n_outputs_",
          "n_layers_", "out_activation_", "n_iter_", "t_", "loss_", "best_loss_",
          "loss_curve_", "validation_scores_", "best_validation_score_", "classes_",
          "_label_binarizer")
_PAIRS = ((MLPClassifier, sk_nn.MLPClassifier), (MLPRegressor, sk_nn.MLPRegressor))


def _cross(est, target_class, **params):
    missing = [a for a in ("coefs_", "intercepts_") if not hasattr(est, a)]
    if missing:
        raise ValueError(f"est must be a fitted {type(est).__name__} (no {missing[0]}); call "
                         f"fit first")
    own = est.get_params(deep=False)
    params = {**{k: v for k, v in own.items() if k in target_class().get_params()}, **params}
    out = target_class(**params)
    for attr in FITTED:
        if attr in vars(est):
            value = copy.deepcopy(vars(est)[attr])
            if attr in ("coefs_", "intercepts_"):
                value = [np.array(p, copy=True) for p in value]
            setattr(out, attr, value)
    return out


def to_sklearn(est):
    """scikit-learn's own estimator with the parameters and fitted attributes of ``est``.

    Parameters
    ----------
    est : gpubp.sklearn.MLPClassifier or MLPRegressor
        Fitted.

    Returns
    -------
    sklearn.neural_network.MLPClassifier or MLPRegressor
        Its ``predict``/``predict_proba`` equal ``est``'s to rounding (scikit-learn
        computes in the coefficients' dtype). ``device`` and ``dtype`` have no
        scikit-learn counterpart; every other parameter is copied as it is.
    """
    for ours, theirs in _PAIRS:
        if isinstance(est, ours):
            return _cross(est, theirs)
    raise TypeError(f"est must be a gpubp.sklearn MLPClassifier or MLPRegressor, got "
                    f"{type(est).__name__}")


def from_sklearn(est, device="cpu", dtype=None):
    """The gpubp estimator with the parameters and fitted attributes of scikit-learn's ``est``.

    Parameters
    ----------
    est : sklearn.neural_network.MLPClassifier or MLPRegressor
        Fitted.
    device, dtype
        As :class:`gpubp.sklearn.MLPClassifier`'s.

    Returns
    -------
    gpubp.sklearn.MLPClassifier or MLPRegressor
        Predicting as ``est``; ``fit`` with ``warm_start=True`` or ``partial_fit`` trains on
        from its coefficients.
    """
    for ours, theirs in _PAIRS:
        if type(est) is theirs:
            return _cross(est, ours, device=device, dtype=dtype)
    raise TypeError(f"est must be a scikit-learn MLPClassifier or MLPRegressor, got "
                    f"{type(est).__name__}")
