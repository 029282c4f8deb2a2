"""Dropout masks: one counter-based generator, the same bits on every target.

Inverted dropout of rate ``p`` on hidden layer ``l`` keeps each activation with
probability ``1 − p`` and scales the kept ones by ``1/(1 − p)``, in training only:

    forward    a^l = g(z^l) ⊙ m^l / (1 − p_l)             m^l_pj ∈ {0, 1}
    hidden     δ^l = (δ^{l+1} W^{l+1 T}) ⊙ g'(z^l) ⊙ m^l / (1 − p_l)

Why a counter-based generator. A mask is a pure function of ``(key, layer, row, column)``:
bit ``i`` of layer ``l`` in a step is ``bits(bits(step_key, l), i)``, ``i = p n_l + j``
the entry's row-major index in the batch, with ``bits(k, i)`` the ``i + 1``-th output of
SplitMix64 started at ``k`` (Steele, Lea & Flood 2014; the seeding generator of
``java.util.SplittableRandom``), and the entry is kept when its top 24 bits are at least
``round(p 2^24)`` (integer arithmetic only, so no target rounds differently). So the
reference backend (NumPy, here), the per-kernel CPU loops and the compiled epoch
(:mod:`gpubp.kernels.cpu_dropout`) and the CUDA kernels (:mod:`gpubp.kernels.cuda_dropout`)
draw the same masks from the same key without storing or transferring them: the forward
epilogue and the hidden-δ kernel each recompute the bits of their entries. The keys come
from the run's seeded generator: :func:`gpubp.training.loop.fit` draws one ``epoch_key``
per epoch from it (after the shuffle), and batch ``k`` of the epoch uses
``step_key = bits(epoch_key, k)``; the checkpoint records that generator, so a resumed run
draws the same keys. The stored activation is the scaled one, so ``g'`` (from ``a``) is
taken of ``a (1 − p)``, its unscaled value (to the last bit or two).

A fixed mask (:meth:`gpubp.Network.gradients`' ``dropout_mask``, the masks of
:meth:`gpubp.Network.trace`) is a :class:`Drop` carrying the 0/1 array itself.
"""

from collections import namedtuple

import numpy as np

MASK64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15  # SplitMix64's increment
MIX1, MIX2 = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB
KEEP_BITS = 24  # an entry's top 24 bits decide it: the rate is p to within 2^-25
_U = np.uint64


class Drop(namedtuple("Drop", "key threshold keep scale mask")):
    """Dropout of one layer in one step, as the kernels take it.

    ``key`` the layer's key (an int in [0, 2^64)), ``threshold`` ``round(p 2^24)``,
    ``keep`` ``1 − p`` and ``scale`` ``1/(1 − p)`` (Python floats, rounded to the arrays'
    dtype by the kernels), ``mask`` None (drawn from ``key``) or a fixed 0/1 array shaped
    like the layer's activations (then ``key`` is unused).
    """

    __slots__ = ()


def mix(x):
    """SplitMix64's output function of a 64-bit integer (Python ints, wrapped)."""
    x = ((x ^ (x >> 30)) * MIX1) & MASK64
    x = ((x ^ (x >> 27)) * MIX2) & MASK64
    return x ^ (x >> 31)


def bits(key, i):
    """The ``i + 1``-th SplitMix64 output from state ``key`` (Python ints)."""
    return mix((key + (i + 1) * GOLDEN) & MASK64)


def threshold(p):
    """The integer threshold of rate ``p``: an entry is dropped when its top bits are below it."""
    return int(round(p * (1 << KEEP_BITS)))


def layer_drop(step_key, layer, p):
    """The :class:`Drop` of hidden layer ``layer`` (1-based) at rate ``p`` in the step of
    ``step_key``; None when ``p`` is 0."""
    if not p:
        return None
    return Drop(bits(step_key, layer), threshold(p), 1.0 - p, 1.0 / (1.0 - p), None)


def fixed_drop(mask, p):
    """The :class:`Drop` of a fixed 0/1 ``mask`` at rate ``p`` (``p`` 0: the mask alone)."""
    return Drop(0, threshold(p), 1.0 - p, 1.0 / (1.0 - p), mask)


def from_row(drop, first_row, n):
    """The :class:`Drop` of a layer of width ``n`` seen from row ``first_row`` of its batch
    on (a rank's share): its entry ``(p, j)`` is the batch's ``(first_row + p, j)``.

    The bits of entry ``i`` are SplitMix64's output ``i + 1``, ``mix(key + (i + 1) G)``, so
    starting ``first_row n`` entries later is the key ``key + first_row n G`` (mod 2^64):
    the kernels need no row offset. A fixed mask is sliced instead.
    """
    if not first_row:
        return drop
    if drop.mask is not None:
        return drop._replace(mask=drop.mask[first_row:])
    return drop._replace(key=(drop.key + first_row * n * GOLDEN) & MASK64)


def keep_mask(key, shape, thresh):
    """The boolean keep-mask (True: kept) of a layer's ``shape`` (P, n) from its ``key``."""
    i = np.arange(1, int(np.prod(shape)) + 1, dtype=_U)
    x = i * _U(GOLDEN) + _U(key)  # wraps modulo 2^64, as uint64 arrays do
    x = (x ^ (x >> _U(30))) * _U(MIX1)
    x = (x ^ (x >> _U(27))) * _U(MIX2)
    x ^= x >> _U(31)
    return ((x >> _U(64 - KEEP_BITS)) >= _U(thresh)).reshape(shape)


def kept(drop, shape):
    """The boolean keep-mask of ``drop`` (its fixed mask, or drawn from its key)."""
    if drop.mask is not None:
        return np.asarray(drop.mask) != 0
    return keep_mask(drop.key, shape, drop.threshold)


def forward(a, drop):
    """``a ⊙ m / (1 − p)`` in place on the activations ``a`` (P, n): the reference epilogue."""
    m = kept(drop, a.shape)
    np.multiply(a, a.dtype.type(drop.scale), out=a, where=m)
    a[~m] = 0


def unscaling(drop, from_z):
    """The factor that turns a layer's stored quantity into what its ``g'`` is taken of:
    ``1 − p`` for the scaled activations ``a`` (``from_z`` False), 1 for a kept ``z``."""
    return 1.0 if from_z else drop.keep


def backward(delta, s, drop, derivative, from_z=False):
    """``δ ⊙ g'(s u) ⊙ m / (1 − p)`` in place: the reference hidden δ with dropout.

    ``s`` is the layer's stored activations ``a`` (scaled by the mask), or its kept
    ``z`` when ``from_z``; ``u`` is :func:`unscaling`; ``derivative(s u)`` is ``g'`` from
    the unscaled activations, or from ``z``.
    """
    T = s.dtype.type
    m = kept(drop, s.shape)
    u = unscaling(drop, from_z)
    delta *= derivative(s * T(u) if u != 1.0 else s)
    np.multiply(delta, T(drop.scale), out=delta, where=m)
    delta[~m] = 0
