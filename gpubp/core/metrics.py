"""Labels and accuracy from output activations."""

import warnings

import numpy as np

from gpubp import losses


def _targets(loss):
    row = losses.LOSSES.get(loss)
    return "real" if row is None else row.targets


def labels(a, loss):
    """Predicted labels from output activations (identity for regressors)."""
    if _targets(loss) == "labels":  # one class per row
        return np.argmax(a, axis=1)
    if _targets(loss) == "binary":
        labels = (a > 0.5).astype(np.int64)
        return labels[:, 0] if a.shape[1] == 1 else labels
    return a


def accuracy(a, Y, loss, sample_weight=None):
    """Fraction of examples whose predicted labels all match the targets ``Y`` (P, n_L);
    the ``sample_weight``-weighted fraction when given (scikit-learn's ``score``)."""
    if _targets(loss) == "labels":
        right = np.argmax(a, axis=1) == np.argmax(Y, axis=1)
    else:
        right = np.all((a > 0.5) == (Y > 0.5), axis=1)
    return float(np.average(right, weights=sample_weight))


def probabilities(a, loss):
    """Class probabilities from the outputs ``a`` (P, n_L), scikit-learn's convention:
    softmax rows as they are, ``[1 − p, p]`` for a single sigmoid output, independent
    probabilities for several sigmoid outputs."""
    if loss == "binary_cross_entropy" and a.shape[1] == 1:
        return np.hstack([1 - a, a])
    return a


def warn_non_finite(net, cost, method, P):
    """One clear RuntimeWarning when the cost of ``Network.loss``/``evaluate`` is not
    finite (NumPy's own overflow warnings on the way are silenced)."""
    if np.isfinite(cost):
        return
    theta = net.backend.to_host(net.theta)
    warnings.warn(
        f"Network.{method}: the loss is not finite ({cost}) on these {P} examples: the "
        f"outputs overflow {net.dtype.name} (the largest |parameter| is "
        f"{float(np.abs(theta).max()):.3g}). The parameters have probably diverged: "
        f"retrain with a smaller learning rate, or scale the inputs",
        RuntimeWarning, stacklevel=3)
