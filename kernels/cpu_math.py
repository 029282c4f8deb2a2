"""Float32 transcendentals with only vectorisable operations (no libm call), for the loops
of :mod:`gpubp.kernels.cpu`: LLVM vectorises them where it cannot vectorise ``math.exp``
or ``math.tanh`` (docs/performance.md)."""

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


@njit(inline="always", error_model="numpy")
def _sigmoid_f32(x):
    """Sigmoid of a float32 with only vectorisable operations (no libm call).

    LLVM cannot vectorise ``math.exp`` (no vector math library is available to Numba
    here), and the libm sigmoid was the slowest part of a float32 step
    (docs/performance.md). This is the Cephes ``expf``: ``e^y = 2^n e^r`` with
    ``n = round(y log2 e)``, ``|r| <= ln2 / 2`` by a degree-6 polynomial and ``2^n``
    built from its exponent bits. ``x`` is clamped to [-88, 88] first, so ``e^{-x} <=
    e^88 < FLT_MAX`` never overflows and ``1 / (1 + e^{-x})`` needs no second branch;
    ``x < -88`` gives 0 (the exact value is subnormal there). Elsewhere the result is
    within 3 ulp of the exact sigmoid; NaN stays NaN.
    """
    y = -min(max(x, _F(-88.0)), _F(88.0))
    n = np.floor(y * _F(1.44269504) + _F(0.5))
    r = y - n * _F(0.693359375) - n * _F(-2.12194440e-4)  # ln 2 split in two: exact n ln2
    p = _F(1.9875691500e-4)
    p = p * r + _F(1.3981999507e-3)
    p = p * r + _F(8.3334519073e-3)
    p = p * r + _F(4.1665795894e-2)
    p = p * r + _F(1.6666665459e-1)
    p = p * r + _F(5.0000001201e-1)
    p = p * r * r + r + _F(1.0)
    e = p * _float32_from_bits((np.int32(n) + 127) << 23)
    # Below -88 the exact value is under 6e-39 (subnormal): return 0, as the libm sigmoid
    # does from about -104 on, rather than the clamp's constant 6e-39.
    return _F(0.0) if x < _F(-88.0) else _F(1.0) / (_F(1.0) + e)


@njit(inline="always", error_model="numpy")
def _tanh_f32(x):
    """Tanh of a float32 with only vectorisable operations (no libm call).

    Eigen's float ``tanh`` (what XLA uses): ``x`` clamped to ±7.9 (where tanh rounds to
    ±1), then an odd degree-13 over even degree-6 rational function in ``x``; ``|x| <
    4e-4`` returns ``x``. Within 3.5e-7 relative (6 ulp) of the exact tanh everywhere,
    checked on a dense grid in the tests; NaN stays NaN (the clamp compares, it does not
    take a max). NumPy's SIMD tanh needs a second pass over the array; this is fused
    into the bias addition.
    """
    c = _F(7.90531110763549805)
    xc = c if x > c else x
    xc = -c if xc < -c else xc
    x2 = xc * xc
    p = x2 * _F(-2.76076847742355e-16) + _F(2.00018790482477e-13)
    p = x2 * p + _F(-8.60467152213735e-11)
    p = x2 * p + _F(5.12229709037114e-08)
    p = x2 * p + _F(1.48572235717979e-05)
    p = x2 * p + _F(6.37261928875436e-04)
    p = x2 * p + _F(4.89352455891786e-03)
    q = x2 * _F(1.19825839466702e-06) + _F(1.18534705686654e-04)
    q = x2 * q + _F(2.26843463243900e-03)
    q = x2 * q + _F(4.89352518554385e-03)
    return x if abs(x) < _F(4e-4) else xc * p / q
