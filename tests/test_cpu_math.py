"""The vectorisable transcendentals of :mod:`gpubp.kernels.cpu_math` over the whole range.

Each of ``exp``, ``sigmoid``, ``tanh``, ``expm1``, ``log``, ``log1p`` and ``erf``, float32
and float64, runs element by element in a compiled loop, as the kernels call it, on a dense
grid over its whole domain (from below underflow to past overflow, subnormals, many small
arguments of both signs); the result is compared with the exact value (NumPy in 80-bit
``longdouble``, rounded once; erf by mpmath) in ulps of the dtype: within 2 ulp in
float32 (sigmoid 2.5: one division after exp) and 4 ulp in float64; inf and 0 exactly
where the rounded exact value has them (no NaN from finite input, no spurious overflow);
NaN in, NaN out. The loops must vectorise (LLVM vector types, no libm call in the IR):
that is the point of these functions. The float32 loops are compiled as the kernels compile
theirs, with FMA contraction (``cpu_math.F32_LOOP``), so the bounds are those of the
values the kernels compute.
"""

import re

import mpmath
import numpy as np
import pytest
from numba import njit

from gpubp.kernels import cpu_math, cpu_math32

FUNCTIONS = {
    (np.float32, "exp"): cpu_math._exp_f32, (np.float64, "exp"): cpu_math._exp_f64,
    (np.float32, "sigmoid"): cpu_math._sigmoid_f32, (np.float64, "sigmoid"): cpu_math._sigmoid_f64,
    (np.float32, "tanh"): cpu_math._tanh_f32, (np.float64, "tanh"): cpu_math._tanh_f64,
    (np.float32, "expm1"): cpu_math._expm1_f32, (np.float64, "expm1"): cpu_math._expm1_f64,
    (np.float32, "log"): cpu_math._log_f32, (np.float64, "log"): cpu_math._log_f64,
    (np.float32, "log1p"): cpu_math._log1p_f32, (np.float64, "log1p"): cpu_math._log1p_f64,
    (np.float32, "erf"): cpu_math32._erf_f32, (np.float64, "erf"): cpu_math._erf_f64,
}
NAMES = ("exp", "sigmoid", "tanh", "expm1", "log", "log1p", "erf")
MAX_ULPS = {(np.float32, "exp"): 2.0, (np.float32, "sigmoid"): 2.5, (np.float32, "tanh"): 2.0,
            (np.float64, "exp"): 4.0, (np.float64, "sigmoid"): 4.0, (np.float64, "tanh"): 4.0}
MAX_ULPS.update({(dtype, name): 2.0 if dtype == np.float32 else 4.0
                 for dtype in (np.float32, np.float64) for name in NAMES[3:]})
# past both ends of exp's range in each dtype: underflow to 0, overflow to inf
RANGE = {np.float32: 110.0, np.float64: 760.0}
_LOOPS = {}


def options(dtype):
    """The kernels' compile options for loops over the functions of ``dtype``."""
    return cpu_math.F32_LOOP if dtype == np.float32 else {"error_model": "numpy"}


def loop(dtype, name):
    """A compiled loop applying the function to each element, as the kernels do."""
    if (dtype, name) not in _LOOPS:
        f = FUNCTIONS[dtype, name]

        @njit(**options(dtype))
        def apply(x, out):
            for i in range(x.size):
                out[i] = f(x[i])
        _LOOPS[dtype, name] = apply
    return _LOOPS[dtype, name]


def _erf(x):
    """erf to 80 bits by mpmath (no longdouble erf in NumPy or SciPy)."""
    with mpmath.workprec(80):
        return np.array([mpmath.erf(mpmath.mpf(float(v))) for v in x], np.longdouble)


def exact(name, x):
    xl = x.astype(np.longdouble)
    if name == "erf":
        return _erf(x)
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        return {"exp": np.exp, "tanh": np.tanh, "sigmoid": lambda v: 1 / (1 + np.exp(-v)),
                "expm1": np.expm1, "log": np.log, "log1p": np.log1p}[name](xl)


def grid(dtype, name="exp"):
    """A dense sweep of the function's domain, its small arguments and special points."""
    rng = np.random.default_rng(0)
    info = np.finfo(dtype)
    tiny = np.geomspace(float(info.smallest_subnormal), 1, 20_001)
    if name in ("log", "log1p"):  # (0, max] and (−1, max]
        wide = np.append(np.geomspace(float(info.smallest_subnormal), float(info.max) / 2,
                                      400_001), float(info.max))
        near_one = np.linspace(0, 4, 400_001)
        if name == "log":
            return np.concatenate([wide, near_one, tiny]).astype(dtype)
        below = -np.geomspace(float(info.smallest_subnormal), 1, 100_001)[:-1]
        return np.concatenate([wide, near_one - 1, tiny, below, [-1.0]]).astype(dtype)
    if name == "erf":  # mpmath is slow: a coarser sweep past erf = ±1 (|x| ≈ 5.9)
        return np.concatenate([np.linspace(-7, 7, 30_001), tiny[::40], -tiny[::40],
                               [float(info.max), -float(info.max)]]).astype(dtype)
    r = np.log(float(info.max)) * 1.02 if name == "expm1" else RANGE[dtype]
    return np.concatenate([np.linspace(-r, r, 1_000_001), tiny, -tiny,
                           rng.standard_normal(100_000) * 4]).astype(dtype)


@pytest.mark.parametrize("dtype", (np.float32, np.float64))
@pytest.mark.parametrize("name", NAMES)
def test_within_ulps_of_the_exact_value(name, dtype):
    x = grid(dtype, name)
    got = np.empty_like(x)
    loop(dtype, name)(x, got)
    want = exact(name, x)
    with np.errstate(over="ignore"):
        rounded = want.astype(dtype)
    assert np.array_equal(np.isinf(got), np.isinf(rounded))
    assert np.array_equal(np.sign(got[np.isinf(got)]), np.sign(rounded[np.isinf(rounded)]))
    assert np.array_equal(got == 0, rounded == 0)
    assert not np.isnan(got).any()
    finite = np.isfinite(rounded) & (rounded != 0)
    spacing = np.spacing(np.abs(rounded[finite])).astype(np.longdouble)
    ulps = np.abs(got[finite].astype(np.longdouble) - want[finite]) / spacing
    assert float(ulps.max()) <= MAX_ULPS[dtype, name]


@pytest.mark.parametrize("dtype", (np.float32, np.float64))
@pytest.mark.parametrize("name", NAMES)
def test_nan_and_infinities(name, dtype):
    """NumPy's values at NaN, ±inf, ±0, −1, −2 and past the overflow threshold."""
    big = float(np.finfo(dtype).max)
    x = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, -1.0, -2.0, big], dtype)
    got = np.empty_like(x)
    loop(dtype, name)(x, got)
    with np.errstate(all="ignore"):
        expected = (getattr(np, name)(x) if hasattr(np, name) else
                    1 / (1 + np.exp(-x.astype(np.float64))) if name == "sigmoid" else
                    np.array([np.nan, 1, -1, 0, -0.0, -0.8427007929497149, -0.9953222650189527,
                              1], dtype))
    expected = expected.astype(dtype)
    # exactly at the special points (the ulps of the finite values are the test above's)
    np.testing.assert_allclose(got, expected, rtol=4 * np.finfo(dtype).eps, atol=0)
    special = ~np.isfinite(expected) | (expected == 0) | (np.abs(expected) == 1)
    np.testing.assert_array_equal(got[special], expected[special])
    if name in NAMES[3:]:  # and −0 stays −0 (the sign of NaN is not NumPy's either way)
        number = ~np.isnan(expected)
        np.testing.assert_array_equal(np.signbit(got[number]), np.signbit(expected[number]))


@pytest.mark.parametrize("dtype", (np.float32, np.float64))
@pytest.mark.parametrize("name", NAMES)
def test_the_loop_vectorises(name, dtype):
    f = FUNCTIONS[dtype, name]

    @njit(**options(dtype))
    def apply(z):
        for i in range(z.size):
            z[i] = f(z[i])

    apply(np.ones(64, dtype))
    ir = "\n".join(apply.inspect_llvm().values())
    kind = "float" if dtype == np.float32 else "double"
    assert f"x {kind}>" in ir  # LLVM's vector types: <8 x float>, <4 x double>, ...
    # no libm call: neither @exp/@tanhf nor the intrinsics (@llvm.exp.v4f64 and the like),
    # which this LLVM lowers to one libm call per lane
    assert not re.search(r"call [^@\n]*@(llvm\.)?(exp|tanh|log|erf)", ir)
