"""Fused CPU kernels of the optimizer updates and the accuracy count.

The other half of :mod:`gpubp.kernels.cpu` (which re-exports everything here, so
``gpubp.kernels.cpu`` stays the one module a backend uses): ``sgd_update``,
``adam_update`` (and AdamW) and ``rmsprop_update``, the whole optimizer step in one pass
over the parameter, ``clip_gradient``, the clipping of the flat gradient, and
``count_correct``, the correct predictions of a batch in one pass over its outputs. Their
signatures and in-place semantics are those of :mod:`gpubp.kernels.reference`; the
compiled loops are also called by :mod:`gpubp.kernels.cpu_epoch`. Compiled as the rest of
:mod:`gpubp.kernels.cpu` (serial, ``error_model="numpy"``, ``cache=True``; see there why).
"""

import math

import numpy as np
from numba import njit

from gpubp import losses
from gpubp.kernels import reference


# -- compiled loops ------------------------------------------------------------------------
@njit(cache=True, error_model="numpy")
def _count_correct(a, y, by_argmax):
    """Rows whose predicted labels match the targets' (``gpubp.core.metrics.accuracy``)."""
    P, n = a.shape
    count = 0
    for p in range(P):
        if by_argmax:  # first index of the maximum, as np.argmax
            ia = 0
            iy = 0
            for j in range(1, n):
                if a[p, j] > a[p, ia]:
                    ia = j
                if y[p, j] > y[p, iy]:
                    iy = j
            count += ia == iy
        else:  # every 0/1 label at the 0.5 threshold
            ok = True
            for j in range(n):
                if (a[p, j] > 0.5) != (y[p, j] > 0.5):
                    ok = False
            count += ok
    return count

@njit(cache=True, error_model="numpy")
def _sgd(param, grad, velocity, lr, momentum, nesterov, weight_decay, use_velocity):
    # The scalars arrive as Python floats (NumPy scalars cost 0.7 us more per call to
    # dispatch) and are rounded to the parameter's dtype here, as NumPy's weak scalars are.
    t = param.dtype.type
    lr, momentum, weight_decay = t(lr), t(momentum), t(weight_decay)
    # Flat views of C-contiguous arrays, so one compiled loop serves 1-D and 2-D params.
    p_ = param.reshape(param.size)
    g_ = grad.reshape(grad.size)
    if not use_velocity:
        if weight_decay == 0:
            for i in range(p_.size):
                p_[i] -= lr * g_[i]
        else:
            for i in range(p_.size):
                p_[i] -= lr * (g_[i] + weight_decay * p_[i])
        return
    v_ = velocity.reshape(velocity.size)
    for i in range(p_.size):
        g = g_[i] + weight_decay * p_[i]
        v = momentum * v_[i] + g
        v_[i] = v
        if nesterov:
            p_[i] -= lr * (g + momentum * v)
        else:
            p_[i] -= lr * v


@njit(cache=True, error_model="numpy")
def _adam(param, grad, m, v, coefficients):
    """``coefficients``: ``(lr, β1, 1 − β1, β2, 1 − β2, ε, 1 − β1^t, 1 − β2^t, λ, s)``,
    ``s = 1 − lr λ_AdamW`` the decoupled decay's shrink (1 for Adam).

    The step is PyTorch's (``_single_tensor_adam``): ``θ + (−a m) / (√v / b + ε)`` with
    ``a = lr / (1 − β1^t)`` and ``b = √(1 − β2^t)`` formed in float64 and rounded once:
    two divisions and one square root per element where ``lr (m / c1) / (√(v / c2) + ε)``
    took three divisions, and in float32 it rounds as torch does (docs/performance.md,
    "The Adam step")."""
    lr, beta1, one_m_beta1, beta2, one_m_beta2, eps, c1, c2, weight_decay, shrink = coefficients
    t = param.dtype.type
    neg_step, bias2_sqrt = t(-lr / c1), t(math.sqrt(c2))
    beta1, one_m_beta1, beta2, one_m_beta2 = t(beta1), t(one_m_beta1), t(beta2), t(one_m_beta2)
    eps, weight_decay, shrink = t(eps), t(weight_decay), t(shrink)
    p_ = param.reshape(param.size)
    g_ = grad.reshape(grad.size)
    m_ = m.reshape(m.size)
    v_ = v.reshape(v.size)
    for i in range(p_.size):
        # AdamW: θ ← (1 − lr λ) θ before the step, as PyTorch; exact (× 1) for Adam, and
        # no branch in the loop
        p = p_[i] * shrink
        g = g_[i] + weight_decay * p
        mi = beta1 * m_[i] + one_m_beta1 * g
        vi = beta2 * v_[i] + one_m_beta2 * g * g
        m_[i] = mi
        v_[i] = vi
        p_[i] = p + (neg_step * mi) / (math.sqrt(vi) / bias2_sqrt + eps)


@njit(cache=True, error_model="numpy")
def _rmsprop(param, grad, square_avg, buf, grad_avg, coefficients, centered):
    """``coefficients``: ``(lr, α, 1 − α, ε, λ, μ)``; ``buf`` read when ``μ > 0``,
    ``grad_avg`` when ``centered`` (see the reference for the equations)."""
    lr, alpha, one_m_alpha, eps, weight_decay, momentum = coefficients
    t = param.dtype.type
    lr, alpha, one_m_alpha, eps = t(lr), t(alpha), t(one_m_alpha), t(eps)
    weight_decay, momentum = t(weight_decay), t(momentum)
    p_ = param.reshape(param.size)
    g_ = grad.reshape(grad.size)
    s_ = square_avg.reshape(square_avg.size)
    b_ = buf.reshape(buf.size)
    a_ = grad_avg.reshape(grad_avg.size)
    for i in range(p_.size):
        g = g_[i] + weight_decay * p_[i]
        s = alpha * s_[i] + one_m_alpha * g * g
        s_[i] = s
        if centered:
            a = a_[i] + one_m_alpha * (g - a_[i])
            a_[i] = a
            denom = math.sqrt(s - a * a) + eps
        else:
            denom = math.sqrt(s) + eps
        if momentum > 0:
            b = momentum * b_[i] + g / denom
            b_[i] = b
            p_[i] -= lr * b
        else:  # (lr g) / d, as the reference and PyTorch's addcdiv round
            p_[i] -= (lr * g) / denom


@njit(cache=True, error_model="numpy", fastmath={"reassoc"})
def _clip(grad, max_norm, max_value):
    """Clip the flat ``grad`` in place in two passes (clamp and sum of squares, then the
    scale); returns ``‖g‖`` before the norm's scale (see the reference).

    The squares are float64 (``np.float64(g)``: Numba's ``float()`` of a float32 stays
    float32), so a float32 gradient's norm neither overflows nor drifts. ``reassoc`` lets
    LLVM split the sum into vector lanes (one running sum is a chain of dependent adds);
    it changes no comparison, so the clamp keeps NaN as np.clip does (comparisons, not
    ``min``/``max``, which would return the bound). docs/performance.md, "Gradient
    clipping"."""
    t = grad.dtype.type
    bound, clamp = t(max_value), max_value > 0
    total = 0.0
    for i in range(grad.size):
        g = grad[i]
        if clamp:
            g = bound if g > bound else (-bound if g < -bound else g)
            grad[i] = g
        total += np.float64(g) * np.float64(g)
    norm = math.sqrt(total)
    if max_norm > 0:
        scale = t(min(1.0, max_norm / (norm + 1e-6)))
        for i in range(grad.size):
            grad[i] *= scale
    return norm


# -- public kernels (signatures of gpubp.kernels.reference) -------------------------------
def count_correct(a, y, loss):
    """Correct predictions among the rows of a batch, as :func:`gpubp.core.metrics.accuracy`.

    Parameters
    ----------
    a, y : ndarray, shape (P, n_L)
        Output activations and targets.
    loss : str
        ``"cross_entropy"`` compares the arg-max of each row; the other classifier loss
        compares every output thresholded at 0.5.

    Returns
    -------
    int
    """
    row = losses.LOSSES.get(loss)
    if row is None:
        raise ValueError(f"loss must be one of {losses.NAMES}, got {loss!r}")
    # one class per row: the arg-max; 0/1 labels: each output at the 0.5 threshold
    return int(_count_correct(a, y, row.targets == "labels"))


def _flat_ok(*arrays):
    return all(x.flags.c_contiguous for x in arrays)


def sgd_update(param, grad, velocity, lr, momentum=0.0, nesterov=False, weight_decay=0.0):
    """Gradient-descent step in place (momentum, Nesterov, L2 decay) in one pass.

    Parameters
    ----------
    param, grad : ndarray, same shape, C-contiguous
    velocity : ndarray or None
        Momentum buffer like ``param``; unused (may be None) when ``momentum == 0``.
    lr, momentum, weight_decay : float
    nesterov : bool
    """
    use_velocity = bool(momentum)
    vel = velocity if use_velocity else param  # any array of the right type; never read
    if not _flat_ok(param, grad, vel):
        reference.sgd_update(param, grad, velocity, lr, momentum, nesterov, weight_decay)
        return
    _sgd(param, grad, vel, float(lr), float(momentum), bool(nesterov), float(weight_decay),
         use_velocity)


def adam_update(param, grad, m, v, hyper):
    """Adam step in place in one pass (see the reference for the equations).

    Parameters
    ----------
    param, grad, m, v : ndarray, same shape, C-contiguous
    hyper : gpubp.kernels.reference.AdamStep
        ``(lr, beta1, beta2, eps, step, weight_decay)``; ``step`` is 1 for the first step.
    """
    if not _flat_ok(param, grad, m, v):
        reference.adam_update(param, grad, m, v, hyper)
        return
    # 1 - β, and the bias corrections 1 - β^t, in float64 before rounding to the dtype:
    # 1 - float32(0.999) is 1.3e-5 away from float32(0.001).
    lr, beta1, beta2, eps, step, weight_decay, decoupled = hyper
    beta1, beta2 = float(beta1), float(beta2)
    _adam(param, grad, m, v, (float(lr), beta1, 1 - beta1, beta2, 1 - beta2, float(eps),
                              1 - beta1**step, 1 - beta2**step, float(weight_decay),
                              1 - float(lr) * float(decoupled)))


def rmsprop_update(param, grad, square_avg, momentum_buffer, grad_avg, hyper):
    """RMSprop step in place in one pass (see the reference for the equations).

    Parameters
    ----------
    param, grad, square_avg : ndarray, same shape, C-contiguous
    momentum_buffer, grad_avg : ndarray or None
        Read only with ``momentum > 0``, ``centered``.
    hyper : gpubp.kernels.reference.RMSpropStep
    """
    buf = param if momentum_buffer is None else momentum_buffer  # never read when None
    avg = param if grad_avg is None else grad_avg
    if not _flat_ok(param, grad, square_avg, buf, avg):
        reference.rmsprop_update(param, grad, square_avg, momentum_buffer, grad_avg, hyper)
        return
    lr, alpha, eps, weight_decay, momentum, centered = hyper
    _rmsprop(param, grad, square_avg, buf, avg,
             (float(lr), float(alpha), 1 - float(alpha), float(eps), float(weight_decay),
              float(momentum)), bool(centered))


def clip_gradient(grad, max_norm=0.0, max_value=0.0):
    """Clip the flat gradient in place; returns ``‖g‖`` (see the reference).

    Parameters
    ----------
    grad : ndarray, shape (N,), C-contiguous
    max_norm, max_value : float
        0 turns either off.
    """
    return float(_clip(grad, float(max_norm), float(max_value)))
