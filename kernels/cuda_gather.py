"""The gather of a CUDA-graph step: batch rows picked by an offset read on the device.

A captured step (:mod:`gpubp.backends.cuda_graph`) replays the same launches with the
same arguments every time, so the batch cannot be a slice ``order[start:stop]`` (its
pointer changes per step). Instead the epoch's order lives in one fixed buffer and the
start of the batch in a device counter ``offset`` (int64 (1,)):

=================  ===================================================  ==============
kernel             what it computes                                     launch
=================  ===================================================  ==============
``gather_rows``    ``out[p, :] = src[order[offset[0] + p], :]``           1-D grid-stride
``advance``        ``offset[0] += P`` (the next batch's start)          one thread
=================  ===================================================  ==============

Their NumPy twins are :func:`gpubp.kernels.reference.gather_rows` and ``offset += P``.
"""

import numpy as np
from numba import cuda, types

from gpubp.kernels.cuda_launch import Kernel

THREADS = 256
MAX_BLOCKS = 4096
_KERNELS = {}


def _build():
    @cuda.jit
    def gather_rows(src, order, offset, out):
        """``out[p, j] = src[order[offset[0] + p], j]`` over the (P, n) entries of ``out``."""
        P, n = out.shape
        start = offset[0]
        for e in range(cuda.grid(1), P * n, cuda.gridsize(1)):
            p = e // n
            out[p, e - p * n] = src[order[start + p], e - p * n]

    @cuda.jit
    def advance(offset, P):
        """``offset[0] += P``, after every gather of the step has read it."""
        if cuda.grid(1) == 0:
            offset[0] += P

    return gather_rows, advance


def signatures(dtype):
    """Argument types of the two kernels for rows of ``dtype`` (the PTX tests use them)."""
    f = types.float32 if np.dtype(dtype) == np.float32 else types.float64
    index = types.Array(types.int64, 1, "C")
    return {"gather_rows": (types.Array(f, 2, "C"), index, index, types.Array(f, 2, "C")),
            "advance": (index, types.int64)}


def kernels_for(dtype):
    """``{"gather_rows": Kernel, "advance": Kernel}`` for rows of ``dtype``."""
    dtype = np.dtype(dtype)
    if dtype not in _KERNELS:
        gather, advance_ = _build()
        sig = signatures(dtype)
        _KERNELS[dtype] = {"gather_rows": Kernel("gather_rows", gather,
                                                 types.void(*sig["gather_rows"])),
                           "advance": Kernel("advance", advance_, types.void(*sig["advance"]))}
    return _KERNELS[dtype]


def gather_rows(src, order, offset, out, *, stream=0):
    """``out = src[order[offset[0]:offset[0] + P]]``, ``P = out.shape[0]`` (no host read).

    Parameters
    ----------
    src : array (P_total, n) ; order : int64 array (P_total,) ; offset : int64 array (1,)
    out : array (P, n), of ``src``'s dtype
    """
    blocks = max(1, min(-(-out.size // THREADS), MAX_BLOCKS))
    kernels_for(out.dtype)["gather_rows"](blocks, THREADS, stream, src, order, offset, out)


def advance(offset, P, dtype=np.float32, *, stream=0):
    """``offset[0] += P`` on the device (``dtype``: that of the rows, which picks the
    kernel set; the kernel itself reads only ``offset``)."""
    kernels_for(dtype)["advance"](1, 1, stream, offset, int(P))
