"""The integer codes the fused CPU loops (:mod:`gpubp.kernels.cpu`) dispatch on.

The compiled loops take an activation or a loss as the integer code of its table
(:mod:`gpubp.activations`, :mod:`gpubp.losses`), so that each loop is compiled once per
dtype and array layout, not once per activation; the look-ups here turn the names into
codes, with the same errors as the reference kernels. Re-exported by
:mod:`gpubp.kernels.cpu`, the one module a backend uses; the loops freeze these values
in, so the cache digest of the loops covers this file (it is imported at their top level,
:func:`gpubp.kernels.jit_cache.kernel_sources`).
"""

import numpy as np

from gpubp import activations, losses
from gpubp.kernels.reference import ACTIVATIONS, DERIVED, LOSSES

SIGMOID, TANH, RELU, IDENTITY, SOFTMAX, EXP = map(
    activations.code, ("sigmoid", "tanh", "relu", "identity", "softmax", "exp"))
# internal codes, negative so that the tables' codes (>= 0) can grow
_SIGMOID_F32 = -1  # internal: sigmoid of a float32 array by the vectorised exp (cpu_math)
_TANH_F32 = -2  # internal: tanh of a float32 array by the vectorised rational function
_SIGMOID_F64, _TANH_F64 = -3, -4  # internal: the same for float64 (kernels/cpu_math.py)


def activation_code(activation, elementwise=False):
    """The integer code of an activation name (what the compiled kernels dispatch on);
    ``ValueError`` for an unknown name, or one without ``g'`` of its own where only those
    make sense (``elementwise=True``), with the same messages as the reference kernels."""
    code = activations.CODES.get(activation)
    if code is None:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    if elementwise and activation not in DERIVED:
        raise ValueError(
            f"activation must be an elementwise activation {DERIVED}, "
            f"got {activation!r}"
        )
    return code


def forward_code(activation, dtype):
    """The code ``_bias_activation`` takes: sigmoid and tanh by their vectorised variants
    for the dtype (``_sigmoid_f32``, ``_tanh_f32``, ``_sigmoid_f64``, ``_tanh_f64``)."""
    code = activation_code(activation)
    if np.dtype(dtype) == np.float32:
        code = {SIGMOID: _SIGMOID_F32, TANH: _TANH_F32}.get(code, code)
    elif np.dtype(dtype) == np.float64:
        code = {SIGMOID: _SIGMOID_F64, TANH: _TANH_F64}.get(code, code)
    return code


def loss_code(loss):
    """The integer code of a loss name."""
    code = losses.CODES.get(loss)
    if code is None:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    return code
