"""Labels and accuracy from output activations."""

import numpy as np


def labels(a, loss):
    """Predicted labels from output activations (identity for regressors)."""
    if loss == "cross_entropy":
        return np.argmax(a, axis=1)
    if loss == "binary_cross_entropy":
        labels = (a > 0.5).astype(np.int64)
        return labels[:, 0] if a.shape[1] == 1 else labels
    return a


def accuracy(a, Y, loss):
    """Fraction of examples whose predicted labels all match the targets ``Y`` (P, n_L)."""
    if loss == "cross_entropy":
        return float(np.mean(np.argmax(a, axis=1) == np.argmax(Y, axis=1)))
    return float(np.mean(np.all((a > 0.5) == (Y > 0.5), axis=1)))
