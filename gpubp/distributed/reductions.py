"""Summing a training step's gradients over the ranks: the strategies, chosen by name.

Every strategy implements the reduction protocol of :mod:`gpubp.core.reduction`
(``begin``, ``delta_scale``, ``layer_done``, ``wait``, ``update``, ``close``), the one the
training step (:func:`gpubp.core.backprop.train_step`) drives; one process uses its
:class:`~gpubp.core.reduction.Identity`. :func:`create_reduction` makes one by name, as
ChainerMN's ``create_communicator`` does, and rejects unknown names with the list of
valid ones (:data:`REDUCTIONS`):

``"shared"``
    Ranks of one machine split each batch's rows and each weight matrix's rows over shared
    parameters (:class:`~gpubp.distributed.split_step.SplitStep`): no gradient is summed.
    Where a step cannot be split it runs ``"slice-sums"``.
``"slice-sums"``
    :class:`SharedMemoryGradientSum` (host arrays, ranks sharing a machine): the ranks'
    gradients live in one MPI-3 shared-memory window and each rank adds up a slice of
    them in place; between machines, one allreduce per slice. Where no two ranks share a
    machine (or machines hold different rank counts) it runs ``"iallreduce"``.
``"iallreduce"``
    :class:`GradientSum`: one non-blocking MPI allreduce per layer, posted as backprop
    produces the layer (DDP's buckets).
``"allreduce"``
    :class:`GradientSum` with ``overlap=False``: one blocking allreduce of the flat
    gradient per step (Horovod's tensor fusion).
``"nccl"``
    :class:`NcclGradientSum`: CuPy device arrays summed through NCCL, in stream order.

``"nccl"`` takes CuPy device arrays only, the first two host arrays only; the MPI ones
take either (device arrays through a CUDA-aware MPI).

Each reduction's ``name`` is the strategy it actually runs.
"""

import time

import numpy as np
from numba import njit

from gpubp.core.layout import layer_views
from gpubp.core.reduction import Reduction
from gpubp.distributed.mpi import _mpi

# name -> what it does (the CLI's help and the benchmark's titles read it)
REDUCTIONS = {
    "shared": "shared memory, batches and weight rows split over the ranks",
    "slice-sums": "shared memory, gradients summed slice by slice",
    "iallreduce": "per-layer Iallreduce",
    "allreduce": "one Allreduce per step",
    "nccl": "NCCL allreduces of device arrays",
}
HOST_REDUCTIONS = ("shared", "slice-sums", "iallreduce", "allreduce")  # NumPy gradients

ALIGN = 16  # slice boundaries fall on multiples of 16 elements: whole 64-byte cache lines
BLOCK = 8192  # elements summed at a time: the slots' blocks stay in L1/L2 between the passes


def _layer_buffers(net):
    """For each layer l (0-based), the contiguous gradient arrays backprop fills for it."""
    if getattr(net, "layer_slices", None) is not None and getattr(net, "nabla_theta", None) is not None:
        return [[net.nabla_theta[s]] for s in net.layer_slices]
    return [[w, b] for w, b in zip(net.nabla_w, net.nabla_b)]


def check_name(name):
    """``name`` if it names a strategy of :data:`REDUCTIONS`, else ``ValueError``."""
    if not isinstance(name, str) or name not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {tuple(REDUCTIONS)}, got {name!r}")
    return name


def on_device(net):
    """Whether ``net``'s arrays are CuPy device arrays (the ``"nccl"`` strategy's)."""
    return getattr(net.backend.xp, "__name__", "") == "cupy"


def create_reduction(name, net, comm, *, optimizer=None, node=None, split=False,
                     nccl_comm=None):
    """The reduction ``name`` (a key of :data:`REDUCTIONS`) of ``net``'s gradients over
    ``comm``, for one run (collective: every rank of ``comm`` calls it alike).

    Parameters
    ----------
    name : str
        ``"shared"``, ``"slice-sums"``, ``"iallreduce"``, ``"allreduce"`` or ``"nccl"``
        (see the module docstring, with the fallbacks of the first two).
    net : Network
    comm : mpi4py communicator
    optimizer : Optimizer, optional
        The run's; an elementwise one lets the ranks of a machine share the parameters.
    node : mpi4py communicator, optional
        The ranks of ``comm`` that share memory with this one (default: MPI's
        ``COMM_TYPE_SHARED`` split; the tests pass others to stand in for machines).
    split : bool
        Whether the run's steps could be split (dense in-memory data on the compiled CPU
        path, which the caller knows): ``"shared"`` needs it.
    nccl_comm : cupy.cuda.nccl.NcclCommunicator, optional
        Over the same ranks; ``"nccl"`` needs it.
    """
    check_name(name)
    if name == "nccl":
        if not on_device(net):
            raise ValueError(f"reduction 'nccl' sums CuPy device arrays, got a network on "
                             f"the {net.backend.name!r} backend; use one of "
                             f"{HOST_REDUCTIONS}")
        return NcclGradientSum(net, nccl_comm)
    if name in ("shared", "slice-sums"):
        if on_device(net):
            raise ValueError(f"reduction {name!r} sums host arrays in shared memory, got "
                             f"CuPy device arrays; use 'nccl' (or 'iallreduce' or "
                             f"'allreduce' through a CUDA-aware MPI)")
        nodes = SharedMemoryGradientSum.nodes(net, comm, node)
        if nodes:
            return SharedMemoryGradientSum(net, comm, *nodes, optimizer,
                                           split=name == "shared" and split)
        name = "iallreduce"  # no two ranks share a machine: messages
    return GradientSum(net, comm, overlap=name == "iallreduce")


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


class GradientSum(Reduction):
    """Sums a training step's gradients over the ranks with MPI messages: ``"iallreduce"``
    (per layer, non-blocking, during backprop) or ``"allreduce"`` (``overlap=False``: the
    flat vector, after it).

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
        super().__init__(net)
        self.comm = comm
        self.overlap = overlap
        self.name = "iallreduce" if overlap else "allreduce"
        self.buffers = _layer_buffers(net)
        self.requests = []

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
        self.name = "nccl"
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
        from gpubp.distributed.split_step import SplitStep

        super().__init__(net, comm, overlap=False)
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
        MPI = _mpi()
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
