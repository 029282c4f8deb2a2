"""Gradients of CuPy device arrays summed over the ranks: NCCL, or MPI through the host.

:class:`NcclGradientSum` runs each layer's ``ncclAllReduce`` on a stream of its own, as
PyTorch's DDP does: an event recorded on the compute stream when backprop has written
layer ``l``'s gradient makes the NCCL stream wait for it, so the sum of layer ``l`` runs
while the compute stream goes on with the backward pass of layer ``l − 1``; :meth:`wait`
makes the compute stream wait for the last sum (an event again: the host never waits).

NCCL cannot run everywhere MPI can: it refuses two ranks on one GPU, and CuPy may lack
``libnccl``. :func:`nccl_unusable` finds out (collectively, so every rank agrees) and the
caller then falls back to :class:`HostStagedGradientSum`, with a warning that says why: the
flat gradient is copied to the host, summed by one MPI allreduce and copied back, which
works with any MPI, at the price of a copy each way (and a synchronisation) per step.
"""

import socket
import time

import numpy as np

from gpubp.core.reduction import Reduction
from gpubp.distributed.mpi import import_mpi


def nccl_unusable(comm):
    """Why NCCL cannot sum this job's device gradients, or None if it can (collective).

    Every rank reports whether CuPy's NCCL module loads and which GPU it is on (host name
    and PCI bus id); one rank's failure, or two ranks on one GPU, is every rank's answer.
    """
    why, gpu = None, None
    try:
        import cupy  # optional: CuPy, on GPUs only
        from cupy.cuda import nccl  # CuPy's wrapper: importable even without libnccl

        if not getattr(nccl, "available", True) or not hasattr(nccl, "NcclCommunicator"):
            why = "CuPy cannot load the NCCL library (libnccl)"
        device = cupy.cuda.Device()
        gpu = (socket.gethostname(), getattr(device, "pci_bus_id", device.id))
    except Exception as exc:  # noqa: BLE001 - any failure means "not usable"
        why = f"CuPy's NCCL module cannot be used ({type(exc).__name__}: {exc})"
    answers = comm.allgather((why, gpu))
    for rank, (reason, _) in enumerate(answers):
        if reason is not None:
            return f"rank {rank}: {reason}"
    gpus = [gpu for _, gpu in answers]
    shared = sorted({g for g in gpus if gpus.count(g) > 1})
    if shared:
        ranks = [r for r, g in enumerate(gpus) if g == shared[0]]
        return (f"ranks {ranks} share GPU {shared[0][1]} on {shared[0][0]}, and NCCL needs "
                f"one GPU per rank")
    return None


class NcclGradientSum(Reduction):
    """Sums gradients on CuPy device buffers with NCCL on its own stream; no host copy.

    Parameters
    ----------
    net : Network
    nccl_comm : cupy.cuda.nccl.NcclCommunicator
    buffers : list of list of device arrays
        For each layer (0-based), the contiguous gradient arrays backprop fills for it.
    """

    def __init__(self, net, nccl_comm, buffers):
        super().__init__(net)
        import cupy  # optional: CuPy, on GPUs only
        from cupy.cuda import nccl  # as above

        self.name = "nccl"
        self.nccl_comm = nccl_comm
        self.buffers = buffers
        self._cupy = cupy
        self._types = {np.dtype(np.float32): nccl.NCCL_FLOAT32,
                       np.dtype(np.float64): nccl.NCCL_FLOAT64}
        self._sum = nccl.NCCL_SUM
        self.stream = cupy.cuda.Stream(non_blocking=True)
        # one "gradient written" event per layer, one "sums done": made once, reused
        self._ready = [cupy.cuda.Event(disable_timing=True) for _ in buffers]
        self._done = cupy.cuda.Event(disable_timing=True)
        self._posted = False

    def begin(self, P_local, P_global):
        self.delta_scale = P_local / P_global

    def layer_done(self, l):
        """Layer ``l``'s gradient is queued: sum it on the NCCL stream once it is written."""
        compute = self._cupy.cuda.get_current_stream()
        self._ready[l].record(compute)
        self.stream.wait_event(self._ready[l])
        for buf in self.buffers[l]:
            self.nccl_comm.allReduce(buf.data.ptr, buf.data.ptr, buf.size,
                                     self._types[buf.dtype], self._sum, self.stream.ptr)
        self._posted = True

    def wait(self):
        """The compute stream waits (on the device) for the sums: the update reads them."""
        if not self._posted:
            return
        self._done.record(self.stream)
        self._cupy.cuda.get_current_stream().wait_event(self._done)
        self._posted = False


class HostStagedGradientSum(Reduction):
    """The flat device gradient summed by one MPI allreduce on the host, per step.

    The fallback where NCCL cannot run (see :func:`nccl_unusable`): any MPI, no CUDA
    awareness needed; one device→host copy (a synchronisation) and one host→device copy
    per step.
    """

    def __init__(self, net, comm):
        super().__init__(net)
        self.name = "allreduce"
        self.comm = comm

    def begin(self, P_local, P_global):
        self.delta_scale = P_local / P_global

    def layer_done(self, l):
        """Nothing to start: the sum waits for the whole gradient (:meth:`wait`)."""

    def wait(self):
        MPI = import_mpi()
        t = time.perf_counter()
        backend, flat = self.net.backend, self.net.nabla_theta
        host = backend.to_host(flat)
        self.comm.Allreduce(MPI.IN_PLACE, host, op=MPI.SUM)
        backend.to_device(host, out=flat)
        self.seconds += time.perf_counter() - t
