"""scikit-learn estimators on gpubp: :class:`MLPClassifier` and :class:`MLPRegressor`.

A drop-in for ``sklearn.neural_network``'s estimators: the same parameters, fitted
attributes, errors and training semantics (scikit-learn's own ``test_mlp.py`` runs against
them, see ``tests/test_sklearn_test_mlp.py``), with the forward and backward passes done
by a :class:`gpubp.Network` on the chosen ``device``:

>>> from sklearn.pipeline import make_pipeline
>>> from sklearn.preprocessing import StandardScaler
>>> from gpubp.sklearn.estimators import MLPClassifier
>>> clf = make_pipeline(StandardScaler(), MLPClassifier((64,), device="auto"))  # doctest: +SKIP

What scikit-learn's estimators do, these do: solvers ``"sgd"``, ``"adam"`` and ``"lbfgs"``
(SciPy's L-BFGS-B over the network's flat parameter vector); ``learning_rate``
``"constant"``, ``"invscaling"`` (with ``power_t``) and ``"adaptive"``; ``partial_fit``;
``n_iter_no_change``/``tol`` on the training loss or, with ``early_stopping``, on the
validation score (accuracy or R²), the best parameters restored; ``warm_start``;
``sample_weight``; sparse CSR/CSC ``X``; multilabel ``y`` (logistic outputs) and
multi-output regression; ``loss="poisson"`` (exponential output) for the regressor; the
same initial weights for the same ``random_state``; ``alpha`` as scikit-learn's L2 penalty
``α/2 ‖W‖² / n`` on the weights, not the biases; float32 ``X`` trains in float32.

Three parameters are gpubp's own: ``device`` (``"cpu"``, ``"cuda"``, ``"auto"``),
``dtype`` (None follows ``X``: float32 stays float32, anything else is float64) and
``privacy`` (a :class:`gpubp.DPSGD`: differentially private ``"sgd"``/``"adam"``, the ε
spent in ``epsilon_spent_``); ``per_example_gradient_norms``, ``input_gradients`` and
``hidden_activations`` look at each example (:mod:`gpubp.sklearn.per_example`).
``activation`` also takes gpubp's ``"leaky_relu"`` (slope 0.01), ``"elu"``, ``"selu"``,
``"softplus"``, ``"gelu"``, ``"gelu_tanh"`` and ``"silu"``; the initial weights stay
scikit-learn's (Glorot uniform) whatever the activation.
``learning_rate`` may also be ``"step"``, ``"cosine"`` or a :class:`gpubp.optim.schedules.Schedule`.

Requires scikit-learn >= 1.6 (``pip install "gpubp[sklearn]"``).
"""

import json

import numpy as np

from gpubp.optional import require

require("sklearn", "sklearn", "gpubp.sklearn", "scikit-learn >= 1.6")  # to say what to install
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.metrics import accuracy_score, r2_score
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import type_of_target, unique_labels
from sklearn.utils.validation import (_check_sample_weight, check_is_fitted, column_or_1d,
                                      validate_data)

from gpubp import losses
from gpubp.sklearn import solvers as mlp_solvers
from gpubp.data.frames import as_frame
from gpubp.io.onnx import to_onnx
from gpubp.sklearn.params import check_params
from gpubp.sklearn.per_example import PerExampleMixin

from gpubp.sklearn.params import ACTIVATIONS, REGRESSOR_LOSSES  # noqa: F401 - re-exported
NON_FINITE = mlp_solvers.NON_FINITE


class _BaseMLP(PerExampleMixin, BaseEstimator):
    """Parameters, checks and training shared by both estimators."""

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam",
                 alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000,
                 device="cpu", dtype=None, privacy=None):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
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
        self.max_fun = max_fun
        self.device = device
        self.dtype = dtype
        self.privacy = privacy

    # -- checks ---------------------------------------------------------------------------
    def _check_params(self):
        """Validate the parameters (scikit-learn's rule: at fit, never in ``__init__``);
        returns the hidden layer sizes as a list."""
        return check_params(self)

    def _validate(self, X, y, reset, y_numeric):
        X, y = validate_data(self, as_frame(X), y, accept_sparse=["csr", "csc"],
                             multi_output=True, y_numeric=y_numeric,
                             dtype=(np.float64, np.float32), reset=reset)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        return X, y

    # -- training -------------------------------------------------------------------------
    def _fit(self, X, y, sample_weight=None, incremental=False):
        hidden = self._check_params()
        first_pass = not hasattr(self, "coefs_") or (not self.warm_start and not incremental)
        X, Y = self._validate_input(X, y, incremental, reset=first_pass)
        if sample_weight is not None:
            sample_weight = _check_sample_weight(sample_weight, X)
        Y = Y.reshape(-1, 1) if Y.ndim == 1 else Y
        self.n_outputs_ = Y.shape[1]
        sizes = [X.shape[1], *hidden, self.n_outputs_]
        if not first_pass and [c.shape for c in self.coefs_] != list(zip(sizes[:-1], sizes[1:])):
            raise ValueError(f"warm_start/partial_fit: the layer sizes {sizes} do not match "
                             f"the fitted coefs_ {[c.shape for c in self.coefs_]}")
        mlp_solvers.fit(self, X, Y.astype(X.dtype if self.dtype is None else self.dtype),
                        sample_weight, sizes, first_pass, incremental)
        if not all(np.isfinite(p).all() for p in self.coefs_ + self.intercepts_):
            raise ValueError(NON_FINITE)
        return self

    def fit(self, X, y, sample_weight=None):
        """Fit the model to ``X`` (n_samples, n_features), dense or sparse, and ``y``.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
        sample_weight : array-like of shape (n_samples,), default=None
            The cost becomes ``Σ_p s_p c_p / Σ_p s_p``.

        Returns
        -------
        self
        """
        return self._fit(X, y, sample_weight=sample_weight, incremental=False)

    def _check_solver(self):
        if self.solver not in ("sgd", "adam"):
            raise AttributeError(f"partial_fit is only available for stochastic optimizers. "
                                 f"{self.solver} is not stochastic.")
        return True

    # -- prediction -----------------------------------------------------------------------
    def _forward(self, X, check_input=True):
        """Output activations ``a^L`` (n_samples, n_outputs_), in the parameters' dtype."""
        check_is_fitted(self, "coefs_")
        if check_input:
            X = validate_data(self, as_frame(X), accept_sparse=["csr", "csc"], reset=False,
                              dtype=(np.float64, np.float32))
        return mlp_solvers.network(self).forward(X)

    def _score_with_function(self, X, y, sample_weight, score_function, y_pred=None):
        if y_pred is None:
            y_pred = self._predict(X, check_input=False)
        if np.issubdtype(y_pred.dtype, np.floating) and not np.isfinite(y_pred).all():
            return np.nan
        return float(score_function(y, y_pred, sample_weight=sample_weight))

    def to_onnx(self, path):
        """Write the fitted network to ``path`` as ONNX (see :mod:`gpubp.io.onnx`).

        Input ``"X"`` (N, ``n_features_in_``) in ``dtype``; output ``"output"``: the output
        activations, i.e. ``predict_proba`` for a multi-class classifier, the probability
        of ``classes_[1]`` (one column) for a binary one, ``predict`` for a regressor.
        ``classes_`` and ``feature_names_in_`` ride along as JSON metadata.
        """
        check_is_fitted(self, "coefs_")
        net = mlp_solvers.network(self)
        meta = {key: json.dumps(np.asarray(getattr(self, key)).tolist())
                for key in ("classes_", "feature_names_in_") if hasattr(self, key)}
        return to_onnx(net, path, metadata=meta)

    def __getstate__(self):
        # device arrays and backend objects do not pickle: the network is rebuilt from
        # coefs_, the optimizer from its configuration and host copies of its state
        state = super().__getstate__()
        net, optimizer = state.pop("_net", None), state.pop("_optimizer", None)
        if net is not None and optimizer is not None:
            state["_optimizer_saved"] = (optimizer.get_config(), optimizer.iterations,
                                         optimizer.state_arrays(net.backend))
        return state

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """Multilayer perceptron classifier trained by gpubp's explicit backpropagation.

    Parameters are scikit-learn's ``MLPClassifier``'s (see the module docstring), plus
    ``device`` and ``dtype``.

    Attributes
    ----------
    classes_ : ndarray, shape (n_classes,)
    coefs_ : list of ndarray
        ``coefs_[i].shape == (n_i, n_{i+1})``.
    intercepts_ : list of ndarray
    loss_, best_loss_, loss_curve_, validation_scores_, best_validation_score_
    n_iter_, t_, n_layers_, n_outputs_, out_activation_, n_features_in_
    device_ : str
        The device actually used.

    Examples
    --------
    >>> from gpubp.sklearn.estimators import MLPClassifier
    >>> clf = MLPClassifier(hidden_layer_sizes=(64,), max_iter=50, random_state=0)
    >>> clf.fit(X_train, y_train).score(X_test, y_test)  # doctest: +SKIP
    """

    loss = "log_loss"

    def _validate_input(self, X, y, incremental, reset):
        X, y = self._validate(X, y, reset, y_numeric=False)
        if not hasattr(self, "classes_") or (not self.warm_start and not incremental):
            self._label_binarizer = LabelBinarizer().fit(y)
            self.classes_ = self._label_binarizer.classes_
        else:
            classes = unique_labels(y)
            if self.warm_start:
                if set(classes) != set(self.classes_):
                    raise ValueError(f"warm_start can only be used where `y` has the same "
                                     f"classes as in the previous call to fit. Previously "
                                     f"got {self.classes_}, `y` has {classes}")
            elif len(np.setdiff1d(classes, self.classes_, assume_unique=True)):
                raise ValueError(f"`y` has classes not in `self.classes_`. `self.classes_` "
                                 f"has {self.classes_}. 'y' has {classes}.")
        return X, self._label_binarizer.transform(y).astype(bool)

    @property
    def _output(self):
        return "softmax" if self._label_binarizer.y_type_ == "multiclass" else "sigmoid"

    @available_if(lambda est: est._check_solver())
    def partial_fit(self, X, y, sample_weight=None, classes=None):
        """One epoch over ``X``, ``y``, continuing from the current state.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
        y : array-like of shape (n_samples,) or (n_samples, n_labels)
        sample_weight : array-like of shape (n_samples,), default=None
        classes : array of shape (n_classes,), default=None
            Every class of all the calls; required on the first call only.

        Returns
        -------
        self
        """
        first = getattr(self, "classes_", None) is None
        if first:
            if classes is None:
                raise ValueError("classes must be passed on the first call to partial_fit.")
            self._label_binarizer = LabelBinarizer()
            if type_of_target(y).startswith("multilabel"):
                self._label_binarizer.fit(y)
            else:
                self._label_binarizer.fit(classes)
            self.classes_ = self._label_binarizer.classes_
        elif classes is not None and not np.array_equal(self.classes_, unique_labels(classes)):
            raise ValueError(f"`classes={np.asarray(classes)}` is not the same as on last "
                             f"call to partial_fit, was: {self.classes_}")
        return self._fit(X, y, sample_weight=sample_weight, incremental=True)

    def _predict(self, X, check_input=True):
        return self._prediction(self._forward(X, check_input))

    def _prediction(self, y_pred):
        """Labels from the output activations (n_samples, n_outputs_)."""
        if self.n_outputs_ == 1:
            y_pred = y_pred.ravel()
        return self._label_binarizer.inverse_transform(y_pred)

    def predict(self, X):
        """Predicted labels, shape (n_samples,) (or (n_samples, n_labels) for multilabel)."""
        check_is_fitted(self)
        return self._predict(X)

    def _score(self, X, y, sample_weight=None, y_pred=None):
        return self._score_with_function(X, y, sample_weight, accuracy_score, y_pred)

    def predict_proba(self, X):
        """Class probabilities, shape (n_samples, n_classes), in the order of ``classes_``."""
        check_is_fitted(self)
        y_pred = self._forward(X)
        if self.n_outputs_ == 1:
            y_pred = y_pred.ravel()
            return np.vstack([1 - y_pred, y_pred]).T
        return y_pred

    def predict_log_proba(self, X):
        """``log(predict_proba(X))``."""
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags


class MLPRegressor(RegressorMixin, _BaseMLP):
    """Multilayer perceptron regressor: identity output and squared error, or exponential
    output and the Poisson deviance (``loss="poisson"``).

    Parameters and attributes as :class:`MLPClassifier` (without ``classes_``), plus
    ``loss`` in ``{"squared_error", "poisson"}``; ``y`` may be (n_samples,) or
    (n_samples, n_outputs).
    """

    def __init__(self, loss="squared_error", hidden_layer_sizes=(100,), activation="relu", *,
                 solver="adam", alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000,
                 device="cpu", dtype=None, privacy=None):
        self.loss = loss
        super().__init__(
            hidden_layer_sizes=hidden_layer_sizes, activation=activation, solver=solver,
            alpha=alpha, batch_size=batch_size, learning_rate=learning_rate,
            learning_rate_init=learning_rate_init, power_t=power_t, max_iter=max_iter,
            shuffle=shuffle, random_state=random_state, tol=tol, verbose=verbose,
            warm_start=warm_start, momentum=momentum, nesterovs_momentum=nesterovs_momentum,
            early_stopping=early_stopping, validation_fraction=validation_fraction,
            beta_1=beta_1, beta_2=beta_2, epsilon=epsilon, n_iter_no_change=n_iter_no_change,
            max_fun=max_fun, device=device, dtype=dtype, privacy=privacy)

    def _validate_input(self, X, y, incremental, reset):
        if self.loss not in REGRESSOR_LOSSES:
            raise ValueError(f"loss must be one of {tuple(REGRESSOR_LOSSES)}, got "
                             f"{self.loss!r}")
        X, y = self._validate(X, y, reset, y_numeric=True)
        if losses.LOSSES[REGRESSOR_LOSSES[self.loss]].targets == "counts" and np.any(y < 0):
            raise ValueError(f"loss={self.loss!r} needs non-negative y, got negative values")
        return X, y

    @property
    def _output(self):  # the loss's canonical output (exp for poisson), else the identity
        return losses.LOSSES[REGRESSOR_LOSSES[self.loss]].canonical_output or "identity"

    @available_if(lambda est: est._check_solver())
    def partial_fit(self, X, y, sample_weight=None):
        """One epoch over ``X``, ``y``, continuing from the current state.

        Returns
        -------
        self
        """
        return self._fit(X, y, sample_weight=sample_weight, incremental=True)

    def _predict(self, X, check_input=True):
        return self._prediction(self._forward(X, check_input))

    def _prediction(self, y_pred):
        return y_pred.ravel() if y_pred.shape[1] == 1 else y_pred

    def predict(self, X):
        """Predictions, shape (n_samples,) for one output, else (n_samples, n_outputs)."""
        check_is_fitted(self)
        return self._predict(X)

    def _score(self, X, y, sample_weight=None, y_pred=None):
        return self._score_with_function(X, y, sample_weight, r2_score, y_pred)


__all__ = ["MLPClassifier", "MLPRegressor"]
