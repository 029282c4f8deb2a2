"""The ``"slice-sums"`` reduction (and the memory of ``"shared"``): ranks of a machine sum
their gradients in memory they share, through MPI-3 shared-memory windows.

:func:`gpubp.distributed.reductions.create_reduction` makes a
:class:`SharedMemoryGradientSum` where :meth:`SharedMemoryGradientSum.nodes` finds ranks
sharing a machine; :func:`move_flat` moves a network's flat buffers into (and out of) the
windows.
"""

import time

import numpy as np
from numba import njit

from gpubp.core.layout import layer_views
from gpubp.core.reduction import Reduction
from gpubp.distributed.mpi import import_mpi
from gpubp.distributed.split_step import SplitStep

ALIGN = 16  # slice boundaries fall on multiples of 16 elements: whole 64-byte cache lines
BLOCK = 8192  # elements summed at a time: the slots' blocks stay in L1/L2 between the passes


def move_flat(net, name, flat, copy=True):
    """Make ``flat`` hold ``net.theta`` or ``net.nabla_theta`` (``name``) from now on.

    The values are copied into ``flat`` (shape (N,), the dtype, on the backend; unless
    ``copy`` is False: it holds them already), which becomes the attribute, with
    ``W``/``b`` (or ``nabla_w``/``nabla_b``) as its views: the shared-memory strategies
    put them in memory the ranks of a machine share. Returns the previous buffer, to move
    them back with.
    """
    current = getattr(net, name)
    if flat.shape != current.shape or flat.dtype != current.dtype:
        raise ValueError(f"flat must have shape {current.shape} and dtype "
                         f"{current.dtype}, got {flat.shape} {flat.dtype}")
    if copy:
        net.backend.copyto(flat, current)
    setattr(net, name, flat)
    views = layer_views(flat, net.sizes)
    if name == "theta":
        net.W, net.b = views
    else:
        net.nabla_w, net.nabla_b = views
    return current


@njit(cache=True, error_model="numpy")
def _add_up(slots, lo, hi, add, spread):
    """On ``[lo, hi)``, block by block: with ``add``, ``slots[0] = Σ_k slots[k]`` (in rank
    order); with ``spread``, ``slots[0]`` copied into the other slots, each block while
    it is still in cache."""
    first = slots[0]
    for start in range(lo, hi, BLOCK):
        stop = min(start + BLOCK, hi)
        if add:
            for k in range(1, len(slots)):
                other = slots[k]
                for i in range(start, stop):
                    first[i] += other[i]
        if spread:
            for k in range(1, len(slots)):
                other = slots[k]
                for i in range(start, stop):
                    other[i] = first[i]


def _bounds(n, k, R):
    """Slice ``k`` of ``R`` of ``n`` elements, its ends on multiples of :data:`ALIGN`."""
    def end(j):
        return n if j == R else min(n, (n * j // R) // ALIGN * ALIGN)
    return end(k), end(k + 1)


class SharedMemoryGradientSum(Reduction):
    """Sums host gradients through memory the ranks of a machine share (MPI-3 windows).

    One window holds a slot of ``N`` elements per rank of a node, and each rank's
    ``net.nabla_theta`` moves into its own slot for the run, so that backprop writes
    straight into shared memory. Summing then needs no message: after a barrier, rank
    ``k`` of the node's ``R`` adds up slice ``k`` of every slot, in rank order. A
    two-rank ``MPI_Allreduce`` through shared memory instead copies the vector into and
    out of MPI's buffers, many times slower (docs/performance.md, "Slice sums").

    With an elementwise optimizer (SGD, Adam), the node shares the parameters and the
    optimizer state as well: one copy of ``theta`` (and of each state buffer) per node,
    and rank ``k`` updates slice ``k`` of it right after summing it. A second barrier
    and every rank sees the new parameters. Nothing is copied back into the slots, and
    the node's ranks read one copy of the weights instead of ``R`` (they compete for one
    cache). ``nabla_theta`` then holds each rank's own gradient: only slice ``k`` of slot
    0 holds the sum. Other optimizers keep their own parameters: the sum of slice ``k``
    is copied into every slot and every rank updates all of its parameters.

    Across nodes of equal rank counts, slice ``k`` is also allreduced between the ranks
    ``k`` of every node (``cross``), between the local sum and its use: the hierarchical
    allreduce of Horovod and NCCL, each link carrying ``N/R`` elements.

    With ``split`` (the ``"shared"`` strategy), where the run can split its batches instead
    (one machine, see :mod:`gpubp.distributed.split_step`; then :attr:`split_step` is
    set and :attr:`name` is ``"shared"``, else ``"slice-sums"``), no per-rank slot is
    made: the parameters and state are shared as above, ``slots`` holds one node-wide
    gradient buffer (none with plain SGD) and ``nabla_theta`` stays each rank's own.

    :func:`create_reduction` makes one where :meth:`nodes` finds ranks sharing a
    machine; :meth:`close` moves everything back to each rank's own memory, identical on
    every rank.
    """

    def __init__(self, net, comm, node, cross, optimizer, split=False):
        super().__init__(net)
        self.comm = comm
        n, self.dtype = net.nabla_theta.size, np.dtype(net.nabla_theta.dtype)
        self.node, self.cross = node, cross
        self.windows = []
        self.span = slice(*_bounds(n, node.Get_rank(), node.Get_size()))
        self.shares_parameters = optimizer is not None and optimizer.elementwise
        split = split and SplitStep.applies(self, net, optimizer)
        if split:
            # no gradient to sum: none stored with plain SGD, else one buffer for the node
            # (each rank writes its rows of it); nabla_theta stays each rank's own
            self.slots = () if SplitStep.fuses(optimizer) else self.allocate(n, 1)
            self._gradients = None
        else:
            self.slots = self.allocate(n, node.Get_size())
            self._gradients = move_flat(net, "nabla_theta", self.slots[node.Get_rank()])
        if self.shares_parameters:
            if optimizer.state is None:
                optimizer.initialize(net.backend, net.params)
            (theta,) = self.allocate(n, 1)
            state = {key: self.allocate(n, 1)[0] for key in optimizer.flat_state}
            if node.Get_rank() == 0:  # every rank holds the same values (broadcast)
                theta[...] = net.theta
                for key, buf in state.items():
                    buf[...] = optimizer.flat_state[key]
            self.fence()
            self._parameters = move_flat(net, "theta", theta, copy=False)
            self.optimizer = optimizer
            self._state = optimizer._move_state(state, copy=False)
        self.split_step = SplitStep(self) if split else None
        self.name = "shared" if split else "slice-sums"

    def allocate(self, n, count):
        """``count`` arrays of ``n`` elements in a new window over the node: one per rank
        (``count`` = the node's size) or all of them held by node rank 0."""
        MPI = import_mpi()
        mine = n if count > 1 or self.node.Get_rank() == 0 else 0
        window = MPI.Win.Allocate_shared(mine * self.dtype.itemsize, self.dtype.itemsize,
                                         comm=self.node)
        # a passive-target epoch for the run: Sync() orders this rank's loads and stores
        # against the other ranks' around each barrier (MPI-3's unified memory model)
        window.Lock_all(MPI.MODE_NOCHECK)
        self.windows.append(window)
        return tuple(np.frombuffer(window.Shared_query(k)[0], self.dtype, count=n)
                     for k in range(count))

    def fence(self):
        """Barrier over the node, every window's stores visible to every rank after it."""
        for window in self.windows:
            window.Sync()
        self.node.Barrier()
        for window in self.windows:
            window.Sync()

    def barrier(self):
        """:meth:`fence`, its wait counted as the run's communication time."""
        t = time.perf_counter()
        self.fence()
        self.seconds += time.perf_counter() - t

    @staticmethod
    def nodes(net, comm, node=None):
        """``(node, cross)`` communicators of the scheme for ``net`` over ``comm``, or ``()``
        where it does not apply (every rank the same answer, collectively decided): the
        gradients are not NumPy arrays (the ``cpu`` and ``reference`` backends'), no two
        ranks share a node, or nodes hold different numbers of ranks.

        ``node``: the ranks of ``comm`` that share memory with this one (default: MPI's
        ``COMM_TYPE_SHARED`` split); ``cross``: the ranks of the same node rank on every
        node (None on one node).
        """
        if not isinstance(net.nabla_theta, np.ndarray):
            return ()
        MPI = import_mpi()
        if node is None:
            node = comm.Split_type(MPI.COMM_TYPE_SHARED, key=comm.Get_rank())
        else:
            node = node.Dup()  # freed by close() like the split
        sizes = comm.allgather(node.Get_size())
        if max(sizes) == 1 or len(set(sizes)) != 1:
            node.Free()
            return ()
        cross = None
        if node.Get_size() < comm.Get_size():
            cross = comm.Split(color=node.Get_rank(), key=comm.Get_rank())
        return node, cross

    def begin(self, P_local, P_global):
        self.delta_scale = P_local / P_global

    def layer_done(self, l):
        pass

    def wait(self):
        """Sum slice ``k``: into slot 0 (sharing parameters) or into every slot."""
        t = time.perf_counter()
        self.fence()  # every slot holds its rank's gradient
        lo, hi = self.span.start, self.span.stop
        spread = not self.shares_parameters
        if self.cross is None:
            _add_up(self.slots, lo, hi, True, spread)
        else:  # this node's sum of the slice, then the nodes' sum of it
            _add_up(self.slots, lo, hi, True, False)
            MPI = import_mpi()
            self.cross.Allreduce(MPI.IN_PLACE, self.slots[0][lo:hi], op=MPI.SUM)
            _add_up(self.slots, lo, hi, False, spread)
        if spread:
            self.fence()  # every slot holds the whole sum
        self.seconds += time.perf_counter() - t

    def update(self, optimizer):
        """Slice ``k`` of the shared parameters, then a barrier (or every rank its own)."""
        if not self.shares_parameters:
            self.net._update(optimizer)
            return
        if optimizer is not self.optimizer:
            raise RuntimeError("the optimizer of a data-parallel run changed during it")
        optimizer.step(self.net.backend, self.net.params, None, theta=self.net.theta,
                       nabla_theta=self.slots[0], span=self.span)
        self.barrier()  # every slice updated: the next forward pass reads them

    def close(self):
        """Move everything back to each rank's own memory and free the windows
        (collective: every rank of ``comm`` calls it)."""
        self.fence()
        if self._gradients is not None:
            move_flat(self.net, "nabla_theta", self._gradients)
        if self.shares_parameters:
            move_flat(self.net, "theta", self._parameters)
            self.optimizer._move_state(self._state)
        self.slots = ()
        self.fence()  # every rank has its copy before the memory goes
        for window in self.windows:
            window.Unlock_all()
            window.Free()
        for comm in (self.cross, self.node):
            if comm is not None:
                comm.Free()
