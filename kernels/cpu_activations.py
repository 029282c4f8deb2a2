"""The compiled loops of the activations added after the first four (leaky_relu, elu, selu,
softplus, gelu, gelu_tanh, silu), for :mod:`gpubp.kernels.cpu` and the compiled epoch.

Each is the formula of its NumPy twin in :mod:`gpubp.kernels.reference` (whose docstring
gives the equations and why nothing overflows), one scalar at a time: ``g`` of ``z``, and
``g'`` of the stored quantity, ``a = g(z)`` for those of ``FROM_OUTPUT``, ``z`` itself for
those of ``FROM_Z`` (gelu, gelu_tanh, silu, whose layers keep ``z``). The codes come from
the table, :mod:`gpubp.activations`.

The transcendentals are the vectorisable ones of :mod:`gpubp.kernels.cpu_math`: float64
arrays in float64, float32 arrays in float32 by the twins of
:mod:`gpubp.kernels.cpu_math32` (twice the SIMD width, no conversions); leaky_relu, the
g' of elu and selu (no transcendental) and gelu_tanh's g' (it cancels in float32) in
float64, rounded once at the store. :func:`_by_type` picks the loop by the array's dtype
when Numba compiles the caller; each activation has its own inner loop
(``_forward_rows``/``_delta_rows`` specialised
on the scalar function), so that LLVM vectorises it: a branch on ``code`` inside the loop
stops that (docs/performance.md, "Vectorised transcendentals").
"""

from collections import namedtuple

from numba import njit, types
from numba.extending import overload

from gpubp import activations
from gpubp.kernels import cpu_math32 as m32
from gpubp.kernels.cpu_math import (F32_LOOP, _erf_f64, _exp_f64, _expm1_f64, _log1p_f64,
                                    _sigmoid_f64)
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


# -- the loops: one per activation and dtype, each free of branches on the code --------------
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
                row[j] = f(v, slope)
        else:
            for j in range(n):
                row[j] = f(row[j] + b[j], slope)


@njit(inline="always", error_model="numpy")
def _forward_prime_rows(z, b, kept, f, f_prime, slope):
    """``z = f(z + b)`` and ``kept = f'(z + b)`` over (P, n), in one pass: the compiled
    epoch's FROM_Z layers keep ``g'(z)`` for the backward pass rather than ``z`` (the
    pair shares its transcendentals, which LLVM computes once for both)."""
    P, n = z.shape
    for p in range(P):
        row = z[p]
        krow = kept[p]
        for j in range(n):
            v = row[j] + b[j]
            krow[j] = f_prime(v, slope)
            row[j] = f(v, slope)


@njit(inline="always", error_model="numpy")
def _delta_rows(delta, s, f, slope):
    """``δ ⊙= f(s)`` over (P, n)."""
    P, n = delta.shape
    for p in range(P):
        drow = delta[p]
        srow = s[p]
        for j in range(n):
            drow[j] *= f(srow[j], slope)


def _by_type(f64, f32=None):
    """``_Loops(forward, delta, pick, f32, wide)``: compiled-only functions ``forward(z, b,
    kept, slope)`` and ``delta(delta, s, slope)``, the loops above over ``f32`` for float32
    arrays, else over ``f64`` of ``float(s)`` (always, without ``f32``), chosen by Numba's
    typing when the caller is compiled (an ``overload``): one loop per dtype, no branch on
    the dtype; the float32 ones compiled on their own with FMA contraction
    (``cpu_math.F32_LOOP``). ``pick(array_type)`` gives the scalar function chosen,
    ``f32`` or ``wide`` (``f64`` of ``float(s)``)."""
    def wide(s, slope):
        return f64(float(s), slope)
    wide = njit(inline="always", error_model="numpy")(wide)

    def pick(array):
        single = f32 is not None and array.dtype == types.float32
        return f32 if single else wide
    forward32 = njit(**F32_LOOP)(lambda z, b, kept, slope: _forward_rows(z, b, kept, f32, slope))
    delta32 = njit(**F32_LOOP)(lambda delta, s, slope: _delta_rows(delta, s, f32, slope))

    def forward(z, b, kept, slope):
        raise NotImplementedError("compiled code only")

    def delta(delta, s, slope):
        raise NotImplementedError("compiled code only")

    @overload(forward)
    def _forward(z, b, kept, slope):
        f = pick(z)
        if f is f32:
            return lambda z, b, kept, slope: forward32(z, b, kept, slope)
        return lambda z, b, kept, slope: _forward_rows(z, b, kept, f, slope)

    @overload(delta)
    def _delta(delta, s, slope):
        f = pick(delta)
        if f is f32:
            return lambda delta, s, slope: delta32(delta, s, slope)
        return lambda delta, s, slope: _delta_rows(delta, s, f, slope)
    return _Loops(forward, delta, pick, f32, wide)


def f32_pair(g_loops, prime_loops):
    """``(g, g')`` that a loop of both takes on float32 arrays with ``F32_LOOP``'s FMA
    contraction, as ``g``'s own loop does (``g'`` float32's, or its float64 route, which
    then contracts too: within 2^-24 of it once rounded); None if ``g`` has no float32 twin."""
    if g_loops.f32 is None:
        return None
    return g_loops.f32, prime_loops.f32 or prime_loops.wide


def single(array):
    """Whether a Numba array type is float32's."""
    return array.dtype == types.float32


def _with_prime(g_loops, prime_loops):
    """A compiled-only ``forward_prime(z, b, kept, slope)``: :func:`_forward_prime_rows`
    over the scalar functions that ``_by_type``'s ``g_loops`` and ``prime_loops`` pick."""
    pair = f32_pair(g_loops, prime_loops)
    g32, prime32 = pair or (None, None)
    rows32 = pair and njit(**F32_LOOP)(
        lambda z, b, kept, slope: _forward_prime_rows(z, b, kept, g32, prime32, slope))

    def forward_prime(z, b, kept, slope):
        raise NotImplementedError("compiled code only")

    @overload(forward_prime)
    def _forward_prime(z, b, kept, slope):
        if pair and single(z):
            return lambda z, b, kept, slope: rows32(z, b, kept, slope)
        f, f_prime = g_loops.pick(z), prime_loops.pick(z)
        return lambda z, b, kept, slope: _forward_prime_rows(z, b, kept, f, f_prime, slope)
    return forward_prime


_Loops = namedtuple("_Loops", "forward delta pick f32 wide")
_LOOPS = {LEAKY_RELU: (_by_type(_leaky_relu), _by_type(_leaky_relu_prime)),
          ELU: (_by_type(_elu, m32._elu_f32), _by_type(_elu_prime)),
          SELU: (_by_type(_selu, m32._selu_f32), _by_type(_selu_prime)),
          SOFTPLUS: (_by_type(_softplus, m32._softplus_f32),
                     _by_type(_softplus_prime, m32._softplus_prime_f32)),
          GELU: (_by_type(_gelu, m32._gelu_f32), _by_type(_gelu_prime, m32._gelu_prime_f32)),
          # gelu_tanh's g' in float64: in float32 its two terms cancel near its zero
          GELU_TANH: (_by_type(_gelu_tanh, m32._gelu_tanh_f32), _by_type(_gelu_tanh_prime)),
          SILU: (_by_type(_silu, m32._silu_f32), _by_type(_silu_prime, m32._silu_prime_f32))}
(LEAKY_RELU_FORWARD, ELU_FORWARD, SELU_FORWARD, SOFTPLUS_FORWARD, GELU_FORWARD,
 GELU_TANH_FORWARD, SILU_FORWARD) = (_LOOPS[c][0][0] for c in SPECIAL)
(LEAKY_RELU_DELTA, ELU_DELTA, SELU_DELTA, SOFTPLUS_DELTA, GELU_DELTA, GELU_TANH_DELTA,
 SILU_DELTA) = (_LOOPS[c][1][1] for c in SPECIAL)
GELU_FORWARD_PRIME, GELU_TANH_FORWARD_PRIME, SILU_FORWARD_PRIME = (
    _with_prime(*_LOOPS[c]) for c in (GELU, GELU_TANH, SILU))


@njit(error_model="numpy")
def bias_activation(z, b, code, slope, kept):
    """``z = g(z + b)`` in place over (P, n); ``kept`` (P, n) receives ``z + b`` when it has
    rows (the FROM_Z layers), else (0 rows) nothing."""
    if code == LEAKY_RELU:
        LEAKY_RELU_FORWARD(z, b, kept, slope)
    elif code == ELU:
        ELU_FORWARD(z, b, kept, slope)
    elif code == SELU:
        SELU_FORWARD(z, b, kept, slope)
    elif code == SOFTPLUS:
        SOFTPLUS_FORWARD(z, b, kept, slope)
    elif code == GELU:
        GELU_FORWARD(z, b, kept, slope)
    elif code == GELU_TANH:
        GELU_TANH_FORWARD(z, b, kept, slope)
    else:
        SILU_FORWARD(z, b, kept, slope)


@njit(error_model="numpy")
def hidden_delta(delta, s, code, slope):
    """``δ ⊙= g'(s)`` in place over (P, n)."""
    if code == LEAKY_RELU:
        LEAKY_RELU_DELTA(delta, s, slope)
    elif code == ELU:
        ELU_DELTA(delta, s, slope)
    elif code == SELU:
        SELU_DELTA(delta, s, slope)
    elif code == SOFTPLUS:
        SOFTPLUS_DELTA(delta, s, slope)
    elif code == GELU:
        GELU_DELTA(delta, s, slope)
    elif code == GELU_TANH:
        GELU_TANH_DELTA(delta, s, slope)
    else:
        SILU_DELTA(delta, s, slope)


@njit(error_model="numpy")
def bias_activation_prime(z, b, code, slope, kept):
    """``z = g(z + b)`` and ``kept = g'(z + b)`` in place over (P, n), for a code of
    ``FROM_Z`` (gelu, gelu_tanh, silu): the compiled epoch's forward pass, whose backward
    pass then multiplies ``δ`` by ``kept`` (:func:`kept_delta`): the g' of
    :func:`hidden_delta`, rounded to the dtype (as it is but on the float64 route of
    gelu_tanh's float32 g', which ``hidden_delta`` multiplies in before rounding)."""
    if code == GELU:
        GELU_FORWARD_PRIME(z, b, kept, slope)
    elif code == GELU_TANH:
        GELU_TANH_FORWARD_PRIME(z, b, kept, slope)
    else:
        SILU_FORWARD_PRIME(z, b, kept, slope)


@njit(error_model="numpy")
def kept_delta(delta, kept):
    """``δ ⊙= kept`` in place over (P, n): the hidden δ from the g' a forward pass kept
    (:func:`bias_activation_prime`)."""
    P, n = delta.shape
    for p in range(P):
        drow = delta[p]
        krow = kept[p]
        for j in range(n):
            drow[j] *= krow[j]
