"""The training loop of :meth:`gpubp.Network.fit`: epochs of shuffled mini-batch steps.

Kept apart from the network so that the algorithm (``network.py``) reads in one sitting
and the bookkeeping around it lives here: validation (given or split off), the schedule,
callbacks and early stopping, checkpoints and resumption, progress, divergence (the
restoration itself: :mod:`gpubp.training.divergence`).

Resuming is exact: a run interrupted after a checkpoint and resumed from it takes the same
steps, on the same batches, with the same optimizer state, as one never interrupted.
"""

from dataclasses import dataclass, replace

import numpy as np
from tqdm.auto import tqdm

from gpubp.training import checkpoint as ckpt_io
from gpubp.training.class_weight import row_weights
from gpubp.core import backprop, compiled, dropout
from gpubp.data import mapped
from gpubp.training.batches import BatchCalls
from gpubp.training.callbacks import Run
from gpubp.distributed.ranks import LOCAL, start_facts
from gpubp.distributed.ranks import group as distributed_group
from gpubp.training.history import History
from gpubp.data.inputs import is_sparse
from gpubp.optim.optimizers import get_optimizer
from gpubp.io.atomic import fspath
from gpubp.training.options import (FitOptions, Validation, callbacks_of, check_extras,
                                    checkpoint_path, check_validation_data, fit_options,
                                    split_permutation)
from gpubp.core import metrics
from gpubp.core.diagnostics import data_sums, flow_figures
from gpubp.training.divergence import Snapshots, restore_finite
from gpubp.training import graph_epoch
from gpubp.training import privacy as dp


@dataclass
class Plan:
    """What the epochs of :func:`fit` run with, decided before the first one.

    ``rows`` are the training rows of ``X`` (None: all), ``order`` their shuffled order,
    ``validation`` ``(X_val, Y_val, rows or None)`` or None, ``split`` the permutation of
    a validation split, ``first_epoch`` where a resumed run goes on; the rest are
    :func:`fit`'s arguments, checked.
    """

    optimizer: object
    X: object
    Y: object
    rows: object
    order: np.ndarray
    history: History
    first_epoch: int
    options: FitOptions
    validation: object
    callbacks: list
    checkpoint: object
    split: object
    group: object
    weights: object
    resumed_from: object = None  # (epoch, steps) of the checkpoint a run resumes
    device_X: object = None  # the X steps read: X, or X as given if trained on in place
    batches: object = None  # the per-batch callbacks (training.batches.BatchCalls)
    graphs: object = None  # the run's CUDA graphs of a step (training.graph_epoch)


def fit(net, X, Y, **options):
    """Train ``net`` in place; see :meth:`gpubp.Network.fit` for the options.

    ``sample_weight`` (P,) makes each batch's cost the weighted mean ``Σ s_p c_p / Σ s_p``
    (an optimizer's ``penalty`` then divides by the batch's ``Σ s_p``), on the compiled
    epoch as on the per-kernel step; ``class_weight`` multiplies it by the weight of each
    row's class (:mod:`gpubp.training.class_weight`). Two more, for callers that need them
    (:mod:`gpubp.sklearn`): ``rng``,
    the generator or ``RandomState`` the epochs are shuffled with (default ``net.rng``;
    not recorded in checkpoints); ``diverged="continue"`` trains on after a non-finite
    epoch instead of raising :class:`TrainingDiverged` (scikit-learn's behaviour: its
    early stopping may restore finite parameters; the caller judges the result). An
    unknown option is a TypeError naming it.
    """
    o = fit_options(options)
    group = distributed_group(o.distributed)
    facts = {}
    with group.start(net, facts):  # an error on any rank is raised on every rank
        plan = _plan(net, X, Y, o, group)
        facts.update(_facts(net, plan))
        net._workspace(-(-plan.options.batch_size // group.size))
    with group.faults():  # an exception on one rank now ends the whole job
        return _epochs(net, plan)


def _plan(net, X, Y, o, group):
    """The checked arguments of :func:`fit` and the run's starting point, as a Plan."""
    given_X, (X, Y) = X, net._check_XY(X, Y)
    validation = check_validation_data(net, o)
    checkpoint = None if o.checkpoint is None else checkpoint_path(o.checkpoint)
    optimizer = get_optimizer(o.optimizer, o.lr, o.schedule, o.weight_decay,
                              None if o.clip_norm is None and o.clip_value is None else
                              (o.clip_norm, o.clip_value))
    weights = check_extras(X, o.sample_weight, o.rng, o.diverged, optimizer, group,
                            checkpoint is not None or o.resume is not None)
    dp.check_privacy(o.privacy, group, weights, optimizer)
    graph_epoch.check_mode(o.cuda_graph, net.backend.name)
    callbacks = callbacks_of(o.callbacks, o.early_stopping,
                           validation is not None or bool(o.validation_split))
    state = None if o.resume is None else ckpt_io.load(fspath(o.resume, "resume"))
    split = rows = None  # rows: the training rows of X (all of them without a split)
    if o.validation_split:
        split, rows, validation = _validation_split(net, X, Y, o.validation_split, state)
    weights = row_weights(o.class_weight, Y, net.loss_name, weights, rows, group.size)
    P_total = X.shape[0] if rows is None else len(rows)
    o = replace(o, batch_size=min(o.batch_size, P_total))
    plan = Plan(optimizer, X, Y, rows, np.arange(P_total), History(), 0, o, validation,
                callbacks, checkpoint, split, group, weights, batches=BatchCalls(callbacks))
    if plan.batches and group.size > 1:
        raise ValueError(f"callbacks: on_batch_end is not supported in distributed runs, got "
                         f"{[type(cb).__name__ for cb in plan.batches.callbacks]}")
    if state is not None:
        ckpt_io.check_compatible(state, net, optimizer, o.batch_size, o.shuffle, P_total)
        ckpt_io.restore(state, net, optimizer, callbacks)
        plan.order, plan.history = state.order.copy(), state.history
        # a recorded run that had already ended stays ended
        plan.first_epoch = o.epochs if state.stopped else state.epoch + 1
        plan.resumed_from = (state.epoch, state.iterations)
    if rows is None:  # checked on a host copy; trained on as given (a CuPy array on CUDA)
        plan.device_X = net.backend.in_place(given_X, X)
    return plan


def _validation_split(net, X, Y, fraction, state):
    """``(split, training rows, validation)`` of a ``validation_split`` of ``fraction``
    (the checkpoint's permutation when resuming); rows are indexed, never copied out:
    ``X`` may be a memory-mapped file."""
    split = state.split if state is not None and state.split is not None else \
        split_permutation(net.rng, Y, net.loss_name)
    if len(split) != X.shape[0]:
        raise ValueError(f"resume: the data must have the checkpoint's {len(split)} "
                         f"examples, got {X.shape[0]}")
    n_val = max(1, round(fraction * X.shape[0]))
    if n_val >= X.shape[0]:
        raise ValueError(f"validation_split={fraction} leaves no training example out of "
                         f"{X.shape[0]}")
    return split, np.sort(split[n_val:]), Validation(X, Y, np.sort(split[:n_val]))


def _facts(net, plan):
    """What every rank must agree on before the first epoch (see ``start_facts``)."""
    o, validation = plan.options, plan.validation
    return start_facts(
        net, plan.X, plan.Y, epochs=o.epochs, batch_size=o.batch_size, shuffle=o.shuffle,
        tol=o.tol, optimizer=plan.optimizer.get_config(),
        optimizer_class=type(plan.optimizer).__qualname__,
        validation_split=o.validation_split,
        validation=None if validation is None else tuple(validation[0].shape),
        callbacks=[type(cb).__name__ for cb in plan.callbacks], checkpoint=plan.checkpoint,
        resumed_from=plan.resumed_from, gradient_flow=o.gradient_flow)


def _epochs(net, plan):
    """The loop over epochs of :func:`fit`, after its checks; returns the History."""
    o, group = plan.options, plan.group
    snapshots = Snapshots(net, plan.first_epoch)
    # the training data where a step reads it: on a GPU, uploaded once for the run
    # a sparse X stays on the host: its batches go up as sparse matrices (Network._load)
    X = plan.X if plan.device_X is None else plan.device_X
    data = (X if is_sparse(X) else net.backend.resident(X), net.backend.resident(plan.Y))
    run = Run(net, plan.optimizer, plan.history, o.epochs)
    for cb in plan.callbacks:
        cb.on_train_begin(run)
    verbose = o.verbose if group.is_root else 0  # one rank prints
    bar = tqdm(range(plan.first_epoch, o.epochs), desc="epochs", unit="epoch",
               total=o.epochs, initial=plan.first_epoch,
               disable=None if verbose == 1 else True, leave=False)
    try:
        for epoch in bar:
            figures = _epoch(net, plan, run, epoch, data, snapshots)
            bar.set_postfix({k: f"{v:.4g}" for k, v in figures.items() if k != "lr"},
                            refresh=False)
            if verbose == 2:
                line = " - ".join(f"{k}: {v:.4g}" for k, v in figures.items())
                tqdm.write(f"epoch {epoch + 1}/{o.epochs} - {line}")
            _checkpoint(net, plan, run, epoch)
            if run.stop_training:
                break
    finally:
        bar.close()
    for cb in plan.callbacks:
        cb.on_train_end(run)
    group.check_identical(net)
    return plan.history


def _epoch(net, plan, run, epoch, data, snapshots):
    """One epoch: shuffle, the steps, divergence, the figures and the callbacks."""
    o, group, optimizer = plan.options, plan.group, plan.optimizer
    for cb in plan.callbacks:
        cb.on_epoch_begin(run, epoch)
    snapshots.take()
    rng = net.rng if o.rng is None else o.rng  # the network's generator unless given one
    if o.shuffle:
        rng.shuffle(plan.order)
    # the epoch's mask key, after the shuffle; each rank masks its share's rows as one
    # process masks them (gpubp.core.dropout)
    dropout.begin_epoch(net, rng, group.rank, group.size)
    epoch_rows = plan.order if plan.rows is None else plan.rows[plan.order]
    lr_now = optimizer.start_epoch(epoch, o.epochs, -(-len(epoch_rows) // o.batch_size))
    plan.batches.begin(run)
    graphs = None if o.privacy is not None else \
        graph_epoch.graphs_for(net, optimizer, plan, data)
    if graphs is not None:  # the whole step captured once, replayed (cuda_graph=)
        epoch_loss, epoch_accuracy, penalty = graph_epoch.train_epoch(
            net, optimizer, data, epoch_rows, o.batch_size, graphs)
    elif o.privacy is None:
        epoch_loss, epoch_accuracy, penalty = _train_epoch(
            net, optimizer, data, epoch_rows, o.batch_size, group, plan.weights,
            plan.batches or None)
    else:  # DP-SGD: clipped, noised steps; ε after this epoch (gpubp.training.privacy)
        epoch_loss, epoch_accuracy, penalty, epsilon = dp.train_epoch(
            net, optimizer, (*data, group), epoch_rows, o.batch_size, o.privacy, rng,
            (epoch + 1, plan.batches or None))
    finite = np.isfinite(epoch_loss) and net.backend.all_finite([net.theta])
    if o.diverged == "raise" and not group.all(finite):
        group.restore(net, snapshots.now)
        raise restore_finite(net, plan, snapshots.candidates(epoch), epoch,
                             (epoch_loss, lr_now))
    figures = _epoch_figures(net, plan, epoch_loss, epoch_accuracy)
    figures["lr"] = lr_now
    if penalty is not None:
        figures["penalty"] = penalty
    if o.privacy is not None:
        figures["epsilon"] = epsilon
    plan.history.record(epoch, **figures)
    for cb in plan.callbacks:
        cb.on_epoch_end(run, epoch, dict(figures))
    if o.tol is not None and figures["grad_norm"] <= o.tol:
        run.stop(f"gradient norm {figures['grad_norm']:.3g} <= tol {o.tol}")
    return figures


def _checkpoint(net, plan, run, epoch):
    """Write the run's checkpoint after ``epoch`` when it is due (rank 0 writes)."""
    o = plan.options
    last = epoch == o.epochs - 1 or run.stop_training
    if plan.checkpoint is None or not ((epoch + 1) % o.checkpoint_every == 0 or last):
        return
    plan.group.check_identical(net)
    if plan.group.is_root:
        ckpt_io.save(plan.checkpoint, net, plan, epoch, stopped=run.stop_training)


def _train_epoch(net, optimizer, data, order, batch_size, group=LOCAL, weights=None,
                 batches=None):
    """One pass over the rows ``order`` of ``X``, in that order; returns the epoch's figures
    from its batches.

    ``data``: ``(X, Y)``. ``weights``: the rows' sample weights (one process only: see
    ``check_extras``). ``batches``: the per-batch callbacks
    (:class:`~gpubp.training.batches.BatchCalls`), or None: then the compiled epoch is one call.

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
    X, Y = data
    P_total = len(order)
    # the compiled code gathers rows through the mapping of a memory-mapped X (which
    # would map the whole file in time), and takes dense X only (a sparse X multiplies
    # sparse x dense in the per-kernel step)
    compiled_ok = not mapped.is_mapped(X) and not is_sparse(X) \
        and compiled.supported(net, optimizer)
    penalty = 0.0
    reduction = group.reduction_for(net, optimizer, split=compiled_ok)
    if compiled_ok and reduction.name == "identity":
        # nothing to add between the steps: the whole epoch in one compiled call (with
        # per-batch callbacks, one per chunk of batches between their calls)
        epoch = compiled.train_epoch if batches is None else batches.compiled_epoch
        total, correct, penalty = epoch(net, optimizer, X, Y, order, batch_size, weights)
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
        total, classifier = net.backend.cost_sum(), net.is_classifier
        correct = net.backend.correct_sum(net.loss_name) if classifier else 0.0
        pages = mapped.PageBudget([X, Y])
        host_order = order
        alone = reduction.name == "identity"  # weights and a penalty: one process only
        step_weights = net.backend.resident(weights) if alone and weights is not None \
            else None
        # on a GPU: uploaded once per epoch when every batch is gathered on the device,
        # else kept on the host, where the rows are gathered (never read back per step)
        order = net.backend.batch_order(order, (X, Y, step_weights))
        # A diverging run overflows on the way to a non-finite loss; that is detected and
        # reported by the caller, so the floating-point warnings it raises are not news.
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            for start in range(0, P_total, batch_size):
                batch = order[start:start + batch_size]
                if alone and optimizer.penalty:  # its term of the cost, with the W of the forward
                    n = len(batch) if weights is None else \
                        float(weights[host_order[start:start + batch_size]].sum())
                    penalty = penalty + optimizer.begin_batch(
                        net.backend, net.params, n) * len(batch)
                cost, P = backprop.train_step(net, optimizer, X, Y,
                                              batch[group.rows(len(batch))], reduction,
                                              len(batch), weights=step_weights)
                # backend scalars (device arrays on CUDA): converted once, after the loop
                total.add(cost, P)
                if classifier and P:  # (on CUDA counted by the output kernel already)
                    correct.add(net.activations[net.L][:P], net.targets[:P])
                pages.touched(P)
                if batches is not None and batches.after(start // batch_size, len(batch),
                                                         lambda: (total, correct)):
                    break
        pages.release()
    if batches is not None and batches.stopped:  # the figures of the rows trained
        P_total = batches.rows_done
    total, correct = group.sum([float(total), float(correct)])
    accuracy = float(correct) / P_total if net.is_classifier else None
    if not optimizer.penalty:
        return float(total) / P_total, accuracy, None
    penalty = float(penalty) / P_total
    return float(total) / P_total + penalty, accuracy, penalty


def _epoch_figures(net, plan, epoch_loss, epoch_accuracy):
    """History figures of an epoch: the training ones from its batches (no extra pass over
    the training data unless ``tol`` asks for the full-data gradient norm or
    ``gradient_flow`` for its per-layer figures: one pass for both), each summed over the
    ranks."""
    X, Y, rows, validation, group = plan.X, plan.Y, plan.rows, plan.validation, plan.group
    tol, gradient_flow = plan.options.tol, plan.options.gradient_flow
    figures = {"loss": epoch_loss}
    if epoch_accuracy is not None:
        figures["accuracy"] = epoch_accuracy
    if validation is not None and validation.weights is not None:
        figures.update(_weighted_validation(net, validation))
    elif validation is not None:
        val = data_sums(net, validation.X, validation.Y, validation.rows, group)
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


def _weighted_validation(net, validation):
    """``val_loss`` and ``val_accuracy`` as the weighted means of ``evaluate`` (every rank
    evaluates all of the validation rows: they are the user's, not split over ranks)."""
    X, Y, s = validation.X, validation.Y, validation.weights
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # as data_sums
        figures = {"val_loss": float(net._cost_and_gradients(X, Y, False, s)[0])}
        if net.is_classifier:
            figures["val_accuracy"] = float(metrics.accuracy(net.forward(X), Y,
                                                             net.loss_name, s))
    return figures
