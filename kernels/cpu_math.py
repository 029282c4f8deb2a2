"""Transcendentals with only vectorisable operations (no libm call), for the compiled loops
of :mod:`gpubp.kernels.cpu` and :mod:`gpubp.kernels.cpu_epoch`: LLVM vectorises them where
it cannot vectorise ``math.exp`` or ``math.tanh``, 5-10x faster an element
(docs/performance.md, "Vectorised transcendentals").

For a new activation: call ``_exp_f32``/``_exp_f64`` (``e^x``, whole range, libm's inf
and 0 beyond it), ``_sigmoid_*`` and ``_tanh_*`` element by element inside an
``inline="always"``, ``error_model="numpy"`` loop body, picking the function by dtype
(``forward_code`` in :mod:`gpubp.kernels.cpu` does that for sigmoid and tanh), and keep
the loop free of other calls so that LLVM can vectorise it. ``e^x − 1`` near 0 needs
an expm1 (1 − e^x loses digits there)."""

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic


@intrinsic
def _float32_from_bits(typingctx, bits):
    """Reinterpret the low 32 bits of an integer as a float32 (a free bitcast)."""
    if not isinstance(bits, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        value = args[0]
        if bits.bitwidth > 32:
            value = builder.trunc(value, ir.IntType(32))
        return builder.bitcast(value, ir.FloatType())

    return types.float32(bits), codegen


_F = np.float32
_D = np.float64


@njit(inline="always", error_model="numpy")
def _sigmoid_f32(x):
    """Sigmoid of a float32 with only vectorisable operations (no libm call).

    LLVM cannot vectorise ``math.exp`` (no vector math library is available to Numba
    here), and the libm sigmoid was the slowest part of a float32 step
    (docs/performance.md). Two branches sharing ``e = e^{−|x|} <= 1`` from
    :func:`_exp_f32`, so nothing overflows, and one division: ``1 / (1 + e)`` for
    ``x >= 0``, ``e / (1 + e)`` below. Within 2.5 ulp of the exact sigmoid over the whole
    float32 range, subnormal results included; NaN stays NaN.
    """
    e = _exp_f32(-abs(x))
    return (_F(1.0) if x >= _F(0.0) else e) / (_F(1.0) + e)


@njit(inline="always", error_model="numpy")
def _tanh_f32(x):
    """Tanh of a float32 with only vectorisable operations (no libm call): Cephes ``tanhf``.

    ``|x| < 0.625``: ``x + x³ P(x²)`` (an odd polynomial, no cancellation); otherwise
    ``±(1 − e) / (1 + e)`` with ``e = e^{−2|x|} <= 0.29`` from :func:`_exp_f32` (no
    overflow; beyond |x| = 10 the value rounds to ±1). Within 1.5 ulp of the exact tanh,
    checked over the whole range in the tests; NaN stays NaN. NumPy's SIMD tanh needs a
    second pass over the array; this is fused into the bias addition.
    """
    ax = abs(x)
    e = _exp_f32(_F(-2.0) * min(ax, _F(10.0)))
    z = x * x
    p = ((((_F(-5.70498872745e-3) * z + _F(2.06390887954e-2)) * z + _F(-5.37397155531e-2)) * z
          + _F(1.33314422036e-1)) * z + _F(-3.33332819422e-1))
    small = x + x * z * p
    big = (_F(1.0) - e) / (_F(1.0) + e)
    big = big if x >= _F(0.0) else -big
    return small if ax < _F(0.625) else big


# -- float64, and exp for other activations ---------------------------------------------------
@intrinsic
def _float64_from_bits(typingctx, bits):
    """Reinterpret a 64-bit integer as a float64 (a free bitcast)."""
    if not isinstance(bits, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        value = args[0]
        if bits.bitwidth < 64:
            value = builder.sext(value, ir.IntType(64))
        return builder.bitcast(value, ir.DoubleType())

    return types.float64(bits), codegen


@njit(inline="always", error_model="numpy")
def _exp_f64(x):
    """``e^x`` of a float64 with only vectorisable operations (no libm call), within
    1 ulp of the exact value over the whole range (tested against NumPy).

    Cephes ``exp``: ``n = round(x log2 e)``, ``r = x − n ln 2`` (ln 2 in two parts, so
    ``n ln2_hi`` is exact), ``e^r = 1 + 2 r P(r²) / (Q(r²) − r P(r²))`` on ``|r| <= ln2/2``,
    then ``2^n`` as two factors built from exponent bits, so results in the subnormal
    range are rounded once, as libm does. ``x`` is clamped to [−746, 710] first: beyond,
    the factors give 0 and inf, libm's results, without overflow in the integer part;
    NaN stays NaN (compares, not ``max``). Use it for ``e^x`` where ``x`` is far from 0
    or where an absolute error of 1 ulp of 1 is enough; ``e^x − 1`` near 0 needs expm1.
    """
    xc = _D(-746.0) if x < _D(-746.0) else x
    xc = _D(710.0) if xc > _D(710.0) else xc
    n = np.floor(xc * _D(1.4426950408889634) + _D(0.5))
    r = xc - n * _D(6.93145751953125e-1) - n * _D(1.42860682030941723212e-6)
    r2 = r * r
    p = r * ((_D(1.26177193074810590878e-4) * r2 + _D(3.02994407707441961300e-2)) * r2
             + _D(9.99999999999999999910e-1))
    q = ((_D(3.00198505138664455042e-6) * r2 + _D(2.52448340349684104192e-3)) * r2
         + _D(2.27265548208155028766e-1)) * r2 + _D(2.00000000000000000009e0)
    e = _D(1.0) + _D(2.0) * p / (q - p)
    # int32, not int64: AVX2 converts four float64 to int32 at once, not to int64
    k = np.int32(n)
    half = k >> 1  # 2^n = 2^half 2^(n−half): each factor a normal number for |n| <= 1076
    return (e * _float64_from_bits(np.int64(half + 1023) << 52)
            * _float64_from_bits(np.int64(k - half + 1023) << 52))



@njit(inline="always", error_model="numpy")
def _sigmoid_f64(x):
    """Sigmoid of a float64 from :func:`_exp_f64`: two branches sharing ``e = e^{−|x|}
    <= 1``, so nothing overflows; within 2 ulp of the exact sigmoid, NaN stays NaN."""
    e = _exp_f64(-abs(x))
    s = _D(1.0) / (_D(1.0) + e)
    return s if x >= _D(0.0) else e * s


@njit(inline="always", error_model="numpy")
def _tanh_f64(x):
    """Tanh of a float64 with only vectorisable operations: Cephes ``tanh``.

    ``|x| < 0.625``: ``x (Q(x²) + x² P(x²)) / Q(x²)`` (the odd rational function, no
    cancellation); otherwise ``±(1 − e) / (1 + e)`` with ``e = e^{−2|x|} <= 0.29`` from
    :func:`_exp_f64` (no overflow; beyond |x| = 20 the value rounds to ±1). Within 2 ulp
    of the exact tanh; NaN stays NaN.
    """
    ax = abs(x)
    e = _exp_f64(_D(-2.0) * min(ax, _D(20.0)))
    s = x * x
    p = (_D(-9.64399179425052238628e-1) * s + _D(-9.92877231001918586564e1)) * s \
        + _D(-1.61468768441708447952e3)
    q = ((s + _D(1.12811678491632931402e2)) * s + _D(2.23548839060100448583e3)) * s \
        + _D(4.84406305325125486048e3)
    # one division for both branches (a division costs more than the rest together)
    small = ax < _D(0.625)
    numerator = x * (q + s * p) if small else _D(1.0) - e
    numerator = numerator if small or x >= _D(0.0) else -numerator
    return numerator / (q if small else _D(1.0) + e)


@njit(inline="always", error_model="numpy")
def _exp_f32(x):
    """``e^x`` of a float32 with only vectorisable operations: the Cephes ``expf`` of
    :func:`_sigmoid_f32` over the whole float32 range (|x| clamped to 104, 2^n in two
    factors as in :func:`_exp_f64`, so the subnormal range and overflow to inf come out
    as in libm). Within 2 ulp of the exact value; NaN stays NaN."""
    xc = _F(-104.0) if x < _F(-104.0) else x
    xc = _F(89.0) if xc > _F(89.0) else xc
    n = np.floor(xc * _F(1.44269504) + _F(0.5))
    r = xc - n * _F(0.693359375) - n * _F(-2.12194440e-4)
    p = _F(1.9875691500e-4)
    p = p * r + _F(1.3981999507e-3)
    p = p * r + _F(8.3334519073e-3)
    p = p * r + _F(4.1665795894e-2)
    p = p * r + _F(1.6666665459e-1)
    p = p * r + _F(5.0000001201e-1)
    p = p * r * r + r + _F(1.0)
    k = np.int32(n)
    half = k >> 1
    return (p * _float32_from_bits((half + 127) << 23)
            * _float32_from_bits((k - half + 127) << 23))
