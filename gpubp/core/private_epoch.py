"""DP-SGD steps in one compiled call on the CPU (:mod:`gpubp.kernels.cpu_private`).

The compiled twin of a run of :func:`gpubp.core.private_step.private_step` calls: the
same clipping, noise, division by the expected batch size and optimizer step, for a
chunk of steps whose batches (any sizes, Poisson samples) and noise the caller drew
(:mod:`gpubp.training.privacy`). :func:`supported` says when a private epoch takes it:
the compiled plain epoch's conditions (:func:`gpubp.core.compiled.supported`), a dense,
in-memory ``X``.
"""

import numpy as np

from gpubp.core import compiled
from gpubp.data import mapped
from gpubp.data.inputs import is_sparse


def supported(net, optimizer, X):
    """Whether a private epoch of ``net`` on ``X`` runs in compiled calls."""
    return not mapped.is_mapped(X) and not is_sparse(X) and compiled.supported(net, optimizer)


def train_steps(net, optimizer, data, steps, max_grad_norm):
    """The private steps ``steps`` in one compiled call; returns their figures.

    Parameters
    ----------
    net : Network
        On the ``cpu`` backend (see :func:`supported`).
    optimizer : SGD, Adam, AdamW or RMSprop
    data : (ndarray, ndarray)
        ``X`` (P_total, n_0) and ``Y`` (P_total, n_L), C-contiguous, of ``net.dtype``.
    steps : (rows, bounds, noise, expected)
        ``rows`` int64, the steps' batches one after another, batch ``k`` being
        ``rows[bounds[k]:bounds[k + 1]]`` (``bounds`` (K + 1,)); ``noise`` (K, N) of
        ``net.dtype``, the draws of ``N(0, σ² C²)`` laid out as ``theta`` (0 rows: none);
        ``expected`` (K,), each step's divisor ``B``.
    max_grad_norm : float
        ``C``.

    Returns
    -------
    cost_sum : float
        ``Σ_k P_k C_k``, the batches' costs (without the penalty).
    correct : int
    penalty_sum : float
    """
    from gpubp.kernels import cpu_private  # keeps import gpubp light: Numba's CPU kernels load with the compiled epoch
    from gpubp.kernels.epoch_args import Batches

    X, Y = data
    rows, bounds, noise, expected = steps
    largest = int(np.diff(bounds).max()) if len(bounds) > 1 else 0
    net._workspace(max(largest, 1))
    if optimizer.state is None:
        optimizer.initialize(net.backend, net.params)
    # dropout: the epoch's key and its next batch, one per nonempty batch (private_step)
    stream = getattr(net, "_dropout_stream", None) or [0, 0]
    batches = Batches.of(X, Y, np.ascontiguousarray(rows, np.int64), max(largest, 1),
                         dropout_key=stream[0], first_batch=stream[1])
    offsets, codes = compiled.layout(net)
    private = cpu_private.Private.of(bounds, noise, expected, max_grad_norm,
                                     np.empty(net._capacity, net.dtype))
    with compiled.BlasThreads(compiled.blas_threads(net.sizes, max(largest, 1))):
        cost_sum, correct, step, penalty_sum, drawn = cpu_private.train_private(
            batches, compiled.buffers(net), offsets, codes,
            compiled._update(net, optimizer, len(bounds) - 1), private)
    optimizer.iterations = int(step)
    stream[1] += int(drawn)
    return float(cost_sum), int(correct), float(penalty_sum)
