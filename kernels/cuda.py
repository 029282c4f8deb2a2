"""Numba CUDA fused kernels: the steps of backpropagation between the cuBLAS GEMMs.

Each host function here has the signature of its twin in :mod:`gpubp.kernels.reference`
(whose docstrings give the equations) plus keyword-only extras: ``stream`` and, where a
kernel needs scratch space, caller-owned workspaces so that a training step allocates
nothing. The arrays are Numba device arrays (the CUDA backend passes cached views of its
CuPy arrays), or NumPy arrays under the simulator (``NUMBA_ENABLE_CUDASIM=1``), which is
how the kernels are tested on machines without a GPU; the elementwise kernels also take
their arrays already flattened, which spares a reshape per launch.

This module is *not* a general array library: it holds the kernels' launch arithmetic
and nothing else. The dense products ``a W`` and ``δ W^T`` are cuBLAS's job; the device
code is :mod:`gpubp.kernels.cuda_device` and :mod:`gpubp.kernels.cuda_kernels`.

=====================  ============================================  ===================
kernel                 what it computes                              launch
=====================  ============================================  ===================
``bias_act``           ``a = g(z + b)`` elementwise, in place        1-D grid-stride,
                                                                     256 threads
``bias_act_keep``      the same, also writing ``z + b`` (gelu, silu)  1-D grid-stride
``bias_softmax``       ``a = softmax(z + b)`` per row, in place      a 32-thread block
                                                                     per row (stride)
``output_delta``       ``δ^L``, per-block cost sums, rows right      a thread per row,
                                                                     128/block (stride)
``output_delta_wide``  the same for more than WIDE_OUTPUT columns    a 32-thread block
                                                                     per row (stride)
``finish_cost``        ``C = Σ partials / P``; epoch sum += Σ (f64)  one 128-thread block
``hidden_delta``       ``δ ⊙= g'(a)`` (or ``g'(z)``) in place         1-D grid-stride
``weight_bias_grad``   ``[∂W; ∂b] = [a^{l-1} 1]^T δ``, tiled         16x16 threads per
                                                                     64x32 output tile,
                                                                     split over P
``sum_splits``         the sum of the P-splits' partial products     1-D grid-stride
``sgd_step``           fused parameter updates, in place             1-D grid-stride
``adam_step``          (Adam, AdamW)
``rmsprop_step``
``clip_sum``           clamp by value; ``Σ g²`` into a float64 sum   1-D grid-stride
``clip_scale``         ``g *= min(1, c / (‖g‖ + 1e-6))``             1-D grid-stride
=====================  ============================================  ===================

Every kernel is built once per dtype (float32, float64) by :func:`kernels_for` and
launched through :class:`Kernel` (:mod:`gpubp.kernels.cuda_launch`: the compiled kernel
of its one signature, launched without Numba's per-call dispatch, or bound once).
:func:`compile_ptx` compiles all of them ahead of time.
"""

import math
from collections import namedtuple

import numpy as np
from numba import cuda

from gpubp import activations, losses
from gpubp.kernels import cuda_kernels, cuda_launch
from gpubp.kernels.cuda_device import (GRAD_THREADS, GRAD_TILE_I, GRAD_TILE_J, GRAD_TILE_P,
                                       MSE, REDUCE_THREADS, ROW_THREADS, SOFTMAX)
from gpubp.kernels.cuda_device import EXP, POISSON, REGRESSION
from gpubp.kernels.cuda_device import count_code  # noqa: F401 - re-exported for the backend
from gpubp.kernels.cuda_gather import advance, gather_rows  # noqa: F401 - re-exported
from gpubp.kernels.cuda_launch import Kernel, recording, stream_of_handle  # noqa: F401
from gpubp.kernels.reference import ACTIVATIONS, DERIVED, LOSSES, SLOPE
from numba import types

ACTIVATION_CODES = activations.CODES
LOSS_CODES = losses.CODES
DTYPES = (np.float32, np.float64)

# Grid sizes. Every kernel strides over its work, so each cap bounds the grid without
# limiting the problem size (tests patch the caps down to cross them with small arrays).
ELEMENTWISE_THREADS = 256
ELEMENTWISE_MAX_BLOCKS = 4096  # enough blocks to fill any GPU
ROW_MAX_BLOCKS = 65535  # softmax rows
DELTA_MAX_BLOCKS = 1024  # output delta: also the number of partial cost sums
WIDE_OUTPUT = 32  # output layers wider than a warp get a warp per row
# Weight gradient: split the P rows over more blocks when the output tiles alone would
# leave the GPU idle (784 -> 10 is 13 tiles), but give each split at least
# GRAD_SPLIT_ROWS rows so that the second pass stays small next to the first.
GRAD_TARGET_BLOCKS = 264  # twice the SMs of the largest current GPUs
GRAD_SPLIT_ROWS = 256
GRAD_MAX_SPLITS = 64


def signatures(dtype):
    """Argument types of each kernel (as launched by the functions below), by name."""

    f = types.float32 if np.dtype(dtype) == np.float32 else types.float64
    vec, mat, cube = (types.Array(f, ndim, "C") for ndim in (1, 2, 3))
    code = types.int64  # Python ints
    # ..., loss_param, w, weighted, correct (int64), count
    delta = (mat, mat, mat, vec, code, code, f, vec, types.boolean,
             types.Array(types.int64, 1, "C"), code)
    return {
        "bias_act": (vec, vec, code, f),
        "bias_act_keep": (vec, vec, vec, code, f),
        "bias_softmax": (mat, vec),
        "output_delta": delta,
        "output_delta_wide": delta,
        "finish_cost": (vec, vec, types.Array(types.float64, 1, "C"), code),
        "hidden_delta": (vec, vec, code, f),
        "weight_bias_grad": (mat, mat, mat, vec, cube, code),
        "sum_splits": (cube, mat, vec),
        "sgd_step": (vec, vec, vec, f, f, types.boolean, f),
        "adam_step": (vec, vec, vec, vec) + (f,) * 9,
        "rmsprop_step": (vec,) * 5 + (f,) * 6 + (types.boolean,),
        "clip_sum": (vec, f, types.Array(types.float64, 1, "C")),
        "clip_scale": (vec, types.float64, types.Array(types.float64, 1, "C")),
    }


_KERNELS = {}


def kernels_for(dtype):
    """The kernels for ``dtype`` (float32 or float64), built on first use.

    Returns
    -------
    dict
        Kernel name -> :class:`Kernel`.
    """

    dtype = np.dtype(dtype)
    if dtype.type not in DTYPES:
        raise TypeError(f"dtype must be float32 or float64, got {dtype}")
    if dtype not in _KERNELS:
        built = cuda_kernels.build(dtype)
        _KERNELS[dtype] = {name: Kernel(name, built[name], types.void(*argtypes))
                           for name, argtypes in signatures(dtype).items()}
    return _KERNELS[dtype]


# -- launch arithmetic ---------------------------------------------------------------


def _blocks(n, threads, max_blocks):
    return max(1, min(-(-n // threads), max_blocks))


def _flat(x):
    """A 1-D view of a C-contiguous array (itself when already 1-D)."""
    return x if x.ndim == 1 else x.reshape(x.size)


def _activation_code(activation, allow_softmax=True):
    code = ACTIVATION_CODES.get(activation)
    if code is None or (not allow_softmax and activation not in DERIVED):
        allowed = ACTIVATIONS if allow_softmax else DERIVED
        raise ValueError(f"activation must be one of {allowed}, got {activation!r}")
    return code


def _host_scratch(template, shape, dtype, name):
    """A workspace the caller did not give: NumPy, for NumPy inputs (the simulator) only."""
    if not isinstance(template, np.ndarray):
        raise TypeError(f"{name} must be given for device arrays (the backend owns the "
                        f"workspaces), got None")
    return np.empty(shape, dtype=dtype)


def _launch_elementwise(kernel, size, stream, *args):
    kernel(_blocks(size, ELEMENTWISE_THREADS, ELEMENTWISE_MAX_BLOCKS), ELEMENTWISE_THREADS,
           stream, *args)


def delta_blocks(P, n_out=1):
    """Number of blocks (and of partial cost sums) :func:`output_delta` uses."""
    if n_out > WIDE_OUTPUT:
        return _blocks(P, 1, DELTA_MAX_BLOCKS)
    return _blocks(P, REDUCE_THREADS, DELTA_MAX_BLOCKS)


def grad_splits(P, n_in, n_out):
    """``(splits, rows_per_split)``: how :func:`weight_bias_gradients` divides the P rows.

    One split unless the output tiles give fewer than GRAD_TARGET_BLOCKS blocks; then as
    many as bring the grid to that size, each of at least GRAD_SPLIT_ROWS rows (a
    multiple of GRAD_TILE_P), at most GRAD_MAX_SPLITS.
    """
    tiles = -(-n_out // GRAD_TILE_J) * -(-(n_in + 1) // GRAD_TILE_I)
    splits = max(1, min(GRAD_MAX_SPLITS, GRAD_TARGET_BLOCKS // tiles,
                        -(-P // GRAD_SPLIT_ROWS)))
    rows = -(-P // splits)
    rows = -(-rows // GRAD_TILE_P) * GRAD_TILE_P
    return -(-P // rows), rows


# -- the contract's kernels ----------------------------------------------------------


def bias_activation(z, b, activation, slope=SLOPE, z_out=None, *, stream=0):
    """Forward epilogue ``a = g(z + b)`` in place. ``z``: (P, n), ``b``: (n,).

    Softmax runs as a row kernel (a 32-thread block per row, max-shifted) on the 2-D
    ``z``; the elementwise activations as one grid-stride pass over the P*n entries
    (``z`` may be given flat), which also writes ``z + b`` to ``z_out`` when given (a layer
    whose ``g'`` needs ``z``). ``slope``: leaky_relu's.
    """
    code = _activation_code(activation)
    k = kernels_for(z.dtype)
    T = np.dtype(z.dtype).type
    if code == SOFTMAX:
        k["bias_softmax"](_blocks(z.shape[0], 1, ROW_MAX_BLOCKS), ROW_THREADS, stream, z, b)
    elif z_out is not None:
        _launch_elementwise(k["bias_act_keep"], z.size, stream, _flat(z), b, _flat(z_out), code,
                            T(slope))
    else:
        _launch_elementwise(k["bias_act"], z.size, stream, _flat(z), b, code, T(slope))


_UNREAD = {}  # dtype -> a device vector a launch passes for an argument it never reads


def _unread(a, dtype):
    """A (1,) vector of ``dtype`` passed for an unread argument (no weights, no count);
    its own array under the simulator, which copies each argument back after a launch
    (an alias would be overwritten)."""
    if isinstance(a, np.ndarray):  # the simulator
        return np.zeros(1, dtype)
    dtype = np.dtype(dtype)
    if dtype not in _UNREAD:
        _UNREAD[dtype] = cuda.device_array(1, dtype=dtype)
    return _UNREAD[dtype]


CostSums = namedtuple("CostSums", "partials cost total weights correct", defaults=(None, None))
CostSums.__doc__ = """The device buffers of :func:`output_delta` beyond its operands: the
workspaces of its cost reduction, the rows' ``weights`` (None: unweighted) and ``correct``,
an int64 (1,) count of the rows predicted right (None: not counted)."""

def output_delta(a, y, activation, loss, delta, loss_param=0.0, *, sums=None, stream=0):
    """``δ^L`` and the mean cost in one pass over the rows; see the reference twin.

    Parameters
    ----------
    a, y, delta : arrays, shape (P, n_L)
    activation, loss : str
    loss_param : float
        Label smoothing ``ε`` or Huber's ``δ`` (see the reference twin).
    sums : CostSums or None
        ``weights`` (P,), the rows' weights ``w`` of the reference twin (each row's δ and
        cost scaled by ``w_p`` in the same pass), or None;
        ``partials`` (delta_blocks(P, n_L),), the workspace for the per-block cost sums;
        ``cost`` (1,), which receives the mean cost on the device (the function then
        returns it without waiting for the GPU); ``total``, float64 (1,), to which the
        sum of the example costs is *added* (the epoch's running sum); ``correct``, int64
        (1,), to which the rows predicted right are *added* (the losses whose
        :func:`count_code` is not 0), or None.
    stream : stream, optional

    ``sums`` may be left out for NumPy arrays (the simulator); the function then returns
    the mean cost as a float.

    Returns
    -------
    array of shape (1,), or float
    """
    loss_code = LOSS_CODES.get(loss)
    if loss_code is None:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    # g_o' from a is only needed (and only defined) for mse; softmax there is invalid.
    act_code = _activation_code(activation, allow_softmax=loss_code not in REGRESSION)
    if (loss_code == POISSON) != (act_code == EXP):
        raise ValueError(f"loss='poisson' and activation='exp' go together (the canonical "
                         f"pairing), got activation={activation!r}, loss={loss!r}")
    k = kernels_for(a.dtype)
    P, n = a.shape
    blocks = delta_blocks(P, n)
    partials, cost, total, w, correct = sums if sums is not None else (None,) * 5
    as_float = cost is None
    if partials is None:
        partials = _host_scratch(a, blocks, a.dtype, "partials")
    if cost is None:
        cost = _host_scratch(a, 1, a.dtype, "cost")
    if total is None:
        total = _host_scratch(a, 1, np.float64, "total")
        total[0] = 0
    weighted = w is not None
    if not weighted:
        w = _unread(a, a.dtype)
    count = 0 if correct is None else count_code(loss)
    correct = _unread(a, np.int64) if correct is None else correct
    args = (a, y, delta, partials, act_code, loss_code, a.dtype.type(loss_param), w, weighted,
            correct, count)
    if n > WIDE_OUTPUT:
        k["output_delta_wide"](blocks, ROW_THREADS, stream, *args)
    else:
        k["output_delta"](blocks, REDUCE_THREADS, stream, *args)
    k["finish_cost"](1, REDUCE_THREADS, stream, partials, cost, total, P)
    return float(cost[0]) if as_float else cost


def hidden_delta(delta, a, activation, slope=SLOPE, *, stream=0):
    """``δ^l ⊙= g'(a^l)`` in place on the GEMM output ``δ^{l+1} W^{l+1 T}``; (P, n), or flat
    (``a`` is ``z^l`` for the activations whose ``g'`` needs it; ``slope``: leaky_relu's)."""
    code = _activation_code(activation, allow_softmax=False)
    _launch_elementwise(kernels_for(delta.dtype)["hidden_delta"], delta.size, stream,
                        _flat(delta), _flat(a), code, np.dtype(delta.dtype).type(slope))


def weight_bias_gradients(a_prev, delta, dW, db, *, split=None, stream=0):
    """``dW = a_prev^T δ`` (n_in, n_out) and ``db = Σ_p δ_p`` (n_out,).

    One tiled kernel, plus :func:`sum_splits` when :func:`grad_splits` divides the rows;
    ``split`` is then the ``(splits, n_in + 1, n_out)`` workspace (any array with three
    dimensions otherwise; it may be left out for NumPy arrays).
    """
    P, n_in = a_prev.shape
    n_out = delta.shape[1]
    splits, rows = grad_splits(P, n_in, n_out)
    if split is None:
        split = _host_scratch(a_prev, (splits, n_in + 1, n_out), a_prev.dtype, "split")
    k = kernels_for(delta.dtype)
    grid = (-(-n_out // GRAD_TILE_J), -(-(n_in + 1) // GRAD_TILE_I), splits)
    k["weight_bias_grad"](grid, (GRAD_THREADS, GRAD_THREADS), stream, a_prev, delta, dW, db,
                          split, rows)
    if splits > 1:
        _launch_elementwise(k["sum_splits"], (n_in + 1) * n_out, stream, split, dW, db)


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


def adam_update(param, grad, m, v, hyper, *, stream=0):
    """Fused in-place Adam step; ``hyper`` an :class:`~gpubp.kernels.reference.AdamStep`
    (its ``step`` counts from 1). See the twin."""
    lr, beta1, beta2, eps, step, weight_decay, decoupled = hyper
    T = np.dtype(param.dtype).type
    # The scalars are formed in Python floats and rounded once, as NumPy does when the
    # reference mixes them with arrays of this dtype.
    _launch_elementwise(kernels_for(param.dtype)["adam_step"], param.size, stream,
                        _flat(param), _flat(grad), _flat(m), _flat(v), T(beta1),
                        T(1 - beta1), T(beta2), T(1 - beta2), T(-lr / (1 - beta1**step)),
                        T(math.sqrt(1 - beta2**step)), T(eps), T(weight_decay),
                        T(1 - lr * decoupled))


def rmsprop_update(param, grad, square_avg, momentum_buffer, grad_avg, hyper, *, stream=0):
    """Fused in-place RMSprop step (see the twin); an unused buffer (None) is replaced by
    ``grad``, never read (not ``param``: see :func:`sgd_update`)."""
    lr, alpha, eps, weight_decay, momentum, centered = hyper
    T = np.dtype(param.dtype).type
    buf = grad if momentum_buffer is None else momentum_buffer
    avg = grad if grad_avg is None else grad_avg
    _launch_elementwise(kernels_for(param.dtype)["rmsprop_step"], param.size, stream,
                        _flat(param), _flat(grad), _flat(square_avg), _flat(buf), _flat(avg),
                        T(lr), T(alpha), T(1 - alpha), T(eps), T(weight_decay), T(momentum),
                        bool(centered))


def clip_gradient(grad, max_norm=0.0, max_value=0.0, *, norm_sq=None, stream=0):
    """Clip the flat gradient in place, with no synchronisation (see the twin); ``norm_sq``,
    a zeroed float64 (1,) workspace, receives ``‖g‖²`` (None: NumPy inputs only)."""
    if norm_sq is None:
        norm_sq = _host_scratch(grad, (1,), np.float64, "norm_sq")
        norm_sq[0] = 0.0
    k = kernels_for(grad.dtype)
    T = np.dtype(grad.dtype).type
    _launch_elementwise(k["clip_sum"], grad.size, stream, _flat(grad), T(max_value), norm_sq)
    if max_norm > 0:
        _launch_elementwise(k["clip_scale"], grad.size, stream, _flat(grad),
                            float(max_norm), norm_sq)


# -- ahead-of-time compilation -------------------------------------------------------


def compile_ptx(cc=(9, 0)):
    """PTX for every kernel and dtype, compiled for compute capability ``cc``.

    Needs Numba's NVVM (``numba-cuda`` with the CUDA toolkit wheels) but no GPU. Not
    available under the simulator, which compiles nothing.

    Parameters
    ----------
    cc : tuple of int
        Compute capability, e.g. ``(7, 5)``, ``(8, 0)``, ``(9, 0)``.

    Returns
    -------
    dict
        ``"{kernel}_{dtype}"`` (e.g. ``"weight_bias_grad_float32"``) -> PTX text.
    """
    return cuda_launch.compile_ptx(kernels_for, cc, DTYPES)
