"""The compiled loops of the activations added after the first four (leaky_relu, elu, selu,
softplus, gelu, gelu_tanh, silu), for :mod:`gpubp.kernels.cpu` and the compiled epoch.

Each is the formula of its NumPy twin in :mod:`gpubp.kernels.reference` (whose docstring
gives the equations and why nothing overflows), one scalar at a time: ``g`` of ``z``, and
``g'`` of the stored quantity, ``a = g(z)`` for those of ``FROM_OUTPUT``, ``z`` itself for
those of ``FROM_Z`` (gelu, gelu_tanh, silu, whose layers keep ``z``). The codes come from
the table, :mod:`gpubp.activations`.
"""

from numba import njit

from gpubp import activations
from gpubp.kernels.cpu_math import _erf_f64, _exp_f64, _expm1_f64, _log1p_f64, _sigmoid_f64
from gpubp.kernels.reference import (GELU_PDF_CLAMP, GELU_TANH_C, GELU_TANH_CLAMP,
                                     INV_SQRT_2PI, LAMBDA, LAMBDA_ALPHA, SQRT_2_OVER_PI,
                                     SQRT_HALF)

LEAKY_RELU, ELU, SELU, SOFTPLUS, GELU, GELU_TANH, SILU = map(
    activations.code, ("leaky_relu", "elu", "selu", "softplus", "gelu", "gelu_tanh", "silu"))
SPECIAL = (LEAKY_RELU, ELU, SELU, SOFTPLUS, GELU, GELU_TANH, SILU)  # codes handled here
FROM_Z = tuple(activations.code(name) for name in activations.FROM_Z)


@njit(inline="always", error_model="numpy")
def _tanh_halves(u):
    """``((1 + tanh u)/2, (1 − tanh² u)/4)`` without the cancellation of ``1 + t`` near
    ``t = −1`` and ``1 − t²`` near ``|t| = 1``: ``(1 + tanh u)/2 = σ(2u)`` and ``(1 −
    tanh² u)/4 = σ(2u) σ(−2u) = e d²``, ``e = e^{−2|u|} <= 1``, ``d = 1/(1 + e)``."""
    e = _exp_f64(-2.0 * abs(u))
    d = 1.0 / (1.0 + e)
    return (d if u >= 0 else e * d), e * d * d


@njit(inline="always", error_model="numpy")
def g(z, code, slope):
    """``g(z)`` of a code of ``SPECIAL`` (float64 arithmetic, rounded by the caller)."""
    if code == LEAKY_RELU:
        return z if z > 0 else z * slope
    if code == ELU:
        return z if z > 0 else _expm1_f64(min(z, 0.0))
    if code == SELU:
        return LAMBDA * z if z > 0 else LAMBDA_ALPHA * _expm1_f64(min(z, 0.0))
    if code == SOFTPLUS:
        return max(z, 0.0) + _log1p_f64(_exp_f64(-abs(z)))
    if code == GELU:
        return 0.5 * z * (1 + _erf_f64(z * SQRT_HALF))
    if code == GELU_TANH:
        zc = min(max(z, -GELU_TANH_CLAMP), GELU_TANH_CLAMP)
        return z * _tanh_halves(SQRT_2_OVER_PI * (zc + GELU_TANH_C * zc * zc * zc))[0]
    return z * _sigmoid_f64(z)  # silu


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
        return -_expm1_f64(-s)
    if code == GELU:
        zc = min(max(s, -GELU_PDF_CLAMP), GELU_PDF_CLAMP)
        return 0.5 * (1 + _erf_f64(s * SQRT_HALF)) + s * INV_SQRT_2PI * _exp_f64(-0.5 * zc * zc)
    if code == GELU_TANH:
        zc = min(max(s, -GELU_TANH_CLAMP), GELU_TANH_CLAMP)
        half, quarter = _tanh_halves(SQRT_2_OVER_PI * (zc + GELU_TANH_C * zc * zc * zc))
        du = SQRT_2_OVER_PI * (1 + 3 * GELU_TANH_C * zc * zc)
        return half + 2 * zc * quarter * du  # (1 + t)/2 + zc (1 − t²) du / 2
    sg = _sigmoid_f64(s)  # silu
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
