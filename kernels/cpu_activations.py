"""The compiled loops of the activations added after the first four (leaky_relu, elu, selu,
softplus, gelu, gelu_tanh, silu), for :mod:`gpubp.kernels.cpu` and the compiled epoch.

Each is the formula of its NumPy twin in :mod:`gpubp.kernels.reference` (whose docstring
gives the equations and why nothing overflows), one scalar at a time: ``g`` of ``z``, and
``g'`` of the stored quantity, ``a = g(z)`` for those of ``FROM_OUTPUT``, ``z`` itself for
those of ``FROM_Z`` (gelu, gelu_tanh, silu, whose layers keep ``z``). The codes come from
the table, :mod:`gpubp.activations`.

The transcendentals are the vectorisable ones of :mod:`gpubp.kernels.cpu_math`, in float64
whatever the array's dtype (one rounding at the store, as the reference's float64 result),
and each activation has its own inner loop (``_forward_rows``/``_delta_rows`` specialised
on the scalar function), so that LLVM vectorises it: a branch on ``code`` inside the loop
stops that (docs/performance.md, "Vectorised transcendentals").
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


@njit(error_model="numpy", inline="always")
def is_special(code):
    """Whether ``code`` is one of :data:`SPECIAL`'s: its g, g' are this module's loops."""
    for c in SPECIAL:
        if code == c:
            return True
    return False


FROM_Z = tuple(activations.code(name) for name in activations.FROM_Z)


@njit(inline="always", error_model="numpy")
def _tanh_halves(u):
    """``((1 + tanh u)/2, (1 − tanh² u)/4)`` without the cancellation of ``1 + t`` near
    ``t = −1`` and ``1 − t²`` near ``|t| = 1``: ``(1 + tanh u)/2 = σ(2u)`` and ``(1 −
    tanh² u)/4 = σ(2u) σ(−2u) = e d²``, ``e = e^{−2|u|} <= 1``, ``d = 1/(1 + e)``."""
    e = _exp_f64(-2.0 * abs(u))
    d = 1.0 / (1.0 + e)
    return (d if u >= 0 else e * d), e * d * d


# -- g(z) of each, then g' from a (FROM_OUTPUT) or z (FROM_Z) --------------------------------
@njit(inline="always", error_model="numpy")
def _leaky_relu(z, slope):
    return z if z > 0 else z * slope


@njit(inline="always", error_model="numpy")
def _elu(z, slope):
    return z if z > 0 else _expm1_f64(min(z, 0.0))


@njit(inline="always", error_model="numpy")
def _selu(z, slope):
    return LAMBDA * z if z > 0 else LAMBDA_ALPHA * _expm1_f64(min(z, 0.0))


@njit(inline="always", error_model="numpy")
def _softplus(z, slope):
    return max(z, 0.0) + _log1p_f64(_exp_f64(-abs(z)))


@njit(inline="always", error_model="numpy")
def _gelu(z, slope):
    return 0.5 * z * (1 + _erf_f64(z * SQRT_HALF))


@njit(inline="always", error_model="numpy")
def _gelu_tanh(z, slope):
    zc = min(max(z, -GELU_TANH_CLAMP), GELU_TANH_CLAMP)
    return z * _tanh_halves(SQRT_2_OVER_PI * (zc + GELU_TANH_C * zc * zc * zc))[0]


@njit(inline="always", error_model="numpy")
def _silu(z, slope):
    return z * _sigmoid_f64(z)


@njit(inline="always", error_model="numpy")
def _leaky_relu_prime(a, slope):
    return 1.0 if a > 0 else slope


@njit(inline="always", error_model="numpy")
def _elu_prime(a, slope):
    return 1.0 if a > 0 else a + 1


@njit(inline="always", error_model="numpy")
def _selu_prime(a, slope):
    return LAMBDA if a > 0 else a + LAMBDA_ALPHA


@njit(inline="always", error_model="numpy")
def _softplus_prime(a, slope):
    return -_expm1_f64(-a)


@njit(inline="always", error_model="numpy")
def _gelu_prime(z, slope):
    zc = min(max(z, -GELU_PDF_CLAMP), GELU_PDF_CLAMP)
    return 0.5 * (1 + _erf_f64(z * SQRT_HALF)) + z * INV_SQRT_2PI * _exp_f64(-0.5 * zc * zc)


@njit(inline="always", error_model="numpy")
def _gelu_tanh_prime(z, slope):
    zc = min(max(z, -GELU_TANH_CLAMP), GELU_TANH_CLAMP)
    half, quarter = _tanh_halves(SQRT_2_OVER_PI * (zc + GELU_TANH_C * zc * zc * zc))
    du = SQRT_2_OVER_PI * (1 + 3 * GELU_TANH_C * zc * zc)
    return half + 2 * zc * quarter * du  # (1 + t)/2 + zc (1 − t²) du / 2


@njit(inline="always", error_model="numpy")
def _silu_prime(z, slope):
    sg = _sigmoid_f64(z)
    return sg * (1 + z * (1 - sg))


@njit(inline="always", error_model="numpy")
def g(z, code, slope):
    """``g(z)`` of a code of ``SPECIAL`` (float64 arithmetic, rounded by the caller)."""
    if code == LEAKY_RELU:
        return _leaky_relu(z, slope)
    if code == ELU:
        return _elu(z, slope)
    if code == SELU:
        return _selu(z, slope)
    if code == SOFTPLUS:
        return _softplus(z, slope)
    if code == GELU:
        return _gelu(z, slope)
    if code == GELU_TANH:
        return _gelu_tanh(z, slope)
    return _silu(z, slope)


@njit(inline="always", error_model="numpy")
def g_prime(s, code, slope):
    """``g'`` of a code of ``SPECIAL`` from ``s``: ``a`` (FROM_OUTPUT) or ``z`` (FROM_Z)."""
    if code == LEAKY_RELU:
        return _leaky_relu_prime(s, slope)
    if code == ELU:
        return _elu_prime(s, slope)
    if code == SELU:
        return _selu_prime(s, slope)
    if code == SOFTPLUS:
        return _softplus_prime(s, slope)
    if code == GELU:
        return _gelu_prime(s, slope)
    if code == GELU_TANH:
        return _gelu_tanh_prime(s, slope)
    return _silu_prime(s, slope)


# -- the loops: one per activation, each free of branches on the code ----------------------
@njit(inline="always", error_model="numpy")
def _forward_rows(z, b, kept, f, slope):
    """``z = f(z + b)`` over (P, n), ``kept`` written with ``z + b`` when it has rows."""
    P, n = z.shape
    for p in range(P):
        row = z[p]
        if kept.shape[0] > 0:
            krow = kept[p]
            for j in range(n):
                v = row[j] + b[j]
                krow[j] = v
                row[j] = f(float(v), slope)
        else:
            for j in range(n):
                row[j] = f(float(row[j] + b[j]), slope)


@njit(inline="always", error_model="numpy")
def _delta_rows(delta, s, f, slope):
    """``δ ⊙= f(s)`` over (P, n)."""
    P, n = delta.shape
    for p in range(P):
        drow = delta[p]
        srow = s[p]
        for j in range(n):
            drow[j] *= f(float(srow[j]), slope)


@njit(error_model="numpy")
def bias_activation(z, b, code, slope, kept):
    """``z = g(z + b)`` in place over (P, n); ``kept`` (P, n) receives ``z + b`` when it has
    rows (the FROM_Z layers), else (0 rows) nothing."""
    if code == LEAKY_RELU:
        _forward_rows(z, b, kept, _leaky_relu, slope)
    elif code == ELU:
        _forward_rows(z, b, kept, _elu, slope)
    elif code == SELU:
        _forward_rows(z, b, kept, _selu, slope)
    elif code == SOFTPLUS:
        _forward_rows(z, b, kept, _softplus, slope)
    elif code == GELU:
        _forward_rows(z, b, kept, _gelu, slope)
    elif code == GELU_TANH:
        _forward_rows(z, b, kept, _gelu_tanh, slope)
    else:
        _forward_rows(z, b, kept, _silu, slope)


@njit(error_model="numpy")
def hidden_delta(delta, s, code, slope):
    """``δ ⊙= g'(s)`` in place over (P, n)."""
    if code == LEAKY_RELU:
        _delta_rows(delta, s, _leaky_relu_prime, slope)
    elif code == ELU:
        _delta_rows(delta, s, _elu_prime, slope)
    elif code == SELU:
        _delta_rows(delta, s, _selu_prime, slope)
    elif code == SOFTPLUS:
        _delta_rows(delta, s, _softplus_prime, slope)
    elif code == GELU:
        _delta_rows(delta, s, _gelu_prime, slope)
    elif code == GELU_TANH:
        _delta_rows(delta, s, _gelu_tanh_prime, slope)
    else:
        _delta_rows(delta, s, _silu_prime, slope)
