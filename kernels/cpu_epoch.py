"""A whole training epoch on the CPU as one Numba-compiled call.

:func:`train_epoch` runs, for every mini-batch of an epoch, what ``Network._train_step``
does with one Python call per kernel: gather the shuffled rows, forward, output ``δ^L``
and cost, backward, and the optimizer's update over the flat parameter vector. It calls
the same compiled loops as the per-kernel path (:mod:`gpubp.kernels.cpu`) and BLAS for
the matrix products (``np.dot(a, b, out)`` inside ``@njit`` is a direct ``?gemm`` call
through SciPy's BLAS), so Python touches the loop once per epoch, not ~15 times per step:
on small networks the per-call overhead is most of a step.

Plain SGD (no momentum) never writes ``∂W`` to memory: the weight-gradient GEMM adds
``−lr a^{l-1 T} δ^l`` to ``W^l`` itself (BLAS's ``beta = 1 − lr λ``, see :func:`descend`),
after ``δ^{l-1}`` has been computed with the old ``W^l``. Keep it so: a separate pass over
the flat vector also makes the next forward GEMM's BLAS threads fetch every weight back
from the cache of the core that updated it (docs/performance.md, "The fused SGD step").
Momentum, Nesterov, Adam/AdamW and RMSprop step each layer's ``W^l`` and ``b^l`` right
after their gradients, in the backward pass, while they are in cache (``FUSED_STEP``);
only a clipped gradient, which needs all of it first, takes a pass over the flat vector.

Dropout: the masks are drawn inside, per batch, from ``Batches.dropout_key`` and the
batch's place in the epoch (``first_batch + k``), by the counter-based generator every
target shares (:mod:`gpubp.kernels.cpu_dropout`), so a step drops exactly the units the
per-kernel step, the reference and the CUDA kernels drop for the same seed; the mask of
hidden layer ``l`` is fused into its δ kernel. gelu, gelu_tanh and silu (``FROM_Z``) keep
``g'(z^l)`` from the forward pass, whose epilogue computes it with ``g`` (shared
transcendentals): their backward pass multiplies by it.

Arguments: five named tuples, :mod:`gpubp.kernels.epoch_args` (which also gives the
buffers' layouts). Any depth, every activation and loss, SGD (momentum, Nesterov, weight
decay), Adam, AdamW and RMSprop, a learning rate per step and the clipping of the
gradient are one compiled function per dtype, and every array is a view made by
slicing and reshaping a flat buffer: nothing is allocated per step (the tests count NRT
allocations).

Kernels for other modules: :func:`gather_rows`, :func:`descend` (the node step of
:mod:`gpubp.distributed.split_step`), :func:`gemm_epoch` (benchmarks).

JIT cache. Numba stamps a cached function with its own source file only, yet the loops
of :mod:`gpubp.kernels.cpu` are compiled into :func:`train_epoch`: after a change there a
stale cache would serve the old loops. So the compiled epoch is a closure over
:data:`KERNELS_DIGEST`, a hash of every ``gpubp`` module this one imports (transitively,
:func:`gpubp.kernels.jit_cache.kernel_sources`): Numba keys a cached closure by the
values it captures too, so a change to any of those files compiles a new epoch. The helpers
that call those loops (``_epoch``, ``_forward``, ...; the optimizer's step,
:mod:`gpubp.kernels.cpu_epoch_update`) are not cached on their own, for the same reason;
they are compiled only into a newly compiled epoch.
"""

import numpy as np
from numba import njit, types

from gpubp.kernels.cpu import (
    CROSS_ENTROPY,
    _bias_activation,
    _column_sums,
    _count_correct,
    _hidden_delta,
    _output_delta,
    _sgd,
)
from gpubp.kernels import cpu_activations, jit_cache
from gpubp.kernels.cpu_dropout import (_bits, _drop_forward, _hidden_delta_drop, _key_at,
                                      kept_delta_drop)
from gpubp.kernels.cpu_epoch_update import FUSED_SGD, FUSED_STEP, UNFUSED, _apply, _step_layer
from gpubp.kernels.cpu_small_gemm import delta_product, forward_product, gradient_product
from gpubp.kernels.epoch_args import NONE, SGD, Batches, Buffers, Codes, Layout, Update

# Numba's own BLAS bridge (what ``np.dot`` compiles to), called directly for the ``alpha``
# and ``beta`` that np.dot fixes at 1 and 0: ``C = alpha op(A) op(B) + beta C`` on
# column-major operands, SciPy's ``?gemm`` chosen by ``kind`` (``'s'`` or ``'d'``).
_xxgemm = types.ExternalFunction("numba_xxgemm", types.intc(
    types.char, types.char, types.char, types.intp, types.intp, types.intp,  # kind, op(A), op(B), m, n, k
    types.voidptr, types.voidptr, types.intp, types.voidptr, types.intp,  # alpha, A, lda, B, ldb
    types.voidptr, types.voidptr, types.intp))  # beta, C, ldc


@njit(cache=True, error_model="numpy")
def gather_rows(src, order, start, dst):
    """``dst[i] = src[order[start + i]]`` for the rows of ``dst`` (2-D, C-contiguous)."""
    P, n = dst.shape
    for i in range(P):
        row = src[order[start + i]]
        out = dst[i]
        for j in range(n):
            out[j] = row[j]


@njit(cache=True, error_model="numpy")
def _is_run(order, start, P):
    """Whether ``order[start:start + P]`` is consecutive rows ``r, r + 1, ...``."""
    first = order[start]
    for i in range(1, P):
        if order[start + i] != first + i:
            return False
    return True


@njit(cache=True, error_model="numpy")
def _block(flat, offset, rows, cols):
    return flat[offset:offset + rows * cols].reshape((rows, cols))


@njit(cache=True, error_model="numpy")
def descend(W, a_prev, delta, coefficients, first=0):
    """``W ← beta W + alpha a_prev[:, first:first+m]ᵀ δ`` in one BLAS call: SGD's step
    fused into ``∂W`` (``W`` the ``m`` rows ``first..`` of a weight matrix, or all of it).

    ``coefficients`` holds ``(alpha, beta)`` in W's dtype: ``(−lr, 1 − lr λ)`` for the
    step, ``(1, 0)`` for the gradient alone. ``W`` is a C-contiguous block of whole rows.
    The row-major ``W`` (m, n_out) is the column-major ``Wᵀ``, so BLAS computes
    ``Wᵀ ← beta Wᵀ + alpha δᵀ A`` with ``δ`` as stored (column-major ``δᵀ``) and the
    columns of the row-major ``a_prev`` (P, n_in) read transposed with leading dimension
    ``n_in``. With no rows (``P == 0``) ``W ← beta W``.
    """
    m, n_out = W.shape
    P, n_in = a_prev.shape
    if m == 0 or P == 0:
        if P == 0:
            W *= coefficients[1]
        return
    kind = ord("s") if W.itemsize == 4 else ord("d")
    _xxgemm(kind, ord("N"), ord("T"), n_out, m, P, coefficients[0:].ctypes, delta.ctypes,
            n_out, a_prev[0, first:].ctypes, n_in, coefficients[1:].ctypes, W.ctypes, n_out)


# Not cached on their own (see "JIT cache" above): they compile kernels/cpu.py's loops in.
# Inlined (Numba IR) into _epoch: as calls, every step would pay reference counting on the
# arrays of the structures passed (docs/performance.md, "Inlined epoch helpers").

@njit(error_model="numpy", inline="always")
def _batch(batches, buffers, layout, start, P):
    """``a^0`` and ``y`` of the batch at ``order[start:start + P]``: read in place when
    its rows are consecutive (``shuffle=False``, a pre-shuffled ``X``; docs/performance.md),
    else gathered."""
    first = batches.order[start]
    if _is_run(batches.order, start, P):
        return batches.X[first:first + P], batches.Y[first:first + P]
    a_0 = _block(buffers.acts, layout.a_offsets[0], P, layout.sizes[0])
    gather_rows(batches.X, batches.order, start, a_0)
    y = buffers.targets[:P]
    gather_rows(batches.Y, batches.order, start, y)
    return a_0, y


@njit(error_model="numpy", inline="always")
def _forward(a_0, buffers, layout, codes, P, masks_at):
    """``z^l = a^{l-1} W^l`` by BLAS, then ``a^l = g(z^l + b^l)`` in place, l = 1..L (times
    the mask over ``1 − p_l`` on a hidden layer with dropout; ``masks_at``: the step's key
    and the global row of the batch's row 0)."""
    theta, acts, sizes = buffers.theta, buffers.acts, layout.sizes
    for l in range(1, sizes.size):
        n_in, n_out = sizes[l - 1], sizes[l]
        w, b = layout.w_offsets[l - 1], layout.w_offsets[l - 1] + n_in * n_out
        z = _block(acts, layout.a_offsets[l], P, n_out)
        a_in = a_0 if l == 1 else _block(acts, layout.a_offsets[l - 1], P, n_in)
        forward_product(a_in, _block(theta, w, n_in, n_out), z, layout.loops[l - 1])
        code, z_at, bias = codes.forward[l - 1], layout.z_offsets[l], theta[b:b + n_out]
        kept = _block(acts, max(z_at, 0), P if z_at >= 0 else 0, n_out)
        t, scale = codes.drop_threshold[l - 1], codes.drop_scale[l - 1]
        if z_at >= 0:  # FROM_Z: g'(z^l) kept in its block of acts, for the backward pass
            cpu_activations.bias_activation_prime(z, bias, code, codes.slope, kept)
        elif cpu_activations.is_special(code):
            cpu_activations.bias_activation(z, bias, code, codes.slope, kept)
        else:
            _bias_activation(z, bias, code)
        if t > 0:
            _drop_forward(z, _key_at(masks_at[0], l, masks_at[1], n_out), t, scale)


@njit(error_model="numpy", inline="always")
def _row_weights(batches, buffers, start, P):
    """The batch's ``w_p = s_p P / Σ s`` in ``buffers.row_weights`` (all 0 if ``Σ s = 0``)
    and ``Σ s``; an empty view and ``P`` for an unweighted epoch."""
    if batches.weights.size == 0:
        return buffers.row_weights[:0], float(P)
    w, s, order = buffers.row_weights[:P], batches.weights, batches.order
    total = 0.0
    for i in range(P):
        total += s[order[start + i]]
    scale = P / total if total > 0 else 0.0
    for i in range(P):
        w[i] = s[order[start + i]] * scale
    return w, total


@njit(error_model="numpy", inline="always")
def _output(y, buffers, layout, codes, P, delta_scale, w):
    """``δ^L`` (times ``delta_scale``; rows weighted by ``w`` unless it is empty); returns
    ``P C`` and the correct predictions."""
    L = layout.sizes.size - 1
    n_L = layout.sizes[L]
    a_L = _block(buffers.acts, layout.a_offsets[L], P, n_L)
    delta = _block(buffers.deltas, layout.d_offsets[L], P, n_L)
    cost = _output_delta(a_L, y, codes.derivative[L - 1], codes.loss, delta,
                         (codes.tiny, codes.one_minus), codes.loss_param, w) * P
    correct = 0
    if codes.classifier:
        correct = _count_correct(a_L, y, codes.loss == CROSS_ENTROPY)
    if delta_scale != 1.0:  # rounded to the dtype first, as NumPy's weak scalars are
        delta[:] *= delta.dtype.type(delta_scale)
    return cost, correct


@njit(error_model="numpy", inline="always")
def _backward(a_0, buffers, layout, codes, update, descent, fused, masks_at):
    """``∂W^l = a^{l-1 T} δ^l``, ``∂b^l = Σ_p δ^l``, ``δ^{l-1} = (δ^l W^{l T}) ⊙ g'``
    (``⊙ m^{l-1} / (1 − p)`` with dropout, the masks of ``masks_at``), l = L..1.

    ``fused`` is ``(mode, step, decay_w, lr)``: ``FUSED_SGD``, SGD's step lands in ``W^l``
    as ``∂W^l`` is computed (``descent``'s ``(alpha, beta)``; no gradient buffer pass);
    ``FUSED_STEP``, step ``step`` after each gradient (:func:`_step_layer`); else none."""
    theta, nabla, acts, deltas = buffers.theta, buffers.nabla, buffers.acts, buffers.deltas
    sizes, P = layout.sizes, a_0.shape[0]
    for l in range(sizes.size - 1, 0, -1):
        n_in, n_out = sizes[l - 1], sizes[l]
        w = layout.w_offsets[l - 1]
        a_prev = a_0 if l == 1 else _block(acts, layout.a_offsets[l - 1], P, n_in)
        delta = _block(deltas, layout.d_offsets[l], P, n_out)
        bias = slice(w + n_in * n_out, w + n_in * n_out + n_out)
        if l > 1:  # with W^l before its update
            delta_prev = _block(deltas, layout.d_offsets[l - 1], P, n_in)
            delta_product(delta, _block(theta, w, n_in, n_out), delta_prev, layout.loops[l - 1])
        _column_sums(delta, nabla[bias])
        if fused[0] == FUSED_SGD:
            if layout.loops[l - 1]:  # ∂W, then the unfused step's arithmetic: chunk-proof
                gradient_product(a_prev, delta, _block(nabla, w, n_in, n_out), descent[2:], 1)
                _sgd(theta[w:bias.start], nabla[w:bias.start], nabla[w:bias.start], fused[3],
                     0.0, False, fused[2], False)
            else:
                descend(_block(theta, w, n_in, n_out), a_prev, delta, descent)
            # the step's rate is −descent[0]: lr in W's dtype, as _sgd rounds it anyway
            _sgd(theta[bias], nabla[bias], nabla[bias], -descent[0], 0.0, False,
                 update.weight_decay, False)
        else:
            gradient_product(a_prev, delta, _block(nabla, w, n_in, n_out), descent[2:],
                             layout.loops[l - 1])
            if fused[0] == FUSED_STEP:  # W^l served δ^{l-1} above: now it may change
                _step_layer(buffers, layout, update, l, fused)
        if l > 1:
            hidden_error(delta_prev, a_prev, acts, layout, codes, l - 1, masks_at)


@njit(error_model="numpy", inline="always")
def hidden_error(delta, a, acts, layout, codes, l, masks_at):
    """``δ^l ⊙= g'(z^l)`` in place (``δ`` holds ``δ^{l+1} W^{l+1 T}``), g' from ``a^l`` or, for
    FROM_Z, the ``g'(z^l)`` that the forward pass kept; with dropout
    ``⊙ m^l / (1 − p)``, the masks of ``masks_at`` fused in."""
    (P, n), code = delta.shape, codes.derivative[l - 1]
    z_at = layout.z_offsets[l]
    if z_at >= 0:
        kept = _block(acts, z_at, P, n)
        if codes.drop_threshold[l - 1] > 0:
            kept_delta_drop(delta, kept, _key_at(masks_at[0], l, masks_at[1], n),
                            codes.drop_threshold[l - 1], codes.drop_scale[l - 1])
        else:
            cpu_activations.kept_delta(delta, kept)
    elif codes.drop_threshold[l - 1] > 0:  # the mask fused into the δ kernel
        _hidden_delta_drop(delta, a, code, codes.slope, _key_at(masks_at[0], l, masks_at[1], n),
                           codes.drop_threshold[l - 1], codes.drop_keep[l - 1],
                           codes.drop_scale[l - 1])
    elif cpu_activations.is_special(code):
        cpu_activations.hidden_delta(delta, a, code, codes.slope)
    else:
        _hidden_delta(delta, a, code)


@njit(error_model="numpy", inline="always")
def _squared_weights(theta, layout):
    """``Σ_l ‖W^l‖²`` over the weight blocks of ``theta`` (not the biases)."""
    total, sizes = 0.0, layout.sizes
    for l in range(1, sizes.size):
        W = theta[layout.w_offsets[l - 1]:layout.w_offsets[l - 1] + sizes[l - 1] * sizes[l]]
        total += np.dot(W, W)
    return total


@njit(error_model="numpy", inline="always")
def _epoch(batches, buffers, layout, codes, update):
    order, B = batches.order, batches.batch_size
    # plain SGD: W ← (1 − lr λ) W − lr ∂W by the gradient's own GEMM (see descend); not
    # with a clip, which needs the whole gradient first
    clips = update.clip_norm > 0 or update.clip_value > 0
    fused_sgd = update.code == SGD and update.momentum == 0 and not clips
    # every other optimizer: each layer's step right after its gradient, while it is hot
    fused_step = update.code != NONE and not fused_sgd and not clips
    descent = np.zeros(4, buffers.theta.dtype)  # (alpha, beta) of the step; (1, 0): ∂W alone
    descent[2] = 1
    cost_sum, correct, step, penalty_sum = 0.0, 0, update.step, 0.0
    for start in range(0, order.size, B):
        P = min(B, order.size - start)
        lr = update.lrs[start // B] if update.lrs.size > 0 else update.lr  # per step, or one
        w, n = _row_weights(batches, buffers, start, P)  # n: the batch's rows or Σ s
        # the biases' decay is weight_decay; the penalty's gradient is α W / n
        decay_w = update.weight_decay + (update.penalty / n if n > 0 else 0.0)
        descent[0] = -lr
        descent[1] = 1 - lr * decay_w
        # The epoch's last step takes the unfused path with plain SGD, so nabla keeps the
        # gradient of the last backward pass, as on every other path (FUSED_STEP writes it).
        mode = FUSED_SGD if fused_sgd and start + P < order.size else (
            FUSED_STEP if fused_step else UNFUSED)
        a_0, y = _batch(batches, buffers, layout, start, P)
        masks_at = (_bits(batches.dropout_key, batches.first_batch + start // B),
                    batches.first_row)
        _forward(a_0, buffers, layout, codes, P, masks_at)
        if update.penalty != 0:  # with the W of the forward pass (fused SGD changes it)
            penalty_sum += 0.5 * update.penalty * _squared_weights(buffers.theta, layout) * (
                P / n if n > 0 else 0.0)
        cost, hits = _output(y, buffers, layout, codes, P, batches.delta_scale, w)
        cost_sum += cost
        correct += hits
        if update.code != NONE:
            step += 1
        _backward(a_0, buffers, layout, codes, update, descent, (mode, step, decay_w, lr),
                  masks_at)
        if update.code != NONE and mode == UNFUSED:
            _apply(buffers, layout, update, step, decay_w, lr)
    return cost_sum, correct, step, penalty_sum


def train_epoch(batches, buffers, layout, codes, update):
    """One epoch of mini-batch steps over ``batches``; returns its running figures.

    Parameters
    ----------
    batches : Batches
    buffers : Buffers
    layout : Layout
    codes : Codes
    update : Update
        Built as the module docstring says.

    Returns
    -------
    cost_sum : float
        ``Σ_batches P_k C_k``: the row-weighted sum of the batches' mean costs (without
        the penalty).
    correct : int
        Correct predictions on the batches (0 unless ``codes.classifier``).
    step : int
        Steps taken after this call (``update.step`` plus one per batch, unless
        ``update.code`` is ``NONE``).
    penalty_sum : float
        ``Σ_batches P_k α ‖W_k‖² / 2n_k``, the penalty's share of the cost (0 without), ``n_k``
        the batch's rows, or its total sample weight.
    """
    # Plain tuples across the boundary: Numba types them from a cached fingerprint, where
    # each namedtuple argument is typed by Python code on every call (~0.1 ms in all)
    return _compiled_epoch(tuple(batches), tuple(buffers), tuple(layout), tuple(codes),
                           tuple(update))


def _make_compiled_epoch(kernels_digest):
    """The compiled :func:`train_epoch`, a closure over ``kernels_digest`` (see "JIT
    cache" above); it takes the five structures as plain tuples of their fields."""

    @njit(cache=True, error_model="numpy")
    def compiled_epoch(batches, buffers, layout, codes, update):
        if False:  # never runs: the captured digest is only part of the cache key
            kernels_digest
        return _epoch(Batches(*batches), Buffers(*buffers), Layout(*layout), Codes(*codes),
                      Update(*update))

    return compiled_epoch


def gemm_epoch(n_steps, P, buffers, layout):
    """The matrix products of ``n_steps`` steps of :func:`train_epoch` alone (benchmarks).

    The same ``np.dot`` calls on the same :class:`Buffers` of ``P`` rows, shapes and
    transpositions, and nothing else: the time a training epoch cannot go below with this
    BLAS.
    """
    _gemm_epoch(int(n_steps), int(P), tuple(buffers), tuple(layout))


@njit(cache=True, error_model="numpy")
def _gemm_epoch(n_steps, P, buffers, layout):
    theta, nabla, acts, deltas, _, _ = buffers
    sizes, w_offsets, a_offsets, d_offsets = layout[0], layout[1], layout[2], layout[3]
    L = sizes.size - 1
    for _ in range(n_steps):
        for l in range(1, L + 1):
            n_in, n_out = sizes[l - 1], sizes[l]
            np.dot(_block(acts, a_offsets[l - 1], P, n_in),
                   _block(theta, w_offsets[l - 1], n_in, n_out),
                   _block(acts, a_offsets[l], P, n_out))
        for l in range(L, 0, -1):
            n_in, n_out = sizes[l - 1], sizes[l]
            a_prev = _block(acts, a_offsets[l - 1], P, n_in)
            delta = _block(deltas, d_offsets[l], P, n_out)
            np.dot(a_prev.T, delta, _block(nabla, w_offsets[l - 1], n_in, n_out))
            if l > 1:
                np.dot(delta, _block(theta, w_offsets[l - 1], n_in, n_out).T,
                       _block(deltas, d_offsets[l - 1], P, n_in))


# what the epoch's cache entries are keyed by
KERNELS_DIGEST = jit_cache.digest(jit_cache.kernel_sources(__name__))
_compiled_epoch = _make_compiled_epoch(KERNELS_DIGEST)
