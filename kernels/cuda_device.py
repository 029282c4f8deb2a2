"""The device code of the CUDA kernels: one set of Numba CUDA kernels per dtype.

:func:`gpubp.kernels.cuda_kernels.build` compiles (lazily, on first launch) every kernel
for one floating dtype,
closed over that dtype's constants so that float32 arithmetic never meets a float64
``1.0``. The host side (launch arithmetic, workspaces, the contract's functions) is
:mod:`gpubp.kernels.cuda`; the launch shapes below are its constants.

NaN propagates by construction, as in the NumPy reference: no ``min``/``max`` ever sees a
NaN operand where the reference would keep it, because PTX's ``min.f32``/``max.f32``
return the *other* operand (a diverged network would show a finite cross-entropy on a
GPU while the simulator, whose Python ``max`` keeps it, and the reference show NaN).
Clipping and relu are written as comparisons, which are false for NaN, so NaN passes
through unchanged on both; ``tests/test_cuda_kernels.py`` checks the PTX for it.
"""

import math
from collections import namedtuple

import numpy as np
from numba import cuda, float64, int64

from gpubp import activations, losses
from gpubp.kernels.cuda_activations import (ELU, GELU, GELU_TANH, LEAKY_RELU, SELU, SILU,
                                            SOFTPLUS, special_functions)
from gpubp.kernels.reference import EXP_CAP

# Activation and loss codes, from their tables (gpubp.activations, gpubp.losses). A branch
# on a code is uniform across a launch, so it costs no divergence and saves compiling one
# kernel per activation.
SIGMOID, TANH, RELU, IDENTITY, SOFTMAX, EXP = map(
    activations.code, ("sigmoid", "tanh", "relu", "identity", "softmax", "exp"))
# g and g' branch once on `code >= LEAKY_RELU` into the newer rows' functions
assert max(SIGMOID, TANH, RELU, IDENTITY, SOFTMAX, EXP) < LEAKY_RELU == min(
    LEAKY_RELU, ELU, SELU, SOFTPLUS, GELU, GELU_TANH, SILU)
MSE, BINARY_CROSS_ENTROPY, CROSS_ENTROPY, POISSON, HUBER, L1 = map(
    losses.code, ("mse", "binary_cross_entropy", "cross_entropy", "poisson", "huber", "l1"))
REGRESSION = (MSE, HUBER, L1)  # ∂c/∂a ⊙ g_o'(a): the losses with any elementwise output

# Block shapes compiled into the kernels (shared-memory sizes depend on them). The grid
# sizes and their caps are host-side choices, in gpubp.kernels.cuda.
ROW_THREADS = 32  # one warp per row: softmax, and the output delta of wide layers
COUNT_NONE, COUNT_LABELS, COUNT_BINARY = 0, 1, 2  # output_delta's count of right rows
COUNT_CODES = {"labels": COUNT_LABELS, "binary": COUNT_BINARY}  # by the losses' targets
REDUCE_THREADS = 128  # output delta of narrow layers (a thread per row); cost reduction
GRAD_THREADS = 16  # weight gradient: 16 x 16 threads ...
GRAD_ROWS = 4  # ... each computing GRAD_ROWS x GRAD_COLS outputs: a 64 x 32 tile
GRAD_COLS = 2
GRAD_TILE_I = GRAD_THREADS * GRAD_ROWS  # output rows (inputs + bias) per block
GRAD_TILE_J = GRAD_THREADS * GRAD_COLS  # output columns (nodes) per block
GRAD_TILE_P = 16  # batch rows staged in shared memory per step
GRAD_BLOCK = GRAD_THREADS * GRAD_THREADS


Constants = namedtuple("Constants", "T zero one half neg_inf clip_lo clip_hi exp_cap dtype")
Device = namedtuple("Device", "g g_prime clip delta_and_cost tree_sum")


def constants(dtype):
    """The dtype's constants, typed, so that float32 arithmetic never meets a float64."""
    T = np.dtype(dtype).type
    zero, one, half, neg_inf = T(0), T(1), T(0.5), T(-np.inf)
    finfo = np.finfo(dtype)
    # Bounds of reference._clipped: logs of the clipped value are finite.
    clip_lo, clip_hi = T(finfo.tiny), T(1 - finfo.epsneg)
    exp_cap = T(EXP_CAP[np.dtype(dtype)])  # exp(min(z, cap)) never overflows
    return Constants(T, zero, one, half, neg_inf, clip_lo, clip_hi, exp_cap, dtype)


def device_functions(c):
    """The inlined device functions the kernels share: g, g', clipping, δ and cost, sums."""
    T, zero, one, half = c.T, c.zero, c.one, c.half
    clip_lo, clip_hi, exp_cap = c.clip_lo, c.clip_hi, c.exp_cap
    g_special, g_prime_special = special_functions(c)

    @cuda.jit(device=True, inline="always")
    def g(z, code, slope):
        """Elementwise activation of a pre-activation ``z`` (``slope``: leaky_relu's)."""
        if code >= LEAKY_RELU:
            return g_special(z, code, slope)
        if code == SIGMOID:
            # Two branches sharing e = exp(-|z|) in (0, 1]: exp never overflows.
            e = T(math.exp(-abs(z)))
            if z >= zero:
                return one / (one + e)
            return e / (one + e)
        if code == TANH:
            return T(math.tanh(z))
        if code == RELU:
            return zero if z < zero else z  # not max(): NaN stays NaN
        if code == EXP:
            return T(math.exp(exp_cap if z > exp_cap else z))  # a select, so NaN stays NaN
        return z

    @cuda.jit(device=True, inline="always")
    def g_prime(a, code, slope):
        """``g'(z)`` written through the activation's output ``a = g(z)`` (through ``z``
        itself for gelu, gelu_tanh and silu)."""
        if code >= LEAKY_RELU:
            return g_prime_special(a, code, slope)
        if code == SIGMOID:
            return a * (one - a)
        if code == TANH:
            return one - a * a
        if code == RELU:
            return one if a > zero else zero
        return one

    @cuda.jit(device=True, inline="always")
    def clip(a):
        """``a`` into [tiny, 1 - epsneg]; comparisons, not min/max, so NaN stays NaN."""
        if a < clip_lo:
            return clip_lo
        if a > clip_hi:
            return clip_hi
        return a

    @cuda.jit(device=True, inline="always")
    def delta_and_cost(a, y, act_code, loss_code, rows, loss_param, n):
        """``(δ_pj, c_pj)`` of one output entry: the error and its share of the cost.

        ``loss_param``: Huber's ``δ``, or the log-losses' label smoothing ``ε`` (the
        target becomes ``(1 − ε) y + ε / K``, ``K`` = ``n`` outputs for cross-entropy, 2
        for binary cross-entropy); ``n``: the row's outputs, as a ``T``.
        """
        if loss_code == CROSS_ENTROPY:
            y = (one - loss_param) * y + loss_param / n
        elif loss_code == BINARY_CROSS_ENTROPY:
            y = (one - loss_param) * y + half * loss_param
        diff = a - y
        if loss_code == MSE:
            return diff * g_prime(a, act_code, zero) / rows, half * diff * diff
        if loss_code == HUBER:
            r = abs(diff)
            if r > loss_param:  # false for NaN, which takes the quadratic branch and stays
                slope = loss_param if diff > zero else -loss_param
                return slope * g_prime(a, act_code, zero) / rows, loss_param * (r - half * loss_param)
            return diff * g_prime(a, act_code, zero) / rows, half * diff * diff
        if loss_code == L1:
            # sign(0) = 0 (PyTorch's subgradient); diff * 0 keeps NaN
            slope = one if diff > zero else (-one if diff < zero else diff * zero)
            return slope * g_prime(a, act_code, zero) / rows, abs(diff)
        # Canonical pairs: the derivative of g_o cancels, δ = (a - y) / P.
        if loss_code == POISSON:
            # y log(y / a) − y + a, with 0 log 0 = 0 and a >= tiny inside the log
            cost = a - y
            if y > zero:
                cost += y * (T(math.log(y)) - T(math.log(clip_lo if a < clip_lo else a)))
            return diff / rows, cost
        c = clip(a)
        if loss_code == BINARY_CROSS_ENTROPY:
            return diff / rows, -(y * T(math.log(c)) + (one - y) * T(math.log1p(-c)))
        return diff / rows, -y * T(math.log(c))

    @cuda.jit(device=True, inline="always")
    def tree_sum(shared, t, width):
        """``shared[0] = Σ shared[:width]`` by halving (``width`` a power of two).

        Every thread of the block must call it (it holds barriers), after the block's
        writes to ``shared`` and a ``syncthreads``.
        """
        s = width // 2
        while s > 0:
            if t < s:
                shared[t] += shared[t + s]
            cuda.syncthreads()
            s //= 2

    return Device(g, g_prime, clip, delta_and_cost, tree_sum)


def forward_kernels(c, dev):
    """The forward epilogues: ``g(z + b)`` and the row-wise softmax."""
    T, zero, neg_inf, dtype = c.T, c.zero, c.neg_inf, c.dtype
    g = dev.g

    @cuda.jit
    def bias_act(z, b, code, slope):
        """``z[i] = g(z[i] + b[i mod n])`` over the flattened (P, n) batch ``z``."""
        n = b.shape[0]
        for i in range(cuda.grid(1), z.shape[0], cuda.gridsize(1)):
            z[i] = g(z[i] + b[i % n], code, slope)

    @cuda.jit
    def bias_act_keep(z, b, kept, code, slope):
        """``kept[i] = z[i] + b[i mod n]``, ``z[i] = g(kept[i])``: a layer that keeps z."""
        n = b.shape[0]
        for i in range(cuda.grid(1), z.shape[0], cuda.gridsize(1)):
            v = z[i] + b[i % n]
            kept[i] = v
            z[i] = g(v, code, slope)

    @cuda.jit
    def bias_softmax(z, b):
        """Row-wise ``softmax(z + b)`` in place; ``z``: (P, n). One block per row.

        The block's threads stride over the row's columns; their partial max and sum are
        combined through shared memory. With a warp-sized block, every thread reading all
        ROW_THREADS partials (a broadcast) is as cheap as a tree and needs two barriers per
        row instead of ten. A NaN anywhere in the row makes its sum, so every output, NaN.
        """
        row_max = cuda.shared.array(ROW_THREADS, dtype)
        row_sum = cuda.shared.array(ROW_THREADS, dtype)
        t = cuda.threadIdx.x
        P, n = z.shape
        for p in range(cuda.blockIdx.x, P, cuda.gridDim.x):
            # Pass 1: add the bias, keep this thread's running max.
            m = neg_inf
            for j in range(t, n, ROW_THREADS):
                v = z[p, j] + b[j]
                z[p, j] = v
                m = max(m, v)
            row_max[t] = m
            cuda.syncthreads()
            for k in range(ROW_THREADS):
                m = max(m, row_max[k])
            # Pass 2: exp of the max-shifted values (all <= 0, so no overflow), summed.
            total = zero
            for j in range(t, n, ROW_THREADS):
                e = T(math.exp(z[p, j] - m))
                z[p, j] = e
                total += e
            row_sum[t] = total
            # This barrier also orders this row's reads of row_max before the next row's
            # writes; the next row's first barrier does the same for row_sum.
            cuda.syncthreads()
            total = zero
            for k in range(ROW_THREADS):  # same order in every thread: same total
                total += row_sum[k]
            # Pass 3: normalise. Each thread touches only the columns it wrote.
            for j in range(t, n, ROW_THREADS):
                z[p, j] = z[p, j] / total

    return {
        "bias_act": bias_act,
        "bias_act_keep": bias_act_keep,
        "bias_softmax": bias_softmax,
    }


def count_code(loss):
    """How ``output_delta`` counts right rows for ``loss`` (COUNT_NONE: a regressor's)."""
    return COUNT_CODES.get(losses.LOSSES[loss].targets, COUNT_NONE)


def row_right(c):
    """``right(a, y, p, mode)``: 1 when row p's prediction matches its target, else 0.

    ``COUNT_LABELS``: the first arg-max of ``a[p]`` is that of ``y[p]``, with NaN the
    largest value as in ``np.argmax``; ``COUNT_BINARY``: every output on the side of 0.5
    of its target (``(a > 0.5) == (y > 0.5)``). The rule of
    :meth:`gpubp.backends.base.Backend.count_correct`.
    """
    half = c.half

    @cuda.jit(device=True, inline="always")
    def right(a, y, p, mode):
        n = a.shape[1]
        if mode == COUNT_LABELS:
            ia, iy, ba, by = 0, 0, a[p, 0], y[p, 0]
            for j in range(1, n):
                v, u = a[p, j], y[p, j]
                if ba == ba and (v > ba or v != v):  # once NaN, the arg-max stays
                    ia, ba = j, v
                if by == by and (u > by or u != u):
                    iy, by = j, u
            return 1 if ia == iy else 0
        for j in range(n):
            if (a[p, j] > half) != (y[p, j] > half):
                return 0
        return 1

    return right


def delta_kernels(c, dev):
    """The errors: ``δ^L`` with the batch cost, and ``δ^l ⊙= g'(a^l)``."""
    T, zero, dtype = c.T, c.zero, c.dtype
    g_prime, delta_and_cost, tree_sum = dev.g_prime, dev.delta_and_cost, dev.tree_sum
    right = row_right(c)

    @cuda.jit
    def output_delta(a, y, delta, partials, act_code, loss_code, loss_param, w, weighted,
                     correct, count):
        """``δ^L`` with one thread per row (grid-stride), and each block's cost sum.

        For narrow output layers. ``partials[blockIdx.x]`` receives the sum of
        ``c(a_p, y_p)`` over the block's rows; :func:`finish_cost` completes the mean.
        ``weighted``: row p's δ and cost are scaled by ``w[p]`` (``w`` unread otherwise).
        ``count`` (a COUNT_ code, 0: none): the block's rows predicted right
        (:func:`row_right`) are added to the int64 ``correct[0]`` (one atomic per block;
        integer sums, so the order does not matter).
        """
        shared = cuda.shared.array(REDUCE_THREADS, dtype)
        hits = cuda.shared.array(REDUCE_THREADS, int64)
        t = cuda.threadIdx.x
        P, n = a.shape
        rows, width = T(P), T(n)
        cost = zero
        mine = 0
        for p in range(cuda.grid(1), P, cuda.gridsize(1)):
            if count != COUNT_NONE:
                mine += right(a, y, p, count)
            for j in range(n):
                d, c = delta_and_cost(a[p, j], y[p, j], act_code, loss_code, rows,
                                      loss_param, width)
                if weighted:  # uniform across the launch: no divergence
                    d *= w[p]
                    c *= w[p]
                delta[p, j] = d
                cost += c
        # The reduction is outside the loop: every thread reaches each syncthreads.
        shared[t] = cost
        cuda.syncthreads()
        tree_sum(shared, t, REDUCE_THREADS)
        if t == 0:
            partials[cuda.blockIdx.x] = shared[0]
        if count != COUNT_NONE:  # uniform across the launch: every thread or none
            hits[t] = mine
            cuda.syncthreads()
            tree_sum(hits, t, REDUCE_THREADS)
            if t == 0 and hits[0] != 0:
                cuda.atomic.add(correct, 0, hits[0])

    @cuda.jit
    def output_delta_wide(a, y, delta, partials, act_code, loss_code, loss_param, w, weighted,
                          correct, count):
        """``δ^L`` with one warp-sized block per row (grid-stride), for wide output layers.

        The block's threads stride along the row (coalesced), each keeping its share of
        the costs of all the block's rows; one reduction at the end gives the block's sum.
        Thread 0 tells whether each of the block's rows is right (``count``, as in
        :func:`output_delta`: a serial pass over the row, as ``argmax`` is).
        """
        shared = cuda.shared.array(ROW_THREADS, dtype)
        t = cuda.threadIdx.x
        P, n = a.shape
        rows, width = T(P), T(n)
        cost = zero
        mine = 0
        for p in range(cuda.blockIdx.x, P, cuda.gridDim.x):
            if count != COUNT_NONE and t == 0:
                mine += right(a, y, p, count)
            for j in range(t, n, ROW_THREADS):
                d, c = delta_and_cost(a[p, j], y[p, j], act_code, loss_code, rows,
                                      loss_param, width)
                if weighted:  # uniform across the launch: no divergence
                    d *= w[p]
                    c *= w[p]
                delta[p, j] = d
                cost += c
        shared[t] = cost
        cuda.syncthreads()
        tree_sum(shared, t, ROW_THREADS)
        if t == 0:
            partials[cuda.blockIdx.x] = shared[0]
            if mine != 0:
                cuda.atomic.add(correct, 0, mine)

    @cuda.jit
    def finish_cost(partials, cost, total, P):
        """``cost[0] = Σ partials / P`` and ``total[0] += Σ partials`` (float64), one block.

        ``total`` is the epoch's running sum of the example costs, kept in float64 as the
        CPU backends keep it: summing float32 batch costs would drift by ~steps x eps.
        Deterministic (a fixed-order tree, no atomics).
        """
        shared = cuda.shared.array(REDUCE_THREADS, dtype)
        t = cuda.threadIdx.x
        s = zero
        for i in range(t, partials.shape[0], REDUCE_THREADS):
            s += partials[i]
        shared[t] = s
        cuda.syncthreads()
        tree_sum(shared, t, REDUCE_THREADS)
        if t == 0:
            cost[0] = shared[0] / T(P)
            total[0] += float64(shared[0])

    @cuda.jit
    def hidden_delta(delta, a, code, slope):
        """``δ ⊙= g'(a)`` over flattened (P, n) arrays, in place on the GEMM output (``a``
        is ``z`` for the activations whose ``g'`` needs it)."""
        for i in range(cuda.grid(1), delta.shape[0], cuda.gridsize(1)):
            delta[i] *= g_prime(a[i], code, slope)

    return {
        "output_delta": output_delta,
        "output_delta_wide": output_delta_wide,
        "finish_cost": finish_cost,
        "hidden_delta": hidden_delta,
    }
