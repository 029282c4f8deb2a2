"""Fused CPU kernels: Numba ``@njit`` loops with the signatures of the reference kernels.

Each public function here has exactly the signature and in-place semantics of its twin in
:mod:`gpubp.kernels.reference` (whose docstrings give the equations); the difference is
that the elementwise work around the matrix products is done in one pass over memory
instead of several NumPy temporaries:

- ``bias_activation``: ``a = g(z + b)`` (softmax included) in one read and one write of z;
- ``output_delta``: ``δ^L`` and the mean cost in one pass (no per-example cost array);
- ``hidden_delta``: ``δ ⊙ g'(a)`` on the GEMM output, in place;
- ``weight_bias_gradients``: ``a^T δ`` by BLAS into ``dW`` and the column sums of ``δ``;
- ``sgd_update``/``adam_update``, ``count_correct``: from :mod:`gpubp.kernels.cpu_update`.

The matrix products themselves stay in BLAS (``np.matmul(..., out=...)``): a hand-written
Numba GEMM cannot compete with OpenBLAS, and the elementwise work is what NumPy does badly.

Threads: these loops are serial on purpose; the GEMMs use every core through BLAS.
OpenBLAS keeps its worker threads spinning for a while after each GEMM, and a
``parallel=True`` loop started then competes with them for the same cores
(docs/performance.md, "Serial elementwise loops").

Every loop is compiled with ``error_model="numpy"``: Python's error model checks each
float division for a zero divisor, and that branch alone stops LLVM from vectorising a
loop (docs/performance.md). Divisions by zero give inf/nan as in NumPy.

Activations and losses are dispatched inside the compiled code by the integer codes of
their tables (:mod:`gpubp.activations`, :mod:`gpubp.losses`), so that each kernel is
compiled once per dtype and array layout, not once per activation; the public functions
take the names (:mod:`gpubp.kernels.cpu_codes` looks the codes up). JIT cache: a fresh process loads the machine code from ``__pycache__``
instead of spending seconds in LLVM. Numba stamps a cached function with its own file
only, yet the codes come from the tables' files, so the loops are not cached on their
own: the entry points Python calls (``_ENTRY``) are cached closures over
:data:`KERNELS_DIGEST`, a hash of the modules this one imports
(:func:`gpubp.kernels.jit_cache.kernel_sources`), which Numba's cache key includes; an
edited table compiles new entry points. The compiled epoch compiles the loops in the
same way.
"""

import math
from collections import namedtuple

import numpy as np
from numba import njit

from gpubp.kernels.cpu_update import (_adam, _clip, _count_correct, _rmsprop,  # noqa: F401 - re-exported
                                      _sgd, adam_update, clip_gradient, count_correct,
                                      rmsprop_update, sgd_update)
from gpubp.kernels import cpu_activations, jit_cache
from gpubp.kernels.cpu_codes import (_SIGMOID_F32, _SIGMOID_F64, _TANH_F32, _TANH_F64,  # noqa: F401
                                     EXP, IDENTITY, RELU, SIGMOID, SOFTMAX, TANH,
                                     activation_code, forward_code, loss_code)
from gpubp.kernels.cpu_loss import (BINARY_CROSS_ENTROPY, CROSS_ENTROPY, HUBER, L1, MSE,  # noqa: F401
                                    POISSON, _poisson_delta, _slope_and_cost)
from gpubp.kernels.cpu_math import (F32_LOOP, _D, _F, _sigmoid_f32, _sigmoid_f64, _tanh_f32,
                                    _tanh_f64)
from gpubp.kernels.reference import EXP_CAP, SLOPE

# the row weights of an unweighted batch (see _output_delta), one per dtype
_NO_WEIGHTS = {np.dtype(t): np.empty(0, t) for t in (np.float32, np.float64)}
# Clip bounds of the log-losses (reference._clipped), looked up once rather than per call.
CLIP = {np.dtype(t): (float(np.finfo(t).tiny), float(1 - np.finfo(t).epsneg))
        for t in (np.float32, np.float64)}


# -- compiled loops ------------------------------------------------------------------------
@njit(inline="always", error_model="numpy")
def _sigmoid1(x):
    # Two branches sharing e = exp(-|x|) <= 1, so exp never overflows (docs/design.md).
    e = math.exp(-abs(x))
    if x >= 0:
        return 1 / (1 + e)
    return e / (1 + e)


@njit(inline="always", error_model="numpy")
def _derivative1(a, code):
    """``g'(z)`` from ``a = g(z)`` for an elementwise activation code."""
    if code == SIGMOID:
        return a * (1 - a)
    if code == TANH:
        return 1 - a * a
    if code == RELU:
        return a * 0 + (a > 0)  # a*0 keeps the dtype of a
    return a * 0 + 1


@njit(**F32_LOOP)
def _sigmoid_row_f32(row, b):
    """``row = σ(row + b)`` in float32, in a function of its own for the FMA contraction of
    the float32 loops (``cpu_math.F32_LOOP``; the float64 ones go without)."""
    for j in range(row.shape[0]):
        row[j] = _sigmoid_f32(_F(row[j] + b[j]))


@njit(**F32_LOOP)
def _tanh_row_f32(row, b):
    """``row = tanh(row + b)`` in float32, as :func:`_sigmoid_row_f32`."""
    for j in range(row.shape[0]):
        row[j] = _tanh_f32(_F(row[j] + b[j]))


@njit(error_model="numpy")
def _bias_activation(z, b, code):
    P, n = z.shape
    if code == SOFTMAX:
        for p in range(P):
            row = z[p]
            m = -np.inf
            for j in range(n):
                row[j] += b[j]
                m = max(m, row[j])
            s = row[0] * 0
            for j in range(n):
                e = math.exp(row[j] - m)  # <= 1: max-shifted, cannot overflow
                row[j] = e
                s += e
            inv = 1 / s
            for j in range(n):
                row[j] *= inv
        return
    for p in range(P):
        row = z[p]
        # Separate loops per activation so that LLVM vectorises the cheap ones.
        if code == _SIGMOID_F32:
            _sigmoid_row_f32(row, b)
        elif code == _TANH_F32:
            _tanh_row_f32(row, b)
        elif code == _SIGMOID_F64:
            for j in range(n):
                row[j] = _sigmoid_f64(_D(row[j] + b[j]))
        elif code == _TANH_F64:
            for j in range(n):
                row[j] = _tanh_f64(_D(row[j] + b[j]))
        elif code == SIGMOID:
            for j in range(n):
                row[j] = _sigmoid1(row[j] + b[j])
        elif code == RELU:
            for j in range(n):
                v = row[j] + b[j]
                row[j] = v if v > 0 else v * 0
        else:  # identity
            for j in range(n):
                row[j] += b[j]


@njit(error_model="numpy")
def _output_delta(a, y, act, loss, delta, clip, loss_param, w):
    """``δ^L`` and ``Σ_p w_p c_p / P``; ``w`` (P,) the rows' normalised weights, or an
    empty array: all 1. ``loss_param``: label smoothing ``ε`` or Huber's ``δ``; ``clip``:
    the log-losses' bounds ``(tiny, one_minus)``."""
    tiny, one_minus = clip
    P, n = a.shape
    inv_p = 1.0 / max(P, 1)
    weighted = w.size > 0
    keep = 1.0 - loss_param  # label smoothing: ỹ = (1 − ε) y + ε / K
    spread = loss_param / n if loss == CROSS_ENTROPY else 0.5 * loss_param
    smooth = loss_param != 0 and (loss == CROSS_ENTROPY or loss == BINARY_CROSS_ENTROPY)
    cost = 0.0  # accumulated in float64 whatever the dtype
    for p in range(P):
        row_scale = w[p] * inv_p if weighted else inv_p
        row_cost = 0.0
        for j in range(n):
            aj = a[p, j]
            yj = y[p, j] * keep + spread if smooth else y[p, j]
            d = aj - yj
            if loss == MSE or loss == HUBER or loss == L1:
                slope, c = _slope_and_cost(d, loss, loss_param)
                delta[p, j] = slope * _derivative1(aj, act) * row_scale
                row_cost += c
            else:
                # sigmoid + BCE and softmax + CE: g_o' cancels with dc/da (docs/design.md).
                delta[p, j] = d * row_scale
                c = min(max(aj, tiny), one_minus)
                if loss == CROSS_ENTROPY:
                    if yj != 0:
                        row_cost -= yj * math.log(c)
                else:
                    row_cost -= yj * math.log(c) + (1 - yj) * math.log1p(-c)
        cost += w[p] * row_cost if weighted else row_cost
    return cost / P


@njit(error_model="numpy")
def _bias_exp(z, b, cap):
    """``a = exp(min(z + b, cap))``: the Poisson rate, never overflowing (reference.EXP_CAP)."""
    P, n = z.shape
    for p in range(P):
        row = z[p]
        for j in range(n):
            row[j] = math.exp(min(row[j] + b[j], cap))


@njit(error_model="numpy")
def _hidden_delta(delta, a, code):
    P, n = delta.shape
    for p in range(P):
        drow = delta[p]
        arow = a[p]
        if code == SIGMOID:
            for j in range(n):
                drow[j] *= arow[j] * (1 - arow[j])
        elif code == TANH:
            for j in range(n):
                drow[j] *= 1 - arow[j] * arow[j]
        elif code == RELU:
            for j in range(n):
                if not arow[j] > 0:
                    drow[j] = drow[j] * 0
        # identity: g' = 1, nothing to do


@njit(error_model="numpy")
def _column_sums(delta, db):
    # Row by row so the inner loop runs along contiguous memory and vectorises.
    P, n = delta.shape
    for j in range(n):
        db[j] = 0
    for p in range(P):
        row = delta[p]
        for j in range(n):
            db[j] += row[j]


# -- public kernels (signatures of gpubp.kernels.reference) -------------------------------
def bias_activation(z, b, activation, slope=SLOPE, z_out=None):
    """Forward epilogue ``a = g(z + b)``, in place on the GEMM output.

    Parameters
    ----------
    z : ndarray, shape (P, n_l)
        ``a^{l-1} W^l`` on entry, ``a^l`` on exit.
    b : ndarray, shape (n_l,)
    activation : str
        One of ``ACTIVATIONS``.
    slope : float
        leaky_relu's slope.
    z_out : ndarray, shape (P, n_l), or None
        Written with ``z^l`` (a layer whose ``g'`` needs it).
    """
    code = forward_code(activation, z.dtype)
    if code in cpu_activations.SPECIAL:
        _ENTRY.special_forward(z, b, code, float(slope), z[:0] if z_out is None else z_out)
        return
    if z_out is not None:  # the contract lets any activation keep z, not only FROM_Z's
        np.add(z, b, out=z_out)
    if code == EXP:
        _ENTRY.bias_exp(z, b, EXP_CAP[z.dtype])
        return
    _ENTRY.bias_activation(z, b, code)


def output_delta(a, y, activation, loss, delta, loss_param=0.0, w=None):
    """Output error ``δ^L`` and the mean cost in one pass.

    Parameters
    ----------
    a, y : ndarray, shape (P, n_L)
        Output activations and targets.
    activation, loss : str
        Output activation and loss.
    delta : ndarray, shape (P, n_L)
        Written with ``δ^L``.
    loss_param : float
        Label smoothing ``ε`` or Huber's ``δ`` (see the reference twin).
    w : ndarray, shape (P,), or None
        Row weights, fused into the same pass (see the reference twin).

    Returns
    -------
    float
        The mean cost over the P rows.
    """
    act = activation_code(activation)
    code = loss_code(loss)
    if code in (MSE, HUBER, L1) and act == SOFTMAX:
        # g' of softmax is a Jacobian, not elementwise; the reference refuses it too.
        activation_code(activation, elementwise=True)
    if (code == POISSON) != (act == EXP):
        raise ValueError(f"loss='poisson' and activation='exp' go together (the canonical "
                         f"pairing), got activation={activation!r}, loss={loss!r}")
    tiny, one_minus = CLIP[a.dtype]
    w = _NO_WEIGHTS[a.dtype] if w is None else w
    if code == POISSON:
        return float(_ENTRY.poisson_delta(a, y, delta, tiny, w))
    return float(_ENTRY.output_delta(a, y, act, code, delta, (tiny, one_minus),
                                     float(loss_param), w))


def hidden_delta(delta, a, activation, slope=SLOPE):
    """Hidden error ``δ^l = (δ^{l+1} W^{l+1 T}) ⊙ g'(a^l)``, in place on ``delta``.

    Parameters
    ----------
    delta : ndarray, shape (P, n_l)
        ``δ^{l+1} W^{l+1 T}`` on entry, ``δ^l`` on exit.
    a : ndarray, shape (P, n_l)
        Stored activations ``a^l`` (``z^l`` for the activations whose ``g'`` needs it).
    activation : str
        Elementwise hidden activation.
    slope : float
        leaky_relu's slope.
    """
    code = activation_code(activation, elementwise=True)
    if code in cpu_activations.SPECIAL:
        return _ENTRY.special_delta(delta, a, code, float(slope))  # (None)
    _ENTRY.hidden_delta(delta, a, code)


def weight_bias_gradients(a_prev, delta, dW, db):
    """``dW = a^{l-1 T} δ^l`` by BLAS and ``db = Σ_p δ^l_p`` in one pass over ``δ``.

    Parameters
    ----------
    a_prev : ndarray, shape (P, n_{l-1})
    delta : ndarray, shape (P, n_l)
    dW : ndarray, shape (n_{l-1}, n_l)
    db : ndarray, shape (n_l,)
    """
    # a_prev.T is an F-ordered view: NumPy hands it to BLAS as a transposed operand, no copy.
    np.matmul(a_prev.T, delta, out=dW)
    _ENTRY.column_sums(delta, db)


def _entry_points(kernels_digest):
    """The cached kernels Python calls: closures over ``kernels_digest`` (see "JIT cache"
    in the module docstring), each calling its uncached loop, which it compiles in."""

    @njit(cache=True, error_model="numpy")
    def bias_activation(z, b, code):
        if False:  # never runs: the captured digest is only part of the cache key
            kernels_digest
        _bias_activation(z, b, code)

    @njit(cache=True, error_model="numpy")
    def bias_exp(z, b, cap):
        if False:
            kernels_digest
        _bias_exp(z, b, cap)

    @njit(cache=True, error_model="numpy")
    def output_delta(a, y, act, loss, delta, clip, loss_param, w):
        if False:
            kernels_digest
        return _output_delta(a, y, act, loss, delta, clip, loss_param, w)

    @njit(cache=True, error_model="numpy")
    def poisson_delta(a, y, delta, tiny, w):
        if False:
            kernels_digest
        return _poisson_delta(a, y, delta, tiny, w)

    @njit(cache=True, error_model="numpy")
    def hidden_delta(delta, a, code):
        if False:
            kernels_digest
        _hidden_delta(delta, a, code)

    @njit(cache=True, error_model="numpy")
    def column_sums(delta, db):
        if False:
            kernels_digest
        _column_sums(delta, db)

    @njit(cache=True, error_model="numpy")
    def special_forward(z, b, code, slope, kept):
        if False:
            kernels_digest
        cpu_activations.bias_activation(z, b, code, slope, kept)

    @njit(cache=True, error_model="numpy")
    def special_delta(delta, s, code, slope):
        if False:
            kernels_digest
        cpu_activations.hidden_delta(delta, s, code, slope)

    return _Entry(bias_activation, bias_exp, output_delta, poisson_delta, hidden_delta,
                  column_sums, special_forward, special_delta)


_Entry = namedtuple("_Entry", "bias_activation bias_exp output_delta poisson_delta "
                              "hidden_delta column_sums special_forward special_delta")
# what the cached entry points are keyed by: this module and what it imports (the tables)
KERNELS_DIGEST = jit_cache.digest(jit_cache.kernel_sources(__name__))
_ENTRY = _entry_points(KERNELS_DIGEST)
