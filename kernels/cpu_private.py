"""DP-SGD steps inside the compiled CPU epoch (``fit(privacy=DPSGD(...))`` on ``cpu``).

The step of :func:`gpubp.core.private_step.private_step`, compiled: for each batch,
forward and ``δ^L`` as in :mod:`gpubp.kernels.cpu_epoch`, then

1. the δ recursion for every layer first (``δ^{l-1} = (δ^l W^{l T}) ⊙ g'``, dropout's mask
   fused as in ``_backward``), with no weight gradient: a norm needs every ``δ^l``;
2. each row's squared norm ``Σ_l (‖a_p^{l-1}‖² + 1) ‖δ_p^l‖²`` (the rank-one terms of
   :mod:`gpubp.core.per_example`, the bias the weight of an input 1), the clip factor
   ``min(1, C / (P ‖g_p‖ + 10⁻⁶))`` and the scaling of row p of every ``δ^l`` by it
   times ``P`` (``δ`` carries the mean's ``1/P``);
3. the weight-gradient GEMMs into ``nabla``, the noise row of the step added, the sum
   times ``1 / B`` (the step's expected batch size), and the optimizer's step
   (:func:`gpubp.kernels.cpu_epoch_update._apply`, with its clipping of the noisy mean).

The batches have any size (Poisson samples, an empty one too): batch ``k`` is rows
``order[bounds[k]:bounds[k + 1]]``. The noise is drawn by the caller, in the order the
per-kernel loop draws it (:mod:`gpubp.training.privacy`), and handed over as a block
``(steps, N)`` already times ``σ C``, so both paths add the same numbers.

Kept apart from :mod:`gpubp.kernels.cpu_epoch` (the plain epoch's ``_backward`` interleaves
the δ recursion with the weight gradients, which clipping cannot); it reuses that
module's inlined forward and output helpers. JIT cache: a closure over this module's
own digest of the sources it compiles in, as :mod:`gpubp.kernels.cpu_epoch` explains.
"""

import math
from collections import namedtuple

import numpy as np
from numba import njit

from gpubp.kernels import jit_cache
from gpubp.kernels.cpu import _column_sums
from gpubp.kernels.cpu_dropout import _bits
from gpubp.kernels.cpu_epoch import _batch, _block, _forward, _output, _squared_weights, \
    hidden_error
from gpubp.kernels.cpu_epoch_update import _apply
from gpubp.kernels.epoch_args import Batches, Buffers, Codes, Layout, Update

CLIP_EPS = 1e-6  # as gpubp.core.private_step.CLIP_EPS (Opacus's), not imported: layers


class Private(namedtuple("Private", "bounds noise expected max_grad_norm scale")):
    """The private steps of a call: ``bounds`` int64 (steps + 1,), batch ``k`` is
    ``Batches.order[bounds[k]:bounds[k + 1]]``; ``noise`` (steps, N) of ``theta``'s dtype,
    the draws times ``σ C`` (0 rows: no noise); ``expected`` float64 (steps,), each step's
    divisor ``B``; ``max_grad_norm`` ``C``; ``scale`` (cap,) of ``theta``'s dtype, the
    workspace of the rows' factors."""

    __slots__ = ()

    @classmethod
    def of(cls, bounds, noise, expected, max_grad_norm, scale):
        """With the field types the compiled epoch is specialised for."""
        return cls(np.ascontiguousarray(bounds, np.int64), noise,
                   np.ascontiguousarray(expected, np.float64), float(max_grad_norm), scale)


@njit(error_model="numpy", inline="always")
def _deltas(a_0, buffers, layout, codes, P, masks_at):
    """``δ^{L-1} .. δ^1`` from ``δ^L``, no weight gradient (``_backward``'s recursion;
    ``masks_at`` its ``(step key, first row)``)."""
    theta, acts, deltas, sizes = buffers.theta, buffers.acts, buffers.deltas, layout.sizes
    for l in range(sizes.size - 1, 1, -1):
        n_in, n_out = sizes[l - 1], sizes[l]
        a_prev = _block(acts, layout.a_offsets[l - 1], P, n_in)
        delta = _block(deltas, layout.d_offsets[l], P, n_out)
        delta_prev = _block(deltas, layout.d_offsets[l - 1], P, n_in)
        np.dot(delta, _block(theta, layout.w_offsets[l - 1], n_in, n_out).T, delta_prev)
        hidden_error(delta_prev, a_prev, acts, layout, codes, l - 1, masks_at)


@njit(error_model="numpy", inline="always")
def _clip_rows(a_0, buffers, layout, P, max_grad_norm, scale):
    """Row p of every ``δ^l`` times ``P min(1, C / (‖g_p‖ + 10⁻⁶))``, ``‖g_p‖`` the norm
    of example p's own gradient (``P δ_p^l`` its error); the squares summed in float64."""
    acts, deltas, sizes = buffers.acts, buffers.deltas, layout.sizes
    dtype = scale.dtype.type
    for p in range(P):
        total = 0.0
        for l in range(1, sizes.size):
            a = a_0[p] if l == 1 else _block(acts, layout.a_offsets[l - 1], P, sizes[l - 1])[p]
            d = _block(deltas, layout.d_offsets[l], P, sizes[l])[p]
            a_sq, d_sq = 1.0, 0.0
            for i in range(a.size):
                a_sq += float(a[i]) * float(a[i])
            for j in range(d.size):
                d_sq += float(d[j]) * float(d[j])
            total += a_sq * d_sq
        factor = min(1.0, max_grad_norm / (math.sqrt(total) * P + CLIP_EPS))
        scale[p] = dtype(factor) * dtype(P)  # in the dtype, as the per-kernel step rounds it
    for l in range(1, sizes.size):
        delta = _block(deltas, layout.d_offsets[l], P, sizes[l])
        for p in range(P):
            delta[p] *= scale[p]


@njit(error_model="numpy", inline="always")
def _weight_gradients(a_0, buffers, layout, P):
    """``∂W^l = a^{l-1 T} δ^l`` by BLAS and ``∂b^l = Σ_p δ^l``, l = 1..L, into ``nabla``."""
    acts, deltas, nabla, sizes = buffers.acts, buffers.deltas, buffers.nabla, layout.sizes
    for l in range(1, sizes.size):
        n_in, n_out = sizes[l - 1], sizes[l]
        w = layout.w_offsets[l - 1]
        a_prev = a_0 if l == 1 else _block(acts, layout.a_offsets[l - 1], P, n_in)
        delta = _block(deltas, layout.d_offsets[l], P, n_out)
        np.dot(a_prev.T, delta, _block(nabla, w, n_in, n_out))
        _column_sums(delta, nabla[w + n_in * n_out:w + n_in * n_out + n_out])


@njit(error_model="numpy", inline="always")
def _noisy_mean(nabla, private, k):
    """``nabla ← (nabla + noise_k) / B_k`` in the dtype (two passes, as the per-kernel
    step's two in-place NumPy operations)."""
    if private.noise.shape[0] > 0:
        noise = private.noise[k]
        for i in range(nabla.size):
            nabla[i] += noise[i]
    inverse = nabla.dtype.type(1.0 / private.expected[k])
    for i in range(nabla.size):
        nabla[i] *= inverse


@njit(error_model="numpy", inline="always")
def _private_epoch(batches, buffers, layout, codes, update, private):
    cost_sum, correct, step, penalty_sum, drawn = 0.0, 0, update.step, 0.0, 0
    for k in range(private.bounds.size - 1):
        start, P = private.bounds[k], private.bounds[k + 1] - private.bounds[k]
        lr = update.lrs[k] if update.lrs.size > 0 else update.lr
        n = private.expected[k]
        decay_w = update.weight_decay + update.penalty / n  # the penalty's α W / B
        if P > 0:
            a_0, y = _batch(batches, buffers, layout, start, P)
            # the masks of the nonempty batches only, as private_step draws them
            masks_at = (_bits(batches.dropout_key, batches.first_batch + drawn),
                        batches.first_row)
            drawn += 1
            _forward(a_0, buffers, layout, codes, P, masks_at)
            if update.penalty != 0:
                penalty_sum += 0.5 * update.penalty * _squared_weights(buffers.theta,
                                                                       layout) * (P / n)
            cost, hits = _output(y, buffers, layout, codes, P, 1.0, buffers.row_weights[:0])
            cost_sum += cost
            correct += hits
            _deltas(a_0, buffers, layout, codes, P, masks_at)
            _clip_rows(a_0, buffers, layout, P, private.max_grad_norm, private.scale)
            _weight_gradients(a_0, buffers, layout, P)
        else:  # an empty Poisson batch: the noise alone
            buffers.nabla[:] = 0
        _noisy_mean(buffers.nabla, private, k)
        step += 1
        _apply(buffers, layout, update, step, decay_w, lr)
    return cost_sum, correct, step, penalty_sum, drawn


def train_private(batches, buffers, layout, codes, update, private):
    """The private steps of ``private`` (a :class:`Private`) over ``batches.order``.

    Parameters
    ----------
    batches, buffers, layout, codes, update
        As :func:`gpubp.kernels.cpu_epoch.train_epoch` takes them (``batches.batch_size``
        and ``delta_scale`` unused, no sample weights, ``update.code`` not ``NONE``).
    private : Private

    Returns
    -------
    cost_sum : float
        ``Σ_k P_k C_k`` over the nonempty batches.
    correct : int
    step : int
        The optimizer's steps after this call.
    penalty_sum : float
    drawn : int
        The nonempty batches (each drew one batch index of the dropout stream).
    """
    return _compiled_private(tuple(batches), tuple(buffers), tuple(layout), tuple(codes),
                             tuple(update), tuple(private))


def _make_compiled_private(kernels_digest):
    """The compiled :func:`train_private`, a closure over ``kernels_digest``."""

    # nogil: the draws of the next chunk run on another thread meanwhile (training.privacy)
    @njit(cache=True, error_model="numpy", nogil=True)
    def compiled_private(batches, buffers, layout, codes, update, private):
        if False:  # never runs: the captured digest is only part of the cache key
            kernels_digest
        return _private_epoch(Batches(*batches), Buffers(*buffers), Layout(*layout),
                              Codes(*codes), Update(*update), Private(*private))

    return compiled_private


KERNELS_DIGEST = jit_cache.digest(jit_cache.kernel_sources(__name__))
_compiled_private = _make_compiled_private(KERNELS_DIGEST)
