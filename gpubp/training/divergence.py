"""What :func:`gpubp.training.loop.fit` does when an epoch diverges (its loss or its
parameters are not finite): the parameters the epochs started from, and the restoration
of the latest of them whose full training loss is finite, with the
:class:`~gpubp.errors.TrainingDiverged` that says which.
"""

import numpy as np

from gpubp.core.diagnostics import data_sums
from gpubp.errors import TrainingDiverged


class Snapshots:
    """The parameters at the start of the epoch, of the epoch before and of the run, one
    flat copy each: a diverged epoch restores the latest of them whose loss is finite."""

    def __init__(self, net, first_epoch):
        self.net, self.first_epoch = net, first_epoch
        be, theta = net.backend, net.theta
        self.now, self.previous, self.first = (be.empty(theta.shape, theta.dtype)
                                               for _ in range(3))
        be.copyto(self.first, theta)

    def take(self):
        self.now, self.previous = self.previous, self.now  # previous: the last epoch's start
        self.net.backend.copyto(self.now, self.net.theta)

    def candidates(self, epoch):
        found = [(epoch, self.now)]
        if epoch > self.first_epoch:
            found.append((epoch - 1, self.previous))
        if epoch - 1 > self.first_epoch:
            found.append((self.first_epoch, self.first))
        return found


def restore_finite(net, plan, candidates, epoch, diverged):
    """Put back the first of ``candidates`` ((start epoch, flat parameters), latest first)
    whose full training loss is finite (the last one if none is); return the
    :class:`TrainingDiverged` to raise, ``diverged`` being the epoch's ``(loss, lr)``.
    Collective: every rank checks the same ones."""
    X, Y, rows, group = plan.X, plan.Y, plan.rows, plan.group
    epoch_loss, lr = diverged
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
