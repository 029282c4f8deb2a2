"""Dropout on the CPU: the mask drawn inside the compiled loops (Numba ``@njit``).

The NumPy twin, and the generator's definition, is :mod:`gpubp.kernels.dropout`: an
entry ``i`` (row-major in the batch) of a layer with key ``k`` is kept when the top 24
bits of SplitMix64's output ``i + 1`` from ``k`` are at least the layer's threshold, so
these loops, the reference backend and the CUDA kernels drop the same entries. Nothing
is stored: the forward epilogue and the hidden-δ kernel each recompute their entries'
bits (a few integer multiplies per entry, next to the GEMM's ``n_{l-1}`` multiply-adds).

- :func:`_drop_forward`: ``a ⊙= m / (1 − p)`` after the activation (a second pass over
  the layer's block, still in cache after the epilogue: the float32 sigmoid and tanh of
  the epilogue are vectorised over whole rows, which a per-entry branch would undo);
- :func:`_hidden_delta_drop`: ``δ ⊙= g'(s u) m / (1 − p)``, the hidden-δ kernel with
  the mask fused in (one pass), for every hidden activation: ``s`` the stored
  activations and ``u = 1 − p`` (their unscaled value), or a kept ``z`` (gelu,
  gelu_tanh, silu: stored before the mask) and ``u = 1``
  (:func:`gpubp.kernels.dropout.unscaling`); leaky_relu takes its slope;
- :func:`_layer_key`: ``bits(bits(epoch_key, batch), layer)``, and :func:`_key_at`, a
  layer's key from a row of the batch on (a rank's share), for the compiled epoch.

JIT cache: as in :mod:`gpubp.kernels.cpu`, the loops compile ``_derivative1`` and
:func:`gpubp.kernels.cpu_activations.g_prime` (and the activation codes) in, so the entry points Python calls are closures over this module's
digest of its sources.
"""

from collections import namedtuple

import numpy as np
from numba import njit

from gpubp.kernels import cpu_activations, jit_cache
from gpubp.kernels.cpu import _derivative1, activation_code
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
def _kept(key, i, threshold):
    return (_bits(key, i) >> _TOP) >= threshold


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
    P, n = a.shape  # scale: a scalar of a's dtype
    for p in range(P):
        row = a[p]
        for j in range(n):
            if _kept(key, p * n + j, threshold):
                row[j] = row[j] * scale
            else:
                row[j] = 0  # exactly, as the reference (not 0 * inf)


@njit(error_model="numpy")
def _hidden_delta_drop(delta, s, code, slope, key, threshold, unscale, scale):
    """``δ ⊙= g'(s unscale) m / (1 − p)``: ``s`` the stored ``a`` (``unscale`` 1 − p) or
    kept ``z`` (``unscale`` 1); ``slope`` leaky_relu's (a float); ``unscale``, ``scale``
    scalars of δ's dtype."""
    P, n = delta.shape
    # g' by the loops of the later activations (float64 inside)
    special = cpu_activations.is_special(code)
    for p in range(P):
        drow = delta[p]
        srow = s[p]
        for j in range(n):
            if not _kept(key, p * n + j, threshold):
                drow[j] = 0
            elif special:
                drow[j] = drow[j] * cpu_activations.g_prime(float(srow[j] * unscale), code,
                                                            slope) * scale
            else:
                drow[j] = drow[j] * _derivative1(srow[j] * unscale, code) * scale


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
