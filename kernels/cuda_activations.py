"""The device functions of the activations added after the first four (leaky_relu, elu,
selu, softplus, gelu, gelu_tanh, silu), for the kernels of :mod:`gpubp.kernels.cuda_device`.

Each is the formula of its NumPy twin in :mod:`gpubp.kernels.reference` (whose docstring
gives the equations and why nothing overflows), in the dtype's arithmetic of a
:class:`gpubp.kernels.cuda_device.Constants`; ``g`` and ``g'`` there branch into these
once, on ``code >= LEAKY_RELU``. The codes come from the table, :mod:`gpubp.activations`.
"""

import math

from numba import cuda

from gpubp import activations
from gpubp.kernels import reference as R

LEAKY_RELU, ELU, SELU, SOFTPLUS, GELU, GELU_TANH, SILU = map(
    activations.code, ("leaky_relu", "elu", "selu", "softplus", "gelu", "gelu_tanh", "silu"))
# the constants of the activations added with gelu, as (name, value) of reference's
SPECIAL_CONSTANTS = ("LAMBDA", "LAMBDA_ALPHA", "SQRT_2_OVER_PI", "SQRT_HALF", "INV_SQRT_2PI",
                     "GELU_TANH_C", "GELU_TANH_CLAMP", "GELU_PDF_CLAMP")


def special_functions(c):
    """``g`` and ``g'`` of the activations added with gelu (leaky_relu ... silu), in the
    dtype's arithmetic: the formulas of :mod:`gpubp.kernels.reference`, clamps written as
    comparisons (selects) so that NaN stays NaN. ``g'`` takes ``a`` or, for gelu,
    gelu_tanh and silu, ``z``."""
    T, zero, one, half = c.T, c.zero, c.one, c.half
    lam, lam_alpha, k_tanh, k_half, k_pdf, k_cube, tanh_clamp, pdf_clamp = (
        T(getattr(R, name)) for name in SPECIAL_CONSTANTS)
    three = T(3)

    @cuda.jit(device=True, inline="always")
    def clamp(z, bound):
        if z > bound:
            return bound
        if z < -bound:
            return -bound
        return z

    @cuda.jit(device=True, inline="always")
    def sigmoid(z):
        e = T(math.exp(-abs(z)))  # in (0, 1]: never overflows
        if z >= zero:
            return one / (one + e)
        return e / (one + e)

    @cuda.jit(device=True, inline="always")
    def g_special(z, code, slope):
        if code == LEAKY_RELU:
            return z if not z < zero else z * slope  # not z > 0: NaN stays NaN
        if code == ELU or code == SELU:
            neg = T(math.expm1(zero if z > zero else z))  # e^z of z <= 0 only
            if code == ELU:
                return z if z > zero else neg
            return lam * z if z > zero else lam_alpha * neg
        if code == SOFTPLUS:
            # a select that keeps a NaN z, not max(z, 0), which PTX would make drop it
            return (z if not z < zero else zero) + T(math.log1p(T(math.exp(-abs(z)))))
        if code == GELU:
            return half * z * (one + T(math.erf(z * k_half)))
        if code == GELU_TANH:
            zc = clamp(z, tanh_clamp)
            return half * z * (one + T(math.tanh(k_tanh * (zc + k_cube * zc * zc * zc))))
        return z * sigmoid(z)  # silu

    @cuda.jit(device=True, inline="always")
    def g_prime_special(s, code, slope):
        if code == LEAKY_RELU:
            return one if s > zero else slope
        if code == ELU:
            return one if s > zero else s + one
        if code == SELU:
            return lam if s > zero else s + lam_alpha
        if code == SOFTPLUS:
            return -T(math.expm1(-s))
        if code == GELU:
            zc = clamp(s, pdf_clamp)
            return (half * (one + T(math.erf(s * k_half)))
                    + s * k_pdf * T(math.exp(-half * zc * zc)))
        if code == GELU_TANH:
            zc = clamp(s, tanh_clamp)
            t = T(math.tanh(k_tanh * (zc + k_cube * zc * zc * zc)))
            du = k_tanh * (one + three * k_cube * zc * zc)
            return half * (one + t) + half * zc * (one - t * t) * du
        sg = sigmoid(s)  # silu
        return sg * (one + s * (one - sg))

    return g_special, g_prime_special
