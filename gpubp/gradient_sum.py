"""Summing a training step's gradients over the ranks of a data-parallel run.

The network (:meth:`gpubp.Network._train_step`) drives a sum through four calls:
``begin(P_local, P_global)`` before backprop, ``delta_scale`` read once ``δ^L`` is
computed, ``layer_done(l)`` as each layer's gradient becomes final (the output layer
first) and ``wait()`` before the update. :mod:`gpubp.distributed` makes one per network.
"""

import time

import numpy as np

from gpubp.distributed import _mpi


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
