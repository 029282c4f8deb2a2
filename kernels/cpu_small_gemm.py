"""Loop nests for the matrix products of layers too small for a BLAS call to pay.

A step of the main job's 64-64-10 network at 32 rows does 0.07 M multiply-adds in six
products; a BLAS call's fixed cost (argument checks, packing the operands into its
blocked layout, its kernel's edge cases on a 10-wide output) is a large share of each.
These plain loops, row-major and with the inner loop along contiguous memory, are what
LLVM vectorises; :mod:`gpubp.core.gemm_choice` measures them against ``np.dot`` once per
layer shape and run, and the compiled epoch takes the faster (``Layout.loops``).

Not bit-identical to BLAS: the sums run in another order (reassociated so that
:func:`mm_nt`'s dot products vectorise, and with fused multiply-adds), so results
agree to rounding, not to the bit (tests/test_small_gemm.py holds them to a tolerance).
Compiled once (``cache=True``) and called from the compiled epoch, whose cache digest
covers this file (``jit_cache.kernel_sources``).
"""

import numpy as np
from numba import njit

# sums reassociated (the dot products vectorise) and multiply-adds fused: no flag that
# changes what NaN, infinities or signed zeros do
_FAST = {"reassoc", "contract"}


@njit(cache=True, error_model="numpy", fastmath=_FAST)
def mm(a, b, out):
    """``out = a b``: ``a`` (P, k), ``b`` (k, n), ``out`` (P, n), all C-contiguous rows."""
    P, k = a.shape
    n = b.shape[1]
    for p in range(P):
        o = out[p]
        for j in range(n):
            o[j] = 0
        for q in range(k):
            c = a[p, q]
            row = b[q]
            for j in range(n):
                o[j] += c * row[j]


@njit(cache=True, error_model="numpy", fastmath=_FAST)
def mm_nt(a, b, out):
    """``out = a bᵀ``: ``a`` (P, n), ``b`` (m, n), ``out`` (P, m); each entry a dot product
    of two contiguous rows (reassociated: it vectorises)."""
    P, n = a.shape
    m = b.shape[0]
    for p in range(P):
        x = a[p]
        for i in range(m):
            y = b[i]
            s = out.dtype.type(0)
            for j in range(n):
                s += x[j] * y[j]
            out[p, i] = s


@njit(cache=True, error_model="numpy", fastmath=_FAST)
def mm_tn(a, d, out, coefficients):
    """``out ← beta out + alpha aᵀ d``: ``a`` (P, m), ``d`` (P, n), ``out`` (m, n);
    ``coefficients`` ``(alpha, beta)`` in ``out``'s dtype (beta 0: ``out`` is not read).
    SGD's step fused into ``∂W`` as :func:`gpubp.kernels.cpu_epoch.descend` does it."""
    P, m = a.shape
    n = d.shape[1]
    alpha, beta = coefficients[0], coefficients[1]
    for i in range(m):
        o = out[i]
        if beta == 0:
            for j in range(n):
                o[j] = 0
        elif beta != 1:
            for j in range(n):
                o[j] *= beta
        for p in range(P):
            c = alpha * a[p, i]
            row = d[p]
            for j in range(n):
                o[j] += c * row[j]


@njit(error_model="numpy", inline="always")
def forward_product(a, W, z, loops):
    """``z = a W`` by :func:`mm` (``loops``) or BLAS."""
    if loops:
        mm(a, W, z)
    else:
        np.dot(a, W, z)


@njit(error_model="numpy", inline="always")
def delta_product(delta, W, out, loops):
    """``out = δ Wᵀ`` by :func:`mm_nt` (``loops``) or BLAS."""
    if loops:
        mm_nt(delta, W, out)
    else:
        np.dot(delta, W.T, out)


@njit(error_model="numpy", inline="always")
def gradient_product(a, delta, out, ones, loops):
    """``out = aᵀ δ`` by :func:`mm_tn` (``loops``; ``ones`` holds ``(1, 0)``) or BLAS."""
    if loops:
        mm_tn(a, delta, out, ones)
    else:
        np.dot(a.T, delta, out)


@njit(cache=True, error_model="numpy")
def repeat_products(a, W, z, delta, delta_prev, grad, loops, reps):
    """``reps`` times a layer's three products (forward, ``δ^{l-1}``, ``∂W``), by loops
    or BLAS: what :mod:`gpubp.core.gemm_choice` times (one call: no per-call overhead)."""
    ones = np.array([1.0, 0.0], dtype=W.dtype)
    for _ in range(reps):
        forward_product(a, W, z, loops)
        delta_product(delta, W, delta_prev, loops)
        gradient_product(a, delta, grad, ones, loops)
