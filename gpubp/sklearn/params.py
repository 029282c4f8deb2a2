"""The parameters of :mod:`gpubp.sklearn.estimators` and their checks (at fit, never in
``__init__``, as scikit-learn's rule is), with scikit-learn's errors."""

import numbers

import numpy as np

from gpubp import activations, losses
from gpubp.data.validation import check_dtype
from gpubp.optim.schedules import SCHEDULES, Schedule
from gpubp.training.privacy import DPSGD

ACTIVATIONS = activations.sklearn_names("hidden")  # scikit-learn's names -> gpubp's
REGRESSOR_LOSSES = losses.sklearn_regressor_losses()  # likewise: squared_error, poisson
SOLVERS = ("lbfgs", "sgd", "adam")
LEARNING_RATES = ("constant", "invscaling", "adaptive",
                  *(s for s in SCHEDULES if s not in ("constant", "invscaling")))


def check_params(est):
    """Validate ``est``'s parameters; returns its hidden layer sizes as a list."""
    hidden = est.hidden_layer_sizes
    if isinstance(hidden, numbers.Integral) and not isinstance(hidden, bool):
        hidden = (hidden,)
    try:
        hidden = [int(h) for h in hidden]
    except (TypeError, ValueError):
        raise TypeError(f"hidden_layer_sizes must be a sequence of positive integers, got "
                        f"{est.hidden_layer_sizes!r}") from None
    if any(h < 1 for h in hidden):
        raise ValueError(f"hidden_layer_sizes must hold positive integers, got "
                         f"{est.hidden_layer_sizes!r}")
    for value, name, allowed in ((est.activation, "activation", tuple(ACTIVATIONS)),
                                 (est.solver, "solver", SOLVERS)):
        if value not in allowed:
            raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
    if not (isinstance(est.learning_rate, Schedule) or est.learning_rate in LEARNING_RATES):
        raise ValueError(f"learning_rate must be one of {LEARNING_RATES} or a gpubp "
                         f"Schedule, got {est.learning_rate!r}")
    _check_number(est.alpha, "alpha", low=0.0)
    _check_number(est.learning_rate_init, "learning_rate_init", low=0.0, strict=True)
    _check_number(est.power_t, "power_t", low=0.0)
    _check_number(est.max_iter, "max_iter", low=1, integral=True)
    _check_number(est.max_fun, "max_fun", low=1, integral=True)
    _check_number(est.tol, "tol", low=0.0)
    if not (est.n_iter_no_change == np.inf):
        _check_number(est.n_iter_no_change, "n_iter_no_change", low=1, integral=True)
    _check_number(est.momentum, "momentum", low=0.0, high=1.0, closed=True)
    for value, name in ((est.beta_1, "beta_1"), (est.beta_2, "beta_2")):
        _check_number(value, name, low=0.0, high=1.0)
    _check_number(est.epsilon, "epsilon", low=0.0, strict=True)
    for name in ("shuffle", "warm_start", "nesterovs_momentum", "early_stopping"):
        if not isinstance(getattr(est, name), (bool, np.bool_)):
            raise TypeError(f"{name} must be True or False, got {getattr(est, name)!r}")
    if not isinstance(est.verbose, (bool, np.bool_, numbers.Integral)):
        raise TypeError(f"verbose must be a bool or an integer, got {est.verbose!r}")
    if not 0 < _check_number(est.validation_fraction, "validation_fraction") < 1:
        raise ValueError(f"validation_fraction must be in (0, 1), got "
                         f"{est.validation_fraction!r}")
    if est.batch_size != "auto":
        _check_number(est.batch_size, "batch_size", low=1, integral=True)
    if est.dtype is not None:
        try:
            check_dtype(est.dtype)
        except (TypeError, ValueError):
            raise ValueError(f"dtype must be None, 'float32' or 'float64' (or a NumPy "
                             f"spelling of them: np.float32, 'f4', float, 'f8', ...), "
                             f"got {est.dtype!r}") from None
    if est.privacy is not None and not isinstance(est.privacy, DPSGD):
        raise TypeError(f"privacy must be None or a gpubp.DPSGD, got {est.privacy!r}")
    if est.privacy is not None and est.solver == "lbfgs":
        raise ValueError("privacy=DPSGD(...) trains with solver 'sgd' or 'adam', got "
                         "'lbfgs'")
    return hidden


def _check_number(value, name, low=None, high=None, integral=False, strict=False,
                  closed=False):
    kind = numbers.Integral if integral else numbers.Real
    if isinstance(value, bool) or not isinstance(value, kind):
        raise TypeError(f"{name} must be {'an integer' if integral else 'a number'}, got {value!r}")
    above = high is not None and (value > high if closed else value >= high)
    if not np.isfinite(value) or (low is not None and (value < low or (strict and value == low))) \
            or above:
        bounds = (f"{'>' if strict else '>='} {low}" if high is None
                  else f"in [{low}, {high}{']' if closed else ')'}")
        raise ValueError(f"{name} must be {bounds}, got {value!r}")
    return value
