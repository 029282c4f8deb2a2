"""float32 transcendentals of the later activations (gelu, silu, softplus, elu, selu,
gelu_tanh) in float32 arithmetic, vectorisable as those of :mod:`gpubp.kernels.cpu_math`
(no libm call, selects instead of branches): at AVX2's 8 float32 lanes rather than 4
float64 ones, and without the conversions (docs/performance.md, "Vectorised
transcendentals"). Every constant is a float32 (``_F``): a Python float would promote the
arithmetic to float64.

The ``*_f32`` activations take and return float32 and have the float64 functions of
:mod:`gpubp.kernels.cpu_activations` as twins (``slope`` is unused but by leaky_relu,
which stays there); :mod:`gpubp.kernels.cpu_activations` picks one or the other by the
argument's type at compile time.
"""

from numba import njit

from gpubp.kernels.cpu_math import _F, _exp_f32, _expm1_f32, _log1p_f32, _sigmoid_f32
from gpubp.kernels.reference import (GELU_PDF_CLAMP, GELU_TANH_C, GELU_TANH_CLAMP,
                                     INV_SQRT_2PI, LAMBDA, LAMBDA_ALPHA, SQRT_2_OVER_PI,
                                     SQRT_HALF)

_ERF_ONE = _F(4.0)  # erfc(4) = 1.5e-8 < 2^-25: erf rounds to ±1 from there on


@njit(inline="always", error_model="numpy")
def _erf_small_f32(x):
    """erf of ``|x| < 1``: ``x + x P(x²)``, P the minimax polynomial of ``erf(x)/x − 1``
    (degree 6 in x², fitted for these float32 coefficients: 0.02 ulp; 1.3 with rounding)."""
    s = x * x
    p = _F(7.85391385e-05)
    p = p * s + _F(-8.01020826e-04)
    p = p * s + _F(5.18832915e-03)
    p = p * s + _F(-2.68538129e-02)
    p = p * s + _F(1.12835854e-01)
    p = p * s + _F(-3.76126260e-01)
    p = p * s + _F(1.28379166e-01)
    return x + x * p


@njit(inline="always", error_model="numpy")
def _erfc_big_f32(t):
    """erfc of ``t >= 1``: ``e^{−r(t)}``, r the minimax polynomial of ``−log erfc(t)`` on
    [1, 4] (degree 8, weighted for 0.12 ulp of erf and 1e-7 of erfc's relative error; 3e-6
    relative with float32's roundings of r <= 17), by :func:`_exp_f32`; 0 past 4
    (erfc(4) = 1.5e-8). NaN stays NaN."""
    tc = min(t, _ERF_ONE)
    r = _F(-1.60234981e-06)
    r = r * tc + _F(4.53508801e-05)
    r = r * tc + _F(-5.90674055e-04)
    r = r * tc + _F(4.73002950e-03)
    r = r * tc + _F(-2.63346042e-02)
    r = r * tc + _F(1.09923035e-01)
    r = r * tc + _F(6.31998301e-01)
    r = r * tc + _F(1.13012922e+00)
    r = r * tc + _F(-2.93545891e-04)
    e = _exp_f32(-r)
    return _F(0.0) if t > _ERF_ONE else e


@njit(inline="always", error_model="numpy")
def _erf_f32(x):
    """erf of a float32 in float32, vectorisable: :func:`_erf_small_f32` below 1 in
    magnitude, ``±(1 − erfc|x|)`` by :func:`_erfc_big_f32` above (±1 past 4). Within 2 ulp
    of float64's erf over the whole range (tests); −0 stays −0, NaN stays NaN."""
    ax = abs(x)
    big = _F(1.0) - _erfc_big_f32(ax)
    big = big if x >= _F(0.0) else -big
    return _erf_small_f32(x) if ax < _F(1.0) else big


@njit(inline="always", error_model="numpy")
def _phi_f32(x):
    """``(1 + erf x)/2`` (Φ of ``x √2``) without the cancellation of ``1 + erf x`` below
    ``x = −1``: ``erfc(|x|)/2`` there (0 below −4: Φ < 7.7e-9)."""
    ax = abs(x)
    e = _erfc_big_f32(ax)
    small = _F(0.5) + _F(0.5) * _erf_small_f32(x)
    big = _F(1.0) - _F(0.5) * e if x >= _F(0.0) else _F(0.5) * e
    return small if ax < _F(1.0) else big


# -- the activations: the formulas of cpu_activations' float64 twins -------------------------
@njit(inline="always", error_model="numpy")
def _gelu_f32(z, slope):
    return z * _phi_f32(z * _F(SQRT_HALF))


@njit(inline="always", error_model="numpy")
def _gelu_prime_f32(z, slope):
    zc = min(max(z, _F(-GELU_PDF_CLAMP)), _F(GELU_PDF_CLAMP))
    return _phi_f32(z * _F(SQRT_HALF)) + z * _F(INV_SQRT_2PI) * _exp_f32(_F(-0.5) * zc * zc)


@njit(inline="always", error_model="numpy")
def _silu_f32(z, slope):
    return z * _sigmoid_f32(z)


@njit(inline="always", error_model="numpy")
def _silu_prime_f32(z, slope):
    sg = _sigmoid_f32(z)
    return sg * (_F(1.0) + z * (_F(1.0) - sg))


@njit(inline="always", error_model="numpy")
def _softplus_f32(z, slope):
    return max(z, _F(0.0)) + _log1p_f32(_exp_f32(-abs(z)))


@njit(inline="always", error_model="numpy")
def _softplus_prime_f32(a, slope):
    return -_expm1_f32(-a)


@njit(inline="always", error_model="numpy")
def _elu_f32(z, slope):
    return z if z > _F(0.0) else _expm1_f32(min(z, _F(0.0)))


@njit(inline="always", error_model="numpy")
def _selu_f32(z, slope):
    return _F(LAMBDA) * z if z > _F(0.0) else _F(LAMBDA_ALPHA) * _expm1_f32(min(z, _F(0.0)))


@njit(inline="always", error_model="numpy")
def _tanh_halves_f32(u):
    """``((1 + tanh u)/2, (1 − tanh² u)/4)`` as ``cpu_activations._tanh_halves``."""
    e = _exp_f32(_F(-2.0) * abs(u))
    d = _F(1.0) / (_F(1.0) + e)
    return (d if u >= _F(0.0) else e * d), e * d * d


@njit(inline="always", error_model="numpy")
def _gelu_tanh_f32(z, slope):
    zc = min(max(z, _F(-GELU_TANH_CLAMP)), _F(GELU_TANH_CLAMP))
    u = _F(SQRT_2_OVER_PI) * (zc + _F(GELU_TANH_C) * zc * zc * zc)
    return z * _tanh_halves_f32(u)[0]
