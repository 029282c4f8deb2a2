"""The compiled loops of the activations added after the first four (leaky_relu, elu, selu,
softplus, gelu, gelu_tanh, silu), for :mod:`gpubp.kernels.cpu` and the compiled epoch.

Each is the formula of its NumPy twin in :mod:`gpubp.kernels.reference` (whose docstring
gives the equations and why nothing overflows), one scalar at a time: ``g`` of ``z``, and
``g'`` of the stored quantity, ``a = g(z)`` for those of ``FROM_OUTPUT``, ``z`` itself for
those of ``FROM_Z`` (gelu, gelu_tanh, silu, whose layers keep ``z``). The codes come from
the table, :mod:`gpubp.activations`.
"""

import math

from numba import njit

from gpubp import activations
from gpubp.kernels.reference import (GELU_PDF_CLAMP, GELU_TANH_C, GELU_TANH_CLAMP,
                                     INV_SQRT_2PI, LAMBDA, LAMBDA_ALPHA, SQRT_2_OVER_PI,
                                     SQRT_HALF)

LEAKY_RELU, ELU, SELU, SOFTPLUS, GELU, GELU_TANH, SILU = map(
    activations.code, ("leaky_relu", "elu", "selu", "softplus", "gelu", "gelu_tanh", "silu"))
SPECIAL = (LEAKY_RELU, ELU, SELU, SOFTPLUS, GELU, GELU_TANH, SILU)  # codes handled here
FROM_Z = tuple(activations.code(name) for name in activations.FROM_Z)


@njit(inline="always", error_model="numpy")
def _sigmoid(x):
    # Two branches sharing e = exp(-|x|) <= 1, so exp never overflows (docs/design.md).
    e = math.exp(-abs(x))
    if x >= 0:
        return 1 / (1 + e)
    return e / (1 + e)


@njit(inline="always", error_model="numpy")
def g(z, code, slope):
    """``g(z)`` of a code of ``SPECIAL`` (float64 arithmetic, rounded by the caller)."""
    if code == LEAKY_RELU:
        return z if z > 0 else z * slope
    if code == ELU:
        return z if z > 0 else math.expm1(min(z, 0.0))
    if code == SELU:
        return LAMBDA * z if z > 0 else LAMBDA_ALPHA * math.expm1(min(z, 0.0))
    if code == SOFTPLUS:
        return max(z, 0.0) + math.log1p(math.exp(-abs(z)))
    if code == GELU:
        return 0.5 * z * (1 + math.erf(z * SQRT_HALF))
    if code == GELU_TANH:
        zc = min(max(z, -GELU_TANH_CLAMP), GELU_TANH_CLAMP)
        return 0.5 * z * (1 + math.tanh(SQRT_2_OVER_PI * (zc + GELU_TANH_C * zc * zc * zc)))
    return z * _sigmoid(z)  # silu


@njit(inline="always", error_model="numpy")
def g_prime(s, code, slope):
    """``g'`` of a code of ``SPECIAL`` from ``s``: ``a`` (FROM_OUTPUT) or ``z`` (FROM_Z)."""
    if code == LEAKY_RELU:
        return 1.0 if s > 0 else slope
    if code == ELU:
        return 1.0 if s > 0 else s + 1
    if code == SELU:
        return LAMBDA if s > 0 else s + LAMBDA_ALPHA
    if code == SOFTPLUS:
        return -math.expm1(-s)
    if code == GELU:
        zc = min(max(s, -GELU_PDF_CLAMP), GELU_PDF_CLAMP)
        return 0.5 * (1 + math.erf(s * SQRT_HALF)) + s * INV_SQRT_2PI * math.exp(-0.5 * zc * zc)
    if code == GELU_TANH:
        zc = min(max(s, -GELU_TANH_CLAMP), GELU_TANH_CLAMP)
        t = math.tanh(SQRT_2_OVER_PI * (zc + GELU_TANH_C * zc * zc * zc))
        du = SQRT_2_OVER_PI * (1 + 3 * GELU_TANH_C * zc * zc)
        return 0.5 * (1 + t) + 0.5 * zc * (1 - t * t) * du
    sg = _sigmoid(s)  # silu
    return sg * (1 + s * (1 - sg))


@njit(error_model="numpy")
def bias_activation(z, b, code, slope, kept):
    """``z = g(z + b)`` in place over (P, n); ``kept`` (P, n) receives ``z + b`` when it has
    rows (the FROM_Z layers), else (0 rows) nothing."""
    P, n = z.shape
    keep = kept.shape[0] > 0
    for p in range(P):
        row = z[p]
        for j in range(n):
            v = row[j] + b[j]
            if keep:
                kept[p, j] = v
            row[j] = g(float(v), code, slope)


@njit(error_model="numpy")
def hidden_delta(delta, s, code, slope):
    """``δ ⊙= g'(s)`` in place over (P, n)."""
    P, n = delta.shape
    for p in range(P):
        drow = delta[p]
        srow = s[p]
        for j in range(n):
            drow[j] *= g_prime(float(srow[j]), code, slope)
