"""scikit-learn estimators on gpubp: :class:`MLPClassifier` and :class:`MLPRegressor`.

They take scikit-learn's ``MLPClassifier``/``MLPRegressor`` parameter names (those that
mean something for mini-batch backpropagation) plus ``device`` and ``dtype``, pass
scikit-learn's ``check_estimator`` suite, and work in ``Pipeline`` and ``GridSearchCV``:

>>> from sklearn.pipeline import make_pipeline
>>> from sklearn.preprocessing import StandardScaler
>>> from gpubp.sklearn import MLPClassifier
>>> clf = make_pipeline(StandardScaler(), MLPClassifier((64,), device="auto"))  # doctest: +SKIP

Differences from scikit-learn's, by design:

- ``solver`` is ``"sgd"`` or ``"adam"`` (no L-BFGS: gpubp is mini-batch backpropagation).
- ``learning_rate`` is ``"constant"``, ``"step"``, ``"cosine"`` or a
  :class:`gpubp.optimizers.Schedule`, changing once per epoch (no ``"invscaling"`` or
  ``"adaptive"``).
- ``alpha`` becomes the weight decay ``alpha / batch_size`` of every parameter, biases
  included (scikit-learn's penalty ``alpha/2 ‖W‖² / n_batch`` spares the biases).
- With ``early_stopping`` the monitored figure is the validation accuracy (classifier) or
  the validation loss (regressor), and the best parameters are restored.

Requires scikit-learn >= 1.6 (``pip install "gpubp[sklearn]"``).
"""

import itertools
import numbers
import warnings

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from gpubp.callbacks import EarlyStopping
from gpubp.network import Network
from gpubp.optimizers import SCHEDULES, SGD, Adam, Schedule
from gpubp.tabular import as_frame

ACTIVATIONS = {"identity": "identity", "logistic": "sigmoid", "sigmoid": "sigmoid",
               "tanh": "tanh", "relu": "relu"}
SOLVERS = ("sgd", "adam")


class _BaseMLP(BaseEstimator):
    """Shared parameters and the training of both estimators (see the module docstring)."""

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam",
                 alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, max_iter=200, shuffle=True, random_state=None,
                 tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, device="cpu",
                 dtype="float64"):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.device = device
        self.dtype = dtype

    # -- checks ---------------------------------------------------------------------------
    def _check_params(self, n_samples):
        hidden = self.hidden_layer_sizes
        if isinstance(hidden, numbers.Integral) and not isinstance(hidden, bool):
            hidden = (hidden,)
        try:
            hidden = [int(h) for h in hidden]
        except (TypeError, ValueError):
            raise TypeError(f"hidden_layer_sizes must be a sequence of positive integers, got "
                            f"{self.hidden_layer_sizes!r}") from None
        if any(h < 1 for h in hidden):
            raise ValueError(f"hidden_layer_sizes must hold positive integers, got "
                             f"{self.hidden_layer_sizes!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {tuple(ACTIVATIONS)}, got "
                             f"{self.activation!r}")
        if self.solver not in SOLVERS:
            raise ValueError(f"solver must be one of {SOLVERS} (gpubp has no L-BFGS), got "
                             f"{self.solver!r}")
        _check_number(self.alpha, "alpha", low=0.0)
        _check_number(self.learning_rate_init, "learning_rate_init", low=0.0, strict=True)
        _check_number(self.max_iter, "max_iter", low=1, integral=True)
        _check_number(self.tol, "tol", low=0.0)
        _check_number(self.n_iter_no_change, "n_iter_no_change", low=1, integral=True)
        _check_number(self.momentum, "momentum", low=0.0, high=1.0)
        if not 0 < _check_number(self.validation_fraction, "validation_fraction") < 1:
            raise ValueError(f"validation_fraction must be in (0, 1), got "
                             f"{self.validation_fraction!r}")
        if self.batch_size == "auto":
            batch = min(200, n_samples)
        else:
            batch = _check_number(self.batch_size, "batch_size", low=1, integral=True)
            batch = min(batch, n_samples)
        if not (isinstance(self.learning_rate, Schedule) or self.learning_rate in SCHEDULES):
            raise ValueError(f"learning_rate must be one of {tuple(SCHEDULES)} or a gpubp "
                             f"Schedule, got {self.learning_rate!r}")
        return hidden, batch

    def _make_optimizer(self, batch):
        decay = float(self.alpha) / batch
        if self.solver == "adam":
            return Adam(lr=self.learning_rate_init, beta1=self.beta_1, beta2=self.beta_2,
                        eps=self.epsilon, weight_decay=decay, schedule=self.learning_rate)
        nesterov = bool(self.nesterovs_momentum) and self.momentum > 0
        return SGD(lr=self.learning_rate_init, momentum=self.momentum, nesterov=nesterov,
                   weight_decay=decay, schedule=self.learning_rate)

    # -- training -------------------------------------------------------------------------
    def _fit(self, X, Y, n_outputs, output):
        """Train on float ``X`` (P, n) and targets ``Y`` as the network takes them."""
        hidden, batch = self._check_params(X.shape[0])
        sizes = [X.shape[1], *hidden, n_outputs]
        warm = (self.warm_start and hasattr(self, "coefs_")
                and [c.shape for c in self.coefs_] == list(itertools.pairwise(sizes)))
        seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
        net = Network(sizes, hidden=ACTIVATIONS[self.activation], output=output,
                      device=self.device, dtype=self.dtype, seed=seed)
        optimizer = self._make_optimizer(batch)
        if warm:
            net.set_params(self.coefs_, self.intercepts_)
            previous = self.__dict__.get("_optimizer")
            if previous is not None and "_net" in self.__dict__ and type(previous) is type(optimizer) \
                    and previous.state is not None:
                optimizer.load_state(net.backend, net.params, previous.iterations,
                                     previous.state_arrays(self._net.backend))
        else:
            self.n_iter_, self.t_, self.loss_curve_ = 0, 0, []
            self.validation_scores_ = [] if self.early_stopping else None
        if self.early_stopping:
            monitor = "val_accuracy" if net.is_classifier else "val_loss"
            stopper = EarlyStopping(monitor=monitor, patience=self.n_iter_no_change,
                                    min_delta=float(self.tol), restore_best=True)
        else:
            stopper = EarlyStopping(monitor="loss", patience=self.n_iter_no_change,
                                    min_delta=float(self.tol), restore_best=False)
        history = net.fit(X, Y, epochs=int(self.max_iter), batch_size=batch,
                          shuffle=bool(self.shuffle), verbose=2 if self.verbose else 0,
                          optimizer=optimizer, early_stopping=stopper,
                          validation_split=self.validation_fraction if self.early_stopping else 0.0)
        self._net, self._optimizer = net, optimizer
        W, b = net.get_params()
        self.coefs_, self.intercepts_ = W, b
        self.n_layers_ = len(sizes)
        self.n_outputs_ = n_outputs
        self.out_activation_ = {"sigmoid": "logistic"}.get(output, output)
        self.history_ = history
        self.n_iter_ += len(history)
        n_train = X.shape[0] - (round(self.validation_fraction * X.shape[0])
                                if self.early_stopping else 0)
        self.t_ += n_train * len(history)
        self.loss_curve_ = list(self.loss_curve_) + list(history["loss"])
        self.loss_ = self.loss_curve_[-1]
        self.device_ = net.device
        if self.early_stopping:
            self.validation_scores_ = list(self.validation_scores_ or []) + list(history[monitor])
            self.best_validation_score_ = stopper.best if net.is_classifier else -stopper.best
            self.best_loss_ = None
        else:
            self.best_loss_ = min(self.loss_curve_)
            self.best_validation_score_ = None
        if history.stop_reason is None:
            warnings.warn(f"Stochastic Optimizer: Maximum iterations ({self.max_iter}) reached "
                          f"and the optimization hasn't converged yet.", ConvergenceWarning)
        return self

    def _forward(self, X):
        check_is_fitted(self, "coefs_")
        X = validate_data(self, as_frame(X), reset=False, dtype=[np.float64, np.float32])
        net = self.__dict__.get("_net")
        if net is None:  # unpickled: the network is rebuilt from the coefficients
            net = self._rebuild()
            self._net = net
        return net.forward(X).astype(np.float64, copy=False)

    def _rebuild(self):
        sizes = [self.coefs_[0].shape[0]] + [c.shape[1] for c in self.coefs_]
        output = {"logistic": "sigmoid"}.get(self.out_activation_, self.out_activation_)
        net = Network(sizes, hidden=ACTIVATIONS[self.activation], output=output,
                      device=self.device, dtype=self.dtype, seed=0)
        net.set_params(self.coefs_, self.intercepts_)
        return net

    def to_onnx(self, path):
        """Write the fitted network to ``path`` as ONNX (see :mod:`gpubp.onnx_export`).

        Input ``"X"`` (N, ``n_features_in_``) in ``dtype``; output ``"output"``: the output
        activations, i.e. ``predict_proba`` for a multi-class classifier, the probability
        of ``classes_[1]`` (one column) for a binary one, ``predict`` for a regressor.
        ``classes_`` and ``feature_names_in_`` ride along as JSON metadata.
        """
        import json

        from gpubp.onnx_export import to_onnx

        check_is_fitted(self, "coefs_")
        net = self.__dict__.get("_net") or self._rebuild()
        meta = {key: json.dumps(np.asarray(getattr(self, key)).tolist())
                for key in ("classes_", "feature_names_in_") if hasattr(self, key)}
        return to_onnx(net, path, metadata=meta)

    def __getstate__(self):
        # device arrays and backend modules do not pickle; coefs_ rebuild the network
        state = super().__getstate__()
        state.pop("_net", None)
        state.pop("_optimizer", None)
        return state


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """Multilayer perceptron classifier trained by gpubp's explicit backpropagation.

    Parameters are scikit-learn's ``MLPClassifier``'s (see the module docstring for the
    differences), plus:

    device : {"cpu", "cuda", "auto"}
        Where to train (``"cuda"`` falls back to the CPU with a warning).
    dtype : {"float64", "float32"}

    Attributes
    ----------
    classes_ : ndarray, shape (n_classes,)
    coefs_ : list of ndarray
        ``coefs_[i].shape == (n_i, n_{i+1})``.
    intercepts_ : list of ndarray
    loss_, best_loss_, loss_curve_, validation_scores_, best_validation_score_
    n_iter_, t_, n_layers_, n_outputs_, out_activation_, n_features_in_
    history_ : gpubp.History
        Per-epoch figures of the last fit.
    device_ : str
        The device actually used.

    Examples
    --------
    >>> from gpubp.sklearn import MLPClassifier
    >>> clf = MLPClassifier(hidden_layer_sizes=(64,), max_iter=50, random_state=0)
    >>> clf.fit(X_train, y_train).score(X_test, y_test)  # doctest: +SKIP
    """

    def fit(self, X, y):
        """Train on ``X`` (n_samples, n_features) and labels ``y`` (n_samples,) of any type.

        Returns
        -------
        self
        """
        X, y = validate_data(self, as_frame(X), y, dtype=[np.float64, np.float32])
        check_classification_targets(y)
        classes, encoded = np.unique(y, return_inverse=True)
        if len(classes) < 2:
            raise ValueError(f"MLPClassifier needs examples of at least 2 classes in y, got "
                             f"1 class ({classes[0]!r})")
        if self.warm_start and hasattr(self, "classes_") and not np.array_equal(classes, self.classes_):
            raise ValueError(f"warm_start: y must hold the classes of the previous fit "
                             f"{self.classes_.tolist()}, got {classes.tolist()}")
        self.classes_ = classes
        if len(classes) == 2:
            return self._fit(X, encoded.astype(np.float64), 1, "sigmoid")
        return self._fit(X, encoded, len(classes), "softmax")

    def predict_proba(self, X):
        """Class probabilities, shape (n_samples, n_classes), in the order of ``classes_``."""
        a = self._forward(X)
        if a.shape[1] == 1:
            return np.hstack([1.0 - a, a])
        return a

    def predict_log_proba(self, X):
        """``log(predict_proba(X))``."""
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))

    def predict(self, X):
        """Predicted labels, shape (n_samples,), values from ``classes_``."""
        proba = self.predict_proba(X)  # first: it checks that the estimator is fitted
        return self.classes_[np.argmax(proba, axis=1)]


class MLPRegressor(RegressorMixin, _BaseMLP):
    """Multilayer perceptron regressor (identity output, mean squared error).

    Parameters and attributes as :class:`MLPClassifier` (without ``classes_``); ``y`` may
    be (n_samples,) or (n_samples, n_outputs).
    """

    def fit(self, X, y):
        """Train on ``X`` (n_samples, n_features) and targets ``y``.

        Returns
        -------
        self
        """
        X, y = validate_data(self, as_frame(X), y, multi_output=True, y_numeric=True,
                             dtype=[np.float64, np.float32])
        Y = y.reshape(-1, 1) if y.ndim == 1 else y
        return self._fit(X, np.asarray(Y, dtype=np.float64), Y.shape[1], "identity")

    def predict(self, X):
        """Predictions, shape (n_samples,) for one output, else (n_samples, n_outputs)."""
        out = self._forward(X)
        return out.ravel() if out.shape[1] == 1 else out

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags


def _check_number(value, name, low=None, high=None, integral=False, strict=False):
    kind = numbers.Integral if integral else numbers.Real
    if isinstance(value, bool) or not isinstance(value, kind):
        raise TypeError(f"{name} must be {'an integer' if integral else 'a number'}, got {value!r}")
    if not np.isfinite(value) or (low is not None and (value < low or (strict and value == low))) \
            or (high is not None and value >= high):
        bounds = f"{'>' if strict else '>='} {low}" if high is None else f"in [{low}, {high})"
        raise ValueError(f"{name} must be {bounds}, got {value!r}")
    return value
