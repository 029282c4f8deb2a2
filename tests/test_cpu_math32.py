"""The float32 erf and activations of :mod:`gpubp.kernels.cpu_math32`: erf within 2 ulp of
float64's erf over the whole float32 range (every 1024th bit pattern, so every exponent and
the subnormals, plus a dense sweep of [−6, 6]); gelu and its g' in float32 against their
float64 forms; and the float32 gelu loops of the kernels vectorise at AVX2's width with no
float64 in them (the point of computing in float32), their polynomials in FMAs. The values
are computed as the kernels compute them: in loops compiled with ``cpu_math.F32_LOOP``
(FMA contraction)."""

import re

import numpy as np
import pytest
from numba import njit
from scipy.special import erf

from gpubp.kernels import cpu_activations as A
from gpubp.kernels.cpu_math import F32_LOOP
from gpubp.kernels.cpu_math32 import _erf_f32, _gelu_f32, _gelu_prime_f32

EPS = 2.0 ** -24  # half an ulp of 1 in float32


_APPLIED = {}


def _apply(f, x, out):
    """``out = f(x)`` by a loop compiled with the float32 kernels' options, ``f`` inlined
    into it (``f`` passed as an argument would be compiled once on its own, with the flags
    of whichever loop compiled it first)."""
    if f not in _APPLIED:
        @njit(**F32_LOOP)
        def apply(x, out):
            for i in range(x.size):
                out[i] = f(x[i], np.float32(0.0))
        _APPLIED[f] = apply
    _APPLIED[f](x, out)


@njit(inline="always", error_model="numpy")
def _erf1(x, slope):
    return _erf_f32(x)


def _sweep():
    patterns = np.arange(0, 2 ** 32, 2 ** 10, dtype=np.uint64).astype(np.uint32)
    x = np.concatenate([patterns.view(np.float32), np.linspace(-6, 6, 2 ** 22, dtype=np.float32),
                        np.float32([0.0, -0.0, np.inf, -np.inf, np.nan])])
    return x


def test_erf_is_within_2_ulp_over_the_whole_float32_range():
    x = _sweep()
    got = np.empty_like(x)
    _apply(_erf1, x, got)
    nan = np.isnan(x)
    assert np.isnan(got[nan]).all() and not np.isnan(got[~nan]).any()
    want = erf(x[~nan].astype(np.float64))
    got = got[~nan]
    rounded = want.astype(np.float32)
    assert np.array_equal(got == 0, rounded == 0)
    np.testing.assert_array_equal(np.signbit(got), np.signbit(rounded))  # −0 stays −0
    assert (got[np.isinf(x[~nan])] == np.sign(x[np.isinf(x)])).all()  # ±1 at ±inf
    nonzero = rounded != 0
    ulps = (np.abs(got[nonzero] - want[nonzero])
            / np.spacing(np.abs(rounded[nonzero])).astype(np.float64))
    assert ulps.max() <= 2.0


def _gelu_exact(z):
    phi = 0.5 * (1 + erf(z / np.sqrt(2)))
    pdf = np.exp(-0.5 * z * z) / np.sqrt(2 * np.pi)
    return z * phi, phi + z * pdf, phi + np.abs(z) * pdf  # g, g', the size of g''s terms


def test_gelu_and_its_derivative_in_float32_are_close_to_float64():
    """In units of 2^-23 of the size of the terms (measured 3.4 for gelu, 1.5 for g'; 3.8,
    1.7 without FMA): 5 for z > −1.41; below, where Φ is erfc(|z|/√2)/2 and the rounding
    of z/√2 is amplified by z² <= 32 in it, 40 (measured 32, 5.2; 33, 5.4 without FMA), an
    absolute error < 5e-8; below z = −5.6 Φ is cut to 0 (Φ < 1.1e-8 there); absolute
    bounds from z = −1.41 on (measured 4.4e-8, 4.8e-8; 4.6e-8, 5.6e-8 without FMA)."""
    z = np.concatenate([np.linspace(-20, 20, 2 ** 21, dtype=np.float32),
                        np.float32([0.0, -0.0, 1e-30, -1e-30, 3e38, -3e38])])
    zd = z.astype(np.float64)
    g, g_prime, size = _gelu_exact(zd)
    for f, want, scale, tail in ((_gelu_f32, g, np.abs(g), 5e-8),
                                 (_gelu_prime_f32, g_prime, size, 6e-8)):
        got = np.empty_like(z)
        _apply(f, z, got)
        assert np.isfinite(got).all()
        err = np.abs(got - want)
        ulps = err / (2 * EPS * scale + 1e-300)
        assert ulps[zd > -1.41].max() <= 5
        assert ulps[(zd > -5.6) & (zd <= -1.41)].max() <= 40
        assert err[zd <= -1.41].max() <= tail


@njit(error_model="numpy")
def _forward_gelu(z, b, kept):
    A.GELU_FORWARD(z, b, kept, 0.0)


@njit(error_model="numpy")
def _delta_gelu(delta, s):
    A.GELU_DELTA(delta, s, 0.0)


@pytest.mark.parametrize("loop", ["forward", "delta"])
def test_the_float32_gelu_loops_vectorise_in_float32(loop):
    x = np.ones((4, 64), np.float32)
    if loop == "forward":
        _forward_gelu(x, x[0], x[:0])
        ir = "\n".join(_forward_gelu.inspect_llvm().values())
    else:
        _delta_gelu(x, x.copy())
        ir = "\n".join(_delta_gelu.inspect_llvm().values())
    assert "<8 x float>" in ir  # AVX2's 8 float32 lanes
    assert "x double>" not in ir  # no float64 vector: not the float64 route
    assert not re.search(r"call [^@\n]*@(llvm\.)?(exp|tanh|log|erf)", ir)  # no libm
