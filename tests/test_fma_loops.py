"""FMA contraction in the float32 loops of the CPU kernels, and only there
(``cpu_math.F32_LOOP``, docs/performance.md "FMA in the float32 loops").

- The float32 gelu forward and δ loops (with and without dropout) fuse their polynomials'
  multiply-adds: ``contract`` on their ``<8 x float>`` arithmetic in LLVM's IR, and
  ``vfmadd...ps`` on ymm registers in the machine code where the CPU has FMA.
- The float32 kernels compute what tests/test_cpu_math.py and tests/test_cpu_math32.py
  measure in ulps: to the bit, the scalar functions in a plain loop compiled with the same
  options (so those bounds are the kernels' bounds).
- The float64 loops are what they were before FMA: no ``contract`` in their IR, no FMA in
  their code, and to the bit the same scalar functions in a loop compiled without fastmath.
"""

import re

import numpy as np
import pytest
from llvmlite import binding
from numba import njit

from gpubp.kernels import cpu, cpu_math
from gpubp.kernels import cpu_activations as A
from gpubp.kernels import cpu_dropout as CD
from gpubp.kernels import cpu_math32 as m32

PLAIN = {"error_model": "numpy"}  # the float64 loops' options: no fastmath
SLOPE = 0.2
# name: the float64 g and g' of cpu_activations and their float32 twins (None: the float32
# loop is the float64 function of float(s), rounded once, compiled without fastmath)
FUNCTIONS = {
    "leaky_relu": (A._leaky_relu, None, A._leaky_relu_prime, None),
    "elu": (A._elu, m32._elu_f32, A._elu_prime, None),
    "selu": (A._selu, m32._selu_f32, A._selu_prime, None),
    "softplus": (A._softplus, m32._softplus_f32, A._softplus_prime, m32._softplus_prime_f32),
    "gelu": (A._gelu, m32._gelu_f32, A._gelu_prime, m32._gelu_prime_f32),
    "gelu_tanh": (A._gelu_tanh, m32._gelu_tanh_f32, A._gelu_tanh_prime, None),
    "silu": (A._silu, m32._silu_f32, A._silu_prime, m32._silu_prime_f32),
}
CODES = dict(zip(FUNCTIONS, (A.LEAKY_RELU, A.ELU, A.SELU, A.SOFTPLUS, A.GELU, A.GELU_TANH,
                             A.SILU)))
_LOOPS = {}


def _loops(f, options):
    """``(forward, delta)``: ``z = f(z + b)`` and ``δ ⊙= f(s)``, plain row loops over ``f``
    (inlined) compiled with ``options``; cached per function and options."""
    key = (f, options is PLAIN)
    if key not in _LOOPS:
        @njit(**options)
        def forward(z, b, slope):
            P, n = z.shape
            for p in range(P):
                for j in range(n):
                    z[p, j] = f(z[p, j] + b[j], slope)

        @njit(**options)
        def delta(d, s, slope):
            P, n = d.shape
            for p in range(P):
                for j in range(n):
                    d[p, j] *= f(s[p, j], slope)
        _LOOPS[key] = forward, delta
    return _LOOPS[key]


def _widened(f64):
    return njit(inline="always", error_model="numpy")(lambda s, slope: f64(float(s), slope))


def _block(dtype, seed):
    """z (or s), b, δ of shape (37, 67): normal values with the awkward ones among them."""
    rng = np.random.default_rng(seed)
    z = (4 * rng.normal(size=(37, 67))).astype(dtype)
    z.reshape(-1)[:8] = [np.inf, -np.inf, np.nan, 0.0, -0.0, 40.0, -40.0, 1e-30]
    b = rng.normal(size=67).astype(dtype)
    return z, b, rng.normal(size=z.shape).astype(dtype)


def _assert_same_bits(got, want):
    nan = np.isnan(want)
    np.testing.assert_array_equal(np.isnan(got), nan)
    assert got[~nan].tobytes() == want[~nan].tobytes()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_the_kernels_compute_what_the_loops_of_their_options_compute(name, dtype):
    f64, f32, f64_prime, f32_prime = FUNCTIONS[name]
    z, b, delta = _block(dtype, 1)
    single = dtype == np.float32
    for kind, f_wide, f_single in (("forward", f64, f32), ("delta", f64_prime, f32_prime)):
        use32 = single and f_single is not None
        forward, backward = _loops(f_single if use32 else _widened(f_wide),
                                   cpu_math.F32_LOOP if use32 else PLAIN)
        if kind == "forward":
            got, want = z.copy(), z.copy()
            A.bias_activation(got, b, CODES[name], SLOPE, got[:0])
            forward(want, b, SLOPE)
        else:
            got, want = delta.copy(), delta.copy()
            A.hidden_delta(got, z, CODES[name], SLOPE)
            backward(want, z, SLOPE)
        _assert_same_bits(got, want)


@njit(inline="always", error_model="numpy")
def _sigmoid32(x, slope):
    return cpu_math._sigmoid_f32(x)


@njit(inline="always", error_model="numpy")
def _tanh32(x, slope):
    return cpu_math._tanh_f32(x)


@njit(inline="always", error_model="numpy")
def _sigmoid64(x, slope):
    return cpu_math._sigmoid_f64(x)


@njit(inline="always", error_model="numpy")
def _tanh64(x, slope):
    return cpu_math._tanh_f64(x)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["sigmoid", "tanh"])
def test_the_sigmoid_and_tanh_epilogues_compute_what_the_loops_compute(name, dtype):
    single = dtype == np.float32
    f = {("sigmoid", True): _sigmoid32, ("tanh", True): _tanh32,
         ("sigmoid", False): _sigmoid64, ("tanh", False): _tanh64}[name, single]
    forward, _ = _loops(f, cpu_math.F32_LOOP if single else PLAIN)
    z, b, _ = _block(dtype, 2)
    got, want = z.copy(), z.copy()
    cpu.bias_activation(got, b, name)
    forward(want, b, 0.0)
    _assert_same_bits(got, want)


@njit(error_model="numpy")
def _forward_gelu(z, b, kept):
    A.GELU_FORWARD(z, b, kept, 0.0)


@njit(error_model="numpy")
def _delta_gelu(delta, s):
    A.GELU_DELTA(delta, s, 0.0)


@njit(error_model="numpy")
def _delta_gelu_drop(delta, s, key, threshold, one):
    CD._GELU1(delta, s, 0.0, key, threshold, one, one)


def _compiled(loop, dtype):
    """``(LLVM IR, assembly)`` of the gelu ``loop`` (forward, delta, delta with dropout)
    compiled for ``dtype`` arrays."""
    x = np.ones((4, 64), dtype)
    if loop == "forward":
        fn, args = _forward_gelu, (x, x[0], x[:0])
    elif loop == "delta":
        fn, args = _delta_gelu, (x, x.copy())
    else:
        fn, args = _delta_gelu_drop, (x, x.copy(), np.uint64(3), np.uint64(1000), dtype(1))
    fn(*args)
    sig = next(s for s in fn.signatures if str(s[0].dtype) == np.dtype(dtype).name)
    return fn.inspect_llvm(sig), fn.inspect_asm(sig)


def _has_fma():
    return binding.get_host_cpu_features().get("fma", False)


@pytest.mark.parametrize("loop", ["forward", "delta", "dropout delta"])
def test_the_float32_gelu_loops_fuse_multiply_adds(loop):
    ir, asm = _compiled(loop, np.float32)
    assert re.search(r"= fmul contract <8 x float>", ir)  # the products may fuse ...
    assert re.search(r"= fadd contract <8 x float>", ir)  # ... with the sums they feed
    assert not re.search(r"= f\w+ (fast|nnan|ninf|reassoc)", ir)  # and nothing else of fastmath
    if _has_fma():
        # AT&T syntax: vfmadd213ps %ymm1, %ymm2, %ymm3 (and vfnmadd, vfmsub)
        assert len(re.findall(r"vfn?m(add|sub)\d+ps\s+[^\n]*%ymm", asm)) >= 10


@pytest.mark.parametrize("loop", ["forward", "delta", "dropout delta"])
def test_the_float64_gelu_loops_do_not(loop):
    ir, asm = _compiled(loop, np.float64)
    assert "x double>" in ir  # vectorised ...
    assert " contract " not in ir  # ... with products and sums rounded one by one
    assert not re.search(r"vfn?m(add|sub)\d+[ps]d", asm)
