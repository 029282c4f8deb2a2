"""The training loop of :meth:`gpubp.Network.fit`: epochs of shuffled mini-batch steps.

Kept apart from the network so that the algorithm (``network.py``) reads in one sitting
and the bookkeeping around it lives here: validation (given or split off), the schedule,
callbacks and early stopping, checkpoints and resumption, progress, divergence.

Resuming is exact: a run interrupted after a checkpoint and resumed from it takes the same
steps, on the same batches, with the same optimizer state, as one never interrupted.
"""

import numbers
import os

import numpy as np
from tqdm.auto import tqdm

from gpubp import checkpoint as ckpt_io
from gpubp import compiled
from gpubp.callbacks import Callback, EarlyStopping, Run
from gpubp.history import History
from gpubp.optimizers import get_optimizer
from gpubp.validation import check_positive


class TrainingDiverged(FloatingPointError):
    """Raised by :meth:`Network.fit` when the loss stops being finite."""


def fit(net, X, Y, epochs=10, batch_size=32, lr=None, shuffle=True, tol=None,
        validation_data=None, verbose=1, optimizer="sgd", *, validation_split=0.0,
        schedule=None, weight_decay=None, early_stopping=None, callbacks=None,
        checkpoint=None, checkpoint_every=1, resume=None, gradient_flow=False):
    """Train ``net`` in place; see :meth:`gpubp.Network.fit` for the parameters."""
    X, Y = net._check_XY(X, Y)
    check_positive(epochs, "epochs", numbers.Integral)
    check_positive(batch_size, "batch_size", numbers.Integral)
    if tol is not None:
        check_positive(tol, "tol", allow_zero=True)
    if verbose not in (0, 1, 2):
        raise ValueError(f"verbose must be 0, 1 or 2, got {verbose!r}")
    check_positive(validation_split, "validation_split", allow_zero=True)
    if validation_split >= 1:
        raise ValueError(f"validation_split must be in [0, 1), got {validation_split!r}")
    if validation_split and validation_data is not None:
        raise ValueError("validation_data and validation_split are exclusive, got both")
    if validation_data is not None:
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
            raise ValueError("validation_data must be a tuple (X_val, Y_val), got "
                             f"{type(validation_data).__name__}")
        validation_data = net._check_XY(*validation_data)
    check_positive(checkpoint_every, "checkpoint_every", numbers.Integral)
    if not isinstance(gradient_flow, bool):
        raise TypeError(f"gradient_flow must be True or False, got {gradient_flow!r}")
    if checkpoint is not None:
        checkpoint = _checkpoint_path(checkpoint)
    optimizer = get_optimizer(optimizer, lr, schedule, weight_decay)
    has_validation = validation_data is not None or bool(validation_split)
    callbacks = _callbacks(callbacks, early_stopping, has_validation)

    state = ckpt_io.load(resume) if resume is not None else None
    split = None
    if validation_split:
        split = state.split if state is not None and state.split is not None else \
            _split_permutation(net.rng, Y, net.loss_name)
        if len(split) != X.shape[0]:
            raise ValueError(f"resume: the data must have the checkpoint's {len(split)} "
                             f"examples, got {X.shape[0]}")
        n_val = max(1, round(validation_split * X.shape[0]))
        if n_val >= X.shape[0]:
            raise ValueError(f"validation_split={validation_split} leaves no training "
                             f"example out of {X.shape[0]}")
        val, train = np.sort(split[:n_val]), np.sort(split[n_val:])
        X, Y, validation_data = X[train], Y[train], (X[val], Y[val])

    P_total = X.shape[0]
    batch_size = min(batch_size, P_total)
    order = np.arange(P_total)
    history = History()
    first_epoch = 0
    if state is not None:
        ckpt_io.check_compatible(state, net, optimizer, batch_size, shuffle, P_total)
        ckpt_io.restore(state, net, optimizer, callbacks)
        order = state.order.copy()
        history = state.history
        first_epoch = state.epoch + 1
        if state.stopped:
            first_epoch = epochs  # the recorded run had already ended
    net._workspace(batch_size)
    snapshot = [net.backend.empty(p.shape, p.dtype) for p in net.params]
    run = Run(net, optimizer, history, epochs)
    for cb in callbacks:
        cb.on_train_begin(run)
    bar = tqdm(range(first_epoch, epochs), desc="epochs", unit="epoch", total=epochs,
               initial=first_epoch, disable=None if verbose == 1 else True, leave=False)
    try:
        for epoch in bar:
            for cb in callbacks:
                cb.on_epoch_begin(run, epoch)
            for dst, src in zip(snapshot, net.params):
                net.backend.copyto(dst, src)
            if shuffle:
                net.rng.shuffle(order)
            lr_now = optimizer.start_epoch(epoch, epochs)
            epoch_loss, epoch_accuracy = _train_epoch(net, optimizer, X, Y, order, batch_size)
            if not (np.isfinite(epoch_loss) and net.backend.all_finite(net.params)):
                for dst, src in zip(net.params, snapshot):
                    net.backend.copyto(dst, src)
                raise TrainingDiverged(
                    f"training diverged in epoch {epoch}: the loss became {epoch_loss} "
                    f"(lr={lr_now}); the parameters from the start of that epoch "
                    f"were restored. Try a smaller learning rate."
                )
            figures = _epoch_figures(net, X, Y, epoch_loss, epoch_accuracy, validation_data, tol)
            figures["lr"] = lr_now
            if gradient_flow:  # issue 10's hook: per-layer ‖∂C/∂W^l‖ and mean |δ^l|
                figures.update(_gradient_flow_figures(net, X, Y))
            history.record(epoch, **figures)
            for cb in callbacks:
                cb.on_epoch_end(run, epoch, dict(figures))
            if tol is not None and figures["grad_norm"] <= tol:
                run.stop(f"gradient norm {figures['grad_norm']:.3g} <= tol {tol}")
            bar.set_postfix({k: f"{v:.4g}" for k, v in figures.items() if k != "lr"},
                            refresh=False)
            if verbose == 2:
                line = " - ".join(f"{k}: {v:.4g}" for k, v in figures.items())
                tqdm.write(f"epoch {epoch + 1}/{epochs} - {line}")
            last = epoch == epochs - 1 or run.stop_training
            if checkpoint is not None and ((epoch + 1) % checkpoint_every == 0 or last):
                ckpt_io.save(checkpoint, net, optimizer, epoch, order, history, batch_size,
                             shuffle, P_total, split, callbacks, stopped=run.stop_training)
            if run.stop_training:
                break
    finally:
        bar.close()
    for cb in callbacks:
        cb.on_train_end(run)
    return history


def _train_epoch(net, optimizer, X, Y, order, batch_size):
    """One pass over the shuffled examples; returns the epoch's figures from its batches.

    Returns
    -------
    loss : float
        Row-weighted mean of the batches' mean costs, each taken with the parameters of
        the moment the batch was seen (before its update), as Keras reports it.
    accuracy : float or None
        Fraction of the epoch's examples predicted right in their batch's forward pass
        (None for regressors).
    """
    P_total = X.shape[0]
    if compiled.supported(net, optimizer):
        total, correct = compiled.train_epoch(net, optimizer, X, Y, order, batch_size)
    else:
        total = correct = 0.0
        classifier = net.is_classifier
        # A diverging run overflows on the way to a non-finite loss; that is detected and
        # reported by the caller, so the floating-point warnings it raises are not news.
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            for start in range(0, P_total, batch_size):
                cost, P = net._train_step(optimizer, X, Y, order[start:start + batch_size])
                # backend scalars (device arrays on CUDA): converted once, after the loop
                total = total + cost * P
                if classifier:
                    correct = correct + net._count_correct(P)
    accuracy = float(correct) / P_total if net.is_classifier else None
    return float(total) / P_total, accuracy


def _epoch_figures(net, X, Y, epoch_loss, epoch_accuracy, validation_data, tol):
    """History figures of an epoch: the training ones from its batches (no extra pass over
    the training data unless ``tol`` asks for the full-data gradient norm)."""
    figures = {"loss": epoch_loss}
    if epoch_accuracy is not None:
        figures["accuracy"] = epoch_accuracy
    if validation_data is not None:
        figures.update({f"val_{k}": v for k, v in net.evaluate(*validation_data).items()})
    if tol is not None:
        _, dW, db = net._cost_and_gradients(X, Y, want_gradients=True)
        figures["grad_norm"] = float(np.sqrt(sum(float((g.astype(np.float64) ** 2).sum())
                                                 for g in dW + db)))
    return figures


def _gradient_flow_figures(net, X, Y):
    """The gradient-flow figures of an epoch (see :func:`gpubp.trace.gradient_flow`)."""
    from gpubp.trace import gradient_flow

    return gradient_flow(net, X, Y)


def _callbacks(callbacks, early_stopping, has_validation):
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


def _split_permutation(rng, Y, loss):
    """A permutation whose first entries, taken in any proportion, are (about) stratified.

    For classifiers the examples of each class are spread evenly along the permutation
    (each class shuffled, then interleaved by rank), so that the leading fraction used
    for validation keeps the class proportions; regressors get a plain shuffle.
    """
    P = Y.shape[0]
    if loss == "cross_entropy" or (loss == "binary_cross_entropy" and Y.shape[1] == 1):
        labels = Y.argmax(axis=1) if loss == "cross_entropy" else (Y[:, 0] > 0.5).astype(int)
        position = np.empty(P)
        for label in np.unique(labels):
            members = rng.permutation(np.flatnonzero(labels == label))
            position[members] = (np.arange(len(members)) + rng.random()) / len(members)
        return np.argsort(position, kind="stable")
    return rng.permutation(P)


def _checkpoint_path(path):
    """``path`` as a string, checked to sit in an existing directory."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise ValueError(f"checkpoint must be a path in an existing directory, got {path!r} "
                         f"({directory!r} does not exist)")
    return path
