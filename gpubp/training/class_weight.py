"""``fit(class_weight=...)``: class weights as per-row sample weights.

A class weight multiplies the weight ``s_p`` of every row of its class, so that each
batch's cost is ``Σ_p s_p c_p / Σ_p s_p`` (:func:`gpubp.core.backprop.load`, and the
compiled epoch's ``Batches.weights``) and nothing below the output layer knows classes.

- ``"balanced"``: scikit-learn's ``n_samples / (n_classes * np.bincount(y))`` over the
  training rows (the classes present among them; the rows' sample weights do not enter
  the counts, as in ``sklearn.utils.class_weight.compute_sample_weight``);
- a dict ``{class: weight}``: classes are output indices, ``0..n_L − 1`` for
  ``cross_entropy`` (the label of a one-hot row), 0 and 1 for a single
  ``binary_cross_entropy`` output; a class left out weighs 1 (scikit-learn's and
  Keras's rule).

Only classifiers with one class per row take class weights: several sigmoid outputs
(multi-label) and regressors refuse them, naming the argument.
"""

import numbers

import numpy as np

from gpubp import losses


def classes_of(Y, loss):
    """Each row's class (int array (P,)) and the number of classes ``K``, or a ValueError
    for a loss whose rows have no single class."""
    targets = losses.LOSSES[loss].targets
    if targets == "labels":
        return np.argmax(Y, axis=1), Y.shape[1]
    if targets == "binary" and Y.shape[1] == 1:
        return (np.asarray(Y[:, 0]) > 0.5).astype(np.int64), 2
    what = (f"{Y.shape[1]} sigmoid outputs (multi-label)" if targets == "binary"
            else f"loss={loss!r} (a regressor)")
    raise ValueError(f"class_weight needs a classifier with one class per row (softmax, or "
                     f"one sigmoid output), got {what}")


def class_weights(class_weight, labels, K):
    """The weight of each class, float64 (K,), from ``"balanced"`` or a dict."""
    if isinstance(class_weight, str):
        if class_weight != "balanced":
            raise ValueError(f"class_weight must be 'balanced', a dict or None, got "
                             f"{class_weight!r}")
        counts = np.bincount(labels, minlength=K).astype(np.float64)
        present = counts > 0
        weights = np.ones(K)
        weights[present] = labels.size / (present.sum() * counts[present])
        return weights
    if not isinstance(class_weight, dict):
        raise TypeError(f"class_weight must be 'balanced', a dict {{class: weight}} or None, "
                        f"got {type(class_weight).__name__}")
    weights = np.ones(K)
    for key, value in class_weight.items():
        if isinstance(key, bool) or not isinstance(key, numbers.Integral) or not 0 <= key < K:
            raise ValueError(f"class_weight has an unknown class {key!r}: the classes are "
                             f"the integers 0..{K - 1}")
        if isinstance(value, bool) or not isinstance(value, numbers.Real) \
                or not np.isfinite(value) or value < 0:
            raise ValueError(f"class_weight[{key!r}] must be a finite number >= 0, got "
                             f"{value!r}")
        weights[int(key)] = float(value)
    return weights


def row_weights(class_weight, Y, loss, sample_weight, rows=None, ranks=1):
    """The rows' weights ``s_p`` of ``fit``: ``sample_weight`` (None: 1) times the weight
    of each row's class; ``sample_weight`` itself when ``class_weight`` is None.

    Parameters
    ----------
    class_weight : "balanced", dict or None
    Y : ndarray, shape (P, n_L)
        Checked targets (one-hot rows for ``cross_entropy``).
    loss : str
    sample_weight : ndarray (P,) or None
        Checked sample weights.
    rows : ndarray of int or None
        The training rows ("balanced" counts them; None: all).
    ranks : int
        Processes of the run: weights need one.

    Returns
    -------
    ndarray, shape (P,), float64, or None
    """
    if class_weight is None:
        return sample_weight
    if ranks > 1:
        raise ValueError(f"class_weight needs one process, got {ranks} ranks")
    labels, K = classes_of(Y, loss)
    per_class = class_weights(class_weight, labels if rows is None else labels[rows], K)
    s = per_class[labels] * (1.0 if sample_weight is None else sample_weight)
    counted = s if rows is None else s[rows]
    if not counted.sum() > 0:
        raise ValueError(f"class_weight gives the training rows a total weight of "
                         f"{float(counted.sum())!r}; it must be positive")
    return s
