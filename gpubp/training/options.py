"""The options of :func:`gpubp.training.loop.fit` (those of :meth:`gpubp.Network.fit`, and
three for :mod:`gpubp.sklearn`), as one checked structure."""

import numbers
import os
from dataclasses import dataclass, fields
from typing import NamedTuple

import numpy as np

from gpubp import losses
from gpubp.data.inputs import check_sample_weight
from gpubp.data.validation import check_positive
from gpubp.io.atomic import check_output_path, fspath
from gpubp.training.callbacks import Callback, EarlyStopping


@dataclass(frozen=True)
class FitOptions:
    """See :meth:`gpubp.Network.fit` and :func:`gpubp.training.loop.fit`."""

    epochs: int = 10
    batch_size: int = 32
    lr: object = None
    shuffle: bool = True
    tol: object = None
    validation_data: object = None
    verbose: int = 1
    optimizer: object = "sgd"
    validation_split: float = 0.0
    schedule: object = None
    weight_decay: object = None
    early_stopping: object = None
    callbacks: object = None
    checkpoint: object = None
    checkpoint_every: int = 1
    resume: object = None
    gradient_flow: bool = False
    distributed: object = False
    privacy: object = None
    sample_weight: object = None
    class_weight: object = None
    rng: object = None
    diverged: str = "raise"
    clip_norm: object = None
    clip_value: object = None
    cuda_graph: object = "auto"


NAMES = tuple(f.name for f in fields(FitOptions))


def fit_options(options):
    """``options`` (a dict of keyword arguments) as checked :class:`FitOptions`.

    Raises
    ------
    TypeError
        An unknown option, named as Python names an unexpected keyword argument, or a
        flag that is not a bool.
    ValueError
        A value out of its range.
    """
    for key in options:
        if key not in NAMES:
            raise TypeError(f"fit() got an unexpected keyword argument {key!r}; its options "
                            f"are {', '.join(NAMES)}")
    o = FitOptions(**options)
    check_positive(o.epochs, "epochs", numbers.Integral)
    check_positive(o.batch_size, "batch_size", numbers.Integral)
    if o.tol is not None:
        check_positive(o.tol, "tol", allow_zero=True)
    if not isinstance(o.shuffle, (bool, np.bool_)):
        raise TypeError(f"shuffle must be True or False, got {o.shuffle!r}")
    if not isinstance(o.verbose, numbers.Integral):  # True/False are 1/0, as in Keras
        raise TypeError(f"verbose must be 0, 1 or 2, got {o.verbose!r}")
    if o.verbose not in (0, 1, 2):
        raise ValueError(f"verbose must be 0, 1 or 2, got {o.verbose!r}")
    check_positive(o.validation_split, "validation_split", allow_zero=True)
    if o.validation_split >= 1:
        raise ValueError(f"validation_split must be in [0, 1), got {o.validation_split!r}")
    if o.validation_split and o.validation_data is not None:
        raise ValueError("validation_data and validation_split are exclusive, got both")
    check_positive(o.checkpoint_every, "checkpoint_every", numbers.Integral)
    if not isinstance(o.gradient_flow, bool):
        raise TypeError(f"gradient_flow must be True or False, got {o.gradient_flow!r}")
    return o


class Validation(NamedTuple):
    """The examples evaluated after each epoch: ``rows`` of (X, Y) (None: all of them),
    ``weights`` (P_val,) their sample weights or None."""

    X: object
    Y: object
    rows: object = None
    weights: object = None


def check_validation_data(net, o):
    """:class:`Validation` of ``o.validation_data`` checked against ``net``, or None.

    ``(X_val, Y_val)`` or, as in Keras, ``(X_val, Y_val, sample_weight_val)``: the
    validation loss and accuracy are then the weighted means ``evaluate`` reports.
    """
    data = o.validation_data
    if data is None:
        return None
    if not isinstance(data, (tuple, list)) or len(data) not in (2, 3):
        got = (f"a {type(data).__name__} of {len(data)}" if isinstance(data, (tuple, list))
               else type(data).__name__)
        raise ValueError("validation_data must be a tuple (X_val, Y_val) or (X_val, Y_val, "
                         f"sample_weight_val), got {got}")
    X, Y = net._check_XY(*data[:2], names=("validation_data[0] (X_val)",
                                           "validation_data[1] (Y_val)"))
    weights = None
    if len(data) == 3 and data[2] is not None:
        weights = check_sample_weight(data[2], X.shape[0],
                                      name="validation_data[2] (sample_weight_val)")
    return Validation(X, Y, None, weights)


def check_extras(X, sample_weight, rng, diverged, optimizer, group, checkpointed):
    """Check :func:`fit`'s ``sample_weight``, ``rng`` and ``diverged``; returns the weights."""
    sample_weight = check_sample_weight(sample_weight, X.shape[0])
    if (sample_weight is not None or optimizer.penalty) and group.size > 1:
        raise ValueError("sample_weight and an optimizer's penalty need one process, "
                         f"got {group.size} ranks")
    if diverged not in ("raise", "continue"):
        raise ValueError(f"diverged must be 'raise' or 'continue', got {diverged!r}")
    if rng is not None and checkpointed:
        raise ValueError("rng is not recorded in checkpoints: give rng, or checkpoint "
                         "and resume, not both")
    return sample_weight


def callbacks_of(callbacks, early_stopping, has_validation):
    """The callback list: the user's, plus early stopping when asked for by argument."""
    if callbacks is None:
        callbacks = []
    elif isinstance(callbacks, Callback):
        callbacks = [callbacks]
    else:
        callbacks = list(callbacks)
    for i, cb in enumerate(callbacks):
        if not isinstance(cb, Callback):
            raise TypeError(f"callbacks must be Callback instances, got {type(cb).__name__} "
                            f"at position {i}")
    if early_stopping is None or early_stopping is False:
        return callbacks
    monitor = "val_loss" if has_validation else "loss"
    if early_stopping is True:
        stopper = EarlyStopping(monitor=monitor)
    elif isinstance(early_stopping, numbers.Integral):
        stopper = EarlyStopping(monitor=monitor, patience=early_stopping)
    elif isinstance(early_stopping, EarlyStopping):
        stopper = early_stopping
    else:
        raise TypeError(f"early_stopping must be None, a bool, a patience (int) or an "
                        f"EarlyStopping, got {early_stopping!r}")
    return callbacks + [stopper]


def split_permutation(rng, Y, loss):
    """A permutation whose first entries, taken in any proportion, are (about) stratified.

    For classifiers the examples of each class are spread evenly along the permutation
    (each class shuffled, then interleaved by rank), so that the leading fraction used
    for validation keeps the class proportions; regressors get a plain shuffle.
    """
    P = Y.shape[0]
    targets = losses.LOSSES[loss].targets
    if targets == "labels" or (targets == "binary" and Y.shape[1] == 1):
        labels = Y.argmax(axis=1) if targets == "labels" else (Y[:, 0] > 0.5).astype(int)
        position = np.empty(P)
        for label in np.unique(labels):
            members = rng.permutation(np.flatnonzero(labels == label))
            position[members] = (np.arange(len(members)) + rng.random()) / len(members)
        return np.argsort(position, kind="stable")
    return rng.permutation(P)


def checkpoint_path(path):
    """``path`` as a string, checked to sit in an existing, writable directory and to be
    no directory, device, FIFO or socket (see :func:`gpubp.io.atomic.check_output_path`)."""
    path = fspath(path, "checkpoint")
    check_output_path(os.path.realpath(path) if os.path.islink(path) else path, "checkpoint")
    return path
