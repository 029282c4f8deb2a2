"""The compiled CPU epoch: when ``fit`` takes it and what it hands to the compiled code.

On the ``cpu`` backend, with one of the built-in optimizers, ``fit`` trains an epoch with
one call of :func:`gpubp.kernels.cpu_epoch.train_epoch` instead of one Python call per
kernel per step (:func:`gpubp.core.backprop.train_step`, which every other backend and
custom optimizers use; a data-parallel run takes :func:`reduced_step`, one compiled call
per step with the reduction between backward and update). Both
paths take the same steps on the same batches with the same kernels; the tests hold them
equal for every activation/loss pairing, depth and optimizer.

BLAS threads: the matrix products of a small step are too small to split, and a second
BLAS thread only adds a hand-off per call, so a step of fewer than
:data:`ONE_THREAD_BELOW` multiply-adds runs on one thread (:func:`blas_threads`). For a
larger step the better count depends on the machine's load (under contention OpenBLAS's
threads wait on each other), so it is measured in place: the first epoch of a step shape
times single steps on one thread and on all of them, alternating, :data:`PROBE_ROUNDS`
of each, each after an untimed step on the same count (compilation, and waking the
threads a one-thread trial let sleep), and the rest of the epoch, and the next
:data:`REPROBE_EVERY` epochs, use the count whose fastest step was faster. Interference
only ever adds time, so the fastest of a few alternating trials is what a count can do.
Splitting an epoch into several compiled calls changes nothing in its results. The
number of threads is set through threadpoolctl and restored afterwards; a lower limit set
by the user is kept. The measurements behind these rules, and the commands that repeat
them: docs/performance.md, "BLAS threads".
"""

import functools
import importlib.util
import time

import numpy as np

from gpubp.core import backprop, dropout, gemm_choice
from gpubp.kernels.epoch_args import Batches, Buffers, Codes, Layout, Update
from gpubp.optim.optimizers import SGD, Adam, AdamW, RMSprop

# A step of fewer multiply-adds than this runs its GEMMs on one BLAS thread
# (docs/performance.md, "BLAS threads").
ONE_THREAD_BELOW = 2_000_000
PROBE_ROUNDS = 3  # one-step trials of each thread count when a larger step shape is probed
REPROBE_EVERY = 20  # epochs of a step shape between two probes (the load changes)
_probes = {}  # (sizes, batch_size, dtype) -> [threads (1 or None), epochs since the probe]


# The compiled epoch's output step knows these losses; the Poisson loss (exp output) and
# anything newer take the per-kernel step.
COMPILED_LOSSES = ("mse", "binary_cross_entropy", "cross_entropy", "huber", "l1")


def supported(net, optimizer):
    """Whether ``net`` can train an epoch with ``optimizer`` in one compiled call."""
    return (net.backend.name == "cpu" and type(optimizer) in (SGD, Adam, AdamW, RMSprop)
            and net.loss_name in COMPILED_LOSSES and _have_scipy_blas())


@functools.lru_cache(maxsize=1)
def _have_scipy_blas():
    # Numba's np.dot calls BLAS through scipy.linalg.cython_blas.
    return importlib.util.find_spec("scipy") is not None


def blas_threads(sizes, batch_size):
    """BLAS threads for a step of ``sizes`` at ``batch_size`` rows: 1 for small steps, else
    None (all the library's threads, or one if :func:`train_epoch`'s probe finds that faster).

    A step does ``3 P Σ n_{l-1} n_l`` multiply-adds in its GEMMs. Below
    :data:`ONE_THREAD_BELOW` (64-64-10 @ 32 is 0.07 M, 784-128-10 @ 64 is 19 M) the
    products finish before a second thread pays for its wake-up.
    """
    work = 3 * batch_size * sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))
    return 1 if work < ONE_THREAD_BELOW else None


@functools.lru_cache(maxsize=1)
def _blas_controllers():
    from threadpoolctl import ThreadpoolController  # keeps import gpubp light: BLAS threads are probed on the first compiled epoch

    import scipy.linalg.cython_blas  # noqa: F401 - loads the BLAS Numba's np.dot calls

    return [c for c in ThreadpoolController().lib_controllers if c.user_api == "blas"]


class BlasThreads:
    """Context manager: at most ``n`` threads in every loaded BLAS (None: unchanged)."""

    def __init__(self, n):
        self.n = n
        self.saved = []

    def __enter__(self):
        if self.n is not None:
            for c in _blas_controllers():
                before = c.get_num_threads()
                if before is not None and before > self.n:
                    self.saved.append((c, before))
                    c.set_num_threads(self.n)
        return self

    def __exit__(self, *exc):
        for c, before in self.saved:
            c.set_num_threads(before)


def layout(net):
    """The :class:`~gpubp.kernels.epoch_args.Layout` and
    :class:`~gpubp.kernels.epoch_args.Codes` of ``net`` for the compiled epoch (cached on
    ``net`` per workspace capacity and dtype)."""
    from gpubp.kernels import cpu as kernels  # keeps import gpubp light: Numba's CPU kernels load with the compiled epoch

    key = (net._capacity, net.dtype)
    cached = getattr(net, "_epoch_layout", None)
    if cached is not None and cached[0] == key:
        return cached[1]
    sizes = np.array(net.sizes, dtype=np.int64)
    cap = net._capacity
    # the kept z^l follow the a^l in the same buffer (backprop.workspace)
    kept = np.array([0] + backprop.kept_z_widths(net), dtype=np.int64)
    z_starts = cap * (sizes.sum() + np.concatenate([[0], np.cumsum(kept)[:-1]]))
    offsets = Layout(
        sizes=sizes,
        w_offsets=np.array([s.start for s in net.layer_slices], dtype=np.int64),
        a_offsets=np.concatenate([[0], np.cumsum(sizes * cap)[:-1]]).astype(np.int64),
        d_offsets=np.concatenate([[0, 0], np.cumsum(sizes[1:] * cap)[:-1]]).astype(np.int64),
        z_offsets=np.where(kept > 0, z_starts, -1).astype(np.int64),
        loops=np.zeros(len(sizes) - 1, dtype=np.int64))  # BLAS; _compiled sets the choice
    codes = Codes.of(
        forward=[kernels.forward_code(g, net.dtype) for g in net.activation_names],
        derivative=[kernels.activation_code(g) for g in net.activation_names],
        loss=kernels.loss_code(net.loss_name), clip=kernels.CLIP[net.dtype],
        classifier=net.is_classifier,
        dropout=(net.dropout, net.dtype), slope=backprop.slope(net), loss_param=net.loss_param)
    net._epoch_layout = (key, (offsets, codes))
    return offsets, codes


def buffers(net):
    """``net``'s flat parameters, gradients and workspaces as a
    :class:`~gpubp.kernels.epoch_args.Buffers` (views: valid until the workspaces grow)."""
    return Buffers(theta=net.theta, nabla=net.nabla_theta, acts=net._activations_flat,
                   deltas=net._deltas_flat, targets=net.targets, row_weights=net._row_weights)


def _update(net, optimizer, steps=None):
    """The :class:`~gpubp.kernels.epoch_args.Update` of ``optimizer`` (SGD, Adam, AdamW
    or RMSprop) for a call of ``steps`` steps (its rates per step under a per-step
    schedule), with its clipping."""
    state, it = optimizer.flat_state, optimizer.iterations
    if isinstance(optimizer, AdamW):
        update = Update.adam(optimizer.current_lr(), (optimizer.beta1, optimizer.beta2),
                             (optimizer.eps, False), 0.0, (state["m"], state["v"]), it,
                             decoupled=optimizer.weight_decay)
    elif isinstance(optimizer, Adam):
        update = Update.adam(optimizer.current_lr(), (optimizer.beta1, optimizer.beta2),
                             (optimizer.eps, optimizer.eps_hat), optimizer.weight_decay,
                             (state["m"], state["v"]), it, optimizer.penalty)
    elif isinstance(optimizer, RMSprop):
        update = Update.rmsprop(optimizer.current_lr(), optimizer.alpha, optimizer.eps,
                                optimizer.weight_decay, optimizer.momentum,
                                (state["square_avg"], state.get("momentum_buffer"),
                                 state.get("grad_avg")), it)
    else:
        velocity = state.get("velocity", net.nabla_theta)  # unused without
        update = Update.sgd(optimizer.current_lr(), optimizer.momentum, optimizer.nesterov,
                            optimizer.weight_decay, velocity, it, optimizer.penalty)
    lrs = optimizer.step_lrs(steps) if steps and optimizer.schedule.per_step else None
    return update.per_step(lrs, optimizer.clip_norm, optimizer.clip_value)


def train_epoch(net, optimizer, X, Y, order, batch_size, weights=None):
    """One epoch of ``net.fit`` in one compiled call (three when it probes BLAS threads).

    Parameters
    ----------
    net : Network
        On the ``cpu`` backend (see :func:`supported`).
    optimizer : SGD, Adam, AdamW or RMSprop
        Its state is allocated if need be and its step count advanced; a per-step
        schedule gives the compiled call one rate per step.
    X : ndarray, shape (P_total, n_0)
    Y : ndarray, shape (P_total, n_L)
        Checked arrays of the network's dtype.
    order : ndarray of int, shape (P_total,)
    batch_size : int
    weights : ndarray, shape (P_total,), or None
        The rows' sample weights: each batch's cost is ``Σ s_p c_p / Σ s_p`` (and an
        optimizer's penalty divides by the batch's ``Σ s_p``), as on the per-kernel step.

    Returns
    -------
    cost_sum : float
        Row-weighted sum of the batches' mean costs, without the optimizer's penalty.
    correct : int
        Correct predictions on the batches (0 for regressors).
    penalty_sum : float
        Row-weighted sum of the batches' penalty terms (0.0 without a penalty).
    """
    net._workspace(batch_size)
    if optimizer.state is None:
        optimizer.initialize(net.backend, net.params)
    X = np.ascontiguousarray(X, dtype=net.dtype)
    Y = np.ascontiguousarray(Y, dtype=net.dtype)
    order = np.ascontiguousarray(order, dtype=np.int64)
    totals = [0.0, 0, 0.0]
    # dropout: the epoch's key and its next batch (gpubp.core.dropout); the masks are drawn
    # inside the compiled code from them, the same bits as every other target draws
    stream = getattr(net, "_dropout_stream", None) or [0, 0]

    def run(begin, end, threads):
        """The compiled epoch over the batches of ``order[begin:end]`` (whole batches)."""
        batches = Batches.of(X, Y, order[begin:end], batch_size, dropout_key=stream[0],
                             first_batch=stream[1] + begin // batch_size, weights=weights)
        with BlasThreads(threads):
            cost_sum, correct, step, penalty_sum = _compiled(
                net, batches, _update(net, optimizer, -(-(end - begin) // batch_size)))
        optimizer.iterations = int(step)
        totals[0] += float(cost_sum)
        totals[1] += int(correct)
        totals[2] += float(penalty_sum)

    threads = blas_threads(net.sizes, batch_size)
    start = 0
    if threads is None and len(order) >= 4 * PROBE_ROUNDS * batch_size:
        key = (tuple(net.sizes), int(batch_size), net.dtype.name)
        entry = _probes.get(key)
        if entry is None or entry[1] >= REPROBE_EVERY:
            fastest = {1: float("inf"), None: float("inf")}
            for r in range(PROBE_ROUNDS):
                for candidate in ((1, None) if r % 2 == 0 else (None, 1)):
                    # an untimed step first: it compiles (if need be) and wakes the BLAS
                    # threads after a one-thread trial let them sleep, a start-up that
                    # would otherwise be charged to every all-threads trial
                    run(start, start + batch_size, candidate)
                    start += batch_size
                    t0 = time.perf_counter()
                    run(start, start + batch_size, candidate)
                    fastest[candidate] = min(fastest[candidate], time.perf_counter() - t0)
                    start += batch_size
            entry = _probes[key] = [min(fastest, key=fastest.get), 0]
        entry[1] += 1
        threads = entry[0]
    run(start, len(order), threads)
    stream[1] += -(-len(order) // batch_size)
    return tuple(totals)


def gradient_step(net, X, Y, rows, delta_scale, masks=None):
    """Forward and backward over ``rows`` in one compiled call, no update (a rank's step).

    A rank of a data-parallel run (:mod:`gpubp.distributed.ranks`) computes the gradient of its
    share of a global batch here, then sums it over the ranks and updates in Python;
    ``net.nabla_theta`` holds it on return.

    Parameters
    ----------
    net : Network
        On the ``cpu`` backend (see :func:`supported`).
    X : ndarray, shape (P_total, n_0)
    Y : ndarray, shape (P_total, n_L)
        Checked C-contiguous arrays of the network's dtype.
    rows : ndarray of int, shape (P,)
        This rank's rows of the batch, ``P >= 1``.
    delta_scale : float
        ``P / P_global``.
    masks : tuple or None
        The step's dropout, ``(epoch_key, batch, first_row)`` of
        :func:`gpubp.core.dropout.next_step` (None without dropout).

    Returns
    -------
    cost_sum : float
        Sum of the rows' costs.
    correct : int
        Correct predictions among them (0 for regressors).
    """
    P = len(rows)
    net._workspace(P)
    key, batch, first_row = (0, 0, 0) if masks is None else masks
    batches = Batches.of(X, Y, np.ascontiguousarray(rows, dtype=np.int64), P, delta_scale,
                         dropout_key=key, first_batch=batch)._replace(first_row=int(first_row))
    with BlasThreads(blas_threads(net.sizes, P)):
        cost_sum, correct, _, _ = _compiled(net, batches, Update.gradient_only(net.nabla_theta))
    return float(cost_sum), int(correct)


def _compiled(net, batches, update):
    """:func:`gpubp.kernels.cpu_epoch.train_epoch` of ``batches`` and ``update`` with
    ``net``'s buffers and layout; returns its ``(cost_sum, correct, step, penalty_sum)``."""
    from gpubp.kernels.cpu_epoch import train_epoch  # as above

    offsets, codes = layout(net)
    # loop nests or BLAS per layer, measured once per layer shape (gemm_choice)
    offsets = offsets._replace(loops=gemm_choice.loops(net.sizes, batches.batch_size, net.dtype))
    return train_epoch(batches, buffers(net), offsets, codes, update)


def reduced_step(net, optimizer, X, Y, rows, reduction, P_global):
    """One step of a data-parallel run: this rank's gradient by :func:`gradient_step`,
    summed over the ranks by ``reduction``, then the update (:func:`gpubp.core.backprop.train_step`
    with one compiled call in place of a Python call per kernel).

    Returns
    -------
    cost_sum : float
    correct : int
    P : int
        This rank's rows of the batch (possibly none: it adds zeros to the sum).
    """
    P = len(rows)
    reduction.begin(P, P_global)
    masks = dropout.next_step(net, P_global)  # on every rank: each counts every batch
    if P:
        cost_sum, correct = gradient_step(net, X, Y, rows, reduction.delta_scale, masks)
    else:
        cost_sum, correct = 0.0, 0
        net.nabla_theta[...] = 0
    for l in range(net.L - 1, -1, -1):  # every layer is final: the output layer first
        reduction.layer_done(l)
    reduction.wait()
    reduction.update(optimizer)
    return cost_sum, correct, P
