"""Summing a training step's gradients over the ranks of a data-parallel run.

The network (:meth:`gpubp.Network._train_step`) drives a sum through four calls:
``begin(P_local, P_global)`` before backprop, ``delta_scale`` read once ``δ^L`` is
computed, ``layer_done(l)`` as each layer's gradient becomes final (the output layer
first) and ``wait()`` before the update; ``close()`` ends it. :mod:`gpubp.distributed.ranks`
makes one per network and run:

- :class:`SharedMemoryGradientSum` (host arrays, ranks sharing a machine): the ranks'
  gradients live in one MPI-3 shared-memory window and each rank adds up a slice of them
  in place; between machines, one allreduce per slice;
- :class:`GradientSum`: MPI allreduces, per layer (non-blocking) or of the flat vector;
- :class:`NcclGradientSum`: CuPy device arrays, through NCCL.
"""

import time

import numpy as np
from numba import njit

from gpubp.distributed.mpi import _mpi

ALIGN = 16  # slice boundaries fall on multiples of 16 elements: whole 64-byte cache lines
BLOCK = 8192  # elements summed at a time: the slots' blocks stay in L1/L2 between the passes


def _layer_buffers(net):
    """For each layer l (0-based), the contiguous gradient arrays backprop fills for it."""
    if getattr(net, "layer_slices", None) is not None and getattr(net, "nabla_theta", None) is not None:
        return [[net.nabla_theta[s]] for s in net.layer_slices]
    return [[w, b] for w, b in zip(net.nabla_w, net.nabla_b)]


class GradientSum:
    """Sums a training step's gradients over the ranks, on host (NumPy) buffers.

    The network calls :meth:`begin` with its row counts, :meth:`layer_done` as backprop
    finishes each layer (from the output layer down) and :meth:`wait` before the update.

    Attributes
    ----------
    delta_scale : float
        ``P_local / P_global``: the factor that turns the ``1/P_local`` the output error
        was computed with into the ``1/P_global`` the sum needs.
    seconds : float
        Time spent posting and waiting for the allreduces (the communication share of a
        step is this over the step time).
    """

    def __init__(self, net, comm, overlap=True):
        self.net = net
        self.comm = comm
        self.overlap = overlap
        self.buffers = _layer_buffers(net)
        self.requests = []
        self.delta_scale = 1.0
        self.seconds = 0.0

    def begin(self, P_local, P_global):
        self.delta_scale = P_local / P_global

    def layer_done(self, l):
        """Layer ``l``'s (0-based) gradient is final: start summing it."""
        if not self.overlap:
            return
        MPI = _mpi()
        t = time.perf_counter()
        for buf in self.buffers[l]:
            self.requests.append(self.comm.Iallreduce(MPI.IN_PLACE, buf, op=MPI.SUM))
        MPI.Request.Testall(self.requests)  # lets MPI progress the sums posted so far
        self.seconds += time.perf_counter() - t

    def update(self, optimizer):
        """Apply the summed gradient (after :meth:`wait`): the network's own update."""
        self.net._update(optimizer)

    def close(self):
        """The run is over (collective: every rank calls it); nothing to release here."""

    def wait(self):
        """Return once every gradient holds the sum over the ranks."""
        MPI = _mpi()
        t = time.perf_counter()
        if self.overlap:
            MPI.Request.Waitall(self.requests)
            self.requests.clear()
        else:
            flat = getattr(self.net, "nabla_theta", None)
            for buf in [flat] if flat is not None else [b for bs in self.buffers for b in bs]:
                self.comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
        self.seconds += time.perf_counter() - t


class NcclGradientSum(GradientSum):
    """Sums gradients on CuPy device buffers with NCCL, in stream order, no host copy.

    Each layer's ``ncclAllReduce`` is enqueued on CuPy's current stream right after the
    kernels that wrote that layer's gradient, so the update kernels queued after it read
    the sums: :meth:`wait` has nothing to wait for on the host.
    """

    def __init__(self, net, nccl_comm):
        super().__init__(net, comm=None, overlap=True)
        self.nccl_comm = nccl_comm

    def layer_done(self, l):
        import cupy
        from cupy.cuda import nccl

        types = {np.dtype(np.float32): nccl.NCCL_FLOAT32, np.dtype(np.float64): nccl.NCCL_FLOAT64}
        stream = cupy.cuda.get_current_stream().ptr
        for buf in self.buffers[l]:
            self.nccl_comm.allReduce(buf.data.ptr, buf.data.ptr, buf.size, types[buf.dtype],
                                     nccl.NCCL_SUM, stream)

    def wait(self):
        pass


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


class SharedMemoryGradientSum(GradientSum):
    """Sums host gradients through memory the ranks of a machine share (MPI-3 windows).

    One window holds a slot of ``N`` elements per rank of a node, and each rank's
    ``net.nabla_theta`` moves into its own slot for the run, so that backprop writes
    straight into shared memory. Summing then needs no message: after a barrier, rank
    ``k`` of the node's ``R`` adds up slice ``k`` of every slot, in rank order. A
    two-rank ``MPI_Allreduce`` through shared memory instead copies the vector into and
    out of MPI's buffers (784-1024-1024-10 in float32: 1.15 ms against 0.13 ms for the
    slice sums, on the 2-core development machine).

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

    Where the run can split its batches instead (one machine, see :mod:`gpubp.distributed.split_step`,
    then :attr:`node_step` is set), no per-rank slot is made: the parameters and state are
    shared as above, ``slots`` holds one node-wide gradient buffer (none with plain SGD)
    and ``nabla_theta`` stays each rank's own.

    Use :meth:`create`, which answers None where the scheme does not apply; :meth:`close`
    moves everything back to each rank's own memory, identical on every rank.
    """

    def __init__(self, net, comm, node, cross, optimizer, node_steps=False):
        from gpubp.distributed.split_step import NodeStep

        super().__init__(net, comm, overlap=False)
        n, self.dtype = net.nabla_theta.size, np.dtype(net.nabla_theta.dtype)
        self.node, self.cross = node, cross
        self.windows = []
        self.span = slice(*_bounds(n, node.Get_rank(), node.Get_size()))
        self.shares_parameters = optimizer is not None and optimizer.elementwise
        split = node_steps and NodeStep.applies(self, net, optimizer)
        if split:
            # no gradient to sum: none stored with plain SGD, else one buffer for the node
            # (each rank writes its rows of it); nabla_theta stays each rank's own
            self.slots = () if NodeStep.fuses(optimizer) else self.allocate(n, 1)
            self._gradients = None
        else:
            self.slots = self.allocate(n, node.Get_size())
            self._gradients = net._move_buffer("nabla_theta", self.slots[node.Get_rank()])
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
            self._parameters = net._move_buffer("theta", theta, copy=False)
            self.optimizer = optimizer
            self._state = optimizer._move_state(state, copy=False)
        self.node_step = NodeStep(self) if split else None

    def allocate(self, n, count):
        """``count`` arrays of ``n`` elements in a new window over the node: one per rank
        (``count`` = the node's size) or all of them held by node rank 0."""
        MPI = _mpi()
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

    @classmethod
    def create(cls, net, comm, optimizer=None, node=None, node_steps=False):
        """The shared-memory sum for ``net`` over ``comm``, or None where it does not apply.

        Parameters
        ----------
        net : Network
            Its gradients must be NumPy arrays (the ``cpu`` and ``reference`` backends).
        comm : mpi4py communicator
        optimizer : Optimizer, optional
            The run's; an elementwise one lets the node share the parameters.
        node : mpi4py communicator, optional
            The ranks of ``comm`` that share memory with this one (default: MPI's
            ``COMM_TYPE_SHARED`` split; the tests pass others to stand in for nodes).
        node_steps : bool
            Whether the run may split each batch over the node's ranks
            (:mod:`gpubp.distributed.split_step`, then :attr:`node_step`) instead of summing their
            gradients, where that applies (dense in-memory data, which the caller knows).

        Returns None (every rank the same answer, collectively decided) when no two ranks
        share a node, or when nodes hold different numbers of ranks.
        """
        if not isinstance(net.nabla_theta, np.ndarray):
            return None
        MPI = _mpi()
        if node is None:
            node = comm.Split_type(MPI.COMM_TYPE_SHARED, key=comm.Get_rank())
        else:
            node = node.Dup()  # freed by close() like the split
        sizes = comm.allgather(node.Get_size())
        if max(sizes) == 1 or len(set(sizes)) != 1:
            node.Free()
            return None
        cross = None
        if node.Get_size() < comm.Get_size():
            cross = comm.Split(color=node.Get_rank(), key=comm.Get_rank())
        return cls(net, comm, node, cross, optimizer, node_steps)

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
            MPI = _mpi()
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
            self.net._move_buffer("nabla_theta", self._gradients)
        if self.shares_parameters:
            self.net._move_buffer("theta", self._parameters)
            self.optimizer._move_state(self._state)
        self.slots = ()
        self.fence()  # every rank has its copy before the memory goes
        for window in self.windows:
            window.Unlock_all()
            window.Free()
        for comm in (self.cross, self.node):
            if comm is not None:
                comm.Free()
