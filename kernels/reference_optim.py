"""Reference kernels of the newer optimizer steps: RMSprop and gradient clipping.

The NumPy twins, written as the equations (PyTorch's ``torch.optim.RMSprop`` and
``torch.nn.utils.clip_grad_norm_`` / ``clip_grad_value_``), of the fused kernels in
:mod:`gpubp.kernels.cpu_update` and :mod:`gpubp.kernels.cuda`. Re-exported by
:mod:`gpubp.kernels.reference`, which the backend contract reads; kept apart so that
the update steps grow without growing the forward and backward kernels' module.
AdamW is :func:`gpubp.kernels.reference.adam_update` with ``decoupled_decay``.
"""

from collections import namedtuple

import numpy as np

# torch.nn.utils.clip_grad_norm_: the scale is max_norm / (‖g‖ + 1e-6), at most 1
CLIP_NORM_EPS = 1e-6

RMSpropStep = namedtuple("RMSpropStep", "lr alpha eps weight_decay momentum centered")
RMSpropStep.__doc__ = """The hyperparameters of one RMSprop step (PyTorch's names)."""


def rmsprop_update(param, grad, square_avg, momentum_buffer, grad_avg, hyper):
    """RMSprop step in place (Hinton's lecture 6e; PyTorch's form).

    ``g = grad + λ param``; ``s = α s + (1 − α) g²``; centered: ``ḡ = ḡ + (1 − α)(g − ḡ)``
    and ``d = √(s − ḡ²) + ε``, else ``d = √s + ε``; with momentum ``μ > 0``:
    ``b = μ b + g / d``, ``param -= lr b``; else ``param -= lr g / d``.

    Parameters
    ----------
    param, grad, square_avg : ndarray, same shape
    momentum_buffer : ndarray or None
        ``b``, read only when ``momentum > 0``.
    grad_avg : ndarray or None
        ``ḡ``, read only when ``centered``.
    hyper : RMSpropStep
        ``(lr, alpha, eps, weight_decay, momentum, centered)``.
    """
    lr, alpha, eps, weight_decay, momentum, centered = hyper
    g = grad + weight_decay * param
    square_avg *= alpha
    square_avg += (1 - alpha) * g * g
    if centered:
        grad_avg += (1 - alpha) * (g - grad_avg)
        denom = np.sqrt(square_avg - grad_avg * grad_avg) + eps
    else:
        denom = np.sqrt(square_avg) + eps
    if momentum > 0:
        momentum_buffer *= momentum
        momentum_buffer += g / denom
        param -= lr * momentum_buffer
    else:
        param -= lr * g / denom


def clip_scale(norm, max_norm):
    """``min(1, max_norm / (norm + 1e-6))``, the factor ``clip_grad_norm_`` multiplies by."""
    return min(1.0, max_norm / (norm + CLIP_NORM_EPS))


def clip_gradient(grad, max_norm=0.0, max_value=0.0):
    """Clip the flat gradient in place; returns its norm ``‖g‖`` before clipping.

    ``max_value > 0``: every entry into ``[−max_value, max_value]`` (``clip_grad_value_``);
    ``max_norm > 0``: then ``g ← g · min(1, max_norm / (‖g‖ + 1e-6))`` with the global
    2-norm of the whole vector (``clip_grad_norm_``). 0 turns either off.

    Parameters
    ----------
    grad : ndarray, shape (N,)
    max_norm, max_value : float
    """
    if max_value > 0:
        np.clip(grad, -max_value, max_value, out=grad)
    norm = float(np.sqrt(np.dot(grad, grad)))
    if max_norm > 0:
        grad *= clip_scale(norm, max_norm)
    return norm
