"""Dropout of a Network: its rates, the run's stream of mask keys, and fixed masks.

``Network(..., dropout=p)`` (one rate for every hidden layer, or one per hidden layer)
trains with inverted dropout: in a training step, hidden layer ``l`` keeps each of its
activations with probability ``1 − p_l`` and scales the kept ones by ``1/(1 − p_l)``;
``forward``, ``predict``, ``evaluate``, ``loss`` and ``gradients`` (without a
``dropout_mask``) see the whole network. The masks, and how every target draws the same
ones, are :mod:`gpubp.kernels.dropout`.

The keys. :func:`begin_epoch` draws one 63-bit ``epoch_key`` per epoch from the run's
generator (the one that shuffles, after the shuffle; nothing is drawn without dropout,
so such runs are unchanged), and :func:`step_drops` hands each training step the
:class:`~gpubp.kernels.dropout.Drop` of every hidden layer for batch ``k`` of the epoch,
counting the batches. The compiled CPU epoch takes the key and its first batch instead
and draws the same masks inside (:mod:`gpubp.core.compiled`). A checkpoint records the
generator, so a resumed run draws the same keys: resuming stays exact.

Data-parallel runs. Every rank draws the same keys (the ranks' generators are the same)
and counts every batch, its share empty or not; a mask entry is a function of the row's
place in the *global* batch, so rank ``r`` of ``R`` drops, in its share (the rows
``r P // R ..`` of :meth:`gpubp.distributed.ranks.Group.rows`), exactly the units the
single process drops in those rows (:func:`gpubp.kernels.dropout.from_row`): the run
equals the one-process run, on any number of ranks.
"""

import numbers

import numpy as np

from gpubp.kernels import dropout as masks


def check_rates(dropout, n_hidden):
    """The dropout rate of each hidden layer, ``0 <= p < 1`` (one number is repeated); every
    hidden activation takes dropout."""
    if isinstance(dropout, (numbers.Real, np.floating)) and not isinstance(dropout, bool):
        if dropout and not n_hidden:
            raise ValueError(f"dropout applies to hidden layers, and sizes has none, got "
                             f"dropout={dropout!r}")
        rates = [dropout] * n_hidden
        name = "dropout"
    elif isinstance(dropout, (list, tuple, np.ndarray)):
        rates = list(dropout)
        if len(rates) != n_hidden:
            raise ValueError(f"dropout must be one rate or {n_hidden} (a list, one per hidden "
                             f"layer of sizes), got {len(rates)}: {rates}")
        name = None
    else:
        raise TypeError(f"dropout must be a rate in [0, 1) or a list of them (one per hidden "
                        f"layer), got {dropout!r}")
    for i, p in enumerate(rates):
        where = name or f"dropout[{i}]"
        if isinstance(p, bool) or not isinstance(p, (numbers.Real, np.floating)):
            raise TypeError(f"{where} must be a number in [0, 1), got {p!r}")
        if not 0 <= p < 1:
            raise ValueError(f"{where} must be in [0, 1) (the probability of dropping a "
                             f"unit), got {p!r}")
    return [float(p) for p in rates]


def active(net):
    """Whether ``net`` drops any unit in training."""
    return any(net.dropout)


def begin_epoch(net, rng, rank=0, size=1):
    """Draw the epoch's key from ``rng`` (a Generator, or a RandomState) when ``net`` has
    dropout, and count its batches from 0; ``rank`` of ``size``: this process's place in a
    data-parallel run (its share of each batch, as ``Group.rows``)."""
    if not active(net):
        net._dropout_stream = None
        return
    draw = getattr(rng, "integers", None) or rng.randint
    net._dropout_stream = [int(draw(0, 2**63, dtype=np.int64)), 0, int(rank), int(size)]


def next_step(net, P_global, first_row=None):
    """``(epoch_key, batch, first_row)`` of the next training step, counting it: the
    epoch's key, the batch's place in the epoch, and the global row of this process's
    first row in a batch of ``P_global`` rows (``first_row``: given by the caller, else
    this rank's share's start); None outside a run with dropout."""
    stream = getattr(net, "_dropout_stream", None)
    if stream is None:
        return None
    epoch_key, batch, rank, size = stream
    stream[1] = batch + 1
    return epoch_key, batch, rank * P_global // size if first_row is None else first_row


def layer_drops(net, step_key):
    """The drop of each hidden layer (None without dropout) in the step of ``step_key``."""
    return [masks.layer_drop(step_key, l, p) for l, p in enumerate(net.dropout, start=1)]


def step_drops(net, P_global=0, first_row=None):
    """The hidden layers' drops of the next training step, for this process's rows of a
    batch of ``P_global`` rows (see :func:`next_step`); None outside a run with dropout.
    Every process calls it once per batch, whether it has rows of it or not."""
    step = next_step(net, P_global, first_row)
    if step is None:
        return None
    epoch_key, batch, first_row = step
    drops = layer_drops(net, masks.bits(epoch_key, batch))
    return [None if d is None else masks.from_row(d, first_row, n)
            for d, n in zip(drops, net.sizes[1:-1])]


def check_masks(net, dropout_mask, P):
    """``dropout_mask`` of :meth:`gpubp.Network.gradients`: one 0/1 array ``(P, n_l)`` (or
    None: no dropout there) per hidden layer; returns them as boolean arrays (None for
    None)."""
    if dropout_mask is None:
        return None
    n_hidden = net.L - 1
    if not isinstance(dropout_mask, (list, tuple)) or len(dropout_mask) != n_hidden:
        raise ValueError(f"dropout_mask must be a list of {n_hidden} arrays (one per hidden "
                         f"layer, or None), got {type(dropout_mask).__name__} of "
                         f"{len(dropout_mask) if hasattr(dropout_mask, '__len__') else '?'}")
    checked = []
    for l, m in enumerate(dropout_mask):
        if m is None:
            checked.append(None)
            continue
        m = np.asarray(m)
        want = (P, net.sizes[l + 1])
        if m.shape != want:
            raise ValueError(f"dropout_mask[{l}] must have shape {want}, got {m.shape}")
        if not np.isin(m, (0, 1)).all():
            raise ValueError(f"dropout_mask[{l}] must hold 0 (dropped) or 1 (kept) only, got "
                             f"values {np.unique(m)[:5]}")
        checked.append(m != 0)
    return checked


def fixed_drops(net, checked, rows):
    """The drops of the fixed masks ``checked`` (:func:`check_masks`) for ``rows``
    (a slice); None when there are none."""
    if checked is None:
        return None
    return [None if m is None else masks.fixed_drop(m[rows], p)
            for m, p in zip(checked, net.dropout)]


def trace_drops(net, dropout_mask, P):
    """The drops and boolean masks (None per layer without) of :func:`gpubp.core.trace.trace`:
    the fixed ``dropout_mask``, else those of a training step drawn as the first batch of an
    epoch is (advancing ``net.rng`` as that epoch would); ``(None, None)`` without dropout."""
    checked = check_masks(net, dropout_mask, P)
    if checked is not None:
        return fixed_drops(net, checked, slice(0, P)), checked
    if not active(net):
        return None, None
    epoch_key = int(net.rng.integers(0, 2**63, dtype=np.int64))
    drops = layer_drops(net, masks.bits(epoch_key, 0))
    return drops, [None if d is None else masks.kept(d, (P, n))
                   for d, n in zip(drops, net.sizes[1:-1])]
