"""The vectorisable transcendentals of :mod:`gpubp.kernels.cpu_math` over the whole range.

Each of ``exp``, ``sigmoid`` and ``tanh``, float32 and float64, runs element by element in
a compiled loop, as the kernels call it, on a dense grid from below underflow to past
overflow plus many small arguments; the result is compared with the exact value
(NumPy in 80-bit ``longdouble``, rounded once) in ulps of the dtype: within 2 ulp in
float32 (sigmoid 2.5: one division after exp) and 4 ulp in float64; inf and 0 exactly
where the rounded exact value has them (no NaN from finite input, no spurious overflow);
NaN in, NaN out. The loops must vectorise (LLVM vector types, no libm call in the IR):
that is the point of these functions.
"""

import re

import numpy as np
import pytest
from numba import njit

from gpubp.kernels import cpu_math

FUNCTIONS = {
    (np.float32, "exp"): cpu_math._exp_f32, (np.float64, "exp"): cpu_math._exp_f64,
    (np.float32, "sigmoid"): cpu_math._sigmoid_f32, (np.float64, "sigmoid"): cpu_math._sigmoid_f64,
    (np.float32, "tanh"): cpu_math._tanh_f32, (np.float64, "tanh"): cpu_math._tanh_f64,
}
MAX_ULPS = {(np.float32, "exp"): 2.0, (np.float32, "sigmoid"): 2.5, (np.float32, "tanh"): 2.0,
            (np.float64, "exp"): 4.0, (np.float64, "sigmoid"): 4.0, (np.float64, "tanh"): 4.0}
# past both ends of exp's range in each dtype: underflow to 0, overflow to inf
RANGE = {np.float32: 110.0, np.float64: 760.0}
_LOOPS = {}


def loop(dtype, name):
    """A compiled loop applying the function to each element, as the kernels do."""
    if (dtype, name) not in _LOOPS:
        f = FUNCTIONS[dtype, name]

        @njit(error_model="numpy")
        def apply(x, out):
            for i in range(x.size):
                out[i] = f(x[i])
        _LOOPS[dtype, name] = apply
    return _LOOPS[dtype, name]


def exact(name, x):
    xl = x.astype(np.longdouble)
    with np.errstate(over="ignore"):
        return {"exp": np.exp, "tanh": np.tanh,
                "sigmoid": lambda v: 1 / (1 + np.exp(-v))}[name](xl)


def grid(dtype):
    rng = np.random.default_rng(0)
    r = RANGE[dtype]
    tiny = np.geomspace(1e-30, 1, 20_001)
    return np.concatenate([np.linspace(-r, r, 1_000_001), tiny, -tiny,
                           rng.standard_normal(100_000) * 4]).astype(dtype)


@pytest.mark.parametrize("dtype", (np.float32, np.float64))
@pytest.mark.parametrize("name", ("exp", "sigmoid", "tanh"))
def test_within_ulps_of_the_exact_value(name, dtype):
    x = grid(dtype)
    got = np.empty_like(x)
    loop(dtype, name)(x, got)
    want = exact(name, x)
    with np.errstate(over="ignore"):
        rounded = want.astype(dtype)
    assert np.array_equal(np.isinf(got), np.isinf(rounded))
    assert np.array_equal(got == 0, rounded == 0)
    assert not np.isnan(got).any()
    finite = np.isfinite(rounded) & (rounded != 0)
    spacing = np.spacing(np.abs(rounded[finite])).astype(np.longdouble)
    ulps = np.abs(got[finite].astype(np.longdouble) - want[finite]) / spacing
    assert float(ulps.max()) <= MAX_ULPS[dtype, name]


@pytest.mark.parametrize("dtype", (np.float32, np.float64))
@pytest.mark.parametrize("name", ("exp", "sigmoid", "tanh"))
def test_nan_and_infinities(name, dtype):
    x = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0], dtype)
    got = np.empty_like(x)
    loop(dtype, name)(x, got)
    expected = {"exp": [np.nan, np.inf, 0, 1, 1], "sigmoid": [np.nan, 1, 0, 0.5, 0.5],
                "tanh": [np.nan, 1, -1, 0, 0]}[name]
    np.testing.assert_array_equal(got, np.array(expected, dtype))


@pytest.mark.parametrize("dtype", (np.float32, np.float64))
@pytest.mark.parametrize("name", ("exp", "sigmoid", "tanh"))
def test_the_loop_vectorises(name, dtype):
    f = FUNCTIONS[dtype, name]

    @njit(error_model="numpy")
    def apply(z):
        for i in range(z.size):
            z[i] = f(z[i])

    apply(np.ones(64, dtype))
    ir = "\n".join(apply.inspect_llvm().values())
    kind = "float" if dtype == np.float32 else "double"
    assert f"x {kind}>" in ir  # LLVM's vector types: <8 x float>, <4 x double>, ...
    # no libm call: neither @exp/@tanhf nor the intrinsics (@llvm.exp.v4f64 and the like),
    # which this LLVM lowers to one libm call per lane
    assert not re.search(r"call [^@\n]*@(llvm\.)?(exp|tanh)", ir)
