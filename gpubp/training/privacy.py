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
cuda; on CUDA the clipping is :mod:`gpubp.kernels.cuda_private`'s kernels), on one
process or on the ranks of ``distributed`` (each clips its own rows; the noise is added
once); a private run does not take the compiled CPU epoch.
"""

import logging
import math
from dataclasses import dataclass

import numpy as np

from gpubp.core.private_step import private_gradient, private_step, reduced_update
from gpubp.data.validation import check_positive
from gpubp.distributed.ranks import LOCAL

ACCOUNTANTS = ("rdp", "pld")


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
        """ε at :attr:`delta` after ``steps`` steps of sampling rate ``sample_rate``."""
        if self.noise_multiplier == 0:
            return math.inf
        import dp_accounting  # optional: gpubp[privacy]; kept out of `import gpubp`

        event = dp_accounting.PoissonSampledDpEvent(
            sample_rate, dp_accounting.GaussianDpEvent(self.noise_multiplier))
        accountant = (dp_accounting.rdp.RdpAccountant() if self.accountant == "rdp"
                      else dp_accounting.pld.PLDAccountant())
        # the RDP accountant logs each fractional order it excludes (its series did not
        # converge) through absl, every epoch; ε is the bound over the orders it keeps
        quiet = _Excluding("failed to converge")
        logging.getLogger("absl").addFilter(quiet)
        try:
            accountant.compose(event, int(steps))
            return float(accountant.get_epsilon(self.delta))
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


def train_epoch(net, optimizer, data, order, batch_size, privacy, rng, epochs_done):
    """One private epoch over the rows ``order`` of ``data = (X, Y)``, drawing the
    batches and the noise from ``rng``.

    ``data = (X, Y, group)`` on the ranks of a data-parallel run (the
    :class:`~gpubp.distributed.ranks.Group`): every rank draws the same batches and the
    same noise (their generators are rank 0's, broadcast at the start), trains on its
    share of each batch's rows (:meth:`~gpubp.distributed.ranks.Local.rows`) and adds the
    noise on rank 0 only, so that the sum over the ranks is one process's step; the
    figures are summed over the ranks.

    Returns ``(loss, accuracy, penalty, epsilon)``: the mean cost (with an optimizer's
    penalty, ``α ‖W‖² / 2B`` per step, data-independent, so outside the clipping and
    noise), the accuracy (None for a regressor) of the rows the epoch's batches held, the
    penalty's share of the loss (None without one), and ε after ``epochs_done`` epochs
    (the step count alone decides it, so a resumed run reports the same).
    """
    X, Y, group = data if len(data) == 3 else (*data, LOCAL)
    P_total, dim = len(order), net.theta.size
    steps, q, B = schedule(privacy, P_total, batch_size)
    std = privacy.noise_multiplier * privacy.max_grad_norm
    total, correct, seen, penalty = net.backend.cost_sum(), 0.0, 0, 0.0
    noise = np.empty(dim, net.dtype) if std else None  # drawn in place, step by step
    reduction = None if group.size == 1 else group.reduction_for(net, optimizer)
    # on a GPU with resident data: the shuffled order uploaded once per epoch, a Poisson
    # batch's rows once per step (not once per array gathered)
    device_order = net.backend.batch_order(order, (X, Y))
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        for step in range(steps):
            if privacy.poisson:
                batch = net.backend.batch_order(order[rng.random(P_total) < q], (X, Y))
            else:
                batch = device_order[step * batch_size:(step + 1) * batch_size]
            B_step = B if privacy.poisson else len(batch)
            if std:
                _draw_normal(rng, noise)
                noise *= std
            if optimizer.penalty:  # α ‖W‖²/2B: no data in it, so added after the noise
                penalty = penalty + optimizer.begin_batch(net.backend, net.params,
                                                          B_step) * len(batch)
            if reduction is None:
                cost, P = private_step(net, optimizer, X, Y, batch, privacy.max_grad_norm,
                                       noise, B_step)
            else:  # this rank's rows; the noise added once, by rank 0
                cost, P = private_gradient(net, X, Y, batch[group.rows(len(batch))],
                                           privacy.max_grad_norm,
                                           noise if group.is_root else None, B_step)
                reduced_update(net, optimizer, reduction)
            total.add(cost, P)
            seen += P
            if net.is_classifier and P:
                correct = correct + net._count_correct(P)
    if group.size > 1:
        total, correct, seen = group.sum([float(total), float(correct), seen])
    seen = max(seen, 1)
    accuracy = float(correct) / seen if net.is_classifier else None
    penalty = float(penalty) / seen if optimizer.penalty else None
    loss = float(total) / seen + (penalty or 0.0)
    return loss, accuracy, penalty, privacy.epsilon(q, epochs_done * steps)


def _draw_normal(rng, out):
    """Standard normal draws into ``out``: in its dtype by a ``Generator``; a legacy
    ``RandomState`` (the estimators' ``random_state``) draws float64, then copied."""
    if isinstance(rng, np.random.Generator):
        rng.standard_normal(out.shape, dtype=out.dtype, out=out)
    else:
        out[...] = rng.standard_normal(out.shape)
