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

from gpubp.training import checkpoint as ckpt_io
from gpubp.core import backprop, compiled
from gpubp import losses
from gpubp.data import mapped
from gpubp.training.callbacks import Callback, EarlyStopping, Run
from gpubp.distributed.ranks import LOCAL, start_facts
from gpubp.distributed.ranks import group as distributed_group
from gpubp.training.history import History
from gpubp.data.inputs import check_sample_weight, is_sparse
from gpubp.optim.optimizers import get_optimizer
from gpubp.data.validation import check_positive
from gpubp.errors import TrainingDiverged
from gpubp.core.diagnostics import data_sums, flow_figures


def fit(net, X, Y, epochs=10, batch_size=32, lr=None, shuffle=True, tol=None,
        validation_data=None, verbose=1, optimizer="sgd", *, validation_split=0.0,
        schedule=None, weight_decay=None, early_stopping=None, callbacks=None,
        checkpoint=None, checkpoint_every=1, resume=None, gradient_flow=False,
        distributed=False, sample_weight=None, rng=None, diverged="raise"):
    """Train ``net`` in place; see :meth:`gpubp.Network.fit` for the parameters.

    Two more, for callers that need them (:mod:`gpubp.sklearn`): ``sample_weight``
    (P,), each batch's cost the weighted mean ``Σ s_p c_p / Σ s_p`` (the per-kernel
    step; an optimizer's ``penalty`` then divides by the batch's ``Σ s_p``), and ``rng``,
    the generator or ``RandomState`` the epochs are shuffled with (default ``net.rng``;
    not recorded in checkpoints); ``diverged="continue"`` trains on after a non-finite
    epoch instead of raising :class:`TrainingDiverged` (scikit-learn's behaviour: its
    early stopping may restore finite parameters; the caller judges the result).
    """
    group = distributed_group(distributed)
    facts = {}
    with group.start(net, facts):  # an error on any rank is raised on every rank
        X, Y = net._check_XY(X, Y)
        check_positive(epochs, "epochs", numbers.Integral)
        check_positive(batch_size, "batch_size", numbers.Integral)
        if tol is not None:
            check_positive(tol, "tol", allow_zero=True)
        if not isinstance(shuffle, (bool, np.bool_)):
            raise TypeError(f"shuffle must be True or False, got {shuffle!r}")
        if not isinstance(verbose, numbers.Integral):  # True/False are 1/0, as in Keras
            raise TypeError(f"verbose must be 0, 1 or 2, got {verbose!r}")
        if verbose not in (0, 1, 2):
            raise ValueError(f"verbose must be 0, 1 or 2, got {verbose!r}")
        check_positive(validation_split, "validation_split", allow_zero=True)
        if validation_split >= 1:
            raise ValueError(f"validation_split must be in [0, 1), got {validation_split!r}")
        if validation_split and validation_data is not None:
            raise ValueError("validation_data and validation_split are exclusive, got both")
        validation = None  # (X_val, Y_val, rows of them or None for all)
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
                got = (f"a {type(validation_data).__name__} of {len(validation_data)}"
                       if isinstance(validation_data, (tuple, list))
                       else type(validation_data).__name__)
                raise ValueError(f"validation_data must be a tuple (X_val, Y_val), got {got}")
            validation = (*net._check_XY(*validation_data, names=(
                "validation_data[0] (X_val)", "validation_data[1] (Y_val)")), None)
        check_positive(checkpoint_every, "checkpoint_every", numbers.Integral)
        if not isinstance(gradient_flow, bool):
            raise TypeError(f"gradient_flow must be True or False, got {gradient_flow!r}")
        if checkpoint is not None:
            checkpoint = _checkpoint_path(checkpoint)
        optimizer = get_optimizer(optimizer, lr, schedule, weight_decay)
        sample_weight = _check_extras(X, sample_weight, rng, diverged, optimizer, group,
                                      checkpoint is not None or resume is not None)
        has_validation = validation is not None or bool(validation_split)
        callbacks = _callbacks(callbacks, early_stopping, has_validation)

        state = None
        if resume is not None:
            from gpubp.io.atomic import fspath

            state = ckpt_io.load(fspath(resume, "resume"))
        split = None
        rows = None  # the training rows of X (all of them without a validation split)
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
            # rows are indexed, never copied out: X may be a memory-mapped file
            rows = np.sort(split[n_val:])
            validation = (X, Y, np.sort(split[:n_val]))

        P_total = X.shape[0] if rows is None else len(rows)
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
        facts.update(start_facts(
            net, X, Y, epochs=epochs, batch_size=batch_size, shuffle=shuffle, tol=tol,
            optimizer=optimizer.get_config(), optimizer_class=type(optimizer).__qualname__,
            validation_split=validation_split,
            validation=None if validation is None else tuple(validation[0].shape),
            callbacks=[type(cb).__name__ for cb in callbacks], checkpoint=checkpoint,
            resumed_from=None if state is None else (state.epoch, state.iterations),
            gradient_flow=gradient_flow))
        net._workspace(-(-batch_size // group.size))
    with group.faults():  # an exception on one rank now ends the whole job
        history = _epochs(net, optimizer, X, Y, rows, order, history, first_epoch, epochs,
                          batch_size, shuffle, tol, validation, verbose, callbacks,
                          checkpoint, checkpoint_every, split, group, gradient_flow,
                          weights=sample_weight, rng=rng, diverged=diverged)
    return history


def _check_extras(X, sample_weight, rng, diverged, optimizer, group, checkpointed):
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


def _epochs(net, optimizer, X, Y, rows, order, history, first_epoch, epochs, batch_size,
            shuffle, tol, validation, verbose, callbacks, checkpoint, checkpoint_every,
            split, group, gradient_flow=False, weights=None, rng=None, diverged="raise"):
    """The loop over epochs of :func:`fit`, after its checks; returns the History."""
    P_total = len(order)
    # the parameters at the start of the epoch, of the epoch before and of the run, one
    # flat copy each: a diverged epoch restores the latest of them whose loss is finite
    snapshot = net.backend.empty(net.theta.shape, net.theta.dtype)
    previous = net.backend.empty(net.theta.shape, net.theta.dtype)
    first = net.backend.empty(net.theta.shape, net.theta.dtype)
    net.backend.copyto(first, net.theta)
    # the training data where a step reads it: on a GPU, uploaded once for the run
    # a sparse X stays on the host: its batches go up as sparse matrices (Network._load)
    X_train = X if is_sparse(X) else net.backend.resident(X)
    Y_train = net.backend.resident(Y)
    run = Run(net, optimizer, history, epochs)
    for cb in callbacks:
        cb.on_train_begin(run)
    if not group.is_root:
        verbose = 0  # one rank prints
    bar = tqdm(range(first_epoch, epochs), desc="epochs", unit="epoch", total=epochs,
               initial=first_epoch, disable=None if verbose == 1 else True, leave=False)
    try:
        for epoch in bar:
            for cb in callbacks:
                cb.on_epoch_begin(run, epoch)
            snapshot, previous = previous, snapshot  # previous: the last epoch's start
            net.backend.copyto(snapshot, net.theta)
            if shuffle:  # the network's generator unless the caller gave one
                (net.rng if rng is None else rng).shuffle(order)
            lr_now = optimizer.start_epoch(epoch, epochs)
            epoch_rows = order if rows is None else rows[order]
            epoch_loss, epoch_accuracy, penalty = _train_epoch(
                net, optimizer, X_train, Y_train, epoch_rows, batch_size, group, weights)
            finite = np.isfinite(epoch_loss) and net.backend.all_finite([net.theta])
            if diverged == "raise" and not group.all(finite):
                group.restore(net, snapshot)
                candidates = [(epoch, snapshot)]
                if epoch > first_epoch:
                    candidates.append((epoch - 1, previous))
                if epoch - 1 > first_epoch:
                    candidates.append((first_epoch, first))
                raise _restore_finite(net, X, Y, rows, group, candidates, epoch,
                                      epoch_loss, lr_now)
            figures = _epoch_figures(net, X, Y, rows, epoch_loss, epoch_accuracy, validation,
                                     tol, group, gradient_flow)
            figures["lr"] = lr_now
            if penalty is not None:
                figures["penalty"] = penalty
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
                group.check_identical(net)
                if group.is_root:  # one rank writes
                    ckpt_io.save(checkpoint, net, optimizer, epoch, order, history,
                                 batch_size, shuffle, P_total, split, callbacks,
                                 stopped=run.stop_training)
            if run.stop_training:
                break
    finally:
        bar.close()
    for cb in callbacks:
        cb.on_train_end(run)
    group.check_identical(net)
    return history


def _restore_finite(net, X, Y, rows, group, candidates, epoch, epoch_loss, lr):
    """Put back the first of ``candidates`` ((start epoch, flat parameters), latest first)
    whose full training loss is finite (the last one if none is); return the
    :class:`TrainingDiverged` to raise. Collective: every rank checks the same ones."""
    for start, params in candidates:
        net.backend.copyto(net.theta, params)
        sums = data_sums(net, X, Y, rows, group)
        loss = float(sums[0] / sums[2])
        if np.isfinite(loss):
            break
    which = "that epoch" if start == epoch else f"epoch {start}"
    if np.isfinite(loss):
        restored = (f"the parameters from the start of {which} were restored (training "
                    f"loss {loss:.6g})")
    else:
        restored = (f"the parameters from the start of {which} were restored, but even "
                    f"their training loss is {loss}: the data or the initial weights "
                    f"overflow {net.dtype.name}")
    error = TrainingDiverged(f"training diverged in epoch {epoch}: the loss became "
                             f"{epoch_loss} (lr={lr}); {restored}. Try a smaller learning "
                             f"rate.")
    error.epoch, error.restored_epoch, error.restored_loss = epoch, start, loss
    return error


def _train_epoch(net, optimizer, X, Y, order, batch_size, group=LOCAL, weights=None):
    """One pass over the rows ``order`` of ``X``, in that order; returns the epoch's figures
    from its batches.

    ``weights``: the rows' sample weights (the per-kernel step weighs them).

    With a :class:`~gpubp.distributed.ranks.Group`, each global batch of ``batch_size`` rows is
    split among the ranks (each takes its :meth:`~gpubp.distributed.ranks.Local.rows`), the
    gradients are summed over them at every step, and the figures at the end.

    Returns
    -------
    loss : float
        Row-weighted mean of the batches' mean costs, each taken with the parameters of
        the moment the batch was seen (before its update), as Keras reports it.
    accuracy : float or None
        Fraction of the epoch's examples predicted right in their batch's forward pass
        (None for regressors).
    penalty : float or None
        The optimizer's penalty's share of ``loss`` (None without a penalty).
    """
    P_total = len(order)
    # the compiled code gathers rows through the mapping of a memory-mapped X (which
    # would map the whole file in time), and takes dense X only (a sparse X multiplies
    # sparse x dense in the per-kernel step)
    compiled_ok = not mapped.is_mapped(X) and not is_sparse(X) and weights is None \
        and compiled.supported(net, optimizer)
    penalty = 0.0
    reduction = group.reduction_for(net, optimizer, split=compiled_ok)
    if compiled_ok and reduction.name == "identity":
        # nothing to add between the steps: the whole epoch in one compiled call
        total, correct, penalty = compiled.train_epoch(net, optimizer, X, Y, order, batch_size)
    elif compiled_ok:
        # "shared": the ranks of one machine split each batch's rows and each W's rows
        # between them (gpubp.distributed.split_step); the others: one compiled call per
        # step, the reduction between it and the update
        X = np.ascontiguousarray(X, dtype=net.dtype)  # as the compiled step reads them
        Y = np.ascontiguousarray(Y, dtype=net.dtype)
        total, correct = 0.0, 0
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            for start in range(0, P_total, batch_size):
                batch = order[start:start + batch_size]
                if reduction.name == "shared":
                    cost_sum, right = reduction.split_step.step(optimizer, X, Y, batch)
                else:
                    cost_sum, right, _ = compiled.reduced_step(
                        net, optimizer, X, Y, batch[group.rows(len(batch))], reduction,
                        len(batch))
                total += cost_sum
                correct += right
    else:
        total, correct = net.backend.cost_sum(), 0.0
        classifier = net.is_classifier
        pages = mapped.PageBudget([X, Y])
        host_order = order
        order = net.backend.resident(order)  # on a GPU: uploaded once per epoch
        # A diverging run overflows on the way to a non-finite loss; that is detected and
        # reported by the caller, so the floating-point warnings it raises are not news.
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            for start in range(0, P_total, batch_size):
                batch = order[start:start + batch_size]
                alone = reduction.name == "identity"
                if alone and optimizer.penalty:  # its term of the cost, with the W of the forward
                    n = len(batch) if weights is None else \
                        float(weights[host_order[start:start + batch_size]].sum())
                    penalty = penalty + optimizer.begin_batch(
                        net.backend, net.params, n) * len(batch)
                cost, P = backprop.train_step(net, optimizer, X, Y,
                                              batch[group.rows(len(batch))], reduction,
                                              len(batch), weights=weights if alone else None)
                # backend scalars (device arrays on CUDA): converted once, after the loop
                total.add(cost, P)
                if classifier and P:
                    correct = correct + net._count_correct(P)
                pages.touched(P)
        pages.release()
    total, correct = group.sum([float(total), float(correct)])
    accuracy = float(correct) / P_total if net.is_classifier else None
    if not optimizer.penalty:
        return float(total) / P_total, accuracy, None
    penalty = float(penalty) / P_total
    return float(total) / P_total + penalty, accuracy, penalty


def _epoch_figures(net, X, Y, rows, epoch_loss, epoch_accuracy, validation, tol, group=LOCAL,
                   gradient_flow=False):
    """History figures of an epoch: the training ones from its batches (no extra pass over
    the training data unless ``tol`` asks for the full-data gradient norm or
    ``gradient_flow`` for its per-layer figures: one pass for both), each summed over the
    ranks."""
    figures = {"loss": epoch_loss}
    if epoch_accuracy is not None:
        figures["accuracy"] = epoch_accuracy
    if validation is not None:
        val = data_sums(net, *validation, group)
        figures["val_loss"] = val[0] / val[2]
        if net.is_classifier:
            figures["val_accuracy"] = val[1] / val[2]
    if tol is not None or gradient_flow:
        sums = data_sums(net, X, Y, rows, group, gradients=True, abs_deltas=gradient_flow)
        P, N = sums[2], net.theta.size
        grad = sums[3:3 + N] / P
        if tol is not None:
            figures["grad_norm"] = float(np.sqrt(np.sum(grad ** 2)))
        if gradient_flow:
            figures.update(flow_figures(net, grad, sums[3 + N:], P))
    return figures


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
    targets = losses.LOSSES[loss].targets
    if targets == "labels" or (targets == "binary" and Y.shape[1] == 1):
        labels = Y.argmax(axis=1) if targets == "labels" else (Y[:, 0] > 0.5).astype(int)
        position = np.empty(P)
        for label in np.unique(labels):
            members = rng.permutation(np.flatnonzero(labels == label))
            position[members] = (np.arange(len(members)) + rng.random()) / len(members)
        return np.argsort(position, kind="stable")
    return rng.permutation(P)


def _checkpoint_path(path):
    """``path`` as a string, checked to sit in an existing, writable directory and to be
    no directory, device, FIFO or socket (see :func:`gpubp.io.atomic.check_output_path`)."""
    from gpubp.io.atomic import check_output_path, fspath

    path = fspath(path, "checkpoint")
    check_output_path(os.path.realpath(path) if os.path.islink(path) else path, "checkpoint")
    return path
