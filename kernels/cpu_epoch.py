"""A whole training epoch on the CPU as one Numba-compiled call.

:func:`train_epoch` runs, for every mini-batch of an epoch, what ``Network._train_step``
does with one Python call per kernel: gather the shuffled rows, forward, output ``δ^L``
and cost, backward, and the optimizer's update over the flat parameter vector. It calls
the same compiled loops as the per-kernel path (:mod:`gpubp.kernels.cpu`) and BLAS for
the matrix products (``np.dot(a, b, out)`` inside ``@njit`` is a direct ``?gemm`` call
through SciPy's BLAS), so Python touches the loop once per epoch, not ~15 times per step.
That per-call overhead (~1-2 µs each) is most of a step on small networks.

Plain SGD (no momentum) never writes ``∂W`` to memory: the weight-gradient GEMM adds
``−lr a^{l-1 T} δ^l`` to ``W^l`` itself (BLAS's ``beta = 1 − lr λ``, see :func:`_descend`),
after ``δ^{l-1}`` has been computed with the old ``W^l``. On two BLAS threads the separate
pass over the flat vector cost far more than its own time: the next forward GEMM's threads
had to fetch every weight back from the cache of the core that updated it (784-512-512-10
@ 128: a step went from 1.27 to 1.20 ms, against 1.12 ms for the GEMMs alone).

Any depth, every activation and loss, SGD (momentum, Nesterov, weight decay) and Adam are
one compiled function per dtype: the layer widths and the offsets of each layer's block
in the flat buffers arrive as small integer arrays, and every array below is a view made
by slicing and reshaping a flat buffer, so nothing is allocated inside (no NRT allocation;
the tests count them).

Layouts (``cap`` = the workspaces' row capacity, ``P`` ≤ ``cap`` the rows of a batch):

- ``theta``/``nabla``: ``W^1`` (row-major), ``b^1``, ``W^2``, ... from ``w_offsets[l-1]``;
- ``acts``: ``a^l`` for ``l = 0..L``, block ``l`` at ``a_offsets[l]``, its first ``P``
  rows contiguous, the layout of ``Network.activations`` (a batch of consecutive rows of
  ``X`` is read in place, not copied into ``a^0``);
- ``deltas``: ``δ^l`` for ``l = 1..L`` at ``d_offsets[l]`` (entry 0 unused);
- ``targets``: ``(cap, n_L)``, the gathered ``y`` rows.
"""

import hashlib
import math

import numpy as np
from numba import njit, types

from gpubp.kernels.cpu import (
    CROSS_ENTROPY,
    TANH,
    _bias_activation,
    _column_sums,
    _count_correct,
    _hidden_delta,
    _output_delta,
    _sgd,
    _adam,
)

SGD, ADAM, NONE = 0, 1, 2  # NONE: gradients only, the caller sums and updates (MPI)

# Numba's own BLAS bridge (what ``np.dot`` compiles to), called directly for the ``alpha``
# and ``beta`` that np.dot fixes at 1 and 0: ``C = alpha op(A) op(B) + beta C`` on
# column-major operands, SciPy's ``?gemm`` chosen by ``kind`` (``'s'`` or ``'d'``).
_xxgemm = types.ExternalFunction("numba_xxgemm", types.intc(
    types.char, types.char, types.char, types.intp, types.intp, types.intp,  # kind, op(A), op(B), m, n, k
    types.voidptr, types.voidptr, types.intp, types.voidptr, types.intp,  # alpha, A, lda, B, ldb
    types.voidptr, types.voidptr, types.intp))  # beta, C, ldc


@njit(cache=True, error_model="numpy")
def _gather(src, order, start, dst):
    """``dst[i] = src[order[start + i]]`` for the rows of ``dst``."""
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
def _tanh(z):
    # float64: libm's tanh, elementwise, where the per-kernel path uses NumPy's SIMD tanh
    # (they may differ in the last bit). float32 has its vectorised tanh inside
    # _bias_activation on both paths.
    P, n = z.shape
    for p in range(P):
        row = z[p]
        for j in range(n):
            row[j] = math.tanh(row[j])


@njit(cache=True, error_model="numpy")
def _block(flat, offset, rows, cols):
    return flat[offset:offset + rows * cols].reshape((rows, cols))


@njit(cache=True, error_model="numpy")
def _descend(W, a_prev, delta, coefficients, first=0):
    """``W ← beta W + alpha a_prev[:, first:first+m]ᵀ δ`` in one BLAS call: SGD's step
    fused into ``∂W`` (``W`` the ``m`` rows ``first..`` of a weight matrix, or all of it).

    ``coefficients`` holds ``(alpha, beta)`` in W's dtype: ``(−lr, 1 − lr λ)`` for the
    step, ``(1, 0)`` for the gradient alone. The row-major ``W`` (m, n_out) is the
    column-major ``Wᵀ``, so BLAS computes ``Wᵀ ← beta Wᵀ + alpha δᵀ A`` with ``δ`` as stored
    (column-major ``δᵀ``) and the columns of the row-major ``a_prev`` (P, n_in) read
    transposed with leading dimension ``n_in``.
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


@njit(cache=True, error_model="numpy")
def train_epoch(X, Y, order, batch_size, theta, nabla, acts, deltas, targets, sizes,
                w_offsets, a_offsets, d_offsets, forward_codes, codes, loss, tiny, one_minus,
                classifier, optimizer, hyper, state_a, state_b, step, delta_scale=1.0):
    """One epoch of mini-batch steps over ``X[order]``; returns the epoch's running figures.

    Parameters
    ----------
    X : ndarray, shape (P_total, n_0)
    Y : ndarray, shape (P_total, n_L)
        C-contiguous, of ``theta``'s dtype.
    order : int64 ndarray, shape (P_total,)
        The epoch's row order; batch ``k`` is ``order[k B : (k + 1) B]``.
    batch_size : int
        ``B``; the last batch may be shorter.
    theta, nabla : ndarray, shape (N,)
        Flat parameters (updated in place) and gradients: on return, the gradient of the
        call's last step (plain SGD folds the others' ``∂W`` straight into ``W``).
    acts, deltas, targets : ndarray
        Workspaces laid out as in the module docstring.
    sizes : int64 ndarray, shape (L + 1,)
    w_offsets : int64 ndarray, shape (L,)
    a_offsets, d_offsets : int64 ndarray, shape (L + 1,)
    forward_codes, codes : int64 ndarray, shape (L,)
        Activation codes of layers 1..L, as :func:`gpubp.kernels.cpu.bias_activation`
        dispatches them (``forward_codes``: float32 sigmoid and tanh by their vectorised
        variants) and as the derivative kernels take them (``codes``).
    loss : int
        Loss code.
    tiny, one_minus : float
        Clip bounds of the log-losses for the dtype.
    classifier : bool
        Whether to count correct predictions.
    optimizer : int
        ``SGD``, ``ADAM``, or ``NONE``: no update, ``nabla`` left holding the gradient
        of the one batch (``order`` of at most ``batch_size`` rows) for the caller to sum
        over the ranks of a data-parallel run and apply.
    hyper : float64 ndarray, shape (9,)
        ``lr, momentum, weight_decay, beta1, beta2, eps, nesterov, penalty, eps_hat``
        (``nesterov``, ``eps_hat`` 0 or 1; those the optimizer does not use are ignored;
        ``penalty`` is :class:`gpubp.optim.optimizers.Optimizer`'s: ``α W / P`` joins the
        weights' gradient of a batch of ``P`` rows, ``α ‖W‖² / 2P`` its cost; ``eps_hat``
        is Adam's).
    state_a, state_b : ndarray, shape (N,)
        Optimizer state: the velocity (SGD with momentum; ``state_b`` unused) or Adam's
        ``m`` and ``v``. Any array of the type when unused; never read then.
    step : int
        Steps taken before this epoch (Adam's ``t`` of the first step is ``step + 1``).
    delta_scale : float
        Factor on ``δ^L`` (``P_local / P_global`` on a rank of a data-parallel run, so
        that the summed gradients carry the global ``1/P``).

    Returns
    -------
    cost_sum : float
        ``Σ_batches P_k C_k``: the row-weighted sum of the batches' mean costs (without
        the penalty).
    correct : int
        Correct predictions on the batches (0 unless ``classifier``).
    step : int
        Steps taken after this epoch.
    penalty_sum : float
        ``Σ_batches P_k α ‖W_k‖² / 2P_k``, the penalty's share of the cost (0 without).
    """
    L = sizes.size - 1
    n_0, n_L = sizes[0], sizes[L]
    lr, momentum, weight_decay = hyper[0], hyper[1], hyper[2]
    beta1, beta2, eps = hyper[3], hyper[4], hyper[5]
    nesterov = hyper[6] != 0
    penalty, eps_hat = hyper[7], hyper[8] != 0
    cost_sum = 0.0
    penalty_sum = 0.0
    correct = 0
    # plain SGD: W ← (1 − lr λ) W − lr ∂W by the gradient's own GEMM (see _descend)
    descent = np.empty(2, theta.dtype)
    descent[0] = -lr
    for start in range(0, order.size, batch_size):
        P = min(batch_size, order.size - start)
        decay_w = weight_decay + penalty / P  # the weights' decay; the biases' is weight_decay
        descent[1] = 1 - lr * decay_w
        # The epoch's last step takes the unfused path, so nabla_theta keeps the gradient
        # of the last backward pass, as on every other path.
        fused = optimizer == SGD and momentum == 0 and start + P < order.size
        # Rows in order (shuffle=False, or a pre-shuffled X) are read where they are:
        # copying them into a^0 cost ~3% of a 784-1024-1024-10 step.
        first = order[start]
        if _is_run(order, start, P):
            a_0 = X[first:first + P]
            y = Y[first:first + P]
        else:
            a_0 = _block(acts, a_offsets[0], P, n_0)
            _gather(X, order, start, a_0)
            y = targets[:P]
            _gather(Y, order, start, y)
        # forward: z^l = a^{l-1} W^l by BLAS, then a^l = g(z^l + b^l) in place
        for l in range(1, L + 1):
            n_in, n_out = sizes[l - 1], sizes[l]
            w = w_offsets[l - 1]
            z = _block(acts, a_offsets[l], P, n_out)
            a_in = a_0 if l == 1 else _block(acts, a_offsets[l - 1], P, n_in)
            np.dot(a_in, _block(theta, w, n_in, n_out), z)
            _bias_activation(z, theta[w + n_in * n_out:w + n_in * n_out + n_out],
                             forward_codes[l - 1])
            if forward_codes[l - 1] == TANH:
                _tanh(z)
        if penalty != 0:  # with the W of the forward pass (fused SGD changes it below)
            penalty_sum += 0.5 * penalty * _squared_weights(theta, sizes, w_offsets)
        a_L = _block(acts, a_offsets[L], P, n_L)
        cost_sum += _output_delta(a_L, y, codes[L - 1], loss, _block(deltas, d_offsets[L], P, n_L),
                                  tiny, one_minus) * P
        if classifier:
            correct += _count_correct(a_L, y, loss == CROSS_ENTROPY)
        if delta_scale != 1.0:  # rounded to the dtype first, as NumPy's weak scalars are
            _block(deltas, d_offsets[L], P, n_L)[:] *= deltas.dtype.type(delta_scale)
        # backward: ∂W^l = a^{l-1 T} δ^l, ∂b^l = Σ_p δ^l, δ^{l-1} = (δ^l W^{l T}) ⊙ g'
        for l in range(L, 0, -1):
            n_in, n_out = sizes[l - 1], sizes[l]
            w = w_offsets[l - 1]
            a_prev = a_0 if l == 1 else _block(acts, a_offsets[l - 1], P, n_in)
            delta = _block(deltas, d_offsets[l], P, n_out)
            bias = slice(w + n_in * n_out, w + n_in * n_out + n_out)
            if l > 1:  # with W^l before its update
                delta_prev = _block(deltas, d_offsets[l - 1], P, n_in)
                np.dot(delta, _block(theta, w, n_in, n_out).T, delta_prev)
            _column_sums(delta, nabla[bias])
            if fused:
                # The step lands in W^l as ∂W^l is computed: no pass over a gradient
                # buffer, and on two BLAS threads no serial pass over W that the next
                # GEMM's threads must then pull back from this core's cache.
                _descend(_block(theta, w, n_in, n_out), a_prev, delta, descent)
                _sgd(theta[bias], nabla[bias], nabla[bias], lr, 0.0, False, weight_decay,
                     False)
            else:
                np.dot(a_prev.T, delta, _block(nabla, w, n_in, n_out))
            if l > 1:
                _hidden_delta(delta_prev, a_prev, codes[l - 2])
        # update: one fused pass over the flat vector (per block with a penalty)
        if optimizer == NONE:
            continue
        step += 1
        if not fused:
            eps_t = eps / math.sqrt(1 - math.pow(beta2, step)) if eps_hat else eps
            _update(optimizer, theta, nabla, state_a, state_b, lr, momentum, nesterov,
                    weight_decay, decay_w, beta1, beta2, eps_t, step, sizes, w_offsets)
    return cost_sum, correct, step, penalty_sum


@njit(cache=True, error_model="numpy")
def _squared_weights(theta, sizes, w_offsets):
    """``Σ_l ‖W^l‖²`` over the weight blocks of ``theta`` (not the biases)."""
    total = 0.0
    for l in range(1, sizes.size):
        W = theta[w_offsets[l - 1]:w_offsets[l - 1] + sizes[l - 1] * sizes[l]]
        total += np.dot(W, W)
    return total


@njit(cache=True, error_model="numpy")
def _update(optimizer, theta, nabla, state_a, state_b, lr, momentum, nesterov, weight_decay,
            decay_w, beta1, beta2, eps, step, sizes, w_offsets):
    """The optimizer's step: one pass over the flat vector, or with a penalty (the weights'
    ``decay_w`` is not the biases' ``weight_decay``) one per weight and bias block."""
    if decay_w == weight_decay:
        _span_update(optimizer, theta, nabla, state_a, state_b, lr, momentum, nesterov,
                     weight_decay, beta1, beta2, eps, step)
        return
    for l in range(1, sizes.size):
        w = w_offsets[l - 1]
        b = w + sizes[l - 1] * sizes[l]
        end = b + sizes[l]
        _span_update(optimizer, theta[w:b], nabla[w:b], state_a[w:b], state_b[w:b], lr,
                     momentum, nesterov, decay_w, beta1, beta2, eps, step)
        _span_update(optimizer, theta[b:end], nabla[b:end], state_a[b:end], state_b[b:end],
                     lr, momentum, nesterov, weight_decay, beta1, beta2, eps, step)


@njit(cache=True, error_model="numpy")
def _span_update(optimizer, theta, nabla, state_a, state_b, lr, momentum, nesterov,
                 weight_decay, beta1, beta2, eps, step):
    """The optimizer's step over a span of the flat vector (its state's same span)."""
    if optimizer == ADAM:
        _adam(theta, nabla, state_a, state_b, lr, beta1, 1 - beta1, beta2, 1 - beta2, eps,
              1 - math.pow(beta1, step), 1 - math.pow(beta2, step), weight_decay)
    else:
        _sgd(theta, nabla, state_a, lr, momentum, nesterov, weight_decay, momentum != 0)


@njit(cache=True, error_model="numpy")
def gemm_epoch(n_steps, P, theta, nabla, acts, deltas, sizes, w_offsets, a_offsets, d_offsets):
    """The matrix products of ``n_steps`` steps of :func:`train_epoch` alone (benchmarks).

    The same ``np.dot`` calls on the same buffers, shapes and transpositions, and nothing
    else: the time a training epoch cannot go below with this BLAS.
    """
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


def _stamp_with_callees(*dispatchers):
    """Make the JIT cache of ``dispatchers`` go stale when :mod:`gpubp.kernels.cpu` changes.

    Numba stamps a cached function with its own source file only, yet the loops of
    ``kernels/cpu.py`` are compiled into :func:`train_epoch`: after a change there,
    ``__pycache__`` would keep serving the old loops with the new codes (an edited
    activation code once turned tanh into the identity). The stamp is extended with a hash
    of that file; Numba compares stamps for equality, so any change recompiles.
    """
    from gpubp.kernels import cpu

    with open(cpu.__file__, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    for dispatcher in dispatchers:
        cache_file = getattr(getattr(dispatcher, "_cache", None), "_cache_file", None)
        if cache_file is not None and hasattr(cache_file, "_source_stamp"):
            cache_file._source_stamp = (cache_file._source_stamp, digest)


_stamp_with_callees(train_epoch, gemm_epoch)
