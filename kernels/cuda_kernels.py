"""The CUDA kernels that reduce over the batch and update θ, and :func:`build`, which
compiles every kernel of one dtype (those of :mod:`gpubp.kernels.cuda_device` too).

The weight gradient stages tiles of ``[a^{l-1} 1]`` and ``δ^l`` in shared memory and keeps
a small block of outputs per thread in registers; the optimizer steps are grid-stride
loops over the flat parameter vector.
"""

import math

from numba import cuda, float64

from gpubp.kernels.cuda_device import (GRAD_BLOCK, GRAD_COLS, GRAD_ROWS, GRAD_THREADS,
                                       GRAD_TILE_I, GRAD_TILE_J, GRAD_TILE_P, constants,
                                       delta_kernels, device_functions, forward_kernels)


def build(dtype):
    """Every kernel for ``dtype``, compiled on first launch.

    Returns
    -------
    dict
        Kernel name -> Numba CUDA dispatcher.
    """
    c = constants(dtype)
    dev = device_functions(c)
    kernels = {}
    for part in (forward_kernels, delta_kernels, gradient_kernels, update_kernels):
        kernels.update(part(c, dev))
    return kernels


def gradient_kernels(c, dev):
    """The fused weight-and-bias gradient ``[a^{l-1} 1]^T δ^l`` and its split sum."""
    zero, one, dtype = c.zero, c.one, c.dtype

    @cuda.jit(device=True, inline="always")
    def stage_inputs(a_prev, a_tile, t, p0, p_stop, i0):
        """``a_tile = [a_prev 1][p0:p0+TILE_P, i0:i0+TILE_I]``, zero outside the batch."""
        n_in = a_prev.shape[1]
        for s in range(GRAD_TILE_P * GRAD_TILE_I // GRAD_BLOCK):
            k = (t + s * GRAD_BLOCK) // GRAD_TILE_I
            ii = (t + s * GRAD_BLOCK) % GRAD_TILE_I
            p = p0 + k
            i = i0 + ii
            v = zero
            if p < p_stop:
                if i < n_in:
                    v = a_prev[p, i]
                elif i == n_in:
                    v = one  # the constant input of the bias
            a_tile[k, ii] = v

    @cuda.jit(device=True, inline="always")
    def stage_errors(delta, d_tile, t, p0, p_stop, j0):
        """``d_tile = δ[p0:p0+TILE_P, j0:j0+TILE_J]``, zero outside the batch and layer."""
        n_out = delta.shape[1]
        for s in range(GRAD_TILE_P * GRAD_TILE_J // GRAD_BLOCK):
            k = (t + s * GRAD_BLOCK) // GRAD_TILE_J
            jj = (t + s * GRAD_BLOCK) % GRAD_TILE_J
            p = p0 + k
            j = j0 + jj
            v = zero
            if p < p_stop and j < n_out:
                v = delta[p, j]
            d_tile[k, jj] = v

    @cuda.jit
    def weight_bias_grad(a_prev, delta, dW, db, split, rows_per_split):
        """``[∂W; ∂b] = [a_prev 1]^T δ`` over the block's share of the P rows.

        The gradient is one ``(n_in + 1, n_out)`` matrix: row ``n_in`` is the bias, the
        weight of a constant input 1. Block ``(bx, by, bz)`` owns output rows
        ``by*GRAD_TILE_I ..`` and columns ``bx*GRAD_TILE_J ..`` and batch rows
        ``bz*rows_per_split ..``. Each step stages ``GRAD_TILE_P`` batch rows of
        ``a_prev`` and ``δ`` in shared memory (coalesced along the contiguous axis);
        each thread then accumulates a GRAD_ROWS x GRAD_COLS block of outputs in
        registers: 6 shared loads per 8 FMAs. Out-of-range entries are staged as 0 so
        the inner loop has no remainders.

        With one split (``gridDim.z == 1``) the block writes ``dW`` and ``db``; with
        several it writes its partial product to ``split[bz]`` (``(splits, n_in + 1,
        n_out)``) and :func:`sum_splits` adds them, in a fixed order.
        """
        a_tile = cuda.shared.array((GRAD_TILE_P, GRAD_TILE_I), dtype)  # [p, i]
        d_tile = cuda.shared.array((GRAD_TILE_P, GRAD_TILE_J), dtype)  # [p, j]
        acc = cuda.local.array((GRAD_ROWS, GRAD_COLS), dtype)
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        t = ty * GRAD_THREADS + tx
        P, n_in = a_prev.shape
        n_out = delta.shape[1]
        i0 = cuda.blockIdx.y * GRAD_TILE_I
        j0 = cuda.blockIdx.x * GRAD_TILE_J
        p_start = cuda.blockIdx.z * rows_per_split
        p_stop = min(P, p_start + rows_per_split)
        for r in range(GRAD_ROWS):
            for c in range(GRAD_COLS):
                acc[r, c] = zero
        for p0 in range(p_start, p_stop, GRAD_TILE_P):
            # Stage a_prev[p0:p0+TILE_P, i0:i0+TILE_I] (with the bias column of ones) and
            # δ[p0:p0+TILE_P, j0:j0+TILE_J]: consecutive threads, consecutive columns.
            stage_inputs(a_prev, a_tile, t, p0, p_stop, i0)
            stage_errors(delta, d_tile, t, p0, p_stop, j0)
            cuda.syncthreads()
            for k in range(GRAD_TILE_P):
                for r in range(GRAD_ROWS):
                    a_k = a_tile[k, ty + r * GRAD_THREADS]
                    for c in range(GRAD_COLS):
                        acc[r, c] += a_k * d_tile[k, tx + c * GRAD_THREADS]
            cuda.syncthreads()  # the tiles are read by all before being overwritten
        whole = cuda.gridDim.z == 1
        for r in range(GRAD_ROWS):
            i = i0 + ty + r * GRAD_THREADS
            for c in range(GRAD_COLS):
                j = j0 + tx + c * GRAD_THREADS
                if j < n_out and i <= n_in:
                    if not whole:
                        split[cuda.blockIdx.z, i, j] = acc[r, c]
                    elif i < n_in:
                        dW[i, j] = acc[r, c]
                    else:
                        db[j] = acc[r, c]

    @cuda.jit
    def sum_splits(split, dW, db):
        """``[dW; db] = Σ_z split[z]`` over ``(n_in + 1) * n_out`` entries (grid-stride)."""
        splits, rows, n_out = split.shape
        n_in = rows - 1
        for e in range(cuda.grid(1), rows * n_out, cuda.gridsize(1)):
            i = e // n_out
            j = e % n_out
            s = zero
            for z in range(splits):
                s += split[z, i, j]
            if i < n_in:
                dW[i, j] = s
            else:
                db[j] = s

    return {
        "weight_bias_grad": weight_bias_grad,
        "sum_splits": sum_splits,
    }


def update_kernels(c, dev):
    """The fused optimizer steps over the flat parameter vector."""
    T, zero = c.T, c.zero

    @cuda.jit
    def sgd_step(param, grad, velocity, lr, momentum, nesterov, weight_decay):
        """Fused SGD step over flattened arrays (PyTorch's momentum convention)."""
        for i in range(cuda.grid(1), param.shape[0], cuda.gridsize(1)):
            w = param[i]
            g_i = grad[i] + weight_decay * w
            if momentum != zero:
                v = velocity[i] * momentum + g_i
                velocity[i] = v
                if nesterov:
                    g_i = g_i + momentum * v
                else:
                    g_i = v
            param[i] = w - lr * g_i

    @cuda.jit
    def adam_step(param, grad, m, v, beta1, one_minus_beta1, beta2, one_minus_beta2, neg_step,
                  bias2_sqrt, eps, weight_decay, shrink):
        """Fused Adam step over flattened arrays, PyTorch's ``θ + (−a m) / (√v / b + ε)``
        with ``neg_step = −a = −lr / (1 − β1^t)``, ``bias2_sqrt = b = √(1 − β2^t)`` (see the
        CPU twin), ``shrink = 1 − lr λ`` AdamW's decoupled decay (1 for Adam)."""
        for i in range(cuda.grid(1), param.shape[0], cuda.gridsize(1)):
            w = param[i]
            if shrink != T(1):
                w = w * shrink
            g_i = grad[i] + weight_decay * w
            m_i = m[i] * beta1 + one_minus_beta1 * g_i
            v_i = v[i] * beta2 + one_minus_beta2 * g_i * g_i
            m[i] = m_i
            v[i] = v_i
            param[i] = w + (neg_step * m_i) / (T(math.sqrt(v_i)) / bias2_sqrt + eps)

    @cuda.jit
    def rmsprop_step(param, grad, square_avg, buf, grad_avg, lr, alpha, one_minus_alpha, eps,
                     weight_decay, momentum, centered):
        """Fused RMSprop step over flattened arrays (PyTorch's form; ``buf`` read when
        ``momentum > 0``, ``grad_avg`` when ``centered``)."""
        for i in range(cuda.grid(1), param.shape[0], cuda.gridsize(1)):
            w = param[i]
            g_i = grad[i] + weight_decay * w
            s_i = alpha * square_avg[i] + one_minus_alpha * g_i * g_i
            square_avg[i] = s_i
            if centered:
                a_i = grad_avg[i] + one_minus_alpha * (g_i - grad_avg[i])
                grad_avg[i] = a_i
                denom = T(math.sqrt(s_i - a_i * a_i)) + eps
            else:
                denom = T(math.sqrt(s_i)) + eps
            if momentum > zero:
                b_i = momentum * buf[i] + g_i / denom
                buf[i] = b_i
                param[i] = w - lr * b_i
            else:
                param[i] = w - (lr * g_i) / denom

    @cuda.jit
    def clip_sum(grad, max_value, norm_sq):
        """Clamp ``grad`` to ``±max_value`` (when > 0) and add ``Σ g²`` into the zeroed
        float64 ``norm_sq[0]`` (one atomic add per thread)."""
        partial = 0.0
        for i in range(cuda.grid(1), grad.shape[0], cuda.gridsize(1)):
            g_i = grad[i]
            if max_value > zero:  # comparisons, not min/max: a NaN stays NaN (PTX's min
                # and max would return the other operand)
                if g_i > max_value:
                    g_i = max_value
                elif g_i < -max_value:
                    g_i = -max_value
                grad[i] = g_i
            partial += float64(g_i) * float64(g_i)  # float(): float32 stays float32
        cuda.atomic.add(norm_sq, 0, partial)

    @cuda.jit
    def clip_scale(grad, max_norm, norm_sq):
        """``grad *= min(1, max_norm / (√norm_sq[0] + 1e-6))`` (``clip_grad_norm_``)."""
        scale = T(min(1.0, max_norm / (math.sqrt(norm_sq[0]) + 1e-6)))
        for i in range(cuda.grid(1), grad.shape[0], cuda.gridsize(1)):
            grad[i] *= scale

    return {
        "sgd_step": sgd_step,
        "adam_step": adam_step,
        "rmsprop_step": rmsprop_step,
        "clip_sum": clip_sum,
        "clip_scale": clip_scale,
    }
