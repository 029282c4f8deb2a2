"""DP-SGD's per-example clipping in CUDA kernels (twins: :mod:`gpubp.kernels.reference_private`).

Example p's gradient is rank one per layer, so its squared norm is
``P² Σ_l (‖a_p^{l-1}‖² + 1) ‖δ_p^l‖²`` and clipping it scales row p of every ``δ^l``
before the weight-gradient products (:mod:`gpubp.core.private_step`). Two kernels per
dtype:

=================  ==============================================  =====================
kernel             what it computes                                launch
=================  ==============================================  =====================
``example_norm``   ``s_p (+)= (‖a_p^{l-1}‖² + 1) ‖δ_p^l‖²``, one     a 32-thread block per
                   layer, both row sums in one pass                row (stride)
``clip_rows``      ``δ_p *= P min(1, C / (P sqrt(s_p) + 10⁻⁶))``    1-D grid-stride,
                                                                   256 threads
=================  ==============================================  =====================

:func:`clip_example_rows` launches ``example_norm`` once per layer, accumulating into one
``(P,)`` workspace (the layer order fixed, each row's sum in a fixed order: a thread's
strided partial sums, then the block's 32 partials added in thread order by thread 0),
so the norms are deterministic; then ``clip_rows`` once per layer. No norm or factor
goes to the host: the clipping is queued on the stream like the rest of the step.
"""

import math

import numpy as np
from numba import cuda, types

from gpubp.kernels.cuda import (DTYPES, ROW_MAX_BLOCKS, Kernel, _blocks, _flat,
                                _launch_elementwise)
from gpubp.kernels import cuda_launch
from gpubp.kernels.cuda_device import ROW_THREADS, constants
from gpubp.kernels.reference_private import CLIP_EPS


def _build(dtype):
    """The two kernels of ``dtype`` (Numba dispatchers)."""
    c = constants(dtype)
    T, zero, one = c.T, c.zero, c.one
    eps = T(CLIP_EPS)

    @cuda.jit
    def example_norm(a_prev, delta, total, accumulate):
        """``total[p] (+)= (Σ_i a_prev[p, i]² + 1) Σ_j δ[p, j]²``; one block per row."""
        part_a = cuda.shared.array(ROW_THREADS, dtype)
        part_d = cuda.shared.array(ROW_THREADS, dtype)
        t = cuda.threadIdx.x
        P, n_in = a_prev.shape
        n_out = delta.shape[1]
        for p in range(cuda.blockIdx.x, P, cuda.gridDim.x):
            s = zero
            for i in range(t, n_in, ROW_THREADS):
                v = a_prev[p, i]
                s += v * v
            part_a[t] = s
            s = zero
            for j in range(t, n_out, ROW_THREADS):
                v = delta[p, j]
                s += v * v
            part_d[t] = s
            cuda.syncthreads()
            if t == 0:
                sa = zero
                sd = zero
                for k in range(ROW_THREADS):  # thread order: the same sum every run
                    sa += part_a[k]
                    sd += part_d[k]
                term = (sa + one) * sd
                total[p] = total[p] + term if accumulate else term
            cuda.syncthreads()  # the partials are read before the next row overwrites them

    @cuda.jit
    def clip_rows(delta, total, n, max_grad_norm, P):
        """``δ[i] *= P min(1, C / (P sqrt(total[p]) + eps))``, p = i // n (flat (P, n))."""
        for i in range(cuda.grid(1), delta.shape[0], cuda.gridsize(1)):
            factor = max_grad_norm / (P * T(math.sqrt(total[i // n])) + eps)
            if factor > one:  # not min(): a NaN norm stays NaN, as in the twin
                factor = one
            delta[i] = delta[i] * (factor * P)

    return {"example_norm": example_norm, "clip_rows": clip_rows}


def signatures(dtype):
    """Argument types of the two kernels, by name."""
    f = types.float32 if np.dtype(dtype) == np.float32 else types.float64
    vec, mat = types.Array(f, 1, "C"), types.Array(f, 2, "C")
    return {"example_norm": (mat, mat, vec, types.boolean),
            "clip_rows": (vec, vec, types.int64, f, f)}


_KERNELS = {}


def kernels_for(dtype):
    """Kernel name -> :class:`~gpubp.kernels.cuda.Kernel` for ``dtype``, built on first use."""
    dtype = np.dtype(dtype)
    if dtype.type not in DTYPES:
        raise TypeError(f"dtype must be float32 or float64, got {dtype}")
    if dtype not in _KERNELS:
        built = _build(dtype)
        _KERNELS[dtype] = {name: Kernel(name, built[name], types.void(*argtypes))
                           for name, argtypes in signatures(dtype).items()}
    return _KERNELS[dtype]


def example_norms_sq(a_prev, delta, total, accumulate=False, *, stream=0):
    """One layer's ``(‖a_p^{l-1}‖² + 1) ‖δ_p^l‖²`` into (or added to) ``total`` (P,)."""
    P = delta.shape[0]
    kernels_for(delta.dtype)["example_norm"](_blocks(P, 1, ROW_MAX_BLOCKS), ROW_THREADS,
                                             stream, a_prev, delta, total, bool(accumulate))


def clip_rows(delta, total, max_grad_norm, flat=None, *, stream=0):
    """``δ_p *= P min(1, C / (P sqrt(total_p) + 10⁻⁶))`` in place; ``delta`` (P, n)
    (``flat``: its 1-D view, when the caller keeps one; made here otherwise)."""
    P, n = delta.shape
    T = np.dtype(delta.dtype).type
    _launch_elementwise(kernels_for(delta.dtype)["clip_rows"], delta.size, stream,
                        _flat(delta) if flat is None else flat, total, n,
                        T(max_grad_norm), T(P))


def clip_example_rows(inputs, deltas, max_grad_norm, total=None, flat=None, *, stream=0):
    """Clip every example's gradient to ``max_grad_norm`` (see the twin,
    :func:`gpubp.kernels.reference_private.clip_example_rows`): ``2 L`` launches.

    ``inputs`` and ``deltas``: the ``a^{l-1}`` and ``δ^l`` (P, n) of l = 1..L, 2-D device
    arrays; ``total`` the (P,) workspace of the squared norms (None: NumPy inputs only);
    ``flat``: the deltas' 1-D views (None: made here).
    """
    if total is None:
        if not isinstance(deltas[0], np.ndarray):
            raise TypeError("total must be given for device arrays (the backend owns the "
                            "workspaces), got None")
        total = np.empty(deltas[0].shape[0], deltas[0].dtype)
    for l, (a, d) in enumerate(zip(inputs, deltas)):
        example_norms_sq(a, d, total, accumulate=l > 0, stream=stream)
    for l, d in enumerate(deltas):
        clip_rows(d, total, max_grad_norm, None if flat is None else flat[l], stream=stream)
    return total


def compile_ptx(cc=(9, 0)):
    """PTX of the two kernels for every dtype (as :func:`gpubp.kernels.cuda.compile_ptx`)."""
    return cuda_launch.compile_ptx(kernels_for, cc, DTYPES)
