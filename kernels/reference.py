"""Reference kernels: the backpropagation equations in literal NumPy.

These are the oracle every other kernel is tested against (the fused Numba CPU kernels in
``gpubp.kernels.cpu`` and the Numba CUDA kernels in ``gpubp.kernels.cuda`` have the same
signatures) and the baseline the benchmarks compare with. They favour readability over
speed: each is the equation of ``docs/design.md`` section 1, written out.

Conventions (row-major batches): ``P`` examples are rows; layer ``l`` maps ``n_{l-1}``
inputs to ``n_l`` outputs; every array is written in place into a caller-owned buffer
so that the same contract serves backends that never allocate during training.

Activations and losses are named by string, the names of the tables
:mod:`gpubp.activations` and :mod:`gpubp.losses`; the activations' derivatives are taken
from the *output* ``a`` so that the pre-activation ``z`` never has to be stored:

==========  ============================  ===================
name        g(z)                          g'(z) from a = g(z)
==========  ============================  ===================
sigmoid     1 / (1 + e^{-z})              a (1 - a)
tanh        tanh z                        1 - a^2
relu        max(z, 0)                     1 if a > 0 else 0
identity    z                             1
softmax     e^{z_j} / sum_k e^{z_k}       (only with cross-entropy, where it cancels)
exp         e^z (z capped, see EXP_CAP)   (output only, with the Poisson loss, where it cancels)
leaky_relu  z if z > 0 else s z           1 if a > 0 else s  (s = slope >= 0)
elu         z if z > 0 else e^z - 1       1 if a > 0 else a + 1
selu        λ z if z > 0 else λα(e^z-1)   λ if a > 0 else a + λα
softplus    log(1 + e^z)                  1 - e^{-a}
==========  ============================  ===================

and three whose ``g'`` needs ``z`` (their layers keep it; the kernels then take ``z`` where
the others take ``a``), with ``Φ`` the normal CDF, ``φ`` its density, ``σ`` the sigmoid:

==========  ==================================  =====================================
name        g(z)                                g'(z)
==========  ==================================  =====================================
gelu        z Φ(z) = z (1 + erf(z/√2)) / 2      Φ(z) + z φ(z)
gelu_tanh   z (1 + tanh u) / 2,                 (1 + tanh u)/2
            u = √(2/π) (z + 0.044715 z³)          + z (1 − tanh² u) u'(z) / 2
silu        z σ(z)                              σ(z) (1 + z (1 − σ(z)))
==========  ==================================  =====================================

Each is written so that nothing overflows for any finite ``z`` (``e^z`` only of
``min(z, 0)``, softplus as ``max(z, 0) + log1p(e^{-|z|})``, the cube and square of
gelu's only of ``z`` clamped where their factor is 0 or 1 in every dtype anyway).
"""

import numpy as np

from gpubp import activations, losses
from gpubp.kernels import dropout as masks
from gpubp.kernels.reference_optim import (AdamStep, RMSpropStep,  # noqa: F401 - re-exported
                                           adam_update, clip_gradient, rmsprop_update,
                                           sgd_update)

ACTIVATIONS = activations.NAMES
ELEMENTWISE = activations.FROM_OUTPUT  # those with g' written through a
FROM_Z = activations.FROM_Z  # those with g' written through z
DERIVED = ELEMENTWISE + FROM_Z  # those a hidden layer may have
LOSSES = losses.NAMES
SLOPE = activations.NEGATIVE_SLOPE  # leaky_relu's slope where none is given
LAMBDA, LAMBDA_ALPHA = activations.SELU_SCALE, activations.SELU_SCALE * activations.SELU_ALPHA
SQRT_2_OVER_PI = 0.7978845608028654  # gelu_tanh's √(2/π)
SQRT_HALF = 0.7071067811865476  # gelu's 1/√2
INV_SQRT_2PI = 0.3989422804014327  # the normal density's 1/√(2π)
GELU_TANH_C = 0.044715
# |z| above which gelu_tanh's tanh u is ±1, and gelu's φ(z) 0, in float32 and float64:
# z is clamped there before its cube or square is taken (nothing overflows)
GELU_TANH_CLAMP = 10.0
GELU_PDF_CLAMP = 40.0

# exp(z) is taken of min(z, EXP_CAP): the largest whole number whose exp is finite in the
# dtype, so the exponential output never overflows (a huge rate, not inf).
EXP_CAP = {np.dtype(np.float32): 88.0, np.dtype(np.float64): 709.0}


def sigmoid(z, out):
    """Overflow-free logistic function, ``out = 1 / (1 + exp(-z))``.

    Two branches share ``e = exp(-|z|)`` (always in (0, 1], so it cannot overflow):
    ``1 / (1 + e)`` for ``z >= 0`` and ``e / (1 + e)`` for ``z < 0``.
    ``out`` may be ``z`` itself.
    """
    e = np.exp(-np.abs(z))
    np.divide(np.where(z >= 0, 1.0, e), 1.0 + e, out=out)
    return out


def softmax(z, out):
    """Row-wise softmax, max-shifted so ``exp`` never overflows. ``z, out``: (P, n)."""
    shifted = z - z.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    np.divide(e, e.sum(axis=1, keepdims=True), out=out)
    return out


def _special(z, activation, slope):
    """``g(z)`` of the rows added with gelu and its kin (a new array), or None."""
    if activation == "leaky_relu":
        return np.where(z > 0, z, z * slope)
    if activation in ("elu", "selu"):
        neg = np.expm1(np.minimum(z, 0))  # e^z of z <= 0 only: never overflows
        if activation == "elu":
            return np.where(z > 0, z, neg)
        return np.where(z > 0, LAMBDA * z, LAMBDA_ALPHA * neg)
    if activation == "softplus":
        return np.maximum(z, 0) + np.log1p(np.exp(-np.abs(z)))
    if activation == "gelu":
        from scipy.special import erf  # keeps import gpubp light: erf on first use

        return 0.5 * z * (1 + erf(z * SQRT_HALF))
    if activation == "gelu_tanh":
        zc = np.clip(z, -GELU_TANH_CLAMP, GELU_TANH_CLAMP)
        return 0.5 * z * (1 + np.tanh(SQRT_2_OVER_PI * (zc + GELU_TANH_C * zc ** 3)))
    if activation == "silu":
        return z * sigmoid(z, np.empty_like(z))
    return None


def activate(z, activation, slope=SLOPE):
    """Apply ``g`` to ``z`` in place. ``z``: (P, n); ``slope``: leaky_relu's."""
    special = _special(z, activation, slope)
    if special is not None:
        z[...] = special
    elif activation == "sigmoid":
        sigmoid(z, out=z)
    elif activation == "tanh":
        np.tanh(z, out=z)
    elif activation == "relu":
        np.maximum(z, 0, out=z)
    elif activation == "identity":
        pass
    elif activation == "softmax":
        softmax(z, out=z)
    elif activation == "exp":
        np.exp(np.minimum(z, EXP_CAP[z.dtype], out=z), out=z)
    else:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    return z


def activation_derivative(a, activation, slope=SLOPE):
    """``g'(z)`` expressed through the output ``a = g(z)``, or through ``z`` itself for the
    activations of ``FROM_Z`` (then ``a`` is ``z``); returns a new array like ``a``."""
    if activation in FROM_Z:
        return _derivative_from_z(a, activation)
    if activation == "leaky_relu":
        return np.where(a > 0, 1, slope).astype(a.dtype)
    if activation == "elu":
        return np.where(a > 0, 1, a + 1).astype(a.dtype)
    if activation == "selu":
        return np.where(a > 0, LAMBDA, a + LAMBDA_ALPHA).astype(a.dtype)
    if activation == "softplus":
        return -np.expm1(-a)  # σ(z) = 1 − e^{−a}; a > 0, so e^{−a} <= 1
    if activation == "sigmoid":
        return a * (1 - a)
    if activation == "tanh":
        return 1 - a * a
    if activation == "relu":
        return (a > 0).astype(a.dtype)
    if activation == "identity":
        return np.ones_like(a)
    raise ValueError(
        f"activation must be an elementwise activation {DERIVED}, got {activation!r}"
    )


def _derivative_from_z(z, activation):
    """``g'(z)`` of gelu, gelu_tanh and silu (a new array like ``z``)."""
    if activation == "gelu":
        from scipy.special import erf  # keeps import gpubp light: erf on first use

        zc = np.clip(z, -GELU_PDF_CLAMP, GELU_PDF_CLAMP)
        pdf = INV_SQRT_2PI * np.exp(-0.5 * zc * zc)  # 0 beyond the clamp anyway
        return 0.5 * (1 + erf(z * SQRT_HALF)) + z * pdf
    if activation == "gelu_tanh":
        zc = np.clip(z, -GELU_TANH_CLAMP, GELU_TANH_CLAMP)  # beyond: 1 − t² = 0 exactly
        t = np.tanh(SQRT_2_OVER_PI * (zc + GELU_TANH_C * zc ** 3))
        du = SQRT_2_OVER_PI * (1 + 3 * GELU_TANH_C * zc * zc)
        return 0.5 * (1 + t) + 0.5 * zc * (1 - t * t) * du
    s = sigmoid(z, np.empty_like(z))  # silu
    return s * (1 + z * (1 - s))


def bias_activation(z, b, activation, slope=SLOPE, z_out=None, dropout=None):
    """Forward epilogue ``a = g(z + b)``, in place on the GEMM output.

    Parameters
    ----------
    z : ndarray, shape (P, n_l)
        ``a^{l-1} W^l`` on entry, ``a^l = g(a^{l-1} W^l + b^l)`` on exit.
    b : ndarray, shape (n_l,)
        Bias ``b^l``, broadcast over the P rows.
    activation : str
        One of ``ACTIVATIONS``.
    slope : float
        leaky_relu's slope (the others ignore it).
    z_out : ndarray, shape (P, n_l), or None
        Written with ``z^l`` (the layers of ``FROM_Z`` activations keep it for ``g'``).
    dropout : gpubp.kernels.dropout.Drop or None
        Training with dropout: ``a = g(z + b) ⊙ m / (1 − p)`` (:mod:`gpubp.kernels.dropout`).
    """
    z += b
    if z_out is not None:
        z_out[...] = z
    activate(z, activation, slope)
    if dropout is not None:
        masks.forward(z, dropout)


def _clipped(a):
    """``a`` clipped into the open interval (0, 1) so that its logs are finite.

    The bounds are the dtype's smallest normal number and the largest value below 1; in
    float32 a sigmoid or softmax of a large ``|z|`` rounds to exactly 0 or 1, and the
    clipped cost then saturates at about 87 instead of becoming ``inf``.
    """
    finfo = np.finfo(a.dtype)
    return np.clip(a, finfo.tiny, 1 - finfo.epsneg)


def smoothed(y, loss, loss_param):
    """The targets of a log-loss with label smoothing ``ε = loss_param``:
    ``(1 − ε) y + ε / K``, ``K = n_L`` for ``cross_entropy``, 2 for ``binary_cross_entropy``
    (:mod:`gpubp.losses`); ``y`` itself for ``ε = 0`` or another loss."""
    if not loss_param or loss not in ("cross_entropy", "binary_cross_entropy"):
        return y
    K = y.shape[1] if loss == "cross_entropy" else 2
    return (1 - loss_param) * y + loss_param / K


def huber_slope(d, huber_delta):
    """``∂h_δ/∂d = clip(d, −δ, δ)`` of the Huber function (``h_δ`` in :mod:`gpubp.losses`)."""
    return np.clip(d, -huber_delta, huber_delta)


def example_costs(a, y, loss, loss_param=0.0):
    """Per-example cost ``c(a_p, y_p)``, shape (P,).

    ``mse``: ``½ Σ_j (a_j − y_j)²``; ``binary_cross_entropy``:
    ``−Σ_j [y_j log a_j + (1 − y_j) log(1 − a_j)]``; ``cross_entropy``: ``−Σ_j y_j log a_j``;
    ``poisson`` (half the Poisson deviance, scikit-learn's): ``Σ_j [y_j log(y_j / a_j) −
    y_j + a_j]``, with ``0 log 0 = 0``; ``huber``: ``Σ_j h_δ(a_j − y_j)``, ``δ =
    loss_param``; ``l1``: ``Σ_j |a_j − y_j|``. The log-losses take ``y`` smoothed by
    ``ε = loss_param`` (:func:`smoothed`). Works on NumPy and CuPy arrays alike.
    """
    y = smoothed(y, loss, loss_param)
    if loss == "huber":
        r = np.abs(a - y)
        return np.where(r <= loss_param, 0.5 * r * r, loss_param * (r - 0.5 * loss_param)
                        ).sum(axis=1)
    if loss == "l1":
        return np.abs(a - y).sum(axis=1)
    if loss == "mse":
        return 0.5 * ((a - y) ** 2).sum(axis=1)
    if loss == "binary_cross_entropy":
        c = _clipped(a)
        return -(y * np.log(c) + (1 - y) * np.log1p(-c)).sum(axis=1)
    if loss == "cross_entropy":
        return -(y * np.log(_clipped(a))).sum(axis=1)
    if loss == "poisson":
        positive = y > 0
        log_ratio = np.log(np.where(positive, y, 1)) - np.log(np.maximum(a, np.finfo(a.dtype).tiny))
        return (np.where(positive, y * log_ratio, 0) - y + a).sum(axis=1)
    raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")


def output_delta(a, y, activation, loss, delta, loss_param=0.0, w=None):
    """Output error ``δ^L = ∂C/∂z^L`` and the mean cost, in one pass.

    With ``C = (1/P) Σ_p c(a_p, y_p)`` the chain rule gives
    ``δ^L = (1/P) ∂c/∂a ⊙ g_o'(z^L)``. For ``mse`` ``∂c/∂a = a − y``, so
    ``δ^L = (a − y) ⊙ g_o'(a) / P``. For sigmoid + binary cross-entropy,
    ``∂c/∂a = (a − y) / (a (1 − a))`` and ``g_o' = a (1 − a)`` cancel; for softmax +
    cross-entropy the Jacobian of softmax contracts with ``−y/a`` to ``a − Σ_j y_j a``,
    which is ``a − y`` for targets that sum to 1. For exp + Poisson ``∂c/∂a = 1 − y/a``
    and ``g_o' = a``. All three give ``δ^L = (a − y) / P`` (with the smoothed targets
    under label smoothing). ``huber``: ``∂c/∂a = clip(a − y, −δ, δ)``; ``l1``:
    ``sign(a − y)``, 0 at 0; each times ``g_o'(a) / P``.

    Parameters
    ----------
    a : ndarray, shape (P, n_L)
        Output activations ``a^L``.
    y : ndarray, shape (P, n_L)
        Targets.
    activation, loss : str
        Output activation and loss (a pairing accepted by ``gpubp.losses``).
    delta : ndarray, shape (P, n_L)
        Written with ``δ^L``.
    loss_param : float
        The loss's parameter (:func:`gpubp.losses.loss_param`): label smoothing ``ε`` of
        the log-losses, ``δ`` of ``huber``; unused by the others.
    w : ndarray, shape (P,), or None
        Row weights ``w_p = s_p P / Σ s`` (``gpubp.core.backprop.load``): row p of ``δ^L``
        is scaled by ``w_p`` and the cost is ``Σ_p w_p c_p / P``, the weighted mean.

    Returns
    -------
    float
        The mean cost ``C`` over the P rows.
    """
    P = a.shape[0]
    if (loss == "poisson") != (activation == "exp"):
        raise ValueError(f"loss='poisson' and activation='exp' go together (the canonical "
                         f"pairing), got activation={activation!r}, loss={loss!r}")
    slope = {"mse": lambda d: d, "l1": np.sign,
             "huber": lambda d: huber_slope(d, loss_param)}.get(loss)
    if slope is not None:  # ∂c/∂a ⊙ g_o'(a): any elementwise output
        delta[...] = slope(a - y) * activation_derivative(a, activation) / P
    else:
        delta[...] = (a - smoothed(y, loss, loss_param)) / P
    costs = example_costs(a, y, loss, loss_param)
    if w is not None:
        delta *= w[:, None]
        costs = costs * w
    return float(costs.sum() / P)


def count_correct(a, y, loss):
    """Rows of ``a`` (P, n_L) predicted right against the targets ``y``: the count the
    CUDA output kernel adds up in the same pass as ``δ^L`` (``0`` for a regressor's loss).

    ``labels`` targets (cross-entropy): the first arg-max of each row of ``a`` (NaN the
    largest) is that of ``y``; ``binary`` targets: every output on the side of 0.5 of its
    target. The rule of :func:`gpubp.core.metrics.accuracy`.
    """
    targets = losses.LOSSES[loss].targets
    if targets == "labels":
        return int((np.argmax(a, axis=1) == np.argmax(y, axis=1)).sum())
    if targets == "binary":
        return int(np.all((a > 0.5) == (y > 0.5), axis=1).sum())
    return 0


def gather_rows(src, order, offset, out):
    """``out = src[order[offset[0]:offset[0] + P]]`` with ``P = len(out)``: the batch of a
    CUDA-graph step, its start ``offset`` (int64 (1,)) kept on the device."""
    start = int(offset[0])
    np.take(src, order[start:start + out.shape[0]], axis=0, out=out)


def advance(offset, P, dtype=None):
    """``offset[0] += P``: the next batch's start (``dtype`` unused, as on the device)."""
    offset[0] += P


def hidden_delta(delta, a, activation, slope=SLOPE, dropout=None):
    """Hidden error ``δ^l = (δ^{l+1} W^{l+1 T}) ⊙ g'(z^l)``, in place on the GEMM output.

    Parameters
    ----------
    delta : ndarray, shape (P, n_l)
        ``δ^{l+1} W^{l+1 T}`` on entry, ``δ^l`` on exit.
    a : ndarray, shape (P, n_l)
        Stored activations ``a^l``, or ``z^l`` for an activation of ``FROM_Z``;
        ``g'(z^l)`` is computed from them.
    activation : str
        Hidden activation of layer ``l``.
    slope : float
        leaky_relu's slope (the others ignore it).
    dropout : gpubp.kernels.dropout.Drop or None
        The layer's dropout in this step: ``δ^l ⊙= g'(a (1 − p)) m / (1 − p)`` (``g'(z)``
        for an activation of ``FROM_Z``, whose ``z`` was kept before the mask).
    """
    if dropout is not None:
        masks.backward(delta, a, dropout, lambda u: activation_derivative(u, activation, slope),
                       from_z=activation in FROM_Z)
        return
    delta *= activation_derivative(a, activation, slope)


def weight_bias_gradients(a_prev, delta, dW, db):
    """``∂C/∂W^l = Σ_p outer(a_p^{l-1}, δ_p^l)`` and ``∂C/∂b^l = Σ_p δ_p^l``.

    The bias is the weight of a constant input 1, so its gradient is the same sum with
    ``a_p^{l-1}`` replaced by 1.

    Parameters
    ----------
    a_prev : ndarray, shape (P, n_{l-1})
    delta : ndarray, shape (P, n_l)
    dW : ndarray, shape (n_{l-1}, n_l)
        Written with ``a^{l-1 T} δ^l``.
    db : ndarray, shape (n_l,)
        Written with the column sums of ``δ^l``.
    """
    np.matmul(a_prev.T, delta, out=dW)
    np.sum(delta, axis=0, out=db)
