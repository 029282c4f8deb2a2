"""Nanoseconds an element of the new hidden activations' loops (issues 19 and 20).

The forward loop (``a = g(z + b)``, keeping ``z`` for gelu, gelu_tanh and silu) and the
derivative loop (``δ ⊙= g'(s)``) of :mod:`gpubp.kernels.cpu_activations` over a
256 x 1024 array, next to the same loops on libm (``math.expm1``/``log1p``/``erf``/
``exp``/``tanh``, one scalar call an element: the kernels as they were before the
vectorisable forms of :mod:`gpubp.kernels.cpu_math`), in one run so that the pair
shares the machine's load. ``pytest benchmarks/test_elementwise_activations.py
--benchmark`` times them (best of the rounds, ``extra_info["ns_per_element"]``); a plain
``pytest`` runs each once on a small array and checks it against the reference kernels.
docs/performance.md has the figures.
"""

import math
import time

import numpy as np
import pytest
from numba import njit

from gpubp.kernels import cpu_activations as A
from gpubp.kernels import reference as R
from gpubp.kernels.reference import (GELU_PDF_CLAMP, GELU_TANH_C, GELU_TANH_CLAMP,
                                     INV_SQRT_2PI, LAMBDA, LAMBDA_ALPHA, SQRT_2_OVER_PI,
                                     SQRT_HALF)

NAMES = ("leaky_relu", "elu", "selu", "softplus", "gelu", "gelu_tanh", "silu")
CODES = dict(zip(NAMES, A.SPECIAL))


@njit(inline="always", error_model="numpy")
def _libm_sigmoid(x):
    e = math.exp(-abs(x))
    return 1 / (1 + e) if x >= 0 else e / (1 + e)


@njit(inline="always", error_model="numpy")
def _libm_g(z, code, slope):
    """``cpu_activations.g`` as it was: libm calls."""
    if code == A.LEAKY_RELU:
        return z if z > 0 else z * slope
    if code == A.ELU:
        return z if z > 0 else math.expm1(min(z, 0.0))
    if code == A.SELU:
        return LAMBDA * z if z > 0 else LAMBDA_ALPHA * math.expm1(min(z, 0.0))
    if code == A.SOFTPLUS:
        return max(z, 0.0) + math.log1p(math.exp(-abs(z)))
    if code == A.GELU:
        return 0.5 * z * (1 + math.erf(z * SQRT_HALF))
    if code == A.GELU_TANH:
        zc = min(max(z, -GELU_TANH_CLAMP), GELU_TANH_CLAMP)
        return 0.5 * z * (1 + math.tanh(SQRT_2_OVER_PI * (zc + GELU_TANH_C * zc * zc * zc)))
    return z * _libm_sigmoid(z)


@njit(inline="always", error_model="numpy")
def _libm_g_prime(s, code, slope):
    """``cpu_activations.g_prime`` as it was: libm calls."""
    if code == A.LEAKY_RELU:
        return 1.0 if s > 0 else slope
    if code == A.ELU:
        return 1.0 if s > 0 else s + 1
    if code == A.SELU:
        return LAMBDA if s > 0 else s + LAMBDA_ALPHA
    if code == A.SOFTPLUS:
        return -math.expm1(-s)
    if code == A.GELU:
        zc = min(max(s, -GELU_PDF_CLAMP), GELU_PDF_CLAMP)
        return 0.5 * (1 + math.erf(s * SQRT_HALF)) + s * INV_SQRT_2PI * math.exp(-0.5 * zc * zc)
    if code == A.GELU_TANH:
        zc = min(max(s, -GELU_TANH_CLAMP), GELU_TANH_CLAMP)
        t = math.tanh(SQRT_2_OVER_PI * (zc + GELU_TANH_C * zc * zc * zc))
        du = SQRT_2_OVER_PI * (1 + 3 * GELU_TANH_C * zc * zc)
        return 0.5 * (1 + t) + 0.5 * zc * (1 - t * t) * du
    sg = _libm_sigmoid(s)
    return sg * (1 + s * (1 - sg))


@njit(error_model="numpy")
def _libm_forward(z, b, code, slope, kept):
    P, n = z.shape
    keep = kept.shape[0] > 0
    for p in range(P):
        row = z[p]
        for j in range(n):
            v = row[j] + b[j]
            if keep:
                kept[p, j] = v
            row[j] = _libm_g(float(v), code, slope)


@njit(error_model="numpy")
def _libm_delta(delta, s, code, slope):
    P, n = delta.shape
    for p in range(P):
        drow = delta[p]
        srow = s[p]
        for j in range(n):
            drow[j] *= _libm_g_prime(float(srow[j]), code, slope)


KERNELS = {("libm", "forward"): _libm_forward, ("libm", "derivative"): _libm_delta,
           ("gpubp", "forward"): A.bias_activation, ("gpubp", "derivative"): A.hidden_delta}


@pytest.mark.parametrize("dtype", ("float32", "float64"))
@pytest.mark.parametrize("kind", ("libm", "gpubp"))
@pytest.mark.parametrize("loop", ("forward", "derivative"))
@pytest.mark.parametrize("name", NAMES)
def test_ns_per_element(benchmark, name, loop, kind, dtype, timing):
    shape = (256, 1024) if timing else (3, 37)
    rng = np.random.default_rng(0)
    z0 = rng.normal(scale=3, size=shape).astype(dtype)
    b = rng.normal(size=shape[1]).astype(dtype)
    code, kernel = CODES[name], KERNELS[kind, loop]
    from_z = name in R.FROM_Z
    # the derivative's argument: z, or a = g(z) (for the FROM_OUTPUT ones)
    s = z0 if from_z else R.activate(z0.copy(), name, 0.01).astype(dtype)
    kept = np.empty(shape if from_z else (0, shape[1]), dtype)
    z = z0.copy()
    if loop == "forward":
        args, start = (z, b, code, 0.01, kept), z0
        want = R.activate((z0 + b).astype(np.float64), name, 0.01)
    else:
        args, start = (z, s, code, 0.01), z0
        want = z0.astype(np.float64) * R.activation_derivative(s.astype(np.float64), name, 0.01)
    kernel(*args)  # compiles
    # a check that the benchmark runs the right thing; the accuracy is tests/'s
    np.testing.assert_allclose(z, want, rtol=1e-6 if dtype == "float32" else 1e-12,
                               atol=1e-6 if dtype == "float32" else 1e-13)
    seconds = []

    def once():
        np.copyto(z, start)
        t = time.perf_counter()
        kernel(*args)
        seconds.append(time.perf_counter() - t)
    benchmark.group = f"activation {name} {loop} {dtype}"
    benchmark.pedantic(once, rounds=30 if timing else 1)
    benchmark.extra_info["ns_per_element"] = min(seconds) * 1e9 / z.size
