"""Reference kernels of the optimizer steps: SGD, Adam/AdamW, RMSprop, gradient clipping.

The NumPy twins, written as the equations (PyTorch's ``torch.optim.SGD``, ``Adam``,
``AdamW``, ``RMSprop`` and ``torch.nn.utils.clip_grad_norm_`` / ``clip_grad_value_``),
of the fused kernels in :mod:`gpubp.kernels.cpu_update` and :mod:`gpubp.kernels.cuda`.
Re-exported by :mod:`gpubp.kernels.reference`, which the backend contract reads; kept
apart so that the update steps grow without growing the forward and backward kernels'
module. AdamW is :func:`adam_update` with ``decoupled_decay``.
"""

import math
from collections import namedtuple

import numpy as np

# torch.nn.utils.clip_grad_norm_: the scale is max_norm / (‖g‖ + 1e-6), at most 1
CLIP_NORM_EPS = 1e-6


def sgd_update(param, grad, velocity, lr, momentum=0.0, nesterov=False, weight_decay=0.0):
    """Gradient-descent step in place, with optional momentum and L2 weight decay.

    ``g = grad + weight_decay * param``; without momentum ``param -= lr * g``. With
    momentum (PyTorch's convention) ``v = momentum * v + g`` and ``param -= lr * v``, or
    ``param -= lr * (g + momentum * v)`` for Nesterov.

    Parameters
    ----------
    param, grad : ndarray, same shape
    velocity : ndarray or None
        Momentum buffer, same shape as ``param``; unused (may be None) when
        ``momentum == 0``.
    lr, momentum, weight_decay : float
    nesterov : bool
    """
    g = grad + weight_decay * param
    if momentum:
        velocity *= momentum
        velocity += g
        step = g + momentum * velocity if nesterov else velocity
    else:
        step = g
    param -= lr * step


AdamStep = namedtuple("AdamStep", "lr beta1 beta2 eps step weight_decay decoupled_decay",
                      defaults=(0.0,))
AdamStep.__doc__ = """The hyperparameters of one Adam step: ``step`` counts from 1;
``decoupled_decay`` is AdamW's ``λ`` (0 for Adam)."""


def adam_update(param, grad, m, v, hyper):
    """Adam step in place (Kingma & Ba, 2015), L2 weight decay added to the gradient.

    ``hyper`` is an :class:`AdamStep` ``(lr, beta1, beta2, eps, step, weight_decay,
    decoupled_decay)``.

    AdamW (Loshchilov & Hutter, 2019; PyTorch's ``AdamW``) first shrinks the parameter,
    ``param *= 1 − lr · decoupled_decay``, then takes the Adam step below (whose
    ``weight_decay`` is then 0). ``g = grad + weight_decay * param``; ``m = β1 m + (1 − β1) g``;
    ``v = β2 v + (1 − β2) g²``; ``param -= lr · m̂ / (√v̂ + ε)`` with the bias corrections
    ``m̂ = m / (1 − β1^t)``, ``v̂ = v / (1 − β2^t)``, ``t = step`` (1 for the first step).
    Computed as PyTorch does, ``param += (−a m) / (√v / b + ε)`` with ``a = lr / (1 − β1^t)``
    and ``b = √(1 − β2^t)`` (Python floats, rounded once to the dtype): the operations and
    order of the fused kernels, so the CPU loop agrees bit for bit (CUDA's compiler may
    fuse multiply-adds).
    """
    # Python floats: a NumPy float64 scalar would lift a float32 array's arithmetic to float64
    lr, beta1, beta2, eps, step, weight_decay, decoupled_decay = hyper
    lr, beta1, beta2, eps, weight_decay, decoupled_decay = (
        float(x) for x in (lr, beta1, beta2, eps, weight_decay, decoupled_decay))
    if decoupled_decay:
        param *= 1 - lr * decoupled_decay
    g = grad + weight_decay * param
    m *= beta1
    m += (1 - beta1) * g
    v *= beta2
    v += (1 - beta2) * g * g
    denom = np.sqrt(v) / math.sqrt(1 - beta2**step) + eps
    param += (-lr / (1 - beta1**step)) * m / denom


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
    g = grad.astype(np.float64, copy=False)  # a float32 norm overflows at |g| ~ 1.8e19
    norm = float(np.sqrt(np.dot(g, g)))
    if max_norm > 0:
        grad *= clip_scale(norm, max_norm)
    return norm
