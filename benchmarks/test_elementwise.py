"""Nanoseconds an element of the transcendentals in the compiled CPU loops (issue 20).

Each function of :mod:`gpubp.kernels.cpu_math` (vectorisable, no libm call) runs over a
256 x 1024 array in a compiled loop as the kernels call it, next to the same loop on
libm (``math.exp``/``math.tanh``/..., one scalar call an element) and NumPy's own ufunc
(SciPy's for erf). The activations' loops: ``benchmarks/test_elementwise_activations.py``.
``pytest benchmarks/test_elementwise.py --benchmark`` times them (best of the rounds,
``extra_info["ns_per_element"]``); a plain ``pytest`` runs each once on a small array and
checks it against NumPy, so the benchmark cannot rot. docs/performance.md has the figures.
"""

import math
import time

import numpy as np
import pytest
from numba import njit
from scipy import special

from gpubp.kernels import cpu_math, cpu_math32


@njit(inline="always")
def _libm_exp(x):
    return math.exp(x)


@njit(inline="always")
def _libm_tanh(x):
    return math.tanh(x)


@njit(inline="always")
def _libm_expm1(x):
    return math.expm1(x)


@njit(inline="always")
def _libm_log(x):
    return math.log(x)


@njit(inline="always")
def _libm_log1p(x):
    return math.log1p(x)


@njit(inline="always")
def _libm_erf(x):
    return math.erf(x)


@njit(inline="always")
def _libm_sigmoid(x):
    e = math.exp(-abs(x))
    return 1 / (1 + e) if x >= 0 else e / (1 + e)


def _loop(f):
    @njit(error_model="numpy")
    def apply(z):
        for p in range(z.shape[0]):
            row = z[p]
            for j in range(z.shape[1]):
                row[j] = f(row[j])
    return apply


VARIANTS = {
    ("exp", "libm"): _libm_exp, ("tanh", "libm"): _libm_tanh, ("sigmoid", "libm"): _libm_sigmoid,
    ("exp", "float32"): cpu_math._exp_f32, ("exp", "float64"): cpu_math._exp_f64,
    ("sigmoid", "float32"): cpu_math._sigmoid_f32, ("sigmoid", "float64"): cpu_math._sigmoid_f64,
    ("tanh", "float32"): cpu_math._tanh_f32, ("tanh", "float64"): cpu_math._tanh_f64,
    ("expm1", "libm"): _libm_expm1, ("log", "libm"): _libm_log, ("log1p", "libm"): _libm_log1p,
    ("erf", "libm"): _libm_erf,
    ("expm1", "float32"): cpu_math._expm1_f32, ("expm1", "float64"): cpu_math._expm1_f64,
    ("log", "float32"): cpu_math._log_f32, ("log", "float64"): cpu_math._log_f64,
    ("log1p", "float32"): cpu_math._log1p_f32, ("log1p", "float64"): cpu_math._log1p_f64,
    ("erf", "float32"): cpu_math32._erf_f32, ("erf", "float64"): cpu_math._erf_f64,
}
NUMPY = {"exp": lambda z: np.exp(z, out=z), "tanh": lambda z: np.tanh(z, out=z),
         "sigmoid": None, "expm1": lambda z: np.expm1(z, out=z),
         "log": lambda z: np.log(z, out=z), "log1p": lambda z: np.log1p(z, out=z),
         "erf": lambda z: special.erf(z, out=z)}
EXACT = {"exp": np.exp, "tanh": np.tanh, "sigmoid": lambda z: 1 / (1 + np.exp(-z)),
         "expm1": np.expm1, "log": np.log, "log1p": np.log1p, "erf": lambda z: special.erf(z)}
# the arguments: N(0, 3²), made positive for log and > −1 for log1p
DOMAIN = {"log": np.abs, "log1p": lambda z: np.abs(z) - 0.5}


@pytest.mark.parametrize("dtype", ("float32", "float64"))
@pytest.mark.parametrize("kind", ("gpubp", "libm", "numpy"))
@pytest.mark.parametrize("name", ("exp", "sigmoid", "tanh", "expm1", "log", "log1p", "erf"))
def test_ns_per_element(benchmark, name, kind, dtype, timing):
    if kind == "numpy":
        if NUMPY[name] is None:
            pytest.skip("NumPy has no sigmoid ufunc")
        f = NUMPY[name]
    else:
        f = _loop(VARIANTS[name, dtype if kind == "gpubp" else "libm"])
    shape = (256, 1024) if timing else (3, 37)
    z0 = DOMAIN.get(name, lambda z: z)(np.random.default_rng(0).normal(scale=3, size=shape))
    z0 = z0.astype(dtype)
    z = z0.copy()
    f(z)  # compiles
    np.testing.assert_allclose(z, EXACT[name](z0.astype(np.float64)),
                               rtol=1e-6 if dtype == "float32" else 1e-14)
    seconds = []

    def once():
        np.copyto(z, z0)
        t = time.perf_counter()
        f(z)
        seconds.append(time.perf_counter() - t)
    benchmark.group = f"elementwise {name} {dtype}"
    benchmark.pedantic(once, rounds=50 if timing else 1)
    benchmark.extra_info["ns_per_element"] = min(seconds) * 1e9 / z.size
