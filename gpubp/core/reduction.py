"""The reduction protocol: what a training step does with its gradient before the update.

A data-parallel step (``DESIGN.md`` §5) sums each rank's share of the batch gradient over
the ranks; a one-process step has nothing to add. Both are the same step
(:func:`gpubp.core.backprop.train_step`) driven through one protocol, so no code asks
whether there is a reduction: one process uses :class:`Identity`, and the strategies of
:mod:`gpubp.distributed.reductions` (picked by name) implement the same calls.

The step calls, in order:

``begin(P_local, P_global)``
    Before backprop: this process holds ``P_local`` rows of a batch of ``P_global``.
``delta_scale``
    Read once ``δ^L`` is computed (with ``1/P_local``): the factor that turns it into the
    ``1/P_global`` the sum needs, ``P_local / P_global``. Exactly 1.0 for one process, and
    the step skips the product then.
``layer_done(l)``
    Layer ``l``'s (0-based) gradient is final, the output layer first: a sum may start.
``wait()``
    Return once the gradient holds the sum over the ranks.
``update(optimizer)``
    Apply the summed gradient (ChainerMN's multi-node optimizer: the optimizer itself
    knows nothing of ranks).
``close()``
    The run is over (collective: every rank calls it).

Every reduction is made for one network (``net``) and carries the ``name`` of the
strategy it runs.
"""


class Reduction:
    """Base of the reductions: the protocol of the module docstring, as the identity.

    Parameters
    ----------
    net : Network
        The network whose gradients (``net.nabla_theta``) are reduced.

    Attributes
    ----------
    name : str
        The strategy (``"identity"`` here; see :mod:`gpubp.distributed.reductions`).
    delta_scale : float
    seconds : float
        Time spent communicating (none here).
    """

    name = "identity"

    def __init__(self, net):
        self.net = net
        self.delta_scale = 1.0
        self.seconds = 0.0

    def __repr__(self):
        return f"<{type(self).__name__} {self.name!r}>"

    def begin(self, P_local, P_global):
        """``P_local`` rows of a batch of ``P_global`` are this process's."""

    def layer_done(self, l):
        """Layer ``l``'s (0-based) gradient is final."""

    def wait(self):
        """Return once every gradient holds the sum over the processes."""

    def update(self, optimizer):
        """Apply ``optimizer`` to the (summed) gradient: the network's own update."""
        self.net._update(optimizer)

    def close(self):
        """The run is over; nothing to release."""


class Identity(Reduction):
    """The reduction of one process: the sum over one process is its own gradient.

    ``delta_scale`` stays 1.0 and every call but :meth:`update` does nothing, so the
    one-process step costs what it did before there was a protocol.
    """
