"""What the estimators of :mod:`gpubp.sklearn.estimators` tell about each example: its
gradient's norm, its input gradient, and the hidden layers' activations
(:mod:`gpubp.core.per_example` on the fitted network)."""

from sklearn.utils.validation import check_is_fitted, validate_data

from gpubp.data.frames import as_frame
from gpubp.sklearn import solvers as mlp_solvers


class PerExampleMixin:
    """``per_example_gradient_norms``, ``input_gradients`` and ``hidden_activations`` of
    a fitted :class:`MLPClassifier` or :class:`MLPRegressor`.

    The cost of an example is gpubp's (``gpubp.losses``): the cross-entropy of its labels
    for a classifier, ``½ Σ_j (a_j − y_j)²`` (or the Poisson deviance) for a regressor.
    """

    def _examples(self, X, y):
        check_is_fitted(self, "coefs_")
        X, Y = self._validate_input(X, y, incremental=True, reset=False)
        Y = Y.reshape(-1, 1) if Y.ndim == 1 else Y
        net = mlp_solvers.network(self)
        return net, X, Y.astype(net.dtype)

    def per_example_gradient_norms(self, X, y, per_layer=False):
        """Norms of each example's gradient ``∂c_p/∂θ`` (its own cost).

        Returns
        -------
        ndarray of shape (n_samples,), or (n_samples, n_layers_ - 1) with ``per_layer``
        """
        net, X, Y = self._examples(X, y)
        return net.per_example_gradient_norms(X, Y, per_layer=per_layer)

    def input_gradients(self, X, y):
        """``∂c_p/∂x_p``, each example's cost against its own features.

        Returns
        -------
        ndarray of shape (n_samples, n_features_in_)
        """
        net, X, Y = self._examples(X, y)
        return net.input_gradients(X, Y)

    def hidden_activations(self, X):
        """The hidden layers' activations, scikit-learn's ``activations[1:-1]``.

        Returns
        -------
        list of ndarray, shapes (n_samples, hidden_layer_sizes[i])
        """
        check_is_fitted(self, "coefs_")
        X = validate_data(self, as_frame(X), accept_sparse=["csr", "csc"], reset=False,
                          dtype=("float64", "float32"))
        return mlp_solvers.network(self).hidden_activations(X)
