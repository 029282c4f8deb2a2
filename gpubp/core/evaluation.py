"""The passes of a :class:`~gpubp.core.network.Network` over data that train nothing:
:meth:`~Evaluation.forward`, :meth:`~Evaluation.loss`, :meth:`~Evaluation.gradients`,
:meth:`~Evaluation.predict`, :meth:`~Evaluation.predict_proba` and
:meth:`~Evaluation.evaluate`.

:class:`Evaluation` is the part of the Network that exposes them (as
:class:`~gpubp.core.per_example.PerExample` is for the per-example terms); each reads its
inputs through the network's checks and row chunks (``Network._chunks``) and the
algorithm of :mod:`gpubp.core.backprop` bound to the network.
"""

import numpy as np

from gpubp.core import metrics
from gpubp.core.dropout import check_masks
from gpubp.data.inputs import check_sample_weight


class Evaluation:
    """Forward passes, costs and gradients of a Network on given data (a mixin)."""

    def forward(self, X):
        """Output activations ``a^L``.

        Parameters
        ----------
        X : array-like, shape (P, n_0)

        Returns
        -------
        ndarray, shape (P, n_L)
        """
        X = self._check_X(X)
        out = np.empty((X.shape[0], self.sizes[-1]), dtype=self.dtype)
        for rows in self._chunks(X.shape[0], X):
            P = self._load(X[rows])
            out[rows] = self.backend.to_host(self._forward(P))
        return out

    def loss(self, X, Y, sample_weight=None, dropout_mask=None):
        """Mean over the P examples of the per-example cost, as a float.

        ``sample_weight`` (P,) makes it the weighted mean ``Σ_p s_p c_p / Σ_p s_p``.
        ``X`` may be a SciPy sparse matrix. ``dropout_mask``: see :meth:`gradients`.

        A loss that is not finite (parameters that overflow, e.g. after a divergence) is
        returned as is, with one clearly worded ``RuntimeWarning`` (not an error, so that
        the value can be inspected; NumPy's overflow warnings are silenced).
        """
        X, Y = self._check_XY(X, Y)
        sample_weight = check_sample_weight(sample_weight, X.shape[0])
        masks = check_masks(self, dropout_mask, X.shape[0])
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            cost = self._cost_and_gradients(X, Y, False, sample_weight, masks)[0]
        metrics.warn_non_finite(self, cost, "loss", X.shape[0])
        return cost

    def gradients(self, X, Y, sample_weight=None, dropout_mask=None):
        """Exact gradient of :meth:`loss` (with the same ``sample_weight`` and mask).

        ``dropout_mask``: fixed masks, a 0/1 array ``(P, n_l)`` (or None) per hidden layer
        (:meth:`~gpubp.core.network.Network.trace`'s ``masks``), kept units scaled by
        ``1/(1 − p_l)``; None: no dropout.

        Returns
        -------
        dW, db : list of ndarray
            Shaped like ``W`` and ``b`` of :meth:`~gpubp.core.network.Network.get_params`.
        """
        X, Y = self._check_XY(X, Y)
        sample_weight = check_sample_weight(sample_weight, X.shape[0])
        return self._cost_and_gradients(X, Y, True, sample_weight,
                                        check_masks(self, dropout_mask, X.shape[0]))[1:]

    def predict(self, X):
        """Class labels for classifiers, output activations for regressors.

        Returns
        -------
        ndarray
            ``(P,)`` int labels for softmax or a single sigmoid output, ``(P, n_L)`` 0/1
            labels for several sigmoid outputs (multi-label), ``(P, n_L)`` floats for
            regressors.
        """
        a = self.forward(X)
        return metrics.labels(a, self.loss_name)

    @property
    def predict_proba(self):
        """Class probabilities, for classifiers only (scikit-learn's convention): ``(P, n_L)``
        softmax rows, ``(P, 2)`` columns ``[1 − p, p]`` for one sigmoid output (``argmax``
        is :meth:`predict`'s label), ``(P, n_L)`` independent ones for several (multi-label).
        A regressor has none: the attribute raises ``AttributeError`` (``hasattr`` is
        False); use :meth:`predict` or :meth:`forward`."""
        if not self.is_classifier:
            raise AttributeError(
                f"predict_proba is only available for classifiers (loss 'cross_entropy' "
                f"or 'binary_cross_entropy'); this network's loss is {self.loss_name!r}: "
                f"use predict or forward for its outputs")
        return self._predict_proba

    def _predict_proba(self, X):
        return metrics.probabilities(self.forward(X), self.loss_name)

    def evaluate(self, X, Y, sample_weight=None):
        """``{"loss": mean cost, "accuracy": fraction correct}`` (accuracy for classifiers;
        both weighted means with ``sample_weight``). A loss that is not finite comes with a
        ``RuntimeWarning`` saying so (see :meth:`loss`)."""
        X, Yc = self._check_XY(X, Y)
        s = check_sample_weight(sample_weight, X.shape[0])
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            result = {"loss": self._cost_and_gradients(X, Yc, False, s)[0]}
            if self.is_classifier:
                result["accuracy"] = metrics.accuracy(self.forward(X), Yc, self.loss_name, s)
        metrics.warn_non_finite(self, result["loss"], "evaluate", X.shape[0])
        return result
