"""Dropout in the CUDA kernels: the forward epilogue and the hidden δ with the mask fused in.

Two kernels per dtype, the dropout variants of ``bias_act`` and ``hidden_delta``
(:mod:`gpubp.kernels.cuda_device`), launched like them (1-D grid-stride over the P*n
entries):

======================  ============================================================
``bias_act_drop``       ``a = g(z + b) ⊙ m / (1 − p)`` in place
``bias_act_keep_drop``  the same, ``z + b`` kept first (gelu, gelu_tanh, silu layers)
``hidden_delta_drop``   ``δ ⊙= g'(s u) ⊙ m / (1 − p)`` in place
======================  ============================================================

Every hidden activation: leaky_relu takes its slope; ``s u`` is the unscaled activation
``a (1 − p)``, or, for a layer that keeps ``z`` (stored before the mask), ``z`` itself
(``u = 1``, :func:`gpubp.kernels.dropout.unscaling`).

Each thread recomputes the mask bit of its entry ``i`` from the layer's key, SplitMix64's
output ``i + 1`` (the generator of :mod:`gpubp.kernels.dropout`, whose NumPy twin these
match bit for bit): no mask is stored or uploaded, and the CPU targets drop the same
entries. A fixed mask (gradient checks) takes the array-module twin on the backend
(:meth:`gpubp.backends.cuda.CudaBackend.hidden_delta`).
"""

import numpy as np
from numba import config, cuda, types

from gpubp.kernels.cuda import DTYPES, Kernel, _activation_code, _flat, _launch_elementwise
from gpubp.kernels import cuda_launch
from gpubp.kernels.cuda_device import constants, device_functions
from gpubp.kernels.dropout import GOLDEN, KEEP_BITS, MIX1, MIX2, unscaling
from gpubp.kernels.reference import FROM_Z, SLOPE

_GOLDEN, _MIX1, _MIX2 = np.uint64(GOLDEN), np.uint64(MIX1), np.uint64(MIX2)
_S30, _S27, _S31, _TOP = (np.uint64(s) for s in (30, 27, 31, 64 - KEEP_BITS))
_ONE = np.uint64(1)


def _kept(key, i, threshold):
    """Whether entry ``i`` of the layer of ``key`` is kept (SplitMix64, uint64 throughout)."""
    x = key + (np.uint64(i) + _ONE) * _GOLDEN  # wraps modulo 2^64, as intended
    x = (x ^ (x >> _S30)) * _MIX1
    x = (x ^ (x >> _S27)) * _MIX2
    x = x ^ (x >> _S31)
    return (x >> _TOP) >= threshold


def _kept_simulated(key, i, threshold):
    # the simulator runs the device code on NumPy scalars, which warn on the wrap-around
    # that uint64 arithmetic is here (a GPU wraps silently): the same body, warnings off
    with np.errstate(over="ignore"):
        return _kept(key, i, threshold)


kept = (cuda.jit(device=True)(_kept_simulated) if config.ENABLE_CUDASIM
        else cuda.jit(device=True, inline="always")(_kept))


def _build(dtype):
    """The two kernels of ``dtype`` (Numba dispatchers), over the shared g and g'."""
    c = constants(dtype)
    dev = device_functions(c)
    g, g_prime, zero = dev.g, dev.g_prime, c.zero

    @cuda.jit
    def bias_act_drop(z, b, code, slope, key, threshold, scale):
        """``z[i] = g(z[i] + b[i mod n]) m_i scale`` over the flattened (P, n) ``z``."""
        n = b.shape[0]
        for i in range(cuda.grid(1), z.shape[0], cuda.gridsize(1)):
            if kept(key, i, threshold):
                z[i] = g(z[i] + b[i % n], code, slope) * scale
            else:
                z[i] = zero

    @cuda.jit
    def bias_act_keep_drop(z, b, kept_z, code, slope, key, threshold, scale):
        """``kept_z[i] = z[i] + b[i mod n]`` (before the mask: g' needs all of z), then
        ``z[i] = g(kept_z[i]) m_i scale``."""
        n = b.shape[0]
        for i in range(cuda.grid(1), z.shape[0], cuda.gridsize(1)):
            v = z[i] + b[i % n]
            kept_z[i] = v
            if kept(key, i, threshold):
                z[i] = g(v, code, slope) * scale
            else:
                z[i] = zero

    @cuda.jit
    def hidden_delta_drop(delta, s, code, slope, key, threshold, unscale, scale):
        """``δ[i] = δ[i] g'(s[i] unscale) scale`` where kept, else 0 (flattened (P, n))."""
        for i in range(cuda.grid(1), delta.shape[0], cuda.gridsize(1)):
            if kept(key, i, threshold):
                delta[i] = delta[i] * g_prime(s[i] * unscale, code, slope) * scale
            else:
                delta[i] = zero

    return {"bias_act_drop": bias_act_drop, "bias_act_keep_drop": bias_act_keep_drop,
            "hidden_delta_drop": hidden_delta_drop}


def signatures(dtype):
    """Argument types of the two kernels, by name."""
    f = types.float32 if np.dtype(dtype) == np.float32 else types.float64
    vec, code, u64 = types.Array(f, 1, "C"), types.int64, types.uint64
    return {"bias_act_drop": (vec, vec, code, f, u64, u64, f),
            "bias_act_keep_drop": (vec, vec, vec, code, f, u64, u64, f),
            "hidden_delta_drop": (vec, vec, code, f, u64, u64, f, f)}


_KERNELS = {}


def kernels_for(dtype):
    """Kernel name -> :class:`~gpubp.kernels.cuda.Kernel` for ``dtype``, built on first use."""
    dtype = np.dtype(dtype)
    if dtype not in _KERNELS:
        built = _build(dtype)
        _KERNELS[dtype] = {name: Kernel(name, built[name], types.void(*argtypes))
                           for name, argtypes in signatures(dtype).items()}
    return _KERNELS[dtype]


def bias_activation(z, b, activation, drop, slope=SLOPE, z_out=None, *, stream=0):
    """``a = g(z + b) ⊙ m / (1 − p)`` in place; ``z`` (P, n) or flat, an elementwise
    activation, ``drop`` a key-drawn :class:`~gpubp.kernels.dropout.Drop`, ``slope``
    leaky_relu's; ``z_out`` (like ``z``) receives ``z + b`` before the mask when given."""
    code = _activation_code(activation, allow_softmax=False)
    T = np.dtype(z.dtype).type
    k = kernels_for(z.dtype)
    key, thresh = np.uint64(drop.key), np.uint64(drop.threshold)
    if z_out is None:
        _launch_elementwise(k["bias_act_drop"], z.size, stream, _flat(z), b, code, T(slope),
                            key, thresh, T(drop.scale))
    else:
        _launch_elementwise(k["bias_act_keep_drop"], z.size, stream, _flat(z), b,
                            _flat(z_out), code, T(slope), key, thresh, T(drop.scale))


def hidden_delta(delta, a, activation, drop, slope=SLOPE, *, stream=0):
    """``δ ⊙= g'(a (1 − p)) ⊙ m / (1 − p)`` in place on ``δ^{l+1} W^{l+1 T}``; (P, n) or flat.
    ``a`` is the kept ``z`` for an activation whose ``g'`` needs it (then ``g'(z)``)."""
    code = _activation_code(activation, allow_softmax=False)
    T = np.dtype(delta.dtype).type
    unscale = unscaling(drop, activation in FROM_Z)
    _launch_elementwise(kernels_for(delta.dtype)["hidden_delta_drop"], delta.size, stream,
                        _flat(delta), _flat(a), code, T(slope), np.uint64(drop.key),
                        np.uint64(drop.threshold), T(unscale), T(drop.scale))


def compile_ptx(cc=(9, 0)):
    """PTX of the two kernels for every dtype (as :func:`gpubp.kernels.cuda.compile_ptx`)."""
    return cuda_launch.compile_ptx(kernels_for, cc, DTYPES)
