"""Per-batch callbacks: when :meth:`Callback.on_batch_end` is due, and the compiled epoch in
chunks between those calls.

A callback that overrides ``on_batch_end`` is called after every ``batch_every`` batches
of an epoch (its attribute, default 1). The compiled CPU epoch then runs as one compiled
call per chunk of ``k`` batches, ``k`` the greatest common divisor of those callbacks'
``batch_every``, with the calls due between the chunks; a run without per-batch callbacks
keeps one call per epoch. Splitting the epoch changes none of its steps (the chunks
take the same batches in the same order), only adds a Python round trip per chunk; the
measured cost: docs/performance.md, "Per-batch callbacks".
"""

import math
import numbers

import numpy as np

from gpubp.core import compiled
from gpubp.training.callbacks import Callback


def wants_batches(cb):
    """Whether ``cb`` has an ``on_batch_end`` of its own (a subclass's, or a LambdaCallback's)."""
    return "on_batch_end" in vars(cb) or type(cb).on_batch_end is not Callback.on_batch_end


class BatchCalls:
    """The per-batch callbacks of a run, and the figures of the batches since their last call.

    Parameters
    ----------
    callbacks : list of Callback
        Those of the run; the ones without ``on_batch_end`` are left out.

    Attributes
    ----------
    every : int
        Batches per chunk: the gcd of the callbacks' ``batch_every`` (0: none wants batches).
    rows_done : int
        Rows of the current epoch trained so far.
    stopped : bool
        A callback stopped the run inside the current epoch.
    """

    def __init__(self, callbacks):
        self.callbacks = [cb for cb in callbacks if wants_batches(cb)]
        for cb in self.callbacks:
            every = getattr(cb, "batch_every", 1)
            if isinstance(every, bool) or not isinstance(every, numbers.Integral) or every < 1:
                raise ValueError(f"{type(cb).__name__}.batch_every must be a positive int, "
                                 f"got {every!r}")
        self.every = math.gcd(*(int(getattr(cb, "batch_every", 1)) for cb in self.callbacks)) \
            if self.callbacks else 0
        self.run = None
        self.rows_done, self.stopped, self._seen = 0, False, (0.0, 0.0, 0)

    def __bool__(self):
        return bool(self.callbacks)

    def begin(self, run):
        """Start an epoch of ``run`` (the :class:`~gpubp.training.callbacks.Run`)."""
        self.run, self.rows_done, self.stopped, self._seen = run, 0, False, (0.0, 0.0, 0)

    def due(self, batch):
        """Whether a callback is due after 0-based ``batch`` of the epoch."""
        return (batch + 1) % self.every == 0

    def after(self, batch, rows, totals):
        """Account for ``rows`` more rows ending with ``batch``; call the callbacks due.

        ``totals()`` gives the epoch's ``(cost_sum, correct)`` so far; it is called only
        when a callback is due (on a GPU it waits for the device). Returns whether a
        callback stopped the run.
        """
        self.rows_done += rows
        if not self.due(batch):
            return False
        cost_sum, correct = (float(t) for t in totals())
        seen_cost, seen_correct, seen_rows = self._seen
        n = self.rows_done - seen_rows
        self._seen = (cost_sum, correct, self.rows_done)
        net = self.run.net
        n_div = max(n, 1)  # 0 rows (empty Poisson batches of DP-SGD): figures of 0
        logs = {"loss": (cost_sum - seen_cost) / n_div, "size": n,
                "step": int(self.run.optimizer.iterations)}
        if net.is_classifier:
            logs["accuracy"] = (correct - seen_correct) / n_div
        for cb in self.callbacks:
            if (batch + 1) % getattr(cb, "batch_every", 1) == 0:
                cb.on_batch_end(self.run, batch, dict(logs))
        self.stopped = self.run.stop_training
        return self.stopped

    def compiled_epoch(self, net, optimizer, X, Y, order, batch_size, weights=None):
        """:func:`gpubp.core.compiled.train_epoch` in chunks of :attr:`every` batches, the
        callbacks due between them; returns the same ``(cost_sum, correct, penalty_sum)``
        over the rows trained (all of ``order`` unless a callback stopped the run);
        ``weights``: the rows' sample weights, or None."""
        X = np.ascontiguousarray(X, dtype=net.dtype)  # once, not once per chunk
        Y = np.ascontiguousarray(Y, dtype=net.dtype)
        totals = [0.0, 0, 0.0]
        chunk = self.every * batch_size
        for start in range(0, len(order), chunk):
            rows = order[start:start + chunk]
            for i, figure in enumerate(compiled.train_epoch(net, optimizer, X, Y, rows,
                                                            batch_size, weights)):
                totals[i] += figure
            last_batch = (start + len(rows) - 1) // batch_size
            if self.after(last_batch, len(rows), lambda: totals[:2]):
                break
        return tuple(totals)
