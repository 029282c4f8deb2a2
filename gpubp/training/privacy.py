"""Differentially private training: ``fit(privacy=DPSGD(...))``.

DP-SGD as Opacus defines it (Abadi et al. 2016): every example's gradient clipped to
``max_grad_norm``, Gaussian noise of standard deviation ``noise_multiplier · max_grad_norm``
added to the sum, the result divided by the expected batch size; the step itself is
:mod:`gpubp.core.private_step`. Batches are Poisson samples by default (each example
joins each step's batch with probability ``q``, Opacus's ``poisson_sampling=True``), the
sampling the accounting assumes; ``poisson=False`` takes the shuffled batches of plain
training, and its ε is then the usual approximation, as in Opacus.

The privacy spent, ε at the given δ, is reported in the History (``"epsilon"``) after
each epoch by a maintained accountant, Google's ``dp-accounting`` (``gpubp[privacy]``):
its RDP accountant (the default) or its PLD accountant, composing ``steps`` Poisson
subsampled Gaussian mechanisms of rate ``q`` and noise ``σ``. No accounting is written
here.

The noise and the Poisson samples come from the fit's generator (the network's, recorded
in checkpoints), a NumPy ``Generator``: not a cryptographically secure source (Opacus's
``secure_mode=False``). Targets: the per-kernel step of every backend (reference, cpu,
cuda; on CUDA the clipping is :mod:`gpubp.kernels.cuda_private`'s kernels) and, on
``cpu``, the compiled steps of :mod:`gpubp.core.private_epoch`; on one process or on the
ranks of ``distributed`` (each clips its own rows; the noise is added once; the per-kernel
step). Per-batch callbacks are called as in a plain epoch.
"""

import contextlib
import functools
import logging
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from gpubp.core import private_epoch
from gpubp.core.private_step import private_gradient, private_step, reduced_update
from gpubp.data.validation import check_positive
from gpubp.distributed.ranks import LOCAL

ACCOUNTANTS = ("rdp", "pld")
PLD_INTERVAL = 1e-4  # PLDAccountant's default value_discretization_interval
NOISE_BYTES = 2 ** 25  # the noise blocks of the compiled private steps: 32 MiB at most
AHEAD_CHUNKS = 4  # compiled calls an epoch at least, when the draws run ahead of the steps


@dataclass(frozen=True)
class DPSGD:
    """Differentially private SGD for :meth:`gpubp.Network.fit` (``privacy=``).

    Parameters
    ----------
    max_grad_norm : float
        ``C``: each example's gradient is scaled to at most this norm.
    noise_multiplier : float
        ``σ``: the noise added to the clipped sum has standard deviation ``σ C``
        (0: clipping alone, no privacy: ε is infinite).
    delta : float
        The δ at which ε is reported, in (0, 1).
    poisson : bool
        Poisson sampling of the batches (the expected batch size is ``fit``'s
        ``batch_size``); False: the fit's shuffled batches.
    accountant : {"rdp", "pld"}
        ``dp-accounting``'s Rényi-DP or privacy-loss-distribution accountant.
    """

    max_grad_norm: float = 1.0
    noise_multiplier: float = 1.0
    delta: float = 1e-5
    poisson: bool = True
    accountant: str = "rdp"

    def __post_init__(self):
        check_positive(self.max_grad_norm, "max_grad_norm")
        check_positive(self.noise_multiplier, "noise_multiplier", allow_zero=True)
        check_positive(self.delta, "delta")
        if not self.delta < 1:
            raise ValueError(f"delta must be in (0, 1), got {self.delta!r}")
        if not isinstance(self.poisson, (bool, np.bool_)):
            raise TypeError(f"poisson must be True or False, got {self.poisson!r}")
        if self.accountant not in ACCOUNTANTS:
            raise ValueError(f"accountant must be one of {ACCOUNTANTS}, "
                             f"got {self.accountant!r}")

    def epsilon(self, sample_rate, steps):
        """ε at :attr:`delta` after ``steps`` steps of sampling rate ``sample_rate``.

        ``dp-accounting``'s own figure, that of a fresh accountant composing ``steps``
        Poisson subsampled Gaussian mechanisms, bit for bit, at the cost of one epoch's:
        the work that does not depend on ``steps`` is cached per ``(q, σ)``
        (:func:`_one_step`), so that a run's epochs do not each redo it.
        """
        if self.noise_multiplier == 0:
            return math.inf
        return _epsilon(self.accountant, float(sample_rate), float(self.noise_multiplier),
                        int(steps), float(self.delta))


@functools.lru_cache(maxsize=256)
def _epsilon(accountant, q, sigma, steps, delta):
    """:meth:`DPSGD.epsilon`, cached: a run reports the same ``(q, σ, steps, δ)`` again
    when resumed, and a benchmark's repeated fits do."""
    one = _one_step(accountant, q, sigma)
    if accountant == "rdp":  # RdpAccountant.compose: rdp = 0 + steps · rdp₁
        from dp_accounting.rdp import rdp_privacy_accountant  # optional: gpubp[privacy]

        return float(rdp_privacy_accountant.compute_epsilon(one.orders, steps * one.rdp,
                                                            delta)[0])
    import dp_accounting  # optional: gpubp[privacy]; kept out of `import gpubp`

    # PLDAccountant.compose: identity ∘ (one step's PLD)^steps
    pld = dp_accounting.pld.privacy_loss_distribution.identity(
        value_discretization_interval=PLD_INTERVAL).compose(one.self_compose(steps))
    return float(pld.get_epsilon_for_delta(delta))


@functools.lru_cache(maxsize=8)
def _one_step(accountant, q, sigma):
    """The part of the accounting that ``steps`` does not change: the RDP accountant
    after one step (its RDP at every order; the fractional orders' series are most of
    the cost), or the PLD of one step (its discretisation), as ``dp-accounting``'s accountants build them."""
    import dp_accounting  # optional: gpubp[privacy]; kept out of `import gpubp`

    event = dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma))
    # the RDP accountant logs each fractional order it excludes (its series did not
    # converge) through absl; ε is the bound over the orders it keeps
    quiet = _Excluding("failed to converge")
    logging.getLogger("absl").addFilter(quiet)
    try:
        if accountant == "rdp":
            one = dp_accounting.rdp.RdpAccountant()
            one.compose(event, 1)
            return one
        return dp_accounting.pld.privacy_loss_distribution.from_gaussian_mechanism(
            standard_deviation=sigma, value_discretization_interval=PLD_INTERVAL,
            sampling_prob=q,
            neighboring_relation=dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE)
    finally:
        logging.getLogger("absl").removeFilter(quiet)


class _Excluding(logging.Filter):
    """Drops the log records whose message contains ``text``."""

    def __init__(self, text):
        super().__init__()
        self.text = text

    def filter(self, record):
        return self.text not in record.getMessage()


def check_privacy(privacy, group, weights, optimizer):
    """``privacy`` (None or a :class:`DPSGD`) checked against the run's other options."""
    if privacy is None:
        return None
    if not isinstance(privacy, DPSGD):
        raise TypeError(f"privacy must be None or a DPSGD, got {type(privacy).__name__}")
    if weights is not None:
        raise ValueError("privacy=DPSGD(...) takes no sample_weight (each example's "
                         "gradient is its own cost's, clipped alike)")
    return privacy


def schedule(privacy, P_total, batch_size):
    """``(steps per epoch, sampling rate q, expected batch size B)`` of a private run.

    As Opacus: ``q = 1 / steps`` with ``steps = ⌈P_total / batch_size⌉`` and
    ``B = ⌊P_total q⌋`` under Poisson sampling; the shuffled batches of ``batch_size``
    rows otherwise (``q = batch_size / P_total`` for the accountant).
    """
    steps = -(-P_total // batch_size)
    if privacy.poisson:
        q = 1.0 / steps
        return steps, q, max(1, int(P_total * q))
    return steps, batch_size / P_total, batch_size


def train_epoch(net, optimizer, data, order, batch_size, privacy, rng, epoch):
    """One private epoch over the rows ``order`` of ``data = (X, Y)``, drawing the
    batches and the noise from ``rng``; ``epoch``: ``(epochs_done, batches)``, the epochs
    done after this one and the per-batch callbacks
    (:class:`~gpubp.training.batches.BatchCalls`, or None).

    On the ``cpu`` backend (:func:`gpubp.core.private_epoch.supported`) the steps run in
    compiled calls of :data:`NOISE_BYTES` of noise at most (and one per chunk of
    ``batches.every`` batches with per-batch callbacks), each after the draws of its
    steps (made on a second thread during the call before, with a core to spare);
    elsewhere one :func:`~gpubp.core.private_step.private_step` per step. Both
    draw from ``rng`` in the same order (:func:`_draw_step`: the step's Poisson sample,
    then its noise), so they take the same steps.

    ``data = (X, Y, group)`` on the ranks of a data-parallel run (the
    :class:`~gpubp.distributed.ranks.Group`): every rank draws the same batches and the
    same noise (their generators are rank 0's, broadcast at the start), trains on its
    share of each batch's rows (:meth:`~gpubp.distributed.ranks.Local.rows`) by the
    per-kernel step and adds the noise on rank 0 only, so that the sum over the ranks is
    one process's step; the figures are summed over the ranks.

    Returns ``(loss, accuracy, penalty, epsilon)``: the mean cost (with an optimizer's
    penalty, ``α ‖W‖² / 2B`` per step, data-independent, so outside the clipping and
    noise), the accuracy (None for a regressor) of the rows the epoch's batches held, the
    penalty's share of the loss (None without one), and ε after ``epochs_done`` epochs
    (the step count alone decides it, so a resumed run reports the same; a callback that
    stops the run inside the epoch counts the steps taken).
    """
    X, Y, group = data if len(data) == 3 else (*data, LOCAL)
    epochs_done, batches = epoch
    steps, q, _ = schedule(privacy, len(order), batch_size)
    if group.size == 1 and private_epoch.supported(net, optimizer, X):
        figures = _compiled_steps(net, optimizer, (X, Y), order, batch_size, privacy, rng,
                                  batches)
    else:
        figures = _kernel_steps(net, optimizer, (X, Y, group), order, batch_size, privacy,
                                rng, batches)
    total, correct, seen, penalty, done = figures
    if group.size > 1:
        total, correct, seen = group.sum([float(total), float(correct), seen])
    seen = max(seen, 1)
    accuracy = float(correct) / seen if net.is_classifier else None
    penalty = float(penalty) / seen if optimizer.penalty else None
    loss = float(total) / seen + (penalty or 0.0)
    return loss, accuracy, penalty, privacy.epsilon(q, (epochs_done - 1) * steps + done)


def _draw_step(privacy, order, step, batch_size, rng, noise):
    """Step ``step``'s batch (rows of ``order``) and its expected size ``B``; its noise,
    times ``σ C``, drawn into ``noise`` (None: no noise). The one place the epoch draws
    from ``rng``: both paths call it step by step."""
    P_total = len(order)
    _, q, B = schedule(privacy, P_total, batch_size)
    if privacy.poisson:
        batch = order[rng.random(P_total) < q]
    else:
        batch = order[step * batch_size:(step + 1) * batch_size]
    if noise is not None:
        _draw_normal(rng, noise)
        noise *= privacy.noise_multiplier * privacy.max_grad_norm
    return batch, (B if privacy.poisson else len(batch))


def _kernel_steps(net, optimizer, data, order, batch_size, privacy, rng, batches):
    """The epoch's steps by :func:`private_step` (on the ranks of ``data = (X, Y, group)``,
    :func:`private_gradient` on each rank's share and :func:`reduced_update`); returns
    ``(cost sum, correct, rows, penalty sum, steps)`` of this process's rows."""
    X, Y, group = data
    steps = schedule(privacy, len(order), batch_size)[0]
    total, correct, seen, penalty = net.backend.cost_sum(), 0.0, 0, 0.0
    std = privacy.noise_multiplier * privacy.max_grad_norm
    noise = np.empty(net.theta.size, net.dtype) if std else None  # drawn in place
    reduction = None if group.size == 1 else group.reduction_for(net, optimizer)
    # on a GPU with resident data: the shuffled order uploaded once per epoch, a Poisson
    # batch's rows once per step (not once per array gathered)
    device_order = net.backend.batch_order(order, (X, Y))
    step = 0
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        while step < steps:
            batch, B_step = _draw_step(privacy, order, step, batch_size, rng, noise)
            if optimizer.penalty:  # α ‖W‖²/2B: no data in it, so added after the noise
                penalty = penalty + optimizer.begin_batch(net.backend, net.params,
                                                          B_step) * len(batch)
            batch = net.backend.batch_order(batch, (X, Y)) if privacy.poisson else \
                device_order[step * batch_size:(step + 1) * batch_size]
            if reduction is None:
                cost, P = private_step(net, optimizer, X, Y, batch, privacy.max_grad_norm,
                                       noise, B_step)
            else:  # this rank's rows; the noise added once, by rank 0
                share = group.rows(len(batch))
                cost, P = private_gradient(net, X, Y, batch[share], privacy.max_grad_norm,
                                           noise if group.is_root else None, B_step,
                                           share.start if len(batch) else None)
                reduced_update(net, optimizer, reduction)
            total.add(cost, P)
            seen += P
            if net.is_classifier and P:
                correct = correct + net._count_correct(P)
            step += 1
            if batches is not None and batches.after(step - 1, P,
                                                     lambda: (total, correct)):
                break
    return total, correct, seen, penalty, step


def _compiled_steps(net, optimizer, data, order, batch_size, privacy, rng, batches):
    """The epoch's steps in compiled calls (:func:`gpubp.core.private_epoch.train_steps`),
    chunk by chunk; returns as :func:`_kernel_steps`.

    Without per-batch callbacks, and with a core to spare (:func:`_spare_core`), the next
    chunk's draws are made on a second thread while the compiled call of this one runs
    (it releases the GIL, and so does NumPy's generator): the same draws in the same
    order, out of the way of the steps. With callbacks the draws wait for the chunk
    before them, so that a callback that stops the run leaves ``rng`` where the
    per-kernel loop leaves it. The chunking changes no step.
    """
    X, Y = (np.ascontiguousarray(a, dtype=net.dtype) for a in data)
    steps = schedule(privacy, len(order), batch_size)[0]
    std = privacy.noise_multiplier * privacy.max_grad_norm
    ahead = bool(std) and batches is None and _spare_core()
    N = net.theta.size
    per_call = max(1, NOISE_BYTES // (2 * N * net.dtype.itemsize)) if std else steps
    if ahead:  # chunks enough for the draws to hide behind the steps
        per_call = min(per_call, -(-steps // AHEAD_CHUNKS))
    every = batches.every if batches is not None else steps
    per_call = min(per_call, every, steps)
    ends = [0]  # each chunk up to the next callback, or the block's size
    while ends[-1] < steps:
        ends.append(min(steps, ends[-1] + per_call, (ends[-1] // every + 1) * every))
    ends = ends[1:]
    blocks = [np.empty((per_call if std else 0, N), net.dtype) for _ in range(1 + ahead)]
    draw = functools.partial(_draw_chunk, privacy, order, batch_size, rng)
    totals, done = [0.0, 0, 0, 0.0], 0
    with ThreadPoolExecutor(1) if ahead else contextlib.nullcontext() as pool, \
            np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        pending = pool.submit(draw, 0, ends[0], blocks[0]) if ahead else \
            draw(0, ends[0], blocks[0])
        for i, end in enumerate(ends):
            chunk = pending.result() if ahead else pending
            if i + 1 < len(ends):
                args = (end, ends[i + 1], blocks[(i + 1) % len(blocks)])
                pending = pool.submit(draw, *args) if ahead else None
            figures = private_epoch.train_steps(net, optimizer, (X, Y), chunk,
                                                privacy.max_grad_norm)
            for j, figure in enumerate((figures[0], figures[1], int(chunk[1][-1]),
                                        figures[2])):
                totals[j] += figure
            done = end
            if batches is not None and batches.after(end - 1, int(chunk[1][-1]),
                                                     lambda: totals[:2]):
                break
            if not ahead and i + 1 < len(ends):
                pending = draw(*args)
    return totals[0], totals[1], totals[2], totals[3], done


def _spare_core():
    """Whether the machine has a core idle for the draws' thread (the 1-minute load average
    at least one below this process's CPUs); on a loaded machine the second thread only
    waits for one (docs/per_example.md, "Cost")."""
    try:
        return os.getloadavg()[0] + 1 <= len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # no load average or affinity on this platform
        return False


def _draw_chunk(privacy, order, batch_size, rng, first, end, noise):
    """Steps ``first..end - 1`` drawn by :func:`_draw_step` as
    :func:`gpubp.core.private_epoch.train_steps` takes them: ``(rows, bounds, noise,
    expected)``, the noise into the first rows of ``noise`` (0 rows: none)."""
    drawn = [_draw_step(privacy, order, k, batch_size, rng,
                        noise[k - first] if len(noise) else None) for k in range(first, end)]
    bounds = np.cumsum([0] + [len(b) for b, _ in drawn])
    return (np.concatenate([b for b, _ in drawn]), bounds, noise[:end - first],
            [B for _, B in drawn])


def _draw_normal(rng, out):
    """Standard normal draws into ``out``: in its dtype by a ``Generator``; a legacy
    ``RandomState`` (the estimators' ``random_state``) draws float64, then copied."""
    if isinstance(rng, np.random.Generator):
        rng.standard_normal(out.shape, dtype=out.dtype, out=out)
    else:
        out[...] = rng.standard_normal(out.shape)
