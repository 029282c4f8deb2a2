"""The CPU dropout loops (``gpubp.kernels.cpu_dropout``): vectorised, and equal to the bit to
the per-entry definition.

The oracle: the loops written one entry at a time, with the mask bit from SplitMix64's
output of the entry's index (``_bits``) and a branch on it, as before they were rewritten
for LLVM's vectoriser (a row state stepped by ``+ G``, the top bits without the last
xorshift, a select, one loop per activation). Whether they vectorise: LLVM's IR, as
tests/test_cpu_math.py reads it.
"""

import re

import numpy as np
import pytest
from numba import njit

import gpubp
from gpubp.kernels import cpu_activations
from gpubp.kernels import cpu_dropout as CD
from gpubp.kernels import cpu_math32 as m32
from gpubp.kernels import dropout as D
from gpubp.kernels.cpu import _derivative1, activation_code
from gpubp.kernels.cpu_math import F32_LOOP
from gpubp.kernels.reference import FROM_Z

HIDDEN = gpubp.activations.HIDDEN


@njit(error_model="numpy")
def _forward_per_entry(a, key, threshold, scale):
    P, n = a.shape
    for p in range(P):
        for j in range(n):
            if (CD._bits(key, p * n + j) >> np.uint64(64 - D.KEEP_BITS)) >= threshold:
                a[p, j] = a[p, j] * scale
            else:
                a[p, j] = 0


_SINGLE = (cpu_activations.SOFTPLUS, cpu_activations.GELU, cpu_activations.SILU)


@njit(**F32_LOOP)
def _g_prime32(x, code, slope):
    """The g' that cpu_math32 has in float32 (softplus, gelu, silu), as the loops take it
    on float32 arrays, FMA contraction included (compiled on its own with the loops'
    options, so the oracle below computes it as they do); a float32 (one return type: no
    float64 to round through)."""
    if code == cpu_activations.SOFTPLUS:
        return m32._softplus_prime_f32(x, slope)
    if code == cpu_activations.GELU:
        return m32._gelu_prime_f32(x, slope)
    return m32._silu_prime_f32(x, slope)


@njit(error_model="numpy")
def _delta_per_entry(delta, s, code, slope, key, threshold, unscale, scale, single):
    P, n = delta.shape
    for p in range(P):
        for j in range(n):
            if (CD._bits(key, p * n + j) >> np.uint64(64 - D.KEEP_BITS)) < threshold:
                delta[p, j] = 0
            elif single and (code == _SINGLE[0] or code == _SINGLE[1] or code == _SINGLE[2]):
                delta[p, j] = delta[p, j] * _g_prime32(s[p, j] * unscale, code, slope) * scale
            elif cpu_activations.is_special(code):
                delta[p, j] = delta[p, j] * cpu_activations.g_prime(
                    float(s[p, j] * unscale), code, slope) * scale
            else:
                delta[p, j] = delta[p, j] * _derivative1(s[p, j] * unscale, code) * scale


def _assert_same_bits(got, want):
    """Equal to the bit (the sign of 0 included), NaN for NaN (its sign and payload are the
    vector unit's or the scalar one's: tests/test_cpu_math.py)."""
    nan = np.isnan(want)
    np.testing.assert_array_equal(np.isnan(got), nan)
    assert got[~nan].tobytes() == want[~nan].tobytes()


def test_the_top_bits_skip_the_last_xorshift():
    rng = np.random.default_rng(0)
    states = [0, 1, D.MASK64, D.GOLDEN] + [int(x) for x in rng.integers(0, 2**63, 200)] + \
        [int(x) + 2**63 for x in rng.integers(0, 2**63, 200)]
    for x in states:
        assert int(CD._top_bits(np.uint64(x))) == D.mix(x) >> (64 - D.KEEP_BITS)


def _block(dtype, kept, seed):
    """Activations (or ``z``) and δ shaped like ``kept``, with the awkward values (±inf,
    NaN, ±0, a large ``z``) at kept entries and at dropped ones."""
    rng = np.random.default_rng(seed)
    s = (3 * rng.normal(size=kept.shape)).astype(dtype)
    delta = rng.normal(size=kept.shape).astype(dtype)
    awkward = [np.inf, -np.inf, np.nan, 0.0, -0.0, 40.0]
    for where in (np.flatnonzero(kept), np.flatnonzero(~kept)):
        s.reshape(-1)[where[:6]] = awkward[:where[:6].size]
        delta.reshape(-1)[where[6:12]] = awkward[:where[6:12].size]
    return s, delta


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(37, 13), (1, 16), (3, 64), (2, 513)])
@pytest.mark.parametrize("p", [0.2, 0.9])
def test_the_forward_mask_equals_the_per_entry_branch(dtype, shape, p):
    drop = D.layer_drop(0xDEADBEEF12345 + shape[1], 2, p)
    s, _ = _block(dtype, D.kept(drop, shape), 1)
    key, threshold, scale = np.uint64(drop.key), np.uint64(drop.threshold), dtype(drop.scale)
    got, want = s.copy(), s.copy()
    CD._drop_forward(got, key, threshold, scale)
    _forward_per_entry(want, key, threshold, scale)
    _assert_same_bits(got, want)
    dropped = ~D.kept(drop, shape)
    assert dropped.any() and (got[dropped] == 0).all()  # exactly 0: inf is dropped too
    assert np.isinf(got).any() and np.isnan(got).any()  # kept: scaled, whatever they are
    assert not np.signbit(got[dropped]).any()
    reference = s.copy()
    D.forward(reference, drop)  # and the NumPy twin
    _assert_same_bits(got, reference)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("activation", HIDDEN)
def test_the_hidden_delta_equals_the_per_entry_branch(dtype, activation):
    shape = (37, 21)
    drop = D.layer_drop(0x123456789ABCDEF, 1, 0.3)
    s, delta = _block(dtype, D.kept(drop, shape), 2)
    from_z = activation in FROM_Z
    args = (activation_code(activation, elementwise=True), 0.2, np.uint64(drop.key),
            np.uint64(drop.threshold), dtype(D.unscaling(drop, from_z)), dtype(drop.scale))
    got, want = delta.copy(), delta.copy()
    CD._hidden_delta_drop(got, s, *args)
    _delta_per_entry(want, s, *args, dtype == np.float32)
    _assert_same_bits(got, want)
    dropped = ~D.kept(drop, shape)
    assert (got[dropped] == 0).all() and not np.signbit(got[dropped]).any()
    assert np.isnan(got[~dropped]).any()  # the NaNs and infs of kept entries went through
    public = delta.copy()  # and the public kernel takes the same loop
    CD.hidden_delta(public, s, activation, drop, 0.2)
    _assert_same_bits(public, got)


def _vector_loops(ir):
    """The bodies of LLVM's vectorised loops (``vector.body`` blocks) in ``ir``."""
    return [body for _, body in
            re.findall(r"^(vector\.body[\w.]*):.*?\n(.*?)(?=^\S[^\n]*:)", ir, re.S | re.M)]


def _hashing(body, kind):
    """Whether a vectorised loop draws the mask in vectors and stores vectors of ``kind``,
    loading them whole (no masked load: the mask is a select)."""
    return (re.search(r"= mul <\d+ x i64>", body) is not None
            and re.search(rf"store <\d+ x {kind}>", body) is not None
            and "llvm.masked" not in body)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_loops_vectorise(dtype):
    """The forward mask pass and the masked hidden δ of every hidden activation each run
    as one vectorised loop: the hash in ``<N x i64>`` vectors, the values in ``<N x float>``
    (``double``); a per-entry branch, or a branch on the code inside the loop, kept them
    (all but the first four activations') scalar."""
    kind = "float" if dtype == np.float32 else "double"
    a = np.ones((2, 64), dtype)
    key, threshold, one = np.uint64(5), np.uint64(D.threshold(0.2)), dtype(1)
    CD._drop_forward(a, key, threshold, one)
    CD._hidden_delta_drop(a.copy(), a, 0, 0.01, key, threshold, one, one)

    def ir_of(fn):
        return next(ir for sig, ir in fn.inspect_llvm().items() if str(sig[0].dtype) == np.dtype(dtype).name)

    forward = _vector_loops(ir_of(CD._drop_forward))
    assert len(forward) == 1 and _hashing(forward[0], kind)
    delta = [body for body in _vector_loops(ir_of(CD._hidden_delta_drop)) if _hashing(body, kind)]
    assert len(delta) == len(HIDDEN)  # one per activation (the code dispatched outside)
