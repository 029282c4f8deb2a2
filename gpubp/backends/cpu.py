"""The ``cpu`` backend: BLAS matrix products plus Numba-fused elementwise kernels.

Arrays are NumPy arrays. The dense products go to BLAS through ``np.matmul(..., out=...)``
into the network's preallocated workspaces; the work between them (bias + activation,
output delta + loss, ``δ ⊙ g'``, bias gradient, optimizer steps) runs in the single-pass
Numba kernels of :mod:`gpubp.kernels.cpu`. Nothing here allocates an array once the
workspaces exist, so a training step allocates nothing.

Importing this module imports Numba; :func:`gpubp.backends.get_backend` falls back to the
``reference`` backend if that import fails.
"""

import math

import numpy as np
from numba import njit

from gpubp.activations import NEGATIVE_SLOPE as SLOPE
from gpubp.backends.base import Backend, check_options
from gpubp.kernels import cpu as cpu_kernels
from gpubp.kernels import cpu_dropout


@njit(cache=True)
def _all_finite(x):
    flat = x.reshape(x.size)
    for i in range(flat.size):
        if not math.isfinite(flat[i]):
            return False
    return True


class CpuBackend(Backend):
    """NumPy arrays, OpenBLAS GEMMs and the fused Numba kernels (the default on the CPU).

    Parameters
    ----------
    **options
        Backend options meant for other backends (e.g. ``weight_grad``) are checked and
        ignored, so that one set of options can be passed whatever backend is resolved;
        an option no backend takes is a TypeError (see
        :data:`gpubp.backends.base.BACKEND_OPTIONS`).
    """

    name = "cpu"
    device = "cpu"

    def __init__(self, **options):
        check_options(options, self.name, caller="CpuBackend()")
        super().__init__(xp=np, kernels=cpu_kernels)

    # The base class checks with a temporary (isfinite(x)); this loop allocates nothing,
    # so the per-epoch divergence test stays allocation-free.
    def all_finite(self, arrays):
        for a in arrays:
            ok = _all_finite(a) if a.flags.c_contiguous else bool(np.isfinite(a).all())
            if not ok:
                return False
        return True

    def count_correct(self, a, y, loss):
        return cpu_kernels.count_correct(a, y, loss)  # one pass, no temporaries

    def bias_activation(self, z, b, activation, slope=SLOPE, z_out=None, dropout=None):
        cpu_kernels.bias_activation(z, b, activation, slope, z_out)
        if dropout is not None:  # after z^l is kept: the mask scales a^l only
            cpu_dropout.drop_forward(z, dropout)

    def hidden_delta(self, delta, a, activation, slope=SLOPE, dropout=None):
        if dropout is None:
            cpu_kernels.hidden_delta(delta, a, activation, slope)
        else:  # the hidden-δ kernel with the mask fused in
            cpu_dropout.hidden_delta(delta, a, activation, dropout, slope)

    def matmul(self, a, b, out):
        # Straight to NumPy (no xp indirection); transposed views reach BLAS as flags.
        return np.matmul(a, b, out=out)
