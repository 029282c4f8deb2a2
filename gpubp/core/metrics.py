"""Labels and accuracy from output activations."""

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


def accuracy(a, Y, loss):
    """Fraction of examples whose predicted labels all match the targets ``Y`` (P, n_L)."""
    if _targets(loss) == "labels":
        return float(np.mean(np.argmax(a, axis=1) == np.argmax(Y, axis=1)))
    return float(np.mean(np.all((a > 0.5) == (Y > 0.5), axis=1)))
