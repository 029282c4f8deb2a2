"""The compiled CPU epoch: when ``fit`` takes it and what it hands to the compiled code.

On the ``cpu`` backend, with one of the built-in optimizers, ``fit`` trains an epoch with
one call of :func:`gpubp.kernels.cpu_epoch.train_epoch` instead of one Python call per
kernel per step (``Network._train_step``, which every other backend, custom optimizers and
a data-parallel run with a gradient reduction between backward and update still use). Both
paths take the same steps on the same batches with the same kernels; the tests hold them
equal for every activation/loss pairing, depth and optimizer.

BLAS threads: the matrix products of a small network are too small to split, and a
second BLAS thread only adds a hand-off per call, so small steps run on one thread
(:func:`blas_threads`). For larger steps the answer depends on the machine's load, as
measured: on the quiet 2-core machine two OpenBLAS threads do the big GEMMs up to twice
as fast, but with other processes competing for the cores OpenBLAS's threads wait on each
other (they spin and yield) and the same epoch ran 10-20x *slower* than on one thread. So
larger steps are measured in place: the first epoch of a step shape times single steps on
one thread and on all of them, alternating, :data:`PROBE_ROUNDS` of each, each after an
untimed step on the same count (compilation; waking the threads a one-thread trial let
sleep: uncounted, that start-up made the all-threads trials of 784-128-10 @ 64 lose and
the epoch run on one thread at half speed), and the rest of the epoch, and the next
:data:`REPROBE_EVERY` epochs, use the count whose fastest step was faster. Interference
only ever adds time, so the fastest of a few alternating trials is what a count can do:
one noisy moment cannot decide (it did with one timing of two steps each: 784-512-512-10
@ 128 runs at 57k samples/s on one thread and 91k on two). Splitting an epoch into
several compiled calls changes nothing in its results. The number of threads is set
through threadpoolctl and restored afterwards; a lower limit set by the user is kept.
"""

import functools
import importlib.util
import time

import numpy as np

from gpubp.optim.optimizers import SGD, Adam

# A step of fewer multiply-adds than this runs its GEMMs on one BLAS thread (measured on the
# 2-core development machine, see blas_threads).
ONE_THREAD_BELOW = 2_000_000
PROBE_ROUNDS = 3  # one-step trials of each thread count when a larger step shape is probed
REPROBE_EVERY = 20  # epochs of a step shape between two probes (the load changes)
_probes = {}  # (sizes, batch_size, dtype) -> [threads (1 or None), epochs since the probe]


# The compiled epoch's output step knows these losses; the Poisson loss (exp output) and
# anything newer take the per-kernel step.
COMPILED_LOSSES = ("mse", "binary_cross_entropy", "cross_entropy")


def supported(net, optimizer):
    """Whether ``net`` can train an epoch with ``optimizer`` in one compiled call."""
    return (net.backend.name == "cpu" and type(optimizer) in (SGD, Adam)
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
    from threadpoolctl import ThreadpoolController

    import scipy.linalg.cython_blas  # noqa: F401 - loads the BLAS Numba's np.dot calls

    return [c for c in ThreadpoolController().lib_controllers if c.user_api == "blas"]


class _BlasThreads:
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


def _layout(net):
    """Offsets and codes of ``net``'s buffers for the compiled epoch (cached per capacity)."""
    from gpubp.kernels import cpu as kernels

    key = (net._capacity, net.dtype)
    cached = getattr(net, "_epoch_layout", None)
    if cached is not None and cached[0] == key:
        return cached[1]
    sizes = np.array(net.sizes, dtype=np.int64)
    cap = net._capacity
    w_offsets = np.array([s.start for s in net.layer_slices], dtype=np.int64)
    a_offsets = np.concatenate([[0], np.cumsum(sizes * cap)[:-1]]).astype(np.int64)
    d_offsets = np.concatenate([[0, 0], np.cumsum(sizes[1:] * cap)[:-1]]).astype(np.int64)
    codes = np.array([kernels.activation_code(g) for g in net.activation_names], np.int64)
    forward = np.array([kernels.forward_code(g, net.dtype) for g in net.activation_names],
                       np.int64)
    tiny, one_minus = kernels._CLIP[net.dtype]
    layout = dict(sizes=sizes, w_offsets=w_offsets, a_offsets=a_offsets, d_offsets=d_offsets,
                  forward_codes=forward, codes=codes, loss=kernels.loss_code(net.loss_name),
                  tiny=tiny, one_minus=one_minus)
    net._epoch_layout = (key, layout)
    return layout


def train_epoch(net, optimizer, X, Y, order, batch_size):
    """One epoch of ``net.fit`` in one compiled call (three when it probes BLAS threads).

    Parameters
    ----------
    net : Network
        On the ``cpu`` backend (see :func:`supported`).
    optimizer : SGD or Adam
        Its state is allocated if need be and its step count advanced.
    X : ndarray, shape (P_total, n_0)
    Y : ndarray, shape (P_total, n_L)
        Checked arrays of the network's dtype.
    order : ndarray of int, shape (P_total,)
    batch_size : int

    Returns
    -------
    cost_sum : float
        Row-weighted sum of the batches' mean costs, without the optimizer's penalty.
    correct : int
        Correct predictions on the batches (0 for regressors).
    penalty_sum : float
        Row-weighted sum of the batches' penalty terms (0.0 without a penalty).
    """
    from gpubp.kernels.cpu_epoch import ADAM, SGD as SGD_CODE

    net._workspace(batch_size)
    if optimizer.state is None:
        optimizer.initialize(net.backend, net.params)
    if isinstance(optimizer, Adam):
        code = ADAM
        hyper = (optimizer.current_lr(), 0.0, optimizer.weight_decay, optimizer.beta1,
                 optimizer.beta2, optimizer.eps, 0.0, optimizer.penalty,
                 float(optimizer.eps_hat))
        state_a, state_b = optimizer.flat_state["m"], optimizer.flat_state["v"]
    else:
        code = SGD_CODE
        hyper = (optimizer.current_lr(), optimizer.momentum, optimizer.weight_decay, 0.0, 0.0,
                 0.0, float(optimizer.nesterov), optimizer.penalty, 0.0)
        state_a = optimizer.flat_state.get("velocity", net.nabla_theta)  # unused without
        state_b = state_a
    X = np.ascontiguousarray(X, dtype=net.dtype)
    Y = np.ascontiguousarray(Y, dtype=net.dtype)
    order = np.ascontiguousarray(order, dtype=np.int64)
    hyper = np.array(hyper, dtype=np.float64)
    totals = [0.0, 0, 0.0]

    def run(rows, threads):
        """The compiled epoch over the batches of ``rows`` (whole batches of ``order``)."""
        with _BlasThreads(threads):
            cost_sum, correct, step, penalty_sum = _compiled(
                net, X, Y, rows, batch_size, code, hyper, state_a, state_b,
                optimizer.iterations)
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
                    run(order[start:start + batch_size], candidate)
                    start += batch_size
                    t0 = time.perf_counter()
                    run(order[start:start + batch_size], candidate)
                    fastest[candidate] = min(fastest[candidate], time.perf_counter() - t0)
                    start += batch_size
            entry = _probes[key] = [min(fastest, key=fastest.get), 0]
        entry[1] += 1
        threads = entry[0]
    run(order[start:], threads)
    return tuple(totals)


def gradient_step(net, X, Y, rows, delta_scale):
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

    Returns
    -------
    cost_sum : float
        Sum of the rows' costs.
    correct : int
        Correct predictions among them (0 for regressors).
    """
    from gpubp.kernels.cpu_epoch import NONE

    P = len(rows)
    net._workspace(P)
    with _BlasThreads(blas_threads(net.sizes, P)):
        cost_sum, correct, _, _ = _compiled(
            net, X, Y, np.ascontiguousarray(rows, dtype=np.int64), P, NONE, _NO_HYPER,
            net.nabla_theta, net.nabla_theta, 0, delta_scale)
    return float(cost_sum), int(correct)


_NO_HYPER = np.zeros(9)  # the update's hyperparameters, unused without an update


def _compiled(net, X, Y, rows, batch_size, code, hyper, state_a, state_b, step,
              delta_scale=1.0):
    """:func:`gpubp.kernels.cpu_epoch.train_epoch` over ``rows`` with ``net``'s buffers and
    layout; returns its ``(cost_sum, correct, step, penalty_sum)``."""
    from gpubp.kernels.cpu_epoch import train_epoch

    layout = _layout(net)
    return train_epoch(
        X, Y, rows, int(batch_size), net.theta, net.nabla_theta, net._activations_flat,
        net._deltas_flat, net.targets, layout["sizes"], layout["w_offsets"],
        layout["a_offsets"], layout["d_offsets"], layout["forward_codes"], layout["codes"],
        layout["loss"], layout["tiny"], layout["one_minus"], net.is_classifier, code, hyper,
        state_a, state_b, step, float(delta_scale))


def reduced_step(net, optimizer, X, Y, rows, reduction, P_global):
    """One step of a data-parallel run: this rank's gradient by :func:`gradient_step`,
    summed over the ranks by ``reduction``, then the update (``Network._train_step``'s
    reduced step, with one compiled call in place of a Python call per kernel).

    Returns
    -------
    cost_sum : float
    correct : int
    P : int
        This rank's rows of the batch (possibly none: it adds zeros to the sum).
    """
    P = len(rows)
    reduction.begin(P, P_global)
    if P:
        cost_sum, correct = gradient_step(net, X, Y, rows, reduction.delta_scale)
    else:
        cost_sum, correct = 0.0, 0
        net.nabla_theta[...] = 0
    for l in range(net.L - 1, -1, -1):  # every layer is final: the output layer first
        reduction.layer_done(l)
    reduction.wait()
    reduction.update(optimizer)
    return cost_sum, correct, P
