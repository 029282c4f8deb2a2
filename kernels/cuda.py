"""Numba CUDA fused kernels: the steps of backpropagation between the cuBLAS GEMMs.

Each host function here has the signature of its twin in :mod:`gpubp.kernels.reference`
(whose docstrings give the equations) plus keyword-only extras: ``stream`` (a Numba stream;
the CUDA backend passes CuPy's current stream) and, where a kernel needs scratch space,
a caller-owned workspace so that a training step allocates nothing. The arrays may be
anything a Numba CUDA kernel accepts: Numba device arrays (the backend wraps CuPy arrays
without copying), or NumPy arrays under the simulator (``NUMBA_ENABLE_CUDASIM=1``), which
is how the kernels are tested on machines without a GPU.

This module is *not* a general array library: it holds five kernels (and their launch
arithmetic), nothing else. The dense products ``a W`` and ``δ W^T`` are cuBLAS's job.

=========================  ==========================================  ================
kernel                     what it computes                            launch
=========================  ==========================================  ================
``bias_act``               ``a = g(z + b)`` elementwise, in place      1-D grid-stride,
                                                                       256 threads
``bias_softmax``           ``a = softmax(z + b)`` per row, in place    one 32-thread
                                                                       block per row
                                                                       (grid-stride)
``output_delta``           ``δ^L`` and per-block sums of the costs     one thread per
                                                                       row, 128/block
``mean_of_partials``       ``C = Σ partials / P``                      one 128-thread
                                                                       block
``hidden_delta``           ``δ ⊙= g'(a)`` in place                     1-D grid-stride
``weight_bias_grad``       ``[∂W; ∂b] = [a^{l-1} 1]^T δ``, tiled        16x16 threads per
                                                                       16x16 output tile
``sgd_step``/``adam_step``  fused parameter updates, in place          1-D grid-stride
=========================  ==========================================  ================

Every kernel is built once per dtype (float32, float64) by :func:`kernels_for`, so that
its constants and its arithmetic stay in the data's precision (a Python ``1.0`` would
silently promote float32 arithmetic to float64). :func:`compile_ptx` compiles all of them
ahead of time for a given compute capability.
"""

import math
import warnings

import numpy as np
from numba import cuda

from gpubp.kernels.reference import ACTIVATIONS, LOSSES

# Activation and loss codes passed to the kernels as integers. A branch on a code is
# uniform across a launch, so it costs no divergence and saves compiling one kernel per
# activation.
SIGMOID, TANH, RELU, IDENTITY, SOFTMAX = range(5)
ACTIVATION_CODES = dict(zip(ACTIVATIONS, range(5)))
MSE, BINARY_CROSS_ENTROPY, CROSS_ENTROPY = range(3)
LOSS_CODES = dict(zip(LOSSES, range(3)))

DTYPES = (np.float32, np.float64)

# Launch configuration (see the table in the module docstring).
ELEMENTWISE_THREADS = 256
ELEMENTWISE_MAX_BLOCKS = 4096  # grid-stride beyond this: enough blocks to fill any GPU
ROW_THREADS = 32  # softmax: one warp-sized block per row (output layers are narrow)
ROW_MAX_BLOCKS = 65535
DELTA_THREADS = 128  # output delta: one thread per row, block-reduced costs
REDUCE_THREADS = 128
TILE = 16  # weight gradient: TILE x TILE output tile, P consumed TILE rows at a time


def _build(dtype):
    """Compile-on-first-use kernels for one floating dtype, closed over its constants."""
    T = np.dtype(dtype).type
    zero, one, half, neg_inf = T(0), T(1), T(0.5), T(-np.inf)
    finfo = np.finfo(dtype)
    # Bounds of reference._clipped: logs of the clipped value are finite.
    clip_lo, clip_hi = T(finfo.tiny), T(1 - finfo.epsneg)

    @cuda.jit(device=True, inline=True)
    def g(z, code):
        """Elementwise activation of a pre-activation ``z``."""
        if code == SIGMOID:
            # Two branches sharing e = exp(-|z|) in (0, 1]: exp never overflows.
            e = T(math.exp(-abs(z)))
            if z >= zero:
                return one / (one + e)
            return e / (one + e)
        if code == TANH:
            return T(math.tanh(z))
        if code == RELU:
            return max(zero, z)
        return z

    @cuda.jit(device=True, inline=True)
    def g_prime(a, code):
        """``g'(z)`` written through the activation's output ``a = g(z)``."""
        if code == SIGMOID:
            return a * (one - a)
        if code == TANH:
            return one - a * a
        if code == RELU:
            return one if a > zero else zero
        return one

    @cuda.jit(device=True, inline=True)
    def clip(a):
        return min(max(a, clip_lo), clip_hi)

    @cuda.jit(device=True, inline=True)
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

    @cuda.jit
    def bias_act(z, b, code):
        """``z[i] = g(z[i] + b[i mod n])`` over the flattened (P, n) batch ``z``."""
        n = b.shape[0]
        for i in range(cuda.grid(1), z.shape[0], cuda.gridsize(1)):
            z[i] = g(z[i] + b[i % n], code)

    @cuda.jit
    def bias_softmax(z, b):
        """Row-wise ``softmax(z + b)`` in place; ``z``: (P, n). One block per row.

        The block's threads stride over the row's columns; their partial max and sum are
        combined through shared memory. With a warp-sized block, every thread reading all
        ROW_THREADS partials (a broadcast) is as cheap as a tree and needs two barriers per
        row instead of ten.
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

    @cuda.jit
    def output_delta(a, y, delta, partials, act_code, loss_code):
        """``δ^L`` for one row per thread, and each block's sum of the row costs.

        ``partials[blockIdx.x]`` receives the sum of ``c(a_p, y_p)`` over the block's
        rows; :func:`mean_of_partials` finishes the mean. Doing the block sums here keeps
        the per-example costs out of global memory.
        """
        shared = cuda.shared.array(DELTA_THREADS, dtype)
        t = cuda.threadIdx.x
        p = cuda.grid(1)
        P, n = a.shape
        rows = T(P)
        cost = zero
        if p < P:
            for j in range(n):
                a_pj = a[p, j]
                y_pj = y[p, j]
                diff = a_pj - y_pj
                if loss_code == MSE:
                    delta[p, j] = diff * g_prime(a_pj, act_code) / rows
                    cost += half * diff * diff
                else:
                    # Canonical pairs: the derivative of g_o cancels, δ = (a - y) / P.
                    delta[p, j] = diff / rows
                    c = clip(a_pj)
                    if loss_code == BINARY_CROSS_ENTROPY:
                        cost -= y_pj * T(math.log(c)) + (one - y_pj) * T(math.log1p(-c))
                    else:
                        cost -= y_pj * T(math.log(c))
        # The reduction is outside the `if`: every thread reaches each syncthreads.
        shared[t] = cost
        cuda.syncthreads()
        tree_sum(shared, t, DELTA_THREADS)
        if t == 0:
            partials[cuda.blockIdx.x] = shared[0]

    @cuda.jit
    def mean_of_partials(partials, out, P):
        """``out[0] = Σ partials / P`` in one block (deterministic, no atomics)."""
        shared = cuda.shared.array(REDUCE_THREADS, dtype)
        t = cuda.threadIdx.x
        total = zero
        for i in range(t, partials.shape[0], REDUCE_THREADS):
            total += partials[i]
        shared[t] = total
        cuda.syncthreads()
        tree_sum(shared, t, REDUCE_THREADS)
        if t == 0:
            out[0] = shared[0] / T(P)

    @cuda.jit
    def hidden_delta(delta, a, code):
        """``δ ⊙= g'(a)`` over flattened (P, n) arrays, in place on the GEMM output."""
        for i in range(cuda.grid(1), delta.shape[0], cuda.gridsize(1)):
            delta[i] *= g_prime(a[i], code)

    @cuda.jit
    def weight_bias_grad(a_prev, delta, dW, db):
        """``dW = a_prev^T δ`` and ``db = Σ_p δ_p`` in one tiled pass over the P rows.

        The gradient is computed as one ``(n_in + 1, n_out)`` matrix ``[a_prev 1]^T δ``:
        row ``n_in`` is the bias, the weight of a constant input 1, so it goes to ``db``.
        Block ``(bx, by)`` owns output rows ``by*TILE ..`` and columns ``bx*TILE ..``; each
        step stages a TILE x TILE slab of ``a_prev`` and of ``δ`` (the same TILE rows p) in
        shared memory, coalesced along the contiguous axis, and accumulates their product.
        Out-of-range entries are staged as 0 so remainders need no special case in the
        inner loop.
        """
        a_tile = cuda.shared.array((TILE, TILE), dtype)  # [p, i]
        d_tile = cuda.shared.array((TILE, TILE), dtype)  # [p, j]
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        P, n_in = a_prev.shape
        n_out = delta.shape[1]
        i = cuda.blockIdx.y * TILE + ty  # output row (input node, or n_in for the bias)
        j = cuda.blockIdx.x * TILE + tx  # output column (node of this layer)
        i_load = cuda.blockIdx.y * TILE + tx  # a_prev column this thread stages
        acc = zero
        for p0 in range(0, P, TILE):
            p = p0 + ty
            if p < P and i_load < n_in:
                a_tile[ty, tx] = a_prev[p, i_load]
            elif p < P and i_load == n_in:
                a_tile[ty, tx] = one  # the constant input of the bias
            else:
                a_tile[ty, tx] = zero
            if p < P and j < n_out:
                d_tile[ty, tx] = delta[p, j]
            else:
                d_tile[ty, tx] = zero
            cuda.syncthreads()
            for k in range(TILE):
                acc += a_tile[k, ty] * d_tile[k, tx]
            cuda.syncthreads()  # the tiles are read by all before being overwritten
        if j < n_out:
            if i < n_in:
                dW[i, j] = acc
            elif i == n_in:
                db[j] = acc

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
    def adam_step(param, grad, m, v, lr, beta1, one_minus_beta1, beta2, one_minus_beta2,
                  bias1, bias2, eps, weight_decay):
        """Fused Adam step over flattened arrays; ``bias1 = 1 - β1^t``, ``bias2 = 1 - β2^t``."""
        for i in range(cuda.grid(1), param.shape[0], cuda.gridsize(1)):
            w = param[i]
            g_i = grad[i] + weight_decay * w
            m_i = m[i] * beta1 + one_minus_beta1 * g_i
            v_i = v[i] * beta2 + one_minus_beta2 * g_i * g_i
            m[i] = m_i
            v[i] = v_i
            m_hat = m_i / bias1
            v_hat = v_i / bias2
            param[i] = w - lr * m_hat / (T(math.sqrt(v_hat)) + eps)

    return {
        "bias_act": bias_act,
        "bias_softmax": bias_softmax,
        "output_delta": output_delta,
        "mean_of_partials": mean_of_partials,
        "hidden_delta": hidden_delta,
        "weight_bias_grad": weight_bias_grad,
        "sgd_step": sgd_step,
        "adam_step": adam_step,
    }


_KERNELS = {}


def kernels_for(dtype):
    """The kernels for ``dtype`` (float32 or float64), built on first use.

    Returns
    -------
    dict
        Kernel name -> Numba CUDA dispatcher.
    """
    dtype = np.dtype(dtype)
    if dtype.type not in DTYPES:
        raise TypeError(f"dtype must be float32 or float64, got {dtype}")
    if dtype not in _KERNELS:
        _KERNELS[dtype] = _build(dtype)
    return _KERNELS[dtype]


# -- launch arithmetic ---------------------------------------------------------------


def _blocks(n, threads, max_blocks):
    return max(1, min(-(-n // threads), max_blocks))


def _flat(x):
    """A 1-D view of a C-contiguous array (NumPy, CuPy or Numba device array)."""
    return x.reshape(x.size)


def _activation_code(activation, allow_softmax=True):
    code = ACTIVATION_CODES.get(activation)
    if code is None or (code == SOFTMAX and not allow_softmax):
        allowed = ACTIVATIONS if allow_softmax else ACTIVATIONS[:-1]
        raise ValueError(f"activation must be one of {allowed}, got {activation!r}")
    return code


# Numba warns on every launch of fewer than 128 blocks. For a narrow layer or a small
# batch a small grid is the right launch (the work is small), so that warning is silenced
# for gpubp's own launches only, and only when the grid is that small.
_LOW_OCCUPANCY = r"Grid size \d+ will likely result in GPU under-utilization"
_WARNED_GRID = 128


def _launch(kernel, grid, block, stream, *args):
    """``kernel[grid, block, stream](*args)``, without Numba's low-occupancy warning."""
    blocks = math.prod(grid) if isinstance(grid, tuple) else grid
    if blocks >= _WARNED_GRID:
        kernel[grid, block, stream](*args)
        return
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_LOW_OCCUPANCY)
        kernel[grid, block, stream](*args)


def _launch_elementwise(kernel, size, stream, *args):
    _launch(kernel, _blocks(size, ELEMENTWISE_THREADS, ELEMENTWISE_MAX_BLOCKS),
            ELEMENTWISE_THREADS, stream, *args)


def _empty_like_device(template, shape, stream):
    """Scratch space next to ``template``: NumPy under the simulator, else device."""
    if isinstance(template, np.ndarray):
        return np.empty(shape, dtype=template.dtype)
    return cuda.device_array(shape, dtype=template.dtype, stream=stream)


def delta_blocks(P):
    """Number of blocks (and of partial cost sums) :func:`output_delta` uses for P rows."""
    return _blocks(P, DELTA_THREADS, 2**31 - 1)


# -- the contract's kernels ----------------------------------------------------------


def bias_activation(z, b, activation, *, stream=0):
    """Forward epilogue ``a = g(z + b)`` in place. ``z``: (P, n), ``b``: (n,).

    Softmax runs as a row kernel (one 32-thread block per row, max-shifted); the
    elementwise activations as one grid-stride pass over the P*n entries.
    """
    code = _activation_code(activation)
    k = kernels_for(z.dtype)
    P = z.shape[0]
    if code == SOFTMAX:
        _launch(k["bias_softmax"], _blocks(P, 1, ROW_MAX_BLOCKS), ROW_THREADS, stream, z, b)
    else:
        _launch_elementwise(k["bias_act"], z.size, stream, _flat(z), b, code)


def output_delta(a, y, activation, loss, delta, *, partials=None, cost=None, stream=0):
    """``δ^L`` and the mean cost in one pass over the rows; see the reference twin.

    Parameters
    ----------
    a, y, delta : arrays, shape (P, n_L)
    activation, loss : str
    partials : array, shape (delta_blocks(P),), optional
        Workspace for the per-block cost sums (allocated when not given).
    cost : array, shape (1,), optional
        Receives the mean cost on the device. When given the function returns it
        without waiting for the GPU; otherwise it returns a Python float (a sync).
    stream : Numba stream, optional

    Returns
    -------
    array of shape (1,) or float
    """
    loss_code = LOSS_CODES.get(loss)
    if loss_code is None:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    # g_o' from a is only needed (and only defined) for mse; softmax there is invalid.
    act_code = _activation_code(activation, allow_softmax=loss_code != MSE)
    k = kernels_for(a.dtype)
    P = a.shape[0]
    blocks = delta_blocks(P)
    if partials is None:
        partials = _empty_like_device(a, (blocks,), stream)
    as_float = cost is None
    if as_float:
        cost = _empty_like_device(a, (1,), stream)
    _launch(k["output_delta"], blocks, DELTA_THREADS, stream, a, y, delta, partials, act_code,
            loss_code)
    _launch(k["mean_of_partials"], 1, REDUCE_THREADS, stream, partials, cost, P)
    if not as_float:
        return cost
    if isinstance(cost, np.ndarray):  # the simulator: already on the host
        return float(cost[0])
    host = cost.copy_to_host(stream=stream)
    if stream:
        stream.synchronize()  # copy_to_host on a stream is asynchronous
    return float(host[0])


def hidden_delta(delta, a, activation, *, stream=0):
    """``δ^l ⊙= g'(a^l)`` in place on the GEMM output ``δ^{l+1} W^{l+1 T}``; (P, n)."""
    code = _activation_code(activation, allow_softmax=False)
    _launch_elementwise(kernels_for(delta.dtype)["hidden_delta"], delta.size, stream,
                        _flat(delta), _flat(a), code)


def weight_bias_gradients(a_prev, delta, dW, db, *, stream=0):
    """``dW = a_prev^T δ`` (n_in, n_out) and ``db = Σ_p δ_p`` (n_out,) in one kernel."""
    n_in = a_prev.shape[1]
    n_out = delta.shape[1]
    grid = (-(-n_out // TILE), -(-(n_in + 1) // TILE))  # +1: the bias row
    _launch(kernels_for(delta.dtype)["weight_bias_grad"], grid, (TILE, TILE), stream,
            a_prev, delta, dW, db)


def sgd_update(param, grad, velocity, lr, momentum=0.0, nesterov=False, weight_decay=0.0,
               *, stream=0):
    """Fused in-place SGD / momentum / Nesterov / weight-decay step; see the twin."""
    T = np.dtype(param.dtype).type
    if velocity is None:
        if momentum:
            raise ValueError("velocity must be an array when momentum != 0, got None")
        # A placeholder that is never read (the kernel branches on momentum == 0). Not
        # `param`: the simulator copies each argument back after the launch, so an alias
        # of the updated array would be restored to its old values.
        velocity = grad
    _launch_elementwise(kernels_for(param.dtype)["sgd_step"], param.size, stream,
                        _flat(param), _flat(grad), _flat(velocity), T(lr), T(momentum),
                        bool(nesterov), T(weight_decay))


def adam_update(param, grad, m, v, lr, beta1, beta2, eps, step, weight_decay=0.0, *,
                stream=0):
    """Fused in-place Adam step; ``step`` counts from 1. See the twin."""
    T = np.dtype(param.dtype).type
    # The scalars are formed in Python floats and rounded once, as NumPy does when the
    # reference mixes them with arrays of this dtype.
    _launch_elementwise(kernels_for(param.dtype)["adam_step"], param.size, stream,
                        _flat(param), _flat(grad), _flat(m), _flat(v), T(lr), T(beta1),
                        T(1 - beta1), T(beta2), T(1 - beta2), T(1 - beta1**step),
                        T(1 - beta2**step), T(eps), T(weight_decay))


# -- ahead-of-time compilation -------------------------------------------------------


def _signatures(dtype):
    """Argument types each kernel is launched with, as Numba types them at run time."""
    from numba import types

    f = types.float32 if np.dtype(dtype) == np.float32 else types.float64
    vec = types.Array(f, 1, "C")
    mat = types.Array(f, 2, "C")
    code = types.int64  # Python ints are typed int64
    return {
        "bias_act": (vec, vec, code),
        "bias_softmax": (mat, vec),
        "output_delta": (mat, mat, mat, vec, code, code),
        "mean_of_partials": (vec, vec, code),
        "hidden_delta": (vec, vec, code),
        "weight_bias_grad": (mat, mat, mat, vec),
        "sgd_step": (vec, vec, vec, f, f, types.boolean, f),
        "adam_step": (vec, vec, vec, vec) + (f,) * 9,
    }


def compile_ptx(cc=(9, 0)):
    """PTX for every kernel and dtype, compiled for compute capability ``cc``.

    Needs Numba's NVVM (``numba-cuda`` with the CUDA toolkit wheels) but no GPU. Not
    available under the simulator, which compiles nothing.

    Parameters
    ----------
    cc : tuple of int
        Compute capability, e.g. ``(7, 0)``, ``(8, 0)``, ``(9, 0)``.

    Returns
    -------
    dict
        ``"{kernel}_{dtype}"`` (e.g. ``"weight_bias_grad_float32"``) -> PTX text.
    """
    from numba import types

    ptx = {}
    for dtype in DTYPES:
        kernels = kernels_for(dtype)
        for name, argtypes in _signatures(dtype).items():
            text, _ = cuda.compile_ptx(kernels[name].py_func, types.void(*argtypes),
                                       cc=tuple(cc))
            ptx[f"{name}_{np.dtype(dtype).name}"] = text
    return ptx
