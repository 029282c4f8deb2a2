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
    :class:`~gpubp.distributed.shared_memory.SharedMemoryGradientSum` (host arrays, ranks
    sharing a machine): the ranks'
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
    :class:`~gpubp.distributed.nccl.NcclGradientSum`: CuPy device arrays summed through
    NCCL on a stream of its own, overlapping backprop. Where NCCL cannot run (ranks
    sharing a GPU, no libnccl) the group falls back, with a warning, to
    :class:`~gpubp.distributed.nccl.HostStagedGradientSum` (``"allreduce"`` through the
    host).

``"nccl"`` takes CuPy device arrays only, the first two host arrays only; the MPI ones
take either (device arrays through a CUDA-aware MPI).

Each reduction's ``name`` is the strategy it actually runs.
"""

import time

import numpy as np

from gpubp.core.reduction import Reduction
from gpubp.distributed.mpi import import_mpi
from gpubp.distributed.nccl import HostStagedGradientSum, NcclGradientSum, nccl_unusable  # noqa: F401
from gpubp.distributed.shared_memory import SharedMemoryGradientSum

# name -> what it does (the CLI's help and the benchmark's titles read it)
REDUCTIONS = {
    "shared": "shared memory, batches and weight rows split over the ranks",
    "slice-sums": "shared memory, gradients summed slice by slice",
    "iallreduce": "per-layer Iallreduce",
    "allreduce": "one Allreduce per step",
    "nccl": "NCCL allreduces of device arrays",
}
HOST_REDUCTIONS = ("shared", "slice-sums", "iallreduce", "allreduce")  # NumPy gradients



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
        return NcclGradientSum(net, nccl_comm, _layer_buffers(net))
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
        MPI = import_mpi()
        t = time.perf_counter()
        for buf in self.buffers[l]:
            self.requests.append(self.comm.Iallreduce(MPI.IN_PLACE, buf, op=MPI.SUM))
        MPI.Request.Testall(self.requests)  # lets MPI progress the sums posted so far
        self.seconds += time.perf_counter() - t

    def wait(self):
        """Return once every gradient holds the sum over the ranks."""
        MPI = import_mpi()
        t = time.perf_counter()
        if self.overlap:
            MPI.Request.Waitall(self.requests)
            self.requests.clear()
        else:
            flat = getattr(self.net, "nabla_theta", None)
            for buf in [flat] if flat is not None else [b for bs in self.buffers for b in bs]:
                self.comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
        self.seconds += time.perf_counter() - t
