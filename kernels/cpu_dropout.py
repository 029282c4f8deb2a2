"""Dropout on the CPU: the mask drawn inside the compiled loops (Numba ``@njit``).

The NumPy twin, and the generator's definition, is :mod:`gpubp.kernels.dropout`: an
entry ``i`` (row-major in the batch) of a layer with key ``k`` is kept when the top 24
bits of SplitMix64's output ``i + 1`` from ``k`` are at least the layer's threshold, so
these loops, the reference backend and the CUDA kernels drop the same entries. No mask
is stored: the forward epilogue and the hidden-δ kernel each recompute their entries'
bits (a few integer multiplies per entry, next to the GEMM's ``n_{l-1}`` multiply-adds),
the compiled epoch's gelu, gelu_tanh and silu layers keep ``g'(z)`` from the forward
pass instead of ``z`` (:func:`kept_delta_drop`).

- :func:`_drop_forward`: ``a ⊙= m / (1 − p)`` after the activation (a second pass over
  the layer's block, still in cache after the epilogue: the float32 sigmoid and tanh of
  the epilogue are vectorised over whole rows, which the hash would crowd);
- :func:`_hidden_delta_drop`: ``δ ⊙= g'(s u) m / (1 − p)``, the hidden-δ kernel with
  the mask fused in (one pass), for every hidden activation: ``s`` the stored
  activations and ``u = 1 − p`` (their unscaled value), or a kept ``z`` (gelu,
  gelu_tanh, silu: stored before the mask) and ``u = 1``
  (:func:`gpubp.kernels.dropout.unscaling`); leaky_relu takes its slope;
- :func:`_layer_key`: ``bits(bits(epoch_key, batch), layer)``, and :func:`_key_at`, a
  layer's key from a row of the batch on (a rank's share), for the compiled epoch.

Vectorised (tests/test_dropout.py reads the LLVM IR): each loop runs along a row, its
state stepped by ``+ G`` per entry (no ``(i + 1) G`` multiply), the mask applied by a
select (the value computed for every entry, 0 stored for a dropped one: exactly 0,
never ``0 · inf``), and ``_hidden_delta_drop`` has one loop per activation (a branch on
the code inside the loop stops LLVM; :func:`_drop_delta_rows`). What remains per entry
is the hash's two 64-bit multiplies, which AVX2 builds from three ``vpmuludq`` each
(docs/performance.md, "Dropout masks"). The arithmetic is that of the per-entry
branches before, to the bit.

JIT cache: as in :mod:`gpubp.kernels.cpu`, the loops compile ``_derivative1`` and the
g' of :mod:`gpubp.kernels.cpu_activations` (and the activation codes) in, so the entry
points Python calls are closures over this module's digest of its sources.
"""

from collections import namedtuple

import numpy as np
from numba import njit, types
from numba.extending import overload

from gpubp.kernels import cpu_activations, jit_cache
from gpubp.kernels import cpu_math32 as m32
from gpubp.kernels.cpu import IDENTITY, RELU, SIGMOID, TANH, _derivative1, activation_code
from gpubp.kernels.cpu_math import F32_LOOP
from gpubp.kernels.dropout import (GOLDEN, KEEP_BITS, MIX1, MIX2, backward, forward,
                                   unscaling)
from gpubp.kernels.reference import FROM_Z, SLOPE, activation_derivative

_GOLDEN, _MIX1, _MIX2 = np.uint64(GOLDEN), np.uint64(MIX1), np.uint64(MIX2)
_S30, _S27, _S31, _TOP = (np.uint64(s) for s in (30, 27, 31, 64 - KEEP_BITS))
_ONE = np.uint64(1)


@njit(inline="always", error_model="numpy")
def _bits(key, i):
    """SplitMix64's output ``i + 1`` from state ``key`` (uint64; ``i`` an index >= 0)."""
    x = key + (np.uint64(i) + _ONE) * _GOLDEN  # uint64 throughout: wraps modulo 2^64
    x = (x ^ (x >> _S30)) * _MIX1
    x = (x ^ (x >> _S27)) * _MIX2
    return x ^ (x >> _S31)


@njit(inline="always", error_model="numpy")
def _top_bits(x):
    """The top ``KEEP_BITS`` bits of SplitMix64's output function of the state ``x``
    (``mix(x) >> (64 − KEEP_BITS)``): its last step, ``x ^ (x >> 31)``, leaves the top 33
    bits as they are, so it is left out (one xorshift less per entry)."""
    x = (x ^ (x >> _S30)) * _MIX1
    x = (x ^ (x >> _S27)) * _MIX2
    return x >> _TOP


@njit(inline="always", error_model="numpy")
def _row_state(key, p, n):
    """The state that ``+ G`` turns into row ``p``'s first entry's (``key + (p n + 1) G``):
    a row steps its state by ``G`` per entry, an addition where ``(i + 1) G`` is a
    64-bit multiply (which AVX2 has no instruction for)."""
    return key + np.uint64(p * n) * _GOLDEN


@njit(error_model="numpy")
def _layer_key(epoch_key, batch, layer):
    """The key of ``layer`` in batch ``batch`` of the epoch of ``epoch_key``."""
    return _bits(_bits(epoch_key, batch), layer)


@njit(inline="always", error_model="numpy")
def _key_at(step_key, layer, first_row, n):
    """The key of ``layer`` (width ``n``) in the step of ``step_key``, seen from global
    row ``first_row`` of the batch on (``gpubp.kernels.dropout.from_row``)."""
    return _bits(step_key, layer) + np.uint64(first_row * n) * _GOLDEN


@njit(error_model="numpy")
def _drop_forward(a, key, threshold, scale):
    """``a ⊙= m / (1 − p)``: a select, not a branch, so that the loop vectorises; a dropped
    entry is exactly 0 (as the reference's, not 0 · inf)."""
    P, n = a.shape  # scale: a scalar of a's dtype
    zero = scale * np.float32(0)  # of scale's dtype (an int 0 would make it float64)
    t = np.int64(threshold)  # <= 2^24: a signed compare, one instruction on AVX2
    for p in range(P):
        row = a[p]
        x = _row_state(key, p, n)
        for j in range(n):
            x += _GOLDEN
            v = row[j] * scale  # loaded whatever the mask: a select, not a masked load
            row[j] = v if np.int64(_top_bits(x)) >= t else zero


@njit(inline="always", error_model="numpy")
def _given(s, slope):
    """The g' :func:`kept_delta_drop` takes: the kept ``g'(z)`` itself."""
    return s


@njit(error_model="numpy")
def kept_delta_drop(delta, kept, key, threshold, scale):
    """``δ ⊙= kept m / (1 − p)`` over (P, n), ``kept`` the ``g'(z)`` the compiled epoch's
    forward pass kept (:func:`gpubp.kernels.cpu_activations.bias_activation_prime`): the
    masked δ loop of :func:`_hidden_delta_drop` (the same products, ``(δ g') / (1 − p)``),
    with no g' to compute. (Masking ``kept`` in the forward pass instead, to draw the mask once, ran
    slower: docs/performance.md, "The kept g'(z) of gelu, gelu_tanh and silu".)"""
    one = scale * np.float32(0) + np.float32(1)  # of scale's dtype: an int would widen it
    _drop_delta_rows(delta, kept, _given, 0.0, key, threshold, one, scale)


@njit(inline="always", error_model="numpy")
def _drop_delta_rows(delta, s, f, slope, key, threshold, unscale, scale):
    """``δ ⊙= f(s unscale) m scale`` over (P, n), ``f`` one activation's ``g'``: one loop
    per activation and a select for the mask, so that LLVM vectorises it (a branch on the
    code or on the mask inside the loop keeps it scalar)."""
    P, n = delta.shape
    t = np.int64(threshold)
    for p in range(P):
        drow = delta[p]
        srow = s[p]
        x = _row_state(key, p, n)
        for j in range(n):
            x += _GOLDEN
            v = drow[j] * f(srow[j] * unscale, slope) * scale
            drow[j] = v if np.int64(_top_bits(x)) >= t else 0


# g' of each activation as _drop_delta_rows takes it: the first four by _derivative1 in
# the array's dtype (as cpu._hidden_delta), the later ones by _by_type below
@njit(inline="always", error_model="numpy")
def _sigmoid_prime(a, slope):
    return _derivative1(a, SIGMOID)


@njit(inline="always", error_model="numpy")
def _tanh_prime(a, slope):
    return _derivative1(a, TANH)


@njit(inline="always", error_model="numpy")
def _relu_prime(a, slope):
    return _derivative1(a, RELU)


@njit(inline="always", error_model="numpy")
def _identity_prime(a, slope):
    return _derivative1(a, IDENTITY)


def _widened(f):
    """``f`` of ``float(s)``: a g' of :mod:`gpubp.kernels.cpu_activations`, float64 inside."""

    @njit(inline="always", error_model="numpy")
    def prime(s, slope):
        return f(float(s), slope)

    return prime


def _by_type(f64, f32=None):
    """A compiled-only ``rows(delta, s, slope, key, threshold, unscale, scale)``:
    :func:`_drop_delta_rows` over ``f32`` for float32 arrays, else over ``f64`` of
    ``float(s)``; chosen by Numba's typing (an ``overload``), one loop per dtype, as
    :func:`gpubp.kernels.cpu_activations._by_type` chooses the loops without dropout (the
    same pairs: float32 where :mod:`gpubp.kernels.cpu_math32` has the g', compiled on its
    own with FMA contraction, ``cpu_math.F32_LOOP``)."""
    wide = _widened(f64)
    rows32 = njit(**F32_LOOP)(lambda delta, s, slope, key, threshold, unscale, scale:
                              _drop_delta_rows(delta, s, f32, slope, key, threshold, unscale,
                                               scale))

    def rows(delta, s, slope, key, threshold, unscale, scale):
        raise NotImplementedError("compiled code only")

    @overload(rows)
    def _rows(delta, s, slope, key, threshold, unscale, scale):
        f = f32 if f32 is not None and delta.dtype == types.float32 else wide
        if f is f32:
            return lambda delta, s, slope, key, threshold, unscale, scale: rows32(
                delta, s, slope, key, threshold, unscale, scale)
        return lambda delta, s, slope, key, threshold, unscale, scale: _drop_delta_rows(
            delta, s, f, slope, key, threshold, unscale, scale)
    return rows


_LEAKY_RELU1 = _by_type(cpu_activations._leaky_relu_prime)
_ELU1 = _by_type(cpu_activations._elu_prime)
_SELU1 = _by_type(cpu_activations._selu_prime)
_SOFTPLUS1 = _by_type(cpu_activations._softplus_prime, m32._softplus_prime_f32)
_GELU1 = _by_type(cpu_activations._gelu_prime, m32._gelu_prime_f32)
_GELU_TANH1 = _by_type(cpu_activations._gelu_tanh_prime)
_SILU1 = _by_type(cpu_activations._silu_prime, m32._silu_prime_f32)


@njit(error_model="numpy")
def _hidden_delta_drop(delta, s, code, slope, key, threshold, unscale, scale):
    """``δ ⊙= g'(s unscale) m / (1 − p)``: ``s`` the stored ``a`` (``unscale`` 1 − p) or
    kept ``z`` (``unscale`` 1); ``slope`` leaky_relu's (a float); ``unscale``, ``scale``
    scalars of δ's dtype. One vectorised loop per activation (:func:`_drop_delta_rows`)."""
    k, t, u, c = key, threshold, unscale, scale
    if code == SIGMOID:
        _drop_delta_rows(delta, s, _sigmoid_prime, slope, k, t, u, c)
    elif code == TANH:
        _drop_delta_rows(delta, s, _tanh_prime, slope, k, t, u, c)
    elif code == RELU:
        _drop_delta_rows(delta, s, _relu_prime, slope, k, t, u, c)
    elif code == cpu_activations.LEAKY_RELU:
        _LEAKY_RELU1(delta, s, slope, k, t, u, c)
    elif code == cpu_activations.ELU:
        _ELU1(delta, s, slope, k, t, u, c)
    elif code == cpu_activations.SELU:
        _SELU1(delta, s, slope, k, t, u, c)
    elif code == cpu_activations.SOFTPLUS:
        _SOFTPLUS1(delta, s, slope, k, t, u, c)
    elif code == cpu_activations.GELU:
        _GELU1(delta, s, slope, k, t, u, c)
    elif code == cpu_activations.GELU_TANH:
        _GELU_TANH1(delta, s, slope, k, t, u, c)
    elif code == cpu_activations.SILU:
        _SILU1(delta, s, slope, k, t, u, c)
    else:  # identity
        _drop_delta_rows(delta, s, _identity_prime, slope, k, t, u, c)


# -- public kernels (the reference's dropout signatures) ----------------------------------
def drop_forward(a, drop):
    """``a ⊙= m / (1 − p)`` in place (``a``: (P, n)); ``drop`` a
    :class:`~gpubp.kernels.dropout.Drop` (a fixed mask takes the NumPy twin)."""
    if drop.mask is not None:
        forward(a, drop)
        return
    _ENTRY.drop_forward(a, np.uint64(drop.key), np.uint64(drop.threshold),
                        a.dtype.type(drop.scale))


def hidden_delta(delta, a, activation, drop, slope=SLOPE):
    """``δ ⊙= g'(a (1 − p)) m / (1 − p)`` in place: the hidden δ of a layer with dropout;
    ``a`` is the kept ``z`` for an activation of ``FROM_Z`` (then ``δ ⊙= g'(z) m / (1 − p)``),
    ``slope`` leaky_relu's."""
    code = activation_code(activation, elementwise=True)
    from_z = activation in FROM_Z
    if drop.mask is not None:
        backward(delta, a, drop, lambda u: activation_derivative(u, activation, slope), from_z)
        return
    T = a.dtype.type
    _ENTRY.hidden_delta_drop(delta, a, code, float(slope), np.uint64(drop.key),
                             np.uint64(drop.threshold), T(unscaling(drop, from_z)),
                             T(drop.scale))


def _entry_points(kernels_digest):
    """Cached closures over ``kernels_digest`` (see :mod:`gpubp.kernels.cpu`)."""

    @njit(cache=True, error_model="numpy")
    def drop_forward(a, key, threshold, scale):
        if False:  # never runs: the captured digest is only part of the cache key
            kernels_digest
        _drop_forward(a, key, threshold, scale)

    @njit(cache=True, error_model="numpy")
    def hidden_delta_drop(delta, s, code, slope, key, threshold, unscale, scale):
        if False:
            kernels_digest
        _hidden_delta_drop(delta, s, code, slope, key, threshold, unscale, scale)

    return _Entry(drop_forward, hidden_delta_drop)


_Entry = namedtuple("_Entry", "drop_forward hidden_delta_drop")
KERNELS_DIGEST = jit_cache.digest(jit_cache.kernel_sources(__name__))
_ENTRY = _entry_points(KERNELS_DIGEST)
